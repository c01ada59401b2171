package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/services/alerter"
	"github.com/sluice-etl/sluice/services/dbtrunner"
	"github.com/sluice-etl/sluice/services/fetcher"
	"github.com/sluice-etl/sluice/services/partitioner"
	"github.com/sluice-etl/sluice/services/sensor"
	"github.com/sluice-etl/sluice/services/validator"
)

// allServices are the six services in flow order.
var allServices = []app.Service{sensor.Service, fetcher.Service, validator.Service, partitioner.Service, dbtrunner.Service, alerter.Service}

// common are the flags every bus-connected command takes.
type common struct {
	config  string
	nats    string
	verbose bool
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", "sluice.yaml", "config file")
	fs.StringVar(&c.nats, "nats", "", "NATS URL (overrides nats.url)")
	fs.BoolVar(&c.verbose, "v", false, "print service logs")
}

func (c *common) load() (*config.Config, error) {
	return config.Load(c.config, os.LookupEnv)
}

// loadPipeline loads the config and finds the named pipeline in it.
func (c *common) loadPipeline(name string) (*config.Config, *config.Pipeline, error) {
	cfg, err := c.load()
	if err != nil {
		return nil, nil, err
	}
	p, ok := cfg.Pipeline(name)
	if !ok {
		return nil, nil, fmt.Errorf("pipeline %q is not in %s", name, c.config)
	}
	return cfg, p, nil
}

// connect attaches to the configured or running broker; failing that (embedded mode with no
// `sluice up` running) it starts an embedded server in this process with services on it.
func (c *common) connect(ctx context.Context, cfg *config.Config, stderr io.Writer, services ...app.Service) (*app.Stack, error) {
	log := telemetry.Logger(io.Discard, slog.LevelInfo)
	if c.verbose {
		log = telemetry.Logger(stderr, slog.LevelInfo)
	}
	url := c.nats
	if url == "" && cfg.NATS.URL.Reveal() == "" {
		if conn, err := net.DialTimeout("tcp", cfg.NATS.Listen, 300*time.Millisecond); err == nil {
			conn.Close()
			url = "nats://" + cfg.NATS.Listen // a `sluice up` is serving: use it and its services
			services = nil
		}
	}
	return app.Start(ctx, cfg, log, app.Options{NATSURL: url, NoRouter: len(services) == 0, Env: os.LookupEnv}, services...)
}
