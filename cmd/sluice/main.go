// Command sluice is sluice's command line: run the whole system in one process (`up`), run one
// execution date end to end (`run`), request runs and follow them (`trigger`, `backfill`),
// pause and unpause schedules, show runs (`status`), and serve sample data (`sample-source`).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `sluice — event-driven ETL on NATS JetStream

Usage:
  sluice up            --config FILE [--nats URL] [--http ADDR] [--console ADDR|off]
  sluice run           --config FILE --pipeline NAME --date YYYY-MM-DD [--nats URL] [--timeout D]
  sluice trigger       --config FILE --pipeline NAME --date YYYY-MM-DD [--detach] [--timeout D]
  sluice backfill      --config FILE --pipeline NAME --from YYYY-MM-DD --to YYYY-MM-DD
                       [--reprocess none|failed|all] [--detach] [--timeout D]
  sluice pause         --config FILE --pipeline NAME
  sluice unpause       --config FILE --pipeline NAME
  sluice status        --config FILE [--nats URL] [--pipeline NAME] [--limit N] [--watch]
  sluice retention     --config FILE --pipeline NAME
  sluice sample-source [--addr HOST:PORT] [--rows N] [--dir DIR] [--delay D]

With no nats.url in the config and no --nats, sluice uses the server of a running 'sluice up'
at nats.listen, or else starts an embedded JetStream server storing in nats.data_dir.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "sluice:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"up":            cmdUp,
		"run":           cmdRun,
		"status":        cmdStatus,
		"trigger":       cmdTrigger,
		"backfill":      cmdBackfill,
		"pause":         cmdPause,
		"unpause":       cmdUnpause,
		"retention":     cmdRetention,
		"sample-source": cmdSampleSource,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
	return cmd(ctx, args[1:], stdout, stderr)
}
