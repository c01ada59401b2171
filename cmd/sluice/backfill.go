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

// backfillCmd requests every date from --from to --to (inclusive), oldest first, and follows them.
type backfillCmd struct {
	launch
	Pipeline  string `need:"" placeholder:"NAME" help:"pipeline name"`
	From      string `need:"" placeholder:"YYYY-MM-DD" help:"first execution date"`
	To        string `need:"" placeholder:"YYYY-MM-DD" help:"last execution date (inclusive)"`
	Reprocess string `default:"none" placeholder:"none|failed|all" help:"dates that already ran: none (leave them), failed (rerun failed ones), all (rerun every date)"`
}

func (b *backfillCmd) run(ctx context.Context, stdout, stderr io.Writer) error {
	switch reprocess(b.Reprocess) {
	case reprocessNone, reprocessFailed, reprocessAll:
	default:
		return fmt.Errorf("--reprocess %q: use none, failed or all", b.Reprocess)
	}
	cfg, err := b.load(b.Pipeline)
	if err != nil {
		return err
	}
	dates, err := dateRange(b.From, b.To)
	if err != nil {
		return err
	}
	return b.launch.run(ctx, cfg, stdout, stderr, b.Pipeline, dates, "backfill", reprocess(b.Reprocess))
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
