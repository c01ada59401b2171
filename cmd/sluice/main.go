// Command sluice is sluice's command line: run the whole system in one process (`up`), run one
// execution date end to end (`run`), request runs and follow them (`trigger`, `backfill`),
// pause and unpause schedules, show runs (`status`), serve the web console (`console`) and
// sample data (`sample-source`), and scaffold a pipeline from a contract (`new-pipeline`).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"
)

// commands is sluice's command line, parsed by kong: a field a command. A command is a struct whose
// fields are its flags (their tags give name, default, placeholder and help, from which every
// usage text is generated) with a run method; adding one is a field here and that type.
type commands struct {
	Up           upCmd           `cmd:"" help:"Run all six services and the web console in this process until interrupted."`
	Provision    provisionCmd    `cmd:"" help:"Create the stream, KV buckets, consumers and database tables, idempotently, with admin credentials."`
	NATS         natsCmd         `cmd:"" name:"nats" help:"Serve the embedded JetStream server alone, provisioned, at nats.listen."`
	Run          runCmd          `cmd:"" help:"Run one execution date end to end, showing each step and a summary."`
	Trigger      triggerCmd      `cmd:"" help:"Request one run of a date (a rerun if it ran before) and follow it."`
	Backfill     backfillCmd     `cmd:"" help:"Request every date from --from to --to, oldest first, and follow them."`
	Pause        pauseCmd        `cmd:"" help:"Stop a pipeline's schedule from requesting runs; runs already requested go on."`
	Unpause      unpauseCmd      `cmd:"" help:"Let a pipeline's schedule request runs again, at once."`
	Status       statusCmd       `cmd:"" help:"List the pipelines' schedules and recent runs."`
	Retention    retentionCmd    `cmd:"" help:"Apply a pipeline's retention now, under its lease."`
	Audit        auditCmd        `cmd:"" help:"Check every row of each pipeline's target: keys stored once, no NULL where required (exit 1 on a violation)."`
	Console      consoleCmd      `cmd:"" help:"Serve the web console alone."`
	SampleSource sampleSourceCmd `cmd:"" name:"sample-source" help:"Serve synthetic daily orders and events (or a directory of CSV files) over HTTP."`
	NewPipeline  newPipelineCmd  `cmd:"" name:"new-pipeline" help:"Scaffold a pipeline from a contract: contract skeleton, dbt models and config block."`
	Help         helpCmd         `cmd:"" help:"Show this help, or a command's (sluice help COMMAND)."`
}

// command is what every command of commands is: its flags, parsed, and this.
type command interface {
	run(ctx context.Context, stdout, stderr io.Writer) error
}

const title = "sluice — event-driven ETL on NATS JetStream"

// notes end the usage, after the commands' synopses.
const notes = `With no nats.url in the config and no --nats, sluice uses the server of a running 'sluice up'
at nats.listen, or else starts an embedded JetStream server storing in nats.data_dir (and
provisions it). Against an external server, 'sluice provision' (admin credentials) creates the
stream, KV buckets, consumers and database tables once; services only bind to them.
'sluice COMMAND --help' (or 'sluice help COMMAND') describes a command's flags.
`

