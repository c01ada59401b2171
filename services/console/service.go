package console

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/secret"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// Start builds the console on a running stack and serves it on addr (console.addr when empty)
// until ctx ends; `sluice up` runs it this way. The returned channel reports the server's end.
func Start(ctx context.Context, d *app.Deps, addr string) (*Console, <-chan error, error) {
	c, err := New(ctx, FromApp(d))
	if err != nil {
		return nil, nil, err
	}
	if addr == "" {
		addr = d.Config.Console.Addr
	}
	ready := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		err := c.Serve(ctx, addr, func(net.Addr) { ready <- nil })
		ready <- err
		done <- err
	}()
	if err := <-ready; err != nil {
		return nil, nil, err
	}
	return c, done, nil
}

// Main is the body of sluice-console: flags, config, serve until signalled.
func Main(ctx context.Context, args []string, lookup secret.Lookup, stderr io.Writer) error {
	fs := flag.NewFlagSet("sluice-console", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "sluice.yaml", "config file")
	natsURL := fs.String("nats", "", "NATS URL (overrides nats.url)")
	addr := fs.String("addr", "", "address the console listens on (overrides console.addr)")
	httpAddr := fs.String("http", "", "address for /healthz, /readyz and /metrics (off when empty)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath, lookup)
	if err != nil {
		return err
	}
	log := telemetry.Logger(stderr, slog.LevelInfo)
	st, err := app.Start(ctx, cfg, log, app.Options{NATSURL: *natsURL, HTTPAddr: *httpAddr, NoRouter: true, Env: lookup})
	if err != nil {
		return err
	}
	_, done, err := Start(ctx, st.Deps, *addr)
	if err != nil {
		return err
	}
	err = errors.Join(<-done, st.Wait())
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
