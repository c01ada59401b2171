// Command sluice-validator runs the validator service alone against a NATS server.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/services/validator"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Main(ctx, os.Args[1:], os.LookupEnv, os.Stderr, validator.Service); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-validator:", err)
		os.Exit(1)
	}
}