// exitCodes ends the usage, and the help of the commands that follow runs.
const exitCodes = `Exit codes of run, trigger and backfill:
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

// exitCode prints err and returns the process's exit code.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
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

// run parses args and runs the command they name. Help (-h, --help, sluice help [COMMAND]) goes
// to stdout and exits 0; no command, an unknown one or a bad flag is printed with the usage on
// stderr and exits 2.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		parser := newParser(stdout, stderr)
		fmt.Fprint(stderr, usage(parser.Model))
		return &exitError{code: exitUsage}
	}
	cmd, err := parse(args, stdout, stderr)
	if err != nil || cmd == nil { // nil: help was asked for, and given
		return err
	}
	return cmd.run(ctx, stdout, stderr)
}

// helpShown is how parse stops kong after it printed help: kong calls its exit function, which
// must not end the process (tests call run).
type helpShown struct{}

// parse returns the command args name, with its flags set; nil (and no error) after help.
func parse(args []string, stdout, stderr io.Writer) (cmd command, err error) {
	parser := newParser(stdout, stderr)
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(helpShown); !ok {
				panic(r)
			}
			cmd, err = nil, nil
		}
	}()
	kctx, err := parser.Parse(goFlagStyle(parser.Model, args))
	if err != nil {
		fmt.Fprintf(stderr, "sluice: %v\n\n", err)
		var pe *kong.ParseError
		if errors.As(err, &pe) && pe.Context != nil && pe.Context.Selected() != nil {
			parser.Stdout = stderr
			_ = pe.Context.PrintUsage(true)
		} else {
			fmt.Fprint(stderr, usage(parser.Model))
		}
		return nil, &exitError{code: exitUsage}
	}
	if kctx.Selected() == nil {
		return nil, &exitError{code: exitUsage, err: errors.New("no command")}
	}
	cmd, ok := kctx.Selected().Target.Addr().Interface().(command)
	if !ok {
		return nil, fmt.Errorf("command %s has no run method", kctx.Selected().Name)
	}
	return cmd, nil
}

func newParser(stdout, stderr io.Writer) *kong.Kong {
	return kong.Must(&commands{},
		kong.Name("sluice"),
		kong.Writers(stdout, stderr),
		kong.Exit(func(int) { panic(helpShown{}) }),
		kong.Help(helpPrinter),
		kong.ValueFormatter(withDefault),
	)
}

// helpCmd is `sluice help [COMMAND]`: the help of sluice, or of a command.
type helpCmd struct {
	Command string `arg:"" optional:"" placeholder:"COMMAND" help:"the command to describe"`
}

func (h *helpCmd) run(_ context.Context, stdout, stderr io.Writer) error {
	args := []string{"--help"}
	if h.Command != "" {
		args = []string{h.Command, "--help"}
	}
	_, err := parse(args, stdout, stderr)
	return err
}

// helpPrinter prints the usage (every command's synopsis) for sluice, and kong's help, with the
// exit codes where they apply, for a command.
func helpPrinter(options kong.HelpOptions, ctx *kong.Context) error {
	selected := ctx.Selected()
	if selected == nil {
		_, err := fmt.Fprint(ctx.Stdout, usage(ctx.Model))
		return err
	}
	if err := kong.DefaultHelpPrinter(options, ctx); err != nil {
		return err
	}
	switch selected.Name {
	case "run", "trigger", "backfill":
		_, err := fmt.Fprint(ctx.Stdout, "\n"+exitCodes)
		return err
	}
	return nil
}

// withDefault is a flag's help with its default value, taken from the flag's tag.
func withDefault(v *kong.Value) string {
	h := kong.DefaultHelpValueFormatter(v)
	if v.Default == "" || v.IsBool() {
		return h
	}
	return fmt.Sprintf("%s (default %s)", h, v.Default)
}

// usage is sluice's usage: the title, a synopsis of each command generated from its flags, the
// notes and the exit codes.
func usage(app *kong.Application) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nUsage:\n%s\n%s\n%s", title, synopses(app), notes, exitCodes)
	return b.String()
}

// synopses are the commands' one-line synopses (wrapped under their flags beyond 100 columns):
// arguments, then the flags a command needs (tag need:""), then the others in brackets.
func synopses(app *kong.Application) string {
	var b strings.Builder
	for _, n := range app.Children {
		if n.Hidden || n.Name == "help" {
			continue
		}
		var need, opt []string
		for _, a := range n.Positional {
			need = append(need, strings.ToUpper(a.Name))
		}
		for _, f := range n.Flags {
			s := "--" + f.Name
			if f.Short != 0 {
				s = "-" + string(f.Short)
			}
			if !f.IsBool() {
				s += " " + f.FormatPlaceHolder()
			}
			if f.Tag.Has("need") {
				need = append(need, s)
			} else {
				opt = append(opt, "["+s+"]")
			}
		}
		line := fmt.Sprintf("  sluice %-13s", n.Name)
		for _, w := range append(need, opt...) {
			if len(line)+1+len(w) > 100 {
				b.WriteString(line + "\n")
				line = strings.Repeat(" ", 22)
			}
			line += " " + w
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// goFlagStyle lets the single-dash long flags of Go's flag package (-config FILE, -rows=5),
// which sluice took before it used kong, keep working: each becomes its double-dash form.
func goFlagStyle(app *kong.Application, args []string) []string {
	long := map[string]bool{"help": true}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			long[f.Name] = true
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(app.Node)
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && len(name) > 1 && long[name] {
			a = "-" + a
		}
		out = append(out, a)
	}
	return out
}
