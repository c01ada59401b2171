package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// triggerCmd requests one run of a date (a rerun if the date ran before) and follows it.
type triggerCmd struct {
	launch
	Pipeline string `need:"" placeholder:"NAME" help:"pipeline name"`
	Date     string `need:"" placeholder:"YYYY-MM-DD" help:"execution date"`
}

func (t *triggerCmd) run(ctx context.Context, stdout, stderr io.Writer) error {
	cfg, err := t.load(t.Pipeline)
	if err != nil {
		return err
	}
	if _, err := event.ParseDS(t.Date); err != nil {
		return err
	}
	return t.launch.run(ctx, cfg, stdout, stderr, t.Pipeline, []string{t.Date}, "cli", reprocessAll)
}

// launch is what trigger and backfill share: flags, connecting, requesting, following.
type launch struct {
	common
	Detach  bool          `help:"request and return at once, without following the runs"`
	Timeout time.Duration `default:"24h" placeholder:"D" help:"give up following after this long (the runs go on)"`
}

func (l *launch) load(pipeline string) (*config.Config, error) {
	cfg, _, err := l.loadPipeline(pipeline)
	return cfg, err
}

func (l *launch) run(ctx context.Context, cfg *config.Config, stdout, stderr io.Writer, pipeline string, dates []string, by string, rp reprocess) error {
	// Following runs needs services: those of a running `sluice up`, or else started here, as
	// `sluice run` does. A detached request only needs the broker, and so does following runs on
	// an external server (nats.url or --nats), whose services are deployed against it (compose,
	// Kubernetes): starting them here too would make this command a seventh consumer.
	var services []app.Service
	if !l.Detach && l.NATS == "" && cfg.NATS.URL.Reveal() == "" {
		services = allServices
	}
	st, ds, stop, err := l.request(ctx, cfg, stderr, pipeline, dates, by, rp, services)
	if err != nil {
		return err
	}
	defer stop()
	queued, already, left := 0, 0, 0
	for _, d := range ds {
		switch {
		case d.runID == "":
			left++
		case d.note == "already queued":
			already++
		default:
			queued++
		}
	}
	fmt.Fprintf(stdout, "%s: %d date(s): %d requested, %d already queued, %d left as they were\n", pipeline, len(ds), queued, already, left)
	p := &progress{out: stdout, tty: isTerminal(stdout), pipeline: pipeline, dates: ds, started: time.Now()}
	if l.Detach {
		return p.report()
	}
	if err := p.follow(ctx, st.Router.Runs(), 500*time.Millisecond, l.Timeout); err != nil {
		return err
	}
	return p.report()
}

// request connects (starting services here when they are given and no `sluice up` runs them),
// says which running stack it uses, and requests the dates oldest first through the one
// requester (trigger.Requester), which decides the run id, the trace root, the SLA deadline and
// whether a date already queued is queued again. stop ends the stack.
func (c *common) request(ctx context.Context, cfg *config.Config, stderr io.Writer, pipeline string, dates []string, by string, rp reprocess, services []app.Service) (st *app.Stack, ds []*dateRun, stop func(), err error) {
	stackCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	st, err = c.connect(stackCtx, cfg, stderr, services...)
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	stop = func() { cancel(); _ = st.Wait() }
	if err := c.checkAttach(cfg, pipeline, stderr); err != nil {
		stop()
		return nil, nil, nil, err
	}
	var sla *config.SLA
	if pc, ok := cfg.Pipeline(pipeline); ok {
		sla = pc.SLA
	}
	if ds, err = requestDates(ctx, trigger.New(st.JS, st.Router.Runs(), st.Tracer, app.BusOptions(cfg)), pipeline, sla, dates, by, rp); err != nil {
		stop()
		return nil, nil, nil, err
	}
	return st, ds, stop, nil
}
