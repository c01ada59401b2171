package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/services/partitioner"
)

// retentionCmd applies a pipeline's retention on its own (a cron job, say), under the pipeline's
// lease like a run: it waits for no one, and fails if a run is active.
type retentionCmd struct{ pipelineFlags }

func (c *retentionCmd) run(ctx context.Context, stdout, stderr io.Writer) error {
	cfg, p, err := c.loadPipeline(c.Pipeline)
	if err != nil {
		return err
	}
	if p.Retention.Days == 0 {
		fmt.Fprintf(stdout, "%s keeps every partition (no retention.days): nothing to do\n", p.Name)
		return nil
	}
	st, done, err := c.attach(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer done()
	leases, err := lease.New(ctx, st.JS)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	runID := ulid.Make().String()
	h, err := leases.Acquire(ctx, p.Name, runID, now.Format(time.DateOnly), p.Lease.TTL)
	var held *lease.HeldError
	if errors.As(err, &held) {
		return fmt.Errorf("%s: retention not applied: run %s (ds %s) is active; try again when it ends", p.Name, held.Holder.RunID, held.Holder.DS)
	}
	if err != nil {
		return err
	}
	defer func() { _ = leases.Release(context.WithoutCancel(ctx), p.Name, runID) }()

	// Keep the lease while exports run; losing it makes the fenced transactions refuse.
	work, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		t := time.NewTicker(max(p.Lease.TTL/3, time.Second))
		defer t.Stop()
		for {
			select {
			case <-work.Done():
				return
			case <-t.C:
				if err := leases.Renew(work, p.Name, runID, h.Fence, p.Lease.TTL); err != nil {
					cancel()
					return
				}
			}
		}
	}()
	pt, err := partitioner.FromDeps(work, st.Deps)
	if err != nil {
		return err
	}
	oldest, _ := partitioner.OldestKept(p.Retention, now)
	dropped, err := pt.Retention(work, p, runID, h.Fence, now)
	for _, d := range dropped {
		line := fmt.Sprintf("dropped %s (%d rows)", d.Partition, d.Rows)
		if d.Export != "" {
			line += ", exported to " + d.Export
		}
		fmt.Fprintln(stdout, line)
	}
	if err != nil && work.Err() != nil && ctx.Err() == nil {
		return fmt.Errorf("%s: retention stopped: the pipeline's lease could not be renewed", p.Name)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d partition(s) dropped; partitions from %s on are kept (%d days)\n",
		p.Name, len(dropped), oldest.Format(time.DateOnly), p.Retention.Days)
	return nil
}
