package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/sluice-etl/sluice/pkg/event"
)

// maxBackfillDates bounds one backfill, so a typo in a year does not queue a century.
const maxBackfillDates = 3660

// cmdBackfill requests every date from --from to --to (inclusive), oldest first, and follows them.
func cmdBackfill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("backfill", args, stdout, stderr)
	var l launch
	l.register(fs.FlagSet)
	pipeline := fs.String("pipeline", "", "pipeline name")
	from := fs.String("from", "", "first execution date, YYYY-MM-DD")
	to := fs.String("to", "", "last execution date, YYYY-MM-DD (inclusive)")
	rp := fs.String("reprocess", "none", "dates that already ran: none (leave them), failed (rerun failed ones), all (rerun every date)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch reprocess(*rp) {
	case reprocessNone, reprocessFailed, reprocessAll:
	default:
		return fmt.Errorf("--reprocess %q: use none, failed or all", *rp)
	}
	cfg, err := l.load(*pipeline)
	if err != nil {
		return err
	}
	dates, err := dateRange(*from, *to)
	if err != nil {
		return err
	}
	return l.run(ctx, cfg, stdout, stderr, *pipeline, dates, "backfill", reprocess(*rp))
}

// dateRange lists the dates from..to, inclusive.
func dateRange(from, to string) ([]string, error) {
	a, err := event.ParseDS(from)
	if err != nil {
		return nil, fmt.Errorf("--from: %w", err)
	}
	b, err := event.ParseDS(to)
	if err != nil {
		return nil, fmt.Errorf("--to: %w", err)
	}
	if b.Before(a) {
		return nil, fmt.Errorf("--to %s is before --from %s", to, from)
	}
	var out []string
	for d := a; !d.After(b); d = d.AddDate(0, 0, 1) {
		if len(out) == maxBackfillDates {
			return nil, fmt.Errorf("%s to %s is more than %d dates; backfill it in parts", from, to, maxBackfillDates)
		}
		out = append(out, d.Format(time.DateOnly))
	}
	return out, nil
}
