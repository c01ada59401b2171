package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-etl/sluice/pkg/testkit/cluster"
)

// broker is the JetStream servers of one measurement: nats-server processes (the server module
// sluice embeds) with a file store synced on every write: one server, or a cluster over loopback
// routes (pkg/testkit/cluster, the chaos suite's kit) when there are several.
type broker struct {
	single  *proc
	cluster *cluster.Cluster
	urls    []string // client URL of each node
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startBroker(ctx context.Context, bin, dir string, n int) (*broker, error) {
	if n > 1 {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		c, err := cluster.Start(ctx, cluster.Options{Bin: bin, Dir: dir, Nodes: n, Name: "sluice-scale"})
		if err != nil {
			return nil, err
		}
		b := &broker{cluster: c}
		for _, node := range c.Nodes {
			b.urls = append(b.urls, node.URL())
		}
		return b, nil
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream {\n  store_dir: %q\n  sync_interval: always\n}\n", port, filepath.Join(dir, "nats"))
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	p, err := spawn(dir, "nats-server", os.Environ(), bin, "-c", path)
	if err != nil {
		return nil, err
	}
	b := &broker{single: p, urls: []string{fmt.Sprintf("nats://127.0.0.1:%d", port)}}
	err = await(30*time.Second, "nats-server to listen", func() (bool, error) {
		if p.exited() {
			out, _ := os.ReadFile(p.log)
			return false, fmt.Errorf("nats-server exited:\n%s", tail(out, 2000))
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil, nil
	})
	if err != nil {
		b.stop()
		return nil, err
	}
	return b, nil
}

// url is every node's client URL, as services take it.
func (b *broker) url() string { return strings.Join(b.urls, ",") }

// pids are the nodes' processes: found by their config file's path on their command line.
func (b *broker) pids() []int {
	if b.single != nil {
		return []int{b.single.cmd.Process.Pid}
	}
	var pids []int
	for _, n := range b.cluster.Nodes {
		if pid := pidOf(n.Conf); pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (b *broker) stop() {
	if b.single != nil {
		b.single.stop(20 * time.Second)
	}
	if b.cluster != nil {
		b.cluster.Stop()
	}
}

// pidOf is the process whose command line holds arg, or 0.
func pidOf(arg string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && slices.Contains(strings.Split(string(b), "\x00"), arg) {
			return pid
		}
	}
	return 0
}
