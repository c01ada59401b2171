// Command sluice-dbtrunner runs the dbtrunner service alone against a NATS server.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/services/dbtrunner"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Main(ctx, os.Args[1:], os.LookupEnv, os.Stderr, dbtrunner.Service); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-dbtrunner:", err)
		os.Exit(1)
	}
}
