// Package check is sluice's infrastructure check: it reads the Terraform, Kubernetes, NATS,
// docker compose and GitHub Actions files under deploy/ and .github/ with the libraries those
// ecosystems use (hcl/v2, kustomize, k8s.io/api, compose-go, actionlint) and evaluates the OPA
// policies of deploy/policy on them. Everything it checks is offline: it proves what can be
// proved without a cluster or a cloud account (deploy/README.md says what cannot).
package check

import (
	"errors"
	"os"
	"path/filepath"
)

// RepoRoot is the directory holding go.work, found from dir upwards.
func RepoRoot(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("no go.work above " + dir)
		}
		d = parent
	}
}
