package check

import (
	"context"
	"reflect"
	"sort"
	"testing"
)

// composeEnforced says which container rules hold for a compose service. The compose stack is
// the local topology: every image must be pinned, and sluice's own services (built here) must
// run as a non-root user (their Dockerfile's USER) with a healthcheck. Read-only root
// filesystems, dropped capabilities, no-new-privileges and limits are enforced on Kubernetes;
// in compose they are reported (TestComposeFile's log), not required.
func composeEnforced(s ComposeService, rule string) bool {
	switch rule {
	case "k8s_image_pinned":
		return true
	case "k8s_non_root", "k8s_probes":
		return s.BuiltFrom != ""
	}
	return false
}

func composeViolations(t *testing.T, file string) (enforced, reported []Violation) {
	t.Helper()
	ctx := context.Background()
	p, err := LoadCompose(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	services, err := ComposeServices(p)
	if err != nil {
		t.Fatal(err)
	}
	pol := policy(t, "sluice.kubernetes")
	for _, s := range services {
		vs, err := pol.Eval(ctx, map[string]any{"objects": []any{s.Doc}})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vs {
			if composeEnforced(s, v.Rule) {
				enforced = append(enforced, v)
			} else {
				reported = append(reported, v)
			}
		}
		c := s.Doc["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
		sc := c["securityContext"].(map[string]any)
		if sc["privileged"] == true || len(sc["capabilities"].(map[string]any)["add"].([]any)) > 0 {
			enforced = append(enforced, Violation{"compose_privileged", s.Doc["metadata"].(map[string]any)["name"].(string) + ": privileged or cap_add"})
		}
	}
	return enforced, reported
}

// The compose checks find what they are for, on a bad fixture.
func TestComposeRulesOnFixture(t *testing.T) {
	enforced, _ := composeViolations(t, path(t, "deploy", "check", "testdata", "compose", "docker-compose.yml"))
	var got []string
	for _, v := range enforced {
		got = append(got, v.Rule+" "+v.Msg)
	}
	sort.Strings(got)
	want := []string{
		"compose_privileged db: privileged or cap_add",
		`k8s_image_pinned ComposeService app, container app: image "fixture/app:latest" must name a version tag or a digest, not latest or nothing`,
		`k8s_image_pinned ComposeService db, container db: image "postgres" must name a version tag or a digest, not latest or nothing`,
		"k8s_non_root ComposeService app, container app: must run as non-root (runAsNonRoot: true, no runAsUser: 0)",
		"k8s_probes ComposeService app, container app: livenessProbe must be set",
		"k8s_probes ComposeService app, container app: readinessProbe must be set",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
}
