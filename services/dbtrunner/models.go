package dbtrunner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/goccy/go-yaml"

	"github.com/sluice-etl/sluice/pkg/config"
)

// CheckModels makes sure every pipeline's target model (the dbt model named like its target
// table) is built by the sluice macros: `{{ sluice_upsert('<pipeline>') }}`. A model that is not
// would bypass the fence pre-hook, the partitioned-target guard and the upsert rules, so it is
// reported at start, by pipeline and file, instead of corrupting the target on the first run.
// A pipeline with no such model is returned in missing: its runs will fail at dbt, but it may
// be declared before its models exist (or never get that far), so that alone is no error.
func CheckModels(projectDir string, pipelines []config.Pipeline) (missing []string, err error) {
	models, err := modelFiles(projectDir)
	if err != nil {
		return nil, err
	}
	var problems []string
	for _, p := range pipelines {
		path, ok := models[p.Target.Table]
		if !ok {
			missing = append(missing, fmt.Sprintf("pipeline %s: the dbt project has no model %s.sql (`sluice new-pipeline %s` writes one)",
				p.Name, p.Target.Table, p.Name))
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("dbt model: %w", err)
		}
		rel, _ := filepath.Rel(projectDir, path)
		if !usesUpsert(string(b), p.Name) {
			problems = append(problems, fmt.Sprintf("pipeline %s: dbt model %s does not call {{ sluice_upsert('%s') }}; without it the upsert bypasses the fence and the upsert rules",
				p.Name, filepath.Join(filepath.Base(projectDir), rel), p.Name))
		}
	}
	if len(problems) > 0 {
		return missing, errors.New(strings.Join(problems, "; "))
	}
	return missing, nil
}

// usesUpsert reports whether a model's SQL calls sluice_upsert for pipeline outside a comment.
func usesUpsert(sql, pipeline string) bool {
	sql = jinjaComment.ReplaceAllString(sql, "")
	re := regexp.MustCompile(`\{\{-?\s*sluice_upsert\(\s*(pipeline\s*=\s*)?['"]` + regexp.QuoteMeta(pipeline) + `['"]`)
	return re.MatchString(sql)
}

var jinjaComment = regexp.MustCompile(`(?s)\{#.*?#\}`)

// modelFiles maps each model name to its .sql file under the project's model paths.
func modelFiles(projectDir string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(projectDir, "dbt_project.yml"))
	if err != nil {
		return nil, fmt.Errorf("dbt project: %w", err)
	}
	var proj struct {
		ModelPaths []string `yaml:"model-paths"`
	}
	if err := yaml.Unmarshal(b, &proj); err != nil {
		return nil, fmt.Errorf("dbt project: dbt_project.yml: %w", err)
	}
	if len(proj.ModelPaths) == 0 {
		proj.ModelPaths = []string{"models"}
	}
	out := map[string]string{}
	for _, dir := range proj.ModelPaths {
		root := filepath.Join(projectDir, dir)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if name, ok := strings.CutSuffix(d.Name(), ".sql"); ok && !d.IsDir() {
				out[name] = path
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("dbt project: %w", err)
		}
	}
	return out, nil
}
