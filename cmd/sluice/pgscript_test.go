package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-etl/sluice/pkg/testkit"
)

// scripts/pg.sh keeps its cluster inside the directory it is given, also as root in a private
// (0700) checkout, and `stop --clean` removes it: deleting the directory and starting again
// gives a fresh database, never the old one back (as root it used to live under /tmp).
func TestPgScriptKeepsItsClusterInsideItsDirectory(t *testing.T) {
	script := filepath.Join(testkit.RepoRoot(t), "scripts", "pg.sh")
	home := filepath.Join(t.TempDir(), "home")
	if err := os.MkdirAll(filepath.Join(home, "clone"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(home, "clone", ".sluice", "pg")
	sh := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(script, args...).Output()
		if err != nil {
			var stderr string
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("pg.sh %v: %v\n%s", args, err, stderr)
		}
		return strings.TrimSpace(string(out))
	}
	t.Cleanup(func() { _ = exec.Command(script, "stop", dir, "--clean").Run() })
	ctx := context.Background()
	exec1 := func(url, sql string) error {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}

	url := sh("start", dir)
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		t.Fatalf("the cluster is not in %s: %v", dir, err)
	}
	if err := exec1(url, "CREATE TABLE left_behind (x int)"); err != nil {
		t.Fatal(err)
	}
	sh("stop", dir, "--clean")
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Fatalf("stop --clean left %s/data (%v)", dir, err)
	}
	if err := os.RemoveAll(filepath.Join(home, "clone")); err != nil {
		t.Fatal(err)
	}
	url = sh("start", dir)
	if err := exec1(url, "SELECT * FROM left_behind"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("a fresh directory brought back the old database (%v)", err)
	}
	sh("stop", dir, "--clean")
}
