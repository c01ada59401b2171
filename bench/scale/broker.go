package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// broker is the JetStream servers of one measurement: nats-server processes (the server module
// sluice embeds, built by the harness), each with a file store synced on every write, formed into
// one cluster over loopback routes when there are several.
type broker struct {
	nodes []*proc
	urls  []string // client URL of each node
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startBroker(bin, dir string, n int) (*broker, error) {
	clients, routes := make([]int, n), make([]int, n)
	for i := range n {
		var err error
		if clients[i], err = freePort(); err != nil {
			return nil, err
		}
		if routes[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	b := &broker{}
	for i := range n {
		name := fmt.Sprintf("nats-%d", i+1)
		conf := fmt.Sprintf("server_name: %s\nlisten: 127.0.0.1:%d\njetstream {\n  store_dir: %q\n  sync_interval: always\n}\n",
			name, clients[i], filepath.Join(dir, name))
		if n > 1 {
			var rs []string
			for j := range n {
				if j != i {
					rs = append(rs, fmt.Sprintf("nats-route://127.0.0.1:%d", routes[j]))
				}
			}
			conf += fmt.Sprintf("cluster {\n  name: sluice-scale\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n", routes[i], strings.Join(rs, ", "))
		}
		path := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		p, err := spawn(dir, name, os.Environ(), bin, "-c", path)
		if err != nil {
			b.stop()
			return nil, err
		}
		b.nodes = append(b.nodes, p)
		b.urls = append(b.urls, fmt.Sprintf("nats://127.0.0.1:%d", clients[i]))
	}
	for i, p := range b.nodes {
		addr := strings.TrimPrefix(b.urls[i], "nats://")
		err := await(30*time.Second, p.name+" to listen", func() (bool, error) {
			if p.exited() {
				out, _ := os.ReadFile(p.log)
				return false, fmt.Errorf("%s exited:\n%s", p.name, tail(out, 2000))
			}
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err == nil, nil
		})
		if err != nil {
			b.stop()
			return nil, err
		}
	}
	return b, nil
}

// url is every node's client URL, as services take it.
func (b *broker) url() string { return strings.Join(b.urls, ",") }

func (b *broker) pids() []int {
	var pids []int
	for _, p := range b.nodes {
		pids = append(pids, p.cmd.Process.Pid)
	}
	return pids
}

func (b *broker) stop() {
	for _, p := range b.nodes {
		p.stop(20 * time.Second)
	}
}
