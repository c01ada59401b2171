package check

import (
	"bytes"
	"os"
	"sort"
	"strings"
	"testing"
)

// The NATS users of the Helm values are those of deploy/nats/auth.conf, the one permission
// file (compose mounts it; the Helm values are generated from it, -update regenerates), and
// every service of the production overlay connects as a user the file has.
func TestNATSHelmUsers(t *testing.T) {
	users, err := ParseNATSAuth(path(t, "deploy", "nats", "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := HelmAuthValues(users)
	if err != nil {
		t.Fatal(err)
	}
	file := path(t, "deploy", "k8s", "nats", "values-auth.yaml")
	got, _ := os.ReadFile(file)
	if *update && !bytes.Equal(got, want) {
		if err := os.WriteFile(file, want, 0o644); err != nil {
			t.Fatal(err)
		}
		got = want
	}
	helm, err := HelmUsers(got)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range SameUsers(users, helm) {
		t.Errorf("values-auth.yaml vs auth.conf: %s (go test -run TestNATSHelmUsers -update regenerates it)", d)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("values-auth.yaml is not what auth.conf generates (go test -run TestNATSHelmUsers -update)")
	}

	names := map[string]bool{}
	for _, u := range users {
		names[u.User] = true
	}
	d := decoder(t)
	seen := map[string]bool{}
	for _, o := range production(t) {
		if o.Kind() != "Deployment" && o.Kind() != "Job" {
			continue
		}
		obj, err := d.Decode(o)
		if err != nil {
			t.Fatal(err)
		}
		env := literalEnv(podContainers(t, obj)[0].Env)
		user := env["NATS_USER"]
		if !names[user] {
			t.Errorf("%s connects to NATS as %q, which auth.conf does not have", o, user)
		}
		if o.Kind() == "Deployment" && user != strings.TrimPrefix(o.Name(), "sluice-") {
			t.Errorf("%s connects as %q, not as its own user", o, user)
		}
		seen[user] = true
	}
	var unused []string
	for n := range names {
		if !seen[n] {
			unused = append(unused, n)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Errorf("auth.conf users no workload uses: %v", unused)
	}
}
