package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/testkit"
)

// TestReadmeRunningItYourself pastes the README's "Running it yourself" commands, as written,
// into a fresh shell in a fresh clone (no sluice variables set) and checks that they complete a
// run. The clone prepares its own binaries and dbt virtualenv, from the machine's Go and pip
// caches that `make test` filled.
func TestReadmeRunningItYourself(t *testing.T) {
	root := testkit.RepoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## Running it yourself\n\n```sh\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no ```sh block right under \"## Running it yourself\"")
	}
	commands := string(m[1])

	clone := filepath.Join(t.TempDir(), "sluice")
	git := exec.Command("git", "clone", "--quiet", root, clone)
	if out, err := git.CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		// Whatever the commands left running or on disk (make clean stops and removes it all).
		cmd := exec.Command("make", "-s", "clean")
		cmd.Dir = clone
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("make clean in the clone: %v\n%s", err, out)
		}
	})

	// The commands use sluice.yaml's fixed addresses: wait for another demo on this machine
	// to let go of them.
	for _, addr := range []string{"127.0.0.1:18081", "127.0.0.1:14222"} {
		deadline := time.Now().Add(3 * time.Minute)
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				break
			}
			c.Close()
			if time.Now().After(deadline) {
				t.Fatalf("%s stays in use (a `make demo` or `sluice up` running?): the README's commands need it", addr)
			}
			time.Sleep(2 * time.Second)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	shell := exec.CommandContext(ctx, "bash", "-e", "-c", commands)
	shell.Dir = clone
	for _, kv := range os.Environ() { // a fresh shell: none of sluice's settings
		name, _, _ := strings.Cut(kv, "=")
		if name == "DATABASE_URL" || strings.HasPrefix(name, "SLUICE_") {
			continue
		}
		shell.Env = append(shell.Env, kv)
	}
	var out bytes.Buffer
	shell.Stdout, shell.Stderr = &out, &out
	err = shell.Run()
	t.Logf("the README's commands:\n%s\noutput:\n%s", commands, out.String())
	if err != nil {
		t.Fatalf("the README's commands failed: %v", err)
	}
	for _, want := range []string{"Summary  orders 2026-11-25", "completed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the output does not say %q", want)
		}
	}
	if !regexp.MustCompile(`(?m)^orders +2026-11-25 +\S+ +run +completed`).MatchString(out.String()) {
		t.Error("sluice status does not list the run as completed, trigger run")
	}
}
