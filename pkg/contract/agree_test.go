package contract

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// dbtProject is the repository's dbt project, relative to this package.
var dbtProject = filepath.Join("..", "..", "dbt_project")

func readDBT(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dbtProject, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestContractStagingAndDBTAgree: each built-in contract is the one source of its pipeline's
// columns. The staging table the validator creates from it lists them (then the partition column
// and run_id); the dbt project declares that staging table as a source, and the pipeline's
// staging and upsert models are the sluice macros, which take key, version, partition and
// columns from the contract (var sluice_pipelines) instead of repeating them.
func TestContractStagingAndDBTAgree(t *testing.T) {
	models := map[string]string{}
	err := filepath.WalkDir(filepath.Join(dbtProject, "models"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".sql") {
			models[strings.TrimSuffix(d.Name(), ".sql")] = path
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string]bool{}
	var schemaFiles []string
	_ = filepath.WalkDir(filepath.Join(dbtProject, "models"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".yml") {
			schemaFiles = append(schemaFiles, path)
		}
		return err
	})
	for _, f := range schemaFiles {
		var doc struct {
			Sources []struct {
				Name   string `yaml:"name"`
				Tables []struct {
					Name string `yaml:"name"`
				} `yaml:"tables"`
			} `yaml:"sources"`
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, s := range doc.Sources {
			for _, tbl := range s.Tables {
				declared[s.Name+"."+tbl.Name] = true
			}
		}
	}
	for _, name := range BuiltIn() {
		c, err := Load(name, "")
		if err != nil {
			t.Fatal(err)
		}
		part := c.Partition.Column
		staging := append(append(c.ColumnNames(), part), RunIDColumn)
		ddl := c.StagingDDL("public", "staging_"+name, part)
		var ddlCols []string
		for _, m := range regexp.MustCompile(`"([a-z_0-9]+)" [a-z]+`).FindAllStringSubmatch(ddl[strings.Index(ddl, "("):], -1) {
			ddlCols = append(ddlCols, m[1])
		}
		if !slices.Equal(ddlCols, staging) {
			t.Errorf("%s: staging DDL columns %v, want %v", name, ddlCols, staging)
		}
		if !declared["sluice.staging_"+name] {
			t.Errorf("%s: no dbt source sluice.staging_%s", name, name)
		}
		for model, call := range map[string]string{"stg_" + name: "sluice_staged('" + name + "')", name: "sluice_upsert('" + name + "')"} {
			path, ok := models[model]
			if !ok {
				t.Errorf("%s: no dbt model %s", name, model)
				continue
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), call) {
				t.Errorf("%s does not call %s", path, call)
			}
		}
	}

	// orders documents its columns and tests its key.
	c, err := Load("orders", "")
	if err != nil {
		t.Fatal(err)
	}
	withPart := append(c.ColumnNames(), c.Partition.Column)
	var schema struct {
		Models []struct {
			Name    string `yaml:"name"`
			Columns []struct {
				Name  string   `yaml:"name"`
				Tests []string `yaml:"data_tests"`
			} `yaml:"columns"`
		} `yaml:"models"`
	}
	if err := yaml.Unmarshal([]byte(readDBT(t, "models/schema.yml")), &schema); err != nil {
		t.Fatal(err)
	}
	for _, m := range schema.Models {
		var names []string
		for _, col := range m.Columns {
			names = append(names, col.Name)
			if m.Name == "orders" && col.Name == c.Key[0] && !(slices.Contains(col.Tests, "unique") && slices.Contains(col.Tests, "not_null")) {
				t.Errorf("schema.yml: orders.%s is not tested unique and not_null", c.Key[0])
			}
		}
		if !slices.Equal(names, withPart) {
			t.Errorf("schema.yml model %s columns %v, want %v", m.Name, names, withPart)
		}
	}
}
