// Command sluice-dbtrunner runs the dbtrunner service alone against a NATS server.
package main

import (
	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/services/dbtrunner"
)

func main() { app.Run(dbtrunner.Service) }
