// Command sluice-sensor runs the sensor service alone against a NATS server.
package main

import (
	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/services/sensor"
)

func main() { app.Run(sensor.Service) }
