package embedded

import (
	"net"
	"strings"
	"testing"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The embedded server syncs every write before acknowledging it, and holds its store: a second
// server on the same directory refuses to start at once, instead of two brokers sharing one
// file store. Once the first stops, the store is free again.
func TestSyncAlwaysAndOneServerPerStore(t *testing.T) {
	dir := t.TempDir()
	first, err := Start(dir, freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	if cfg := first.(*lockedServer).JetStreamConfig(); cfg == nil || !cfg.SyncAlways {
		t.Fatalf("jetstream config %+v: want sync_interval: always", cfg)
	}
	second, err := Start(dir, freeAddr(t))
	if err == nil {
		second.Shutdown()
		first.Shutdown()
		t.Fatal("a second server started on the same store")
	}
	if !strings.Contains(err.Error(), "nats store "+dir+" is in use by process ") || !strings.Contains(err.Error(), "nats.data_dir") {
		t.Fatalf("second start: %v", err)
	}
	first.Shutdown()
	first.WaitForShutdown()
	again, err := Start(dir, freeAddr(t))
	if err != nil {
		t.Fatalf("the store is not free after the first server stopped: %v", err)
	}
	again.Shutdown()
	again.WaitForShutdown()
}
