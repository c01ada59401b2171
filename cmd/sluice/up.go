package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// cmdUp runs all six services in this process until interrupted.
func cmdUp(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	var c common
	c.register(fs)
	httpAddr := fs.String("http", "127.0.0.1:8080", "address for /healthz, /readyz and /metrics")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := c.load()
	if err != nil {
		return err
	}
	log := telemetry.Logger(stderr, slog.LevelInfo)
	st, err := app.Start(ctx, cfg, log, app.Options{NATSURL: c.nats, HTTPAddr: *httpAddr, Env: os.LookupEnv}, allServices...)
	if err != nil {
		return err
	}
	log.Info("sluice up: all services running", "pipelines", len(cfg.Pipelines))
	return st.Wait()
}
