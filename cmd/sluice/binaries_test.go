package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-etl/sluice/pkg/testkit"
)

// A single-service binary links only what it uses: built as it ships (-tags grpcnotrace, see
// scripts/prepare.sh), none links nats-server (the embedded broker is the CLI's), and none but the
// two that render HTML links html/template, whose reflection (text/template's MethodByName) makes
// the linker keep every exported method of every type: the fetcher is 29 MB without it, 46 MB with.
func TestServiceBinariesLinkOnlyWhatTheyUse(t *testing.T) {
	root := testkit.RepoRoot(t)
	html := []string{"alerter", "console"} // email bodies and the console's pages
	for _, svc := range []string{"sensor", "fetcher", "validator", "partitioner", "dbtrunner", "alerter", "console"} {
		cmd := exec.Command("go", "list", "-tags", "grpcnotrace", "-deps", "-f", `{{.ImportPath}}: {{join .Imports " "}}`, "./cmd/sluice-"+svc)
		cmd.Dir = filepath.Join(root, "services", svc)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", svc, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			pkg, imports, _ := strings.Cut(line, ": ")
			for _, imp := range strings.Fields(imports) {
				switch {
				case strings.HasPrefix(imp, "github.com/nats-io/nats-server/"):
					t.Errorf("sluice-%s links nats-server (%s imports %s)", svc, pkg, imp)
				case (imp == "text/template" || imp == "html/template") && !strings.HasPrefix(pkg, "text/template") &&
					!strings.HasPrefix(pkg, "html/template") && !slices.Contains(html, svc):
					t.Errorf("sluice-%s links %s (imported by %s)", svc, imp, pkg)
				}
			}
		}
	}
}

// Every service folder has one shape: service.go (the wiring) and a README.md with the same
// headings, so a reader finds the same things in the same places.
func TestEveryServiceHasTheSameShape(t *testing.T) {
	root := testkit.RepoRoot(t)
	dirs, err := filepath.Glob(filepath.Join(root, "services", "*", "go.mod"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no services under %s (%v)", root, err)
	}
	for _, mod := range dirs {
		dir := filepath.Dir(mod)
		if _, err := os.Stat(filepath.Join(dir, "service.go")); err != nil {
			t.Errorf("%s has no service.go: %v", dir, err)
		}
		readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
		if err != nil {
			t.Errorf("%s has no README.md: %v", dir, err)
			continue
		}
		for _, h := range []string{"## Consumes", "## Produces", "## Owns", "## May call"} {
			if !strings.Contains(string(readme), "\n"+h+"\n") {
				t.Errorf("%s/README.md has no %q heading", dir, h)
			}
		}
	}
}
