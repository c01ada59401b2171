package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/sluice-etl/sluice/pkg/config"

	"github.com/sluice-etl/sluice/services/console"
)

// consoleCmd serves the web console alone: on the broker of a running `sluice up` or the
// configured one, or else on an embedded server over nats.data_dir (the runs of `make demo`).
type consoleCmd struct {
	common
	Addr string `placeholder:"HOST:PORT" help:"address to listen on (default console.addr)"`
}

func (c *consoleCmd) run(ctx context.Context, stdout, stderr io.Writer) error {
	// The console reads only the bus: references it never uses (PostgreSQL, S3 keys) may be
	// unset, as they are after `make demo`. Its password's may not.
	missing := map[string]bool{}
	cfg, err := config.Load(c.Config, func(name string) (string, bool) {
		v, ok := os.LookupEnv(name)
		if !ok {
			missing[name] = true
			return "", true
		}
		return v, true
	})
	if err != nil {
		return err
	}
	if ref := cfg.Console.Password.String(); strings.HasPrefix(ref, "env:") && missing[strings.TrimPrefix(ref, "env:")] {
		return fmt.Errorf("console.password: environment variable %s is not set", strings.TrimPrefix(ref, "env:"))
	}
	if c.NATS == "" && cfg.NATS.URL.Reveal() == "" {
		if conn, err := net.DialTimeout("tcp", cfg.NATS.Listen, 300*time.Millisecond); err == nil {
			conn.Close() // a `sluice up` serves the bus (and a console of its own)
		} else if host, _, err := net.SplitHostPort(cfg.NATS.Listen); err == nil {
			// An embedded server over nats.data_dir, on a port of its own: a later `sluice run`
			// must not take it for a `sluice up` with services.
			cfg.NATS.Listen = net.JoinHostPort(host, "-1")
		}
	}
	st, err := c.connect(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	_, done, err := console.Start(ctx, st.Deps, c.Addr)
	if err != nil {
		return err
	}
	url := cfg.Console.URL
	if c.Addr != "" {
		url = "http://" + c.Addr
	}
	mode := "read-only (set console.password to log in and act)"
	if cfg.Console.Password.Reveal() != "" {
		mode = "log in with console.password to act"
	}
	fmt.Fprintf(stdout, "sluice console on %s — %s; Ctrl-C to stop\n", url, mode)
	<-done
	return st.Wait()
}
