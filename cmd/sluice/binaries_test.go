package main

import (
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
