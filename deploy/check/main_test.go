package check

import (
	"context"
	"flag"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite generated files (deploy/README.md's policy table, deploy/k8s/nats/values-auth.yaml)")

// repo is the repository root; paths in tests are relative to it.
func repo(t *testing.T) string {
	t.Helper()
	root, err := RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func path(t *testing.T, elem ...string) string {
	return filepath.Join(append([]string{repo(t)}, elem...)...)
}

func policy(t *testing.T, pkg string) *Policy {
	t.Helper()
	p, err := NewPolicy(context.Background(), path(t, "deploy", "policy"), pkg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func objectFromYAML(t *testing.T, y string) Object {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(y), &doc); err != nil {
		t.Fatal(err)
	}
	return Object{YAML: []byte(y), Doc: doc}
}
