// Command sluice-alerter runs the alerter service alone against a NATS server.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/services/alerter"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Main(ctx, os.Args[1:], os.LookupEnv, os.Stderr, alerter.Service); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-alerter:", err)
		os.Exit(1)
	}
}
