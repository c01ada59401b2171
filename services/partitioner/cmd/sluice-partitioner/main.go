// Command sluice-partitioner runs the partitioner service alone against a NATS server.
package main

import (
	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/services/partitioner"
)

func main() { app.Run(partitioner.Service) }
