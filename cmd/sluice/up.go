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

// upCmd runs all six services and the web console in this process until interrupted.
type upCmd struct {
	common
	HTTP    string `name:"http" default:"127.0.0.1:8080" placeholder:"ADDR" help:"address for /healthz, /readyz and /metrics"`
	Console string `placeholder:"ADDR|off" help:"address of the web console (default console.addr; off to run none)"`
}

func (c *upCmd) run(ctx context.Context, _, stderr io.Writer) error {
	cfg, err := c.load()
	if err != nil {
		return err
	}
	log := telemetry.Logger(stderr, slog.LevelInfo)
	st, err := app.Start(ctx, cfg, log, app.Options{NATSURL: c.NATS, HTTPAddr: c.HTTP, Env: os.LookupEnv, Embed: embedded.Start}, allServices...)
	if err != nil {
		return err
	}
	if c.Console != "off" {
		if _, _, err := console.Start(ctx, st.Deps, c.Console); err != nil {
			return err
		}
	}
	if err := answerInfo(st, cfg, c.Config); err != nil {
		return err
	}
	log.Info("sluice up: all services running", "pipelines", len(cfg.Pipelines), "http", st.HTTPAddr(), "console", cfg.Console.URL)
	return st.Wait()
}
