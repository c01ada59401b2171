package main

import (
	"context"
	"fmt"
	"io"

	"github.com/sluice-etl/sluice/pkg/trigger"
)

// backfillCmd requests every date from --from to --to (inclusive), oldest first, and follows them.
type backfillCmd struct {
	launch
	Pipeline  string `need:"" placeholder:"NAME" help:"pipeline name"`
	From      string `need:"" placeholder:"YYYY-MM-DD" help:"first execution date"`
	To        string `need:"" placeholder:"YYYY-MM-DD" help:"last execution date (inclusive)"`
	Reprocess string `default:"none" placeholder:"none|failed|all" help:"dates that already ran: none (leave them), failed (rerun failed ones), all (rerun every date)"`
}

func (b *backfillCmd) run(ctx context.Context, stdout, stderr io.Writer) error {
	rp, err := trigger.ParseReprocess(b.Reprocess)
	if err != nil {
		return fmt.Errorf("--%w", err)
	}
	cfg, err := b.load(b.Pipeline)
	if err != nil {
		return err
	}
	dates, err := trigger.DateRangeNamed(b.From, b.To, "--from", "--to")
	if err != nil {
		return err
	}
	return b.launch.run(ctx, cfg, stdout, stderr, b.Pipeline, dates, "backfill", rp)
}
