package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-etl/sluice/cmd/sluice/internal/embedded"
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
	Config  string `default:"sluice.yaml" placeholder:"FILE" help:"config file"`
	NATS    string `name:"nats" placeholder:"URL" help:"NATS URL (overrides nats.url)"`
	Verbose bool   `short:"v" help:"print service logs"`
	Attach  bool   `help:"use a running 'sluice up' even if its config of the pipeline differs from --config's"`
	// up is the running `sluice up` that connect attached to (nil: this process runs the
	// services, or the broker is external).
	up *stackInfo
}

// infoSubject is where a running `sluice up` says who it is. It is outside the event stream's
// subjects: a question to a live process, nothing stored.
const infoSubject = "_SLUICE.up.info"

// stackInfo is a running `sluice up`'s answer on infoSubject.
type stackInfo struct {
	PID    int    `json:"pid"`
	Config string `json:"config"`
	// HTTP is the address of its HTTP endpoint (health, metrics, dbt docs); "" without one.
	HTTP string `json:"http,omitempty"`
	// Pipelines maps each pipeline to the hash of its config (pipelineHash).
	Pipelines map[string]string `json:"pipelines"`
}

// pipelineHash identifies a pipeline's config: two configs with the same hash run a pipeline
// the same way. Secret values are not part of it (config.Pipeline holds only references).
func pipelineHash(p *config.Pipeline) string {
	b, _ := json.Marshal(p)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// answerInfo makes st answer infoSubject for the `sluice up` it is.
func answerInfo(st *app.Stack, cfg *config.Config, path string) error {
	abs, _ := filepath.Abs(path)
	info := stackInfo{PID: os.Getpid(), Config: abs, HTTP: st.HTTPAddr(), Pipelines: map[string]string{}}
	for i := range cfg.Pipelines {
		info.Pipelines[cfg.Pipelines[i].Name] = pipelineHash(&cfg.Pipelines[i])
	}
	b, _ := json.Marshal(info)
	_, err := st.NC.Subscribe(infoSubject, func(m *nats.Msg) { _ = m.Respond(b) })
	return err
}

// checkAttach says which running `sluice up` a command uses, and refuses one that runs the
// pipeline with another config than the command's --config, unless --attach.
func (c *common) checkAttach(cfg *config.Config, pipeline string, stderr io.Writer) error {
	if c.up == nil {
		return nil
	}
	where := ""
	if c.up.HTTP != "" {
		where = ", http://" + c.up.HTTP
	}
	fmt.Fprintf(stderr, "sluice: using the running `sluice up` (pid %d, config %s%s)\n", c.up.PID, c.up.Config, where)
	p, ok := cfg.Pipeline(pipeline)
	if !ok {
		return nil
	}
	theirs, runs := c.up.Pipelines[pipeline]
	switch {
	case runs && theirs == pipelineHash(p):
		return nil
	case c.Attach:
		fmt.Fprintf(stderr, "sluice: --attach: the run uses that stack's config of %s, not %s's\n", pipeline, c.Config)
		return nil
	case !runs:
		return &exitError{code: exitUsage, err: fmt.Errorf("the running `sluice up` (pid %d, config %s) has no pipeline %q: stop it, or pass --attach", c.up.PID, c.up.Config, pipeline)}
	}
	return &exitError{code: exitUsage, err: fmt.Errorf("pipeline %s in %s differs from the running `sluice up`'s (pid %d, config %s): "+
		"stop that stack, use its config, or pass --attach to run with its config", pipeline, c.Config, c.up.PID, c.up.Config)}
}

func (c *common) load() (*config.Config, error) {
	return config.Load(c.Config, os.LookupEnv)
}

// loadPipeline loads the config and finds the named pipeline in it.
func (c *common) loadPipeline(name string) (*config.Config, *config.Pipeline, error) {
	cfg, err := c.load()
	if err != nil {
		return nil, nil, err
	}
	p, ok := cfg.Pipeline(name)
	if !ok {
		return nil, nil, fmt.Errorf("pipeline %q is not in %s", name, c.Config)
	}
	return cfg, p, nil
}

// attach connects for a command that only reads or writes the broker's state; done ends it.
func (c *common) attach(ctx context.Context, cfg *config.Config, stderr io.Writer) (st *app.Stack, done func(), err error) {
	stackCtx, stop := context.WithCancel(ctx)
	if st, err = c.connect(stackCtx, cfg, stderr); err != nil {
		stop()
		return nil, nil, err
	}
	return st, func() { stop(); _ = st.Wait() }, nil
}

// connect attaches to the configured or running broker; failing that (embedded mode with no
// `sluice up` running) it starts an embedded server in this process with services on it.
func (c *common) connect(ctx context.Context, cfg *config.Config, stderr io.Writer, services ...app.Service) (*app.Stack, error) {
	log := telemetry.Logger(io.Discard, slog.LevelInfo)
	if c.Verbose {
		log = telemetry.Logger(stderr, slog.LevelInfo)
	}
	url := c.NATS
	if url == "" && cfg.NATS.URL.Reveal() == "" {
		if conn, err := net.DialTimeout("tcp", cfg.NATS.Listen, 300*time.Millisecond); err == nil {
			conn.Close()
			url = "nats://" + cfg.NATS.Listen // a `sluice up` is serving: use it and its services
			services = nil
		}
	}
	st, err := app.Start(ctx, cfg, log, app.Options{NATSURL: url, NoRouter: len(services) == 0, Env: os.LookupEnv, Embed: embedded.Start}, services...)
	if err != nil {
		return nil, err
	}
	if len(services) == 0 {
		if m, err := st.NC.Request(infoSubject, nil, time.Second); err == nil {
			var info stackInfo
			if json.Unmarshal(m.Data, &info) == nil {
				c.up = &info
			}
		}
	}
	return st, nil
}
