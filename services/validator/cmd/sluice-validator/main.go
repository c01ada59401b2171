// Command sluice-validator runs the validator service alone against a NATS server.
package main

import (
	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/services/validator"
)

func main() { app.Run(validator.Service) }
