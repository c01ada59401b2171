package main

import (
	"context"
	"io"
	"log/slog"
	"os"

	"github.com/sluice-etl/sluice/cmd/sluice/internal/embedded"
	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/services/console"
)

// cmdUp runs all six services and the web console in this process until interrupted.
func cmdUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("up", args, stdout, stderr)
	var c common
	c.register(fs.FlagSet)
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
	st, err := app.Start(ctx, cfg, log, app.Options{NATSURL: c.nats, HTTPAddr: *httpAddr, Env: os.LookupEnv, Embed: embedded.Start}, allServices...)
	if err != nil {
		return err
	}
	if *consoleAddr != "off" {
		if _, _, err := console.Start(ctx, st.Deps, *consoleAddr); err != nil {
			return err
		}
	}
	if err := answerInfo(st, cfg, c.config); err != nil {
		return err
	}
	log.Info("sluice up: all services running", "pipelines", len(cfg.Pipelines), "http", st.HTTPAddr(), "console", cfg.Console.URL)
	return st.Wait()
}
