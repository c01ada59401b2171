// Command sluice-fetcher runs the fetcher service alone against a NATS server.
package main

import (
	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/services/fetcher"
)

func main() { app.Run(fetcher.Service) }
