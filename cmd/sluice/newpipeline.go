package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// newPipelineCmd scaffolds a pipeline: a contract skeleton (unless the file exists), the dbt
// staging and upsert models (each one call of a sluice macro) with the source entry and the key
// test, and the config block, appended to the config file when its pipelines list ends it.
// Everything about the data (columns, key, version, partitions) lives in the contract, so that
// is the one file left to edit.
type newPipelineCmd struct {
	Name       string `arg:"" optional:"" placeholder:"NAME" help:"the pipeline's name: lowercase letters, digits and _, starting with a letter"`
	Contract   string `need:"" placeholder:"FILE.json" help:"contract file to write (a skeleton) or use (if it exists)"`
	Config     string `placeholder:"FILE" help:"config file to append the pipeline to (otherwise the block is printed)"`
	DBTProject string `name:"dbt-project" placeholder:"DIR" help:"dbt project directory (default: the config's dbt.project_dir, or dbt_project)"`
	SourceURL  string `name:"source-url" default:"https://api.example.com/data/{ds}.csv" placeholder:"URL" help:"the file's URL, with {ds} where the date goes"`

	wrote []string // the files written, in order
}

func (c *newPipelineCmd) run(_ context.Context, stdout, _ io.Writer) error {
	if !pipelineNameRe.MatchString(c.Name) {
		return fmt.Errorf("usage: sluice new-pipeline NAME --contract FILE [--config FILE]: NAME %q must be lowercase letters, digits and _, starting with a letter", c.Name)
	}
	if c.Contract == "" || !strings.HasSuffix(c.Contract, ".json") {
		return errors.New("new-pipeline: --contract FILE.json is required")
	}
	if !strings.Contains(c.SourceURL, "{ds}") {
		return fmt.Errorf("new-pipeline: --source-url %q must contain {ds}", c.SourceURL)
	}
	dir, cfgText, err := c.readConfig()
	if err != nil {
		return err
	}
	contractNew, err := c.writeFiles()
	if err != nil {
		return err
	}
	ref, err := filepath.Rel(dir, c.Contract)
	if err != nil || filepath.IsAbs(c.Contract) {
		ref = c.Contract
	}
	block := fmt.Sprintf(configBlock, c.Name, c.SourceURL, filepath.ToSlash(ref))
	appended := false
	if cfgText != nil {
		if !pipelinesLast(cfgText) {
			fmt.Fprintf(stdout, "%s does not end with its pipelines list: add this block under pipelines: yourself\n", c.Config)
		} else if err := appendBlock(c.Config, cfgText, block); err != nil {
			return fmt.Errorf("new-pipeline: %w", err)
		} else {
			appended = true
		}
	}
	c.report(stdout, block, appended, contractNew)
	return nil
}

// readConfig reads --config (if given) and settles the dbt project: dir is what relative paths
// in the config are relative to.
func (c *newPipelineCmd) readConfig() (dir string, cfgText []byte, err error) {
	dir = "."
	if c.Config != "" {
		b, err := os.ReadFile(c.Config)
		if err != nil {
			return "", nil, fmt.Errorf("new-pipeline: %w", err)
		}
		cfgText, dir = b, filepath.Dir(c.Config)
		if c.DBTProject == "" {
			c.DBTProject = filepath.Join(dir, dbtProjectDir(b))
		}
	}
	if c.DBTProject == "" {
		c.DBTProject = "dbt_project"
	}
	if _, err := os.Stat(filepath.Join(c.DBTProject, "dbt_project.yml")); err != nil {
		return "", nil, fmt.Errorf("new-pipeline: dbt project: %w", err)
	}
	return dir, cfgText, nil
}

// writeFiles writes the contract skeleton (unless the contract exists) and the dbt models.
func (c *newPipelineCmd) writeFiles() (contractNew bool, err error) {
	if _, err := os.Stat(c.Contract); errors.Is(err, fs.ErrNotExist) {
		if err := c.write(c.Contract, fmt.Sprintf(contractSkeleton, c.Name)); err != nil {
			return false, err
		}
		contractNew = true
	} else if err != nil {
		return false, fmt.Errorf("new-pipeline: %w", err)
	}
	models := filepath.Join(c.DBTProject, "models", c.Name)
	if _, err := os.Stat(models); err == nil {
		return false, fmt.Errorf("new-pipeline: %s exists: pipeline %s already has models", models, c.Name)
	}
	for file, text := range map[string]string{
		"stg_" + c.Name + ".sql": "{{ sluice_staged('" + c.Name + "') }}\n",
		c.Name + ".sql":          "{{ sluice_upsert('" + c.Name + "') }}\n",
		c.Name + ".yml":          fmt.Sprintf(modelsYAML, c.Name),
	} {
		if err := c.write(filepath.Join(models, file), text); err != nil {
			return false, err
		}
	}
	return contractNew, nil
}

