// Command sluice-alerter runs the alerter service alone against a NATS server.
package main

import (
	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/services/alerter"
)

func main() { app.Run(alerter.Service) }
