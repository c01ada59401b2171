package check

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// docker-compose.yml loads with compose-go as `docker compose` loads it, and its services meet
// the container rules that apply to the compose stack (composeEnforced); the rules it does not
// enforce there are listed in the log, so the gap stays visible.
func TestComposeFile(t *testing.T) {
	enforced, reported := composeViolations(t, path(t, "docker-compose.yml"))
	for _, v := range enforced {
		t.Error(v)
	}
	byRule := map[string][]string{}
	for _, v := range reported {
		name := strings.SplitN(strings.TrimPrefix(strings.TrimPrefix(v.Msg, "ComposeService "), "ComposeJob "), ",", 2)[0]
		byRule[v.Rule] = append(byRule[v.Rule], name)
	}
	var rules []string
	for r := range byRule {
		rules = append(rules, r)
	}
	sort.Strings(rules)
	for _, r := range rules {
		t.Logf("not enforced in compose: %s: %s", r, strings.Join(dedupe(byRule[r]), ", "))
	}
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// The compose NATS server runs the one permission file: it mounts deploy/nats, its config
// includes auth.conf, and its environment has the password of every user auth.conf names (the
// Helm values are generated from the same file: TestNATSHelmUsers).
func TestComposeNATSUsesThePermissionFile(t *testing.T) {
	p, err := LoadCompose(context.Background(), path(t, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	nats, ok := p.Services["nats"]
	if !ok {
		t.Fatal("docker-compose.yml has no nats service")
	}
	mounted := false
	for _, v := range nats.Volumes {
		if v.Source == path(t, "deploy", "nats") {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("the compose nats service does not mount deploy/nats (volumes %v)", nats.Volumes)
	}
	conf, err := os.ReadFile(path(t, "deploy", "nats", "nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\s*include\s+"?\./auth\.conf"?`).Match(conf) {
		t.Error("deploy/nats/nats-server.conf does not include ./auth.conf")
	}
	users, err := ParseNATSAuth(path(t, "deploy", "nats", "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if v, ok := nats.Environment[u.PasswordVar]; !ok || v == nil {
			t.Errorf("the compose nats service's environment lacks %s (user %s)", u.PasswordVar, u.User)
		}
	}
	t.Logf("%d users, %s", len(users), fmt.Sprint(nats.Command))
}