// write creates path (and its directory) with text; it never overwrites a file.
func (c *newPipelineCmd) write(path, text string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("new-pipeline: %w", err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	c.wrote = append(c.wrote, path)
	return f.Close()
}

// appendBlock appends the config block to the config file, whose text is cfgText.
func appendBlock(path string, cfgText []byte, block string) error {
	if len(cfgText) > 0 && cfgText[len(cfgText)-1] != '\n' {
		block = "\n" + block
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(block)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// report says what was written and what is left to edit.
func (c *newPipelineCmd) report(stdout io.Writer, block string, appended, contractNew bool) {
	for _, w := range c.wrote {
		fmt.Fprintf(stdout, "wrote    %s\n", w)
	}
	if appended {
		fmt.Fprintf(stdout, "appended pipeline %s to %s\n", c.Name, c.Config)
	} else {
		fmt.Fprintf(stdout, "\nconfig block (under pipelines:):\n%s", block)
	}
	fmt.Fprintf(stdout, "\nNow edit:\n")
	if contractNew {
		fmt.Fprintf(stdout, "  %s: the file's columns (name, type, required, checks), key (one column or a list),\n"+
			"    version_column (or remove it: the file run last wins), partition column and grain (day or month)\n", c.Contract)
	} else {
		fmt.Fprintf(stdout, "  %s is used as it is\n", c.Contract)
	}
	fmt.Fprintf(stdout, "  the config block: source.url (%s), and schedule, sensor, retries, sla, alerts as needed\n", c.SourceURL)
	fmt.Fprintf(stdout, "The dbt models need no edit: the macros take the key, version and columns from the contract.\n"+
		"Then: sluice run --config %s --pipeline %s --date YYYY-MM-DD\n", orDefault(c.Config, "sluice.yaml"), c.Name)
}

var pipelineNameRe = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// dbtProjectDir is dbt.project_dir in the config text (default dbt_project).
func dbtProjectDir(cfg []byte) string {
	var c struct {
		DBT struct {
			ProjectDir string `yaml:"project_dir"`
		} `yaml:"dbt"`
	}
	if err := yaml.Unmarshal(cfg, &c); err != nil || c.DBT.ProjectDir == "" {
		return "dbt_project"
	}
	return c.DBT.ProjectDir
}

// pipelinesLast reports whether the config's last top-level key is pipelines, so a block
// appended to the file lands in its list.
func pipelinesLast(cfg []byte) bool {
	file, err := parser.ParseBytes(cfg, 0)
	if err != nil || len(file.Docs) == 0 {
		return false
	}
	var last *ast.MappingValueNode
	switch m := file.Docs[0].Body.(type) {
	case *ast.MappingNode:
		if len(m.Values) > 0 {
			last = m.Values[len(m.Values)-1]
		}
	case *ast.MappingValueNode: // a mapping of one key
		last = m
	}
	if last == nil || last.Key.GetToken().Value != "pipelines" {
		return false
	}
	switch last.Value.(type) {
	case *ast.SequenceNode, *ast.NullNode:
		return true
	}
	return false
}

const contractSkeleton = `{
  "name": "%s",
  "description": "TODO: what one row of the file is.",
  "key": ["id"],
  "version_column": "updated_at",
  "partition": {"column": "load_date", "grain": "day"},
  "unknown_columns": "reject",
  "columns": [
    {"name": "id", "type": "bigint", "required": true, "description": "TODO: what identifies a row"},
    {"name": "updated_at", "type": "timestamptz", "required": true, "description": "TODO: the row's version"}
  ]
}
`

const modelsYAML = `version: 2

# Written by sluice new-pipeline. The staging table is the validator's; the key test reads the
# key from the contract.
sources:
  - name: sluice
    schema: "{{ var('staging_schema', target.schema) }}"
    tables:
      - name: staging_%[1]s

models:
  - name: stg_%[1]s
    description: The validated rows of one execution date (var ds).
  - name: %[1]s
    description: One row per key, the newest version, partitioned by the contract's partition column.
    data_tests:
      - sluice_unique_key:
          arguments:
            pipeline: %[1]s
`

const configBlock = `
  - name: %s
    source:
      url: %s
    contract: %s
    sensor:
      poke_interval: 60s
      timeout: 1h
`
