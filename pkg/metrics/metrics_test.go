package metrics_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-etl/sluice/pkg/metrics"
)

// root is the repository root, from this package's directory.
const root = "../.."

var metricRe = regexp.MustCompile(`\bsluice_[a-z_]+\b`)

func exported(t *testing.T) map[string]bool {
	t.Helper()
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, n := range m.Names() {
		out[n] = true
	}
	return out
}

// checkExpr fails unless expr names at least one sluice metric and only ones sluice exports, and
// its brackets balance.
func checkExpr(t *testing.T, where, expr string, known map[string]bool) {
	t.Helper()
	names := metricRe.FindAllString(expr, -1)
	if len(names) == 0 {
		t.Errorf("%s: %q names no sluice metric", where, expr)
	}
	for _, n := range names {
		base := n
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(n, suffix); ok && known[b] {
				base = b
			}
		}
		if !known[base] {
			t.Errorf("%s: %q uses %s, which sluice does not export", where, expr, n)
		}
	}
	depth := map[rune]int{}
	pairs := map[rune]rune{')': '(', '}': '{', ']': '['}
	for _, r := range expr {
		switch r {
		case '(', '{', '[':
			depth[r]++
		case ')', '}', ']':
			if depth[pairs[r]]--; depth[pairs[r]] < 0 {
				t.Errorf("%s: %q: unbalanced %c", where, expr, r)
			}
		}
	}
	for r, d := range depth {
		if d != 0 {
			t.Errorf("%s: %q: unbalanced %c", where, expr, r)
		}
	}
}

func TestDashboardIsValidAndQueriesSluiceMetrics(t *testing.T) {
	known := exported(t)
	b, err := os.ReadFile(filepath.Join(root, "deploy/grafana/dashboards/sluice.json"))
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		Expr       string `json:"expr"`
		RefID      string `json:"refId"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	}
	var dash struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			ID      int                      `json:"id"`
			Type    string                   `json:"type"`
			Title   string                   `json:"title"`
			Targets []target                 `json:"targets"`
			Grid    struct{ X, Y, W, H int } `json:"gridPos"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("dashboard needs a uid and a title")
	}
	// The data source uid the dashboard uses is the one provisioned.
	var prov struct {
		Datasources []struct{ UID, Type string } `yaml:"datasources"`
	}
	pb, err := os.ReadFile(filepath.Join(root, "deploy/grafana/provisioning/datasources/sluice.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(pb, &prov); err != nil {
		t.Fatal(err)
	}
	var promUID string
	for _, d := range prov.Datasources {
		if d.Type == "prometheus" {
			promUID = d.UID
		}
	}
	ids := map[int]bool{}
	titles := []string{}
	queries := 0
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		titles = append(titles, strings.ToLower(p.Title))
		if p.Grid.W <= 0 || p.Grid.H <= 0 || p.Grid.X+p.Grid.W > 24 {
			t.Errorf("panel %q: bad grid position %+v", p.Title, p.Grid)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			if tg.Datasource.UID != promUID {
				t.Errorf("panel %q queries data source %q, provisioned is %q", p.Title, tg.Datasource.UID, promUID)
			}
			checkExpr(t, "panel "+p.Title, tg.Expr, known)
		}
	}
	for _, v := range dash.Templating.List {
		checkExpr(t, "variable "+v.Name, v.Definition, known)
	}
	for _, want := range []string{"runs per pipeline", "latency", "rows", "failures", "lag"} {
		if !slices.ContainsFunc(titles, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("no panel about %q", want)
		}
	}
	if queries < 10 {
		t.Errorf("only %d queries", queries)
	}
}

func TestAlertRulesQuerySluiceMetrics(t *testing.T) {
	known := exported(t)
	b, err := os.ReadFile(filepath.Join(root, "deploy/prometheus/rules/sluice.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			checkExpr(t, "alert "+r.Alert, r.Expr, known)
		}
	}
	for _, want := range []string{"SluiceRunFailureRateHigh", "SluiceConsumerLag", "SluiceSLAMissed", "SluiceNoSuccessfulRun"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s", want)
		}
	}
}

// Every metric is documented.
func TestEveryMetricIsInTheDocs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "docs/observability.md"))
	if err != nil {
		t.Fatal(err)
	}
	for name := range exported(t) {
		if !strings.Contains(string(b), "`"+name+"`") {
			t.Errorf("docs/observability.md does not describe %s", name)
		}
	}
}
