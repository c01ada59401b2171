package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// cmdNewPipeline scaffolds a pipeline: a contract skeleton (unless the file exists), the dbt
// staging and upsert models (each one call of a sluice macro) with the source entry and the key
// test, and the config block, appended to the config file when its pipelines list ends it.
// Everything about the data (columns, key, version, partitions) lives in the contract, so that
// is the one file left to edit.
func cmdNewPipeline(_ context.Context, args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("new-pipeline", flag.ContinueOnError)
	flags.SetOutput(stderr)
	contractPath := flags.String("contract", "", "contract file to write (a skeleton) or use (if it exists)")
	configPath := flags.String("config", "", "config file to append the pipeline to (otherwise the block is printed)")
	project := flags.String("dbt-project", "", "dbt project directory (default: the config's dbt.project_dir, or dbt_project)")
	sourceURL := flags.String("source-url", "https://api.example.com/data/{ds}.csv", "the file's URL, with {ds} where the date goes")
	name, rest := "", args
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, rest = args[0], args[1:]
	}
	if err := flags.Parse(rest); err != nil {
		return err
	}
	if name == "" && flags.NArg() == 1 {
		name = flags.Arg(0)
	}
	if !pipelineNameRe.MatchString(name) {
		return fmt.Errorf("usage: sluice new-pipeline NAME --contract FILE [--config FILE]: NAME %q must be lowercase letters, digits and _, starting with a letter", name)
	}
	if *contractPath == "" || !strings.HasSuffix(*contractPath, ".json") {
		return errors.New("new-pipeline: --contract FILE.json is required")
	}
	if !strings.Contains(*sourceURL, "{ds}") {
		return fmt.Errorf("new-pipeline: --source-url %q must contain {ds}", *sourceURL)
	}

	dir := "." // what relative paths in the config are relative to
	var cfgText []byte
	if *configPath != "" {
		b, err := os.ReadFile(*configPath)
		if err != nil {
			return fmt.Errorf("new-pipeline: %w", err)
		}
		cfgText, dir = b, filepath.Dir(*configPath)
		if *project == "" {
			*project = filepath.Join(dir, dbtProjectDir(b))
		}
	}
	if *project == "" {
		*project = "dbt_project"
	}
	if _, err := os.Stat(filepath.Join(*project, "dbt_project.yml")); err != nil {
		return fmt.Errorf("new-pipeline: dbt project: %w", err)
	}

	var wrote []string
	write := func(path, text string) error {
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
		wrote = append(wrote, path)
		return f.Close()
	}

	contractNew := false
	if _, err := os.Stat(*contractPath); errors.Is(err, fs.ErrNotExist) {
		if err := write(*contractPath, fmt.Sprintf(contractSkeleton, name)); err != nil {
			return err
		}
		contractNew = true
	} else if err != nil {
		return fmt.Errorf("new-pipeline: %w", err)
	}
	models := filepath.Join(*project, "models", name)
	if _, err := os.Stat(models); err == nil {
		return fmt.Errorf("new-pipeline: %s exists: pipeline %s already has models", models, name)
	}
	for file, text := range map[string]string{
		"stg_" + name + ".sql": "{{ sluice_staged('" + name + "') }}\n",
		name + ".sql":          "{{ sluice_upsert('" + name + "') }}\n",
		name + ".yml":          fmt.Sprintf(modelsYAML, name),
	} {
		if err := write(filepath.Join(models, file), text); err != nil {
			return err
		}
	}

	ref, err := filepath.Rel(dir, *contractPath)
	if err != nil || filepath.IsAbs(*contractPath) {
		ref = *contractPath
	}
	block := fmt.Sprintf(configBlock, name, *sourceURL, filepath.ToSlash(ref))
	appended := false
	if cfgText != nil {
		if !pipelinesLast(cfgText) {
			fmt.Fprintf(stdout, "%s does not end with its pipelines list: add this block under pipelines: yourself\n", *configPath)
		} else {
			if len(cfgText) > 0 && cfgText[len(cfgText)-1] != '\n' {
				block = "\n" + block
			}
			f, err := os.OpenFile(*configPath, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return fmt.Errorf("new-pipeline: %w", err)
			}
			_, err = f.WriteString(block)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("new-pipeline: %w", err)
			}
			appended = true
		}
	}
	for _, w := range wrote {
		fmt.Fprintf(stdout, "wrote    %s\n", w)
	}
	if appended {
		fmt.Fprintf(stdout, "appended pipeline %s to %s\n", name, *configPath)
	} else {
		fmt.Fprintf(stdout, "\nconfig block (under pipelines:):\n%s", block)
	}
	fmt.Fprintf(stdout, "\nNow edit:\n")
	if contractNew {
		fmt.Fprintf(stdout, "  %s: the file's columns (name, type, required, checks), key (one column or a list),\n"+
			"    version_column (or remove it: the file run last wins), partition column and grain (day or month)\n", *contractPath)
	} else {
		fmt.Fprintf(stdout, "  %s is used as it is\n", *contractPath)
	}
	fmt.Fprintf(stdout, "  the config block: source.url (%s), and schedule, sensor, retries, sla, alerts as needed\n", *sourceURL)
	fmt.Fprintf(stdout, "The dbt models need no edit: the macros take the key, version and columns from the contract.\n"+
		"Then: sluice run --config %s --pipeline %s --date YYYY-MM-DD\n", orDefault(*configPath, "sluice.yaml"), name)
	return nil
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
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(cfg)).Decode(&root); err != nil || len(root.Content) == 0 {
		return false
	}
	m := root.Content[0]
	if m.Kind != yaml.MappingNode || len(m.Content) < 2 {
		return false
	}
	last := m.Content[len(m.Content)-2]
	v := m.Content[len(m.Content)-1]
	return last.Value == "pipelines" && (v.Kind == yaml.SequenceNode || v.Tag == "!!null")
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
