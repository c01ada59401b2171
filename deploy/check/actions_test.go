package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The workflows pass actionlint and the project's rules (pinned SHAs, declared permissions),
// and there are the four jobs the issue asks for: tests, infra checks, images, deploy.
func TestWorkflows(t *testing.T) {
	files, problems, err := LintWorkflows(repo(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("found %d workflows under .github/workflows", len(files))
	}
	for _, p := range problems {
		t.Error(p)
	}
	var all strings.Builder
	for _, f := range files {
		ps, err := WorkflowPolicy(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			t.Error(p)
		}
		b, _ := os.ReadFile(f)
		all.Write(b)
	}
	for _, want := range []string{"make test", "make infra-check", "provenance: mode=max", "attest-build-provenance", "environment: production", "terraform apply", "kubectl apply -k"} {
		if !strings.Contains(all.String(), want) && !strings.Contains(all.String(), strings.Replace(want, "make test", "bash .ci/run", 1)) {
			t.Errorf("no workflow does %q", want)
		}
	}
}

// The rules catch what they are for.
func TestWorkflowPolicyFindsUnpinnedAndUnscoped(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yml")
	if err := os.WriteFile(bad, []byte(`name: bad
on: push
jobs:
  deploy:
    runs-on: ubuntu-24.04
    permissions:
      id-token: write
    steps:
      - uses: actions/checkout@v4
      - run: terraform apply -auto-approve
`), 0o644); err != nil {
		t.Fatal(err)
	}
	ps, err := WorkflowPolicy(bad)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(ps, "\n")
	for _, want := range []string{"no top-level permissions", "actions/checkout@v4: pin actions", "changes production (terraform apply) outside an environment"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}

// Every image the production overlay runs is one the release workflow builds, from a stage of the
// Dockerfile that exists, and the release builds nothing the overlay does not run.
func TestReleaseBuildsEveryDeployedImage(t *testing.T) {
	b, err := os.ReadFile(path(t, ".github", "workflows", "release.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var wf struct {
		Jobs map[string]struct {
			Strategy struct {
				Matrix struct {
					Include []struct{ Image, Target, Service string } `json:"include"`
				} `json:"matrix"`
			} `json:"strategy"`
		} `json:"jobs"`
	}
	if err := yaml.Unmarshal(b, &wf); err != nil {
		t.Fatal(err)
	}
	built := map[string]bool{}
	for _, row := range wf.Jobs["images"].Strategy.Matrix.Include {
		built[row.Image] = true
		if _, err := dockerfileUser(path(t, "Dockerfile"), row.Target); err != nil || row.Service == "" {
			t.Errorf("release builds %s from target %q with SERVICE %q: %v", row.Image, row.Target, row.Service, err)
		}
	}
	deployed := map[string]bool{}
	for _, o := range production(t) {
		for _, c := range podContainers(t, mustDecode(t, o)) {
			name := c.Image[strings.LastIndex(c.Image, "/")+1:]
			deployed[strings.SplitN(name, ":", 2)[0]] = true
		}
	}
	for img := range deployed {
		if !built[img] {
			t.Errorf("the production overlay runs image %s, which the release workflow does not build", img)
		}
	}
	for img := range built {
		if !deployed[img] {
			t.Errorf("the release workflow builds %s, which the production overlay does not run", img)
		}
	}
	if len(deployed) < 8 {
		t.Errorf("only %d images deployed: %v", len(deployed), deployed)
	}
}
