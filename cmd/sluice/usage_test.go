package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-etl/sluice/pkg/testkit"
)

// The usage is generated from the commands' flags (kong), so it cannot drift from them; these
// tests hold the README's copy to it and check that every command and flag is described.

func TestReadmeCommandReferenceIsTheUsage(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(testkit.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)### Command reference\n.*?```text\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no ```text block under \"### Command reference\"")
	}
	if want := synopses(newParser(nil, nil).Model); string(m[1]) != want {
		t.Errorf("README.md's command reference is not `sluice --help`'s synopses; paste these:\n%s", want)
	}
}

func TestHelpDescribesEveryCommandAndFlag(t *testing.T) {
	var top, stderr bytes.Buffer
	if code := exitCode(run(context.Background(), []string{"--help"}, &top, &stderr), &stderr); code != 0 {
		t.Fatalf("sluice --help: exit %d\n%s", code, stderr.String())
	}
	for _, want := range []string{"  sluice status ", "[--interval D]", "[-v]", "Exit codes"} {
		if !strings.Contains(top.String(), want) {
			t.Errorf("sluice --help does not say %q:\n%s", want, top.String())
		}
	}
	for _, cmd := range newParser(nil, nil).Model.Children {
		if !strings.Contains(top.String(), "sluice "+cmd.Name) && cmd.Name != "help" {
			t.Errorf("sluice --help does not list %s", cmd.Name)
		}
		for _, args := range [][]string{{cmd.Name, "--help"}, {"help", cmd.Name}} {
			var stdout, stderr bytes.Buffer
			code := exitCode(run(context.Background(), args, &stdout, &stderr), &stderr)
			if code != 0 || stderr.Len() != 0 {
				t.Errorf("sluice %s: exit %d, stderr %q", strings.Join(args, " "), code, stderr.String())
			}
			for _, f := range cmd.Flags {
				if !strings.Contains(stdout.String(), "--"+f.Name) {
					t.Errorf("sluice %s does not describe --%s:\n%s", strings.Join(args, " "), f.Name, stdout.String())
				}
			}
		}
	}
}

func TestGoStyleFlagsStillParse(t *testing.T) {
	got := goFlagStyle(newParser(nil, nil).Model, []string{"sample-source", "-addr", "127.0.0.1:0", "-rows=5", "-v", "-x", "--dir", "d", "--", "-rows"})
	want := []string{"sample-source", "--addr", "127.0.0.1:0", "--rows=5", "-v", "-x", "--dir", "d", "--", "-rows"}
	if !slices.Equal(got, want) {
		t.Errorf("goFlagStyle: %q, want %q", got, want)
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"run", "-config", filepath.Join(t.TempDir(), "none.yaml"), "-pipeline", "orders", "-date", "2026-11-25"}, &stdout, &stderr)
	if code := exitCode(err, &stderr); code != exitFailed || !strings.Contains(stderr.String(), "none.yaml") {
		t.Errorf("run with one-dash flags and a missing config: exit %d, want %d naming the file:\n%s", code, exitFailed, stderr.String())
	}
}
