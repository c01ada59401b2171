// Package embedded starts the JetStream server of the local topology inside the sluice CLI
// (`sluice up`, `sluice run`). It is the only non-test code that imports nats-server, so the
// single-service binaries, which always talk to an external server, do not link it.
package embedded

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/sluice-etl/sluice/pkg/app"
)

// Start starts a JetStream server storing in dir and listening on listen (host:port).
func Start(dir, listen string) (app.EmbeddedServer, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("nats listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats listen port %q: %w", portStr, err)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "sluice-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s did not become ready (is the port in use?)", listen)
	}
	return ns, nil
}
