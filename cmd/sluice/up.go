package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/services/console"
)

// cmdUp runs all six services and the web console in this process until interrupted.
func cmdUp(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	var c common
	c.register(fs)
	httpAddr := fs.String("http", "127.0.0.1:8080", "address for /healthz, /readyz and /metrics")
	consoleAddr := fs.String("console", "", "address of the web console (default console.addr; off to run none)")
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
	if *consoleAddr != "off" {
		if _, _, err := console.Start(ctx, st.Deps, *consoleAddr); err != nil {
			return err
		}
	}
	log.Info("sluice up: all services running", "pipelines", len(cfg.Pipelines), "console", cfg.Console.URL)
	return st.Wait()
}
