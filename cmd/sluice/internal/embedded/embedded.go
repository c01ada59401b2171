// Package embedded starts the JetStream server of the local topology inside the sluice CLI
// (`sluice up`, `sluice run`). It is the only non-test code that imports nats-server, so the
// single-service binaries, which always talk to an external server, do not link it.
package embedded

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/sluice-etl/sluice/pkg/app"
)

// Start starts a JetStream server storing in dir and listening on listen (host:port). Every
// write is synced to disk before it is acknowledged (sync_interval: always), and dir is locked
// for the server's life: a second sluice on the same store refuses to start.
func Start(dir, listen string) (app.EmbeddedServer, error) {
	lock, err := lockStore(dir)
	if err != nil {
		return nil, err
	}
	ns, err := start(dir, listen)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return &lockedServer{Server: ns, lock: lock}, nil
}

// lockedServer is the embedded server with its store lock, released at shutdown.
type lockedServer struct {
	*server.Server
	lock *os.File
}

func (s *lockedServer) WaitForShutdown() {
	s.Server.WaitForShutdown()
	s.lock.Close() // closing the file drops the flock
}

// lockStore takes an exclusive lock on dir/LOCK, which holds the owner's pid.
func lockStore(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nats store %s: %w", dir, err)
	}
	path := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("nats store %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(path)
		f.Close()
		who := "another process"
		if pid := strings.TrimSpace(string(owner)); pid != "" {
			who = "process " + pid
		}
		return nil, fmt.Errorf("nats store %s is in use by %s (another sluice up or run): stop it, or give this one another nats.data_dir", dir, who)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

func start(dir, listen string) (*server.Server, error) {
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
		// Acknowledged means on disk: the default syncs every two minutes, and a power cut
		// in between lost acknowledged writes (Jepsen, NATS 2.12.1).
		SyncAlways: true,
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
