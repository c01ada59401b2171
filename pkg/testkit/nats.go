package testkit

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS starts a JetStream server on a random port with its store in a temp dir.
func NATS(t testing.TB) *server.Server {
	t.Helper()
	return NATSAt(t, t.TempDir(), -1)
}

// NATSAt starts a JetStream server storing in dir on port (-1 for random).
func NATSAt(t testing.TB, dir string, port int) *server.Server {
	t.Helper()
	return startNATS(t, &server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true})
}

// startNATS starts a server with opts, waits until it takes connections and stops it when the
// test ends.
func startNATS(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

// Connect connects to ns and returns the connection and its JetStream context.
func Connect(t testing.TB, ns *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// NATSFromConfig starts a server from config text, read by the server's own parser
// (server.ProcessConfigFile) as nats-server would read it; text may include files relative to
// dir, where it is written. JetStream stores in dir/jetstream; listen on 127.0.0.1:-1 in text
// picks a free port.
func NATSFromConfig(t testing.TB, dir, text string) *server.Server {
	t.Helper()
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats config: %v", err)
	}
	opts.NoSigs = true
	if opts.StoreDir == "" {
		opts.StoreDir = filepath.Join(dir, "jetstream")
	}
	return startNATS(t, opts)
}
