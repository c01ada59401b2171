// Command sluice is sluice's command line: run the whole system in one process (`up`), run one
// execution date end to end (`run`), request runs and follow them (`trigger`, `backfill`),
// pause and unpause schedules, show runs (`status`), serve the web console (`console`) and
// sample data (`sample-source`), and scaffold a pipeline from a contract (`new-pipeline`).
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
  sluice provision     --config FILE [--nats URL] [--roles FILE] [--no-nats] [--no-postgres]
  sluice nats          --config FILE
  sluice run           --config FILE --pipeline NAME --date YYYY-MM-DD [--nats URL] [--timeout D]
  sluice trigger       --config FILE --pipeline NAME --date YYYY-MM-DD [--detach] [--timeout D]
  sluice backfill      --config FILE --pipeline NAME --from YYYY-MM-DD --to YYYY-MM-DD
                       [--reprocess none|failed|all] [--detach] [--timeout D]
  sluice pause         --config FILE --pipeline NAME
  sluice unpause       --config FILE --pipeline NAME
  sluice status        --config FILE [--nats URL] [--pipeline NAME] [--limit N] [--watch]
  sluice retention     --config FILE --pipeline NAME
  sluice console       --config FILE [--nats URL] [--addr HOST:PORT]
  sluice sample-source [--addr HOST:PORT] [--rows N] [--dir DIR] [--delay D]
  sluice new-pipeline  NAME --contract FILE.json [--config FILE] [--dbt-project DIR] [--source-url URL]

With no nats.url in the config and no --nats, sluice uses the server of a running 'sluice up'
at nats.listen, or else starts an embedded JetStream server storing in nats.data_dir (and
provisions it). Against an external server, 'sluice provision' (admin credentials) creates the
stream, KV buckets, consumers and database tables once; services only bind to them.
'sluice COMMAND --help' describes a command's flags.

Exit codes of run, trigger and backfill:
  0  completed (every date)          3  skipped (sensor.soft_fail, lease.on_busy: skip)
  1  failed or lost, or any error    4  stopped following (--timeout, Ctrl-C); the run goes on
  2  bad usage
`

// exitError ends the process with code after printing err (if not nil).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// Exit codes (documented in usage and the README).
const (
	exitFailed  = 1
	exitUsage   = 2
	exitSkipped = 3
	exitStopped = 4
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(exitCode(run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
}

// exitCode prints err (unless it is a request for help) and returns the process's exit code.
func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	code := exitFailed
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
		if ee.err == nil {
			return code
		}
	}
	fmt.Fprintln(stderr, "sluice:", err)
	return code
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &exitError{code: exitUsage}
	}
	if wantsHelp(args[0]) || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"up":            cmdUp,
		"provision":     cmdProvision,
		"nats":          cmdNATS,
		"run":           cmdRun,
		"status":        cmdStatus,
		"trigger":       cmdTrigger,
		"backfill":      cmdBackfill,
		"pause":         cmdPause,
		"unpause":       cmdUnpause,
		"retention":     cmdRetention,
		"console":       cmdConsole,
		"sample-source": cmdSampleSource,
		"new-pipeline":  cmdNewPipeline,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprint(stderr, usage)
		return &exitError{code: exitUsage, err: fmt.Errorf("unknown command %q", args[0])}
	}
	err := cmd(ctx, args[1:], stdout, stderr)
	if err != nil && !errors.Is(err, flag.ErrHelp) && isUsageError(err) {
		return &exitError{code: exitUsage} // the flag package printed the error and the usage
	}
	return err
}

func wantsHelp(arg string) bool { return arg == "-h" || arg == "-help" || arg == "--help" }

// usageError marks a flag parsing error, already printed by the flag package.
type usageError struct{ error }

func isUsageError(err error) bool {
	var ue usageError
	return errors.As(err, &ue)
}

// newFlags is a command's flag set: asked for help (-h, --help), it prints the flags on stdout
// and the command returns flag.ErrHelp (exit 0); a bad flag is printed on stderr (exit 2).
func newFlags(name string, args []string, stdout, stderr io.Writer) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	for _, a := range args {
		if a == "--" {
			break
		}
		if wantsHelp(a) {
			fs.SetOutput(stdout)
		}
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sluice %s [flags]\n", name)
		fs.PrintDefaults()
	}
	return &flags{fs}
}

// flags is a flag.FlagSet whose Parse marks its errors as usage errors.
type flags struct{ *flag.FlagSet }

func (f *flags) Parse(args []string) error {
	err := f.FlagSet.Parse(args)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		return usageError{err}
	}
	if err == nil && f.NArg() > 0 {
		fmt.Fprintf(f.Output(), "unexpected argument %q\n", f.Arg(0))
		f.Usage()
		return usageError{fmt.Errorf("unexpected argument %q", f.Arg(0))}
	}
	return err
}
