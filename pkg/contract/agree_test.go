package contract

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
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

// selectList returns the columns of the last `select ... from` before marker in sql: "s.x" and
// "x as y" give y, a leading "distinct on (...)" is skipped.
func selectList(t *testing.T, sql, marker string) []string {
	t.Helper()
	end := strings.Index(sql, marker)
	if end < 0 {
		t.Fatalf("no %q in the model", marker)
	}
	head := strings.ToLower(sql[:end])
	start := strings.LastIndex(head, "select")
	if start < 0 {
		t.Fatalf("no select before %q", marker)
	}
	list := strings.TrimSpace(head[start+len("select"):])
	list = strings.TrimSuffix(list, "from")
	list = regexp.MustCompile(`^distinct on \([^)]*\)`).ReplaceAllString(list, "")
	var cols []string
	for _, c := range strings.Split(list, ",") {
		c = strings.TrimSpace(c)
		if i := strings.LastIndex(c, " as "); i >= 0 {
			c = c[i+4:]
		}
		if i := strings.LastIndexByte(c, '.'); i >= 0 {
			c = c[i+1:]
		}
		cols = append(cols, c)
	}
	return cols
}

// TestContractStagingAndDBTAgree: the orders contract is the one source of the columns. The
// staging table the validator creates from it, the dbt source that reads that table, the
// staging view, the upsert model and its documented tests all list the same columns, in the
// same order, and the model's key and version are the contract's.
func TestContractStagingAndDBTAgree(t *testing.T) {
	c, err := Load("orders", "")
	if err != nil {
		t.Fatal(err)
	}
	const part = "load_date" // config.Target's default partition column, which the models use
	contractCols := c.ColumnNames()
	withPart := append(slices.Clone(contractCols), part)
	staging := append(slices.Clone(withPart), RunIDColumn)

	// The staging DDL the validator runs.
	ddl := c.StagingDDL("public", "staging_orders", part)
	var ddlCols []string
	for _, m := range regexp.MustCompile(`"([a-z_0-9]+)" [a-z]+`).FindAllStringSubmatch(ddl[strings.Index(ddl, "("):], -1) {
		ddlCols = append(ddlCols, m[1])
	}
	if !slices.Equal(ddlCols, staging) {
		t.Errorf("staging DDL columns %v, want %v", ddlCols, staging)
	}

	// dbt's source: the staging table.
	var sources struct {
		Sources []struct {
			Tables []struct {
				Name    string `yaml:"name"`
				Columns []struct {
					Name string `yaml:"name"`
				} `yaml:"columns"`
			} `yaml:"tables"`
		} `yaml:"sources"`
	}
	if err := yaml.Unmarshal([]byte(readDBT(t, "models/staging/sources.yml")), &sources); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range sources.Sources {
		for _, tbl := range s.Tables {
			if tbl.Name != "staging_"+c.Name {
				continue
			}
			found = true
			var names []string
			for _, col := range tbl.Columns {
				names = append(names, col.Name)
			}
			if !slices.Equal(names, staging) {
				t.Errorf("sources.yml staging_%s columns %v, want %v", c.Name, names, staging)
			}
		}
	}
	if !found {
		t.Errorf("sources.yml declares no staging_%s", c.Name)
	}

	// The staging view and the upsert model.
	stg := readDBT(t, "models/staging/stg_orders.sql")
	if got := selectList(t, stg, "{{ source('sluice', 'staging_orders') }}"); !slices.Equal(got, withPart) {
		t.Errorf("stg_orders selects %v, want %v", got, withPart)
	}
	model := readDBT(t, "models/marts/orders.sql")
	if got := selectList(t, model, "{{ ref('stg_orders') }}"); !slices.Equal(got, withPart) {
		t.Errorf("orders' staged CTE selects %v, want %v", got, withPart)
	}
	if got := selectList(t, model, "from staged as s"); !slices.Equal(got, withPart) {
		t.Errorf("orders selects %v, want %v", got, withPart)
	}
	for _, want := range []string{
		"unique_key='" + c.Key + "'",
		"distinct on (" + c.Key + ")",
		"order by " + c.Key + ", " + c.VersionColumn + " desc",
		"s." + c.VersionColumn + " > t." + c.VersionColumn,
		"t." + c.Key + " = s." + c.Key,
	} {
		if !strings.Contains(model, want) {
			t.Errorf("orders.sql does not contain %q: its key or version is not the contract's", want)
		}
	}

	// The documented models list the same columns, and test the key.
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
			if m.Name == "orders" && col.Name == c.Key && !(slices.Contains(col.Tests, "unique") && slices.Contains(col.Tests, "not_null")) {
				t.Errorf("schema.yml: orders.%s is not tested unique and not_null", c.Key)
			}
		}
		if !slices.Equal(names, withPart) {
			t.Errorf("schema.yml model %s columns %v, want %v", m.Name, names, withPart)
		}
	}
	if len(schema.Models) != 2 {
		t.Errorf("schema.yml documents %d models, want stg_orders and orders", len(schema.Models))
	}
}
