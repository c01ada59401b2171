package dbtrunner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-etl/sluice/pkg/config"
)

// TestCheckModels: the repository's models use the macros; a target model written by hand (which
// would bypass the fence) is refused by pipeline and file; a pipeline without a model is only
// reported.
func TestCheckModels(t *testing.T) {
	repo := filepath.Join("..", "..", "dbt_project")
	p := func(name string) config.Pipeline {
		return config.Pipeline{Name: name, Target: config.Target{Table: name}}
	}
	missing, err := CheckModels(repo, []config.Pipeline{p("orders"), p("events")})
	if err != nil || len(missing) != 0 {
		t.Fatalf("repository models: missing %v, err %v", missing, err)
	}

	dir := t.TempDir()
	for path, text := range map[string]string{
		"dbt_project.yml":                "name: x\nmodel-paths: [\"m\"]\n",
		"m/feed/feed.sql":                "{# {{ sluice_upsert('feed') }} #}\nselect * from {{ ref('stg_feed') }}\n",
		"m/stock/stock.sql":              "{{- sluice_upsert( \"stock\" ) }}\n",
		"m/other/wrong_pipeline.sql":     "{{ sluice_upsert('stock') }}\n",
		"m/other/stg_wrong_pipeline.sql": "select 1\n",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, path), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	missing, err = CheckModels(dir, []config.Pipeline{p("feed"), p("stock"), p("wrong_pipeline"), p("absent")})
	if err == nil {
		t.Fatal("a model without sluice_upsert passed")
	}
	for _, want := range []string{"pipeline feed: dbt model " + filepath.Join(filepath.Base(dir), "m", "feed", "feed.sql") + " does not call {{ sluice_upsert('feed') }}",
		"pipeline wrong_pipeline: dbt model"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v\nwant it to contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "pipeline stock") {
		t.Errorf("stock's model uses the macro, yet: %v", err)
	}
	if len(missing) != 1 || !strings.Contains(missing[0], "pipeline absent: the dbt project has no model absent.sql") {
		t.Errorf("missing = %v", missing)
	}
}
