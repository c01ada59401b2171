package app_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

// silent accepts connections and never answers: a PostgreSQL or S3 that hangs.
func silent(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // held open, never read or written
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// A NATS server, PostgreSQL or S3 that accepts connections and never answers fails the start within
// connect_timeout, with one line naming the dependency, instead of hanging it forever.
func TestSilentDependencyFailsStartWithinTheDeadline(t *testing.T) {
	ns := testkit.NATS(t)
	addr := silent(t)
	for _, c := range []struct {
		dep  string
		open func(context.Context, *app.Deps) error
		want string
	}{
		{"nats", nil, "connect to nats nats://" + addr},
		{"postgres", func(ctx context.Context, d *app.Deps) error { _, err := d.Postgres(ctx); return err },
			"postgres (env:PG_URL): no answer within 2s (connect_timeout)"},
		{"s3", func(ctx context.Context, d *app.Deps) error { _, err := d.S3(ctx); return err },
			"s3 (bucket landing): no answer within 2s (connect_timeout)"},
	} {
		path := filepath.Join(t.TempDir(), "sluice.yaml")
		text := fmt.Sprintf("connect_timeout: 2s\nnats:\n  url: env:NATS_URL\npostgres:\n  url: env:PG_URL\ns3:\n  endpoint: http://%s\n  bucket: landing\n  path_style: true\n  access_key: env:K\n  secret_key: env:K\npipelines:\n  - name: orders\n    source:\n      url: http://127.0.0.1:1/{ds}.csv\n", addr)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		vars := map[string]string{"NATS_URL": ns.ClientURL(), "PG_URL": "postgres://u:pw@" + addr + "/db?sslmode=disable", "K": "key"}
		if c.open == nil { // the broker itself is silent
			vars["NATS_URL"] = "nats://" + addr
			c.open = func(context.Context, *app.Deps) error { return nil }
		}
		cfg, err := config.Load(path, func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
		if err != nil {
			t.Fatal(err)
		}
		svc := app.Service{Name: "probe", Routes: func(ctx context.Context, d *app.Deps) ([]flow.Route, error) { return nil, c.open(ctx, d) }}
		done := make(chan error, 1)
		go func() {
			st, err := app.Start(context.Background(), cfg, telemetry.Logger(io.Discard, 0), app.Options{Provision: true}, svc)
			if err == nil {
				err = fmt.Errorf("started")
				_ = st
			}
			done <- err
		}()
		select {
		case err := <-done:
			if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "pw") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("%s: %v, want one line saying %q", c.dep, err, c.want)
			}
		case <-time.After(time.Minute):
			t.Fatalf("a silent %s hung the start for a minute (connect_timeout 2s)", c.dep)
		}
	}
}
