package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/runstate"
)

// cmdRun runs one execution date end to end, printing each step as it happens and a summary.
func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var c common
	c.register(fs)
	pipeline := fs.String("pipeline", "", "pipeline name")
	ds := fs.String("date", "", "execution date, YYYY-MM-DD")
	timeout := fs.Duration("timeout", 3*time.Hour, "give up watching after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, pc, err := c.loadPipeline(*pipeline)
	if err != nil {
		return err
	}
	if _, err := event.ParseDS(*ds); err != nil {
		return err
	}
	stackCtx, stopStack := context.WithCancel(ctx)
	st, err := c.connect(stackCtx, cfg, stderr, allServices...)
	if err != nil {
		stopStack()
		return err
	}
	defer func() { stopStack(); _ = st.Wait() }()

	prefix := cfg.NATS.SubjectPrefix
	sub, err := st.NC.SubscribeSync(fmt.Sprintf("%s.%s.*.%s", prefix, *pipeline, *ds))
	if err != nil {
		return err
	}
	defer sub.Unsubscribe() //nolint:errcheck
	req, err := flow.Request(ctx, st.JS, st.Tracer, prefix, *pipeline, *ds, "cli", flow.WithSLA(pc.SLA))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s  run %s\n", *pipeline, *ds, req.RunID)
	w := &watcher{out: stdout, runID: req.RunID, started: time.Now()}
	deadline := time.Now().Add(*timeout)
	for time.Now().Before(deadline) {
		msg, err := sub.NextMsg(500 * time.Millisecond)
		switch {
		case errors.Is(err, nats.ErrTimeout):
			if rec, err := st.Router.Runs().Get(ctx, *pipeline, *ds, req.RunID); err == nil {
				w.state(rec)
			}
			continue
		case err != nil:
			return err
		}
		done, err := w.event(msg)
		if done {
			return err
		}
	}
	return fmt.Errorf("%s %s: run %s not finished after %s (it goes on; see `sluice status`)", *pipeline, *ds, req.RunID, *timeout)
}

// watcher prints one run's progress.
type watcher struct {
	out        io.Writer
	runID      string
	traceID    string
	started    time.Time
	lastDetail string
}

func (w *watcher) state(rec runstate.Record) {
	if rec.State != runstate.Waiting && rec.Detail == "" && rec.Error == "" {
		return
	}
	detail := rec.Detail
	if rec.Error != "" && rec.State != runstate.Failed {
		detail += ": " + rec.Error
	}
	if detail != w.lastDetail && rec.State != runstate.Failed && !strings.HasPrefix(detail, "next:") {
		fmt.Fprintf(w.out, "  … %-12s %s\n", rec.Step, detail)
	}
	w.lastDetail = detail
}

// event prints an event of the run; done is true at completed or failed.
func (w *watcher) event(msg *nats.Msg) (done bool, err error) {
	parts := strings.Split(msg.Subject, ".")
	if len(parts) < 4 {
		return false, nil
	}
	e, err := event.Decode(event.Kind(parts[len(parts)-2]), msg.Data)
	if err != nil || e.Header().RunID != w.runID {
		return false, nil
	}
	if w.traceID == "" {
		if tp := msg.Header.Get("traceparent"); len(tp) >= 35 {
			w.traceID = tp[3:35]
		}
	}
	switch e := e.(type) {
	case *event.Requested:
		fmt.Fprintf(w.out, "  ✓ requested\n")
	case *event.Available:
		fmt.Fprintf(w.out, "  ✓ available    %s (after %d poke(s))\n", e.URL, e.Pokes)
	case *event.Landed:
		fmt.Fprintf(w.out, "  ✓ landed       s3://%s/%s (%d bytes)\n", e.Object.Bucket, e.Object.Key, e.Object.Size)
	case *event.Validated:
		fmt.Fprintf(w.out, "  ✓ validated    %d rows → %s\n", e.Rows, e.StagingTable)
		if e.Rejected > 0 {
			fmt.Fprintf(w.out, "  ! quarantined  %d bad row(s) → s3://%s/%s\n", e.Rejected, e.Object.Bucket, e.RejectsKey)
		}
	case *event.Partitioned:
		fmt.Fprintf(w.out, "  ✓ partitioned  %s\n", e.Partition)
	case *event.Completed:
		fmt.Fprintf(w.out, "  ✓ completed    %d inserted, %d updated, %d unchanged\n", e.Inserted, e.Updated, e.Unchanged)
		w.summary(e)
		return true, nil
	case *event.Failed:
		fmt.Fprintf(w.out, "  ✗ failed       at %s after %d attempt(s) [%s]\n", e.Step, e.Attempts, e.Class)
		return true, fmt.Errorf("%s %s: %s failed: %s", e.Pipeline, e.DS, e.Step, e.Error)
	}
	return false, nil
}

func (w *watcher) summary(c *event.Completed) {
	fmt.Fprintf(w.out, "\nSummary  %s %s  run %s  completed in %s\n", c.Pipeline, c.DS, c.RunID, time.Since(w.started).Round(time.Millisecond))
	tw := tabwriter.NewWriter(w.out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  step\tduration\tattempts")
	for _, s := range c.Steps {
		fmt.Fprintf(tw, "  %s\t%s\t%d\n", s.Step, time.Duration(s.DurationMS)*time.Millisecond, s.Attempts)
	}
	tw.Flush()
	fmt.Fprintf(w.out, "  object     s3://%s/%s  %d bytes  sha256 %s\n", c.Object.Bucket, c.Object.Key, c.Object.Size, c.Object.SHA256)
	fmt.Fprintf(w.out, "  rows       %d staged → %s: %d inserted, %d updated, %d unchanged\n", c.Staged, c.Partition, c.Inserted, c.Updated, c.Unchanged)
	if c.Rejected > 0 {
		fmt.Fprintf(w.out, "  rejected   %d row(s) quarantined in s3://%s/%s\n", c.Rejected, c.Object.Bucket, c.RejectsKey)
	}
	if c.DocsKey != "" {
		fmt.Fprintf(w.out, "  dbt docs   s3://%s/%sindex.html, served at /docs/%s/%s/%s/ by sluice's HTTP endpoints\n",
			c.Object.Bucket, strings.TrimSuffix(c.DocsKey, "/")+"/", c.Pipeline, c.DS, c.RunID)
	}
	fmt.Fprintf(w.out, "  run id     %s\n  trace id   %s\n", c.RunID, w.traceID)
}
