// Package cluster runs a JetStream cluster of real nats-server processes on loopback, for tests
// and benchmarks that need what one server cannot show: replicated (R3) streams and KV buckets,
// leaders that move, a node SIGKILLed and restarted with its store or without it. Each node is
// its own process (so it can be killed), stores on disk with sync_interval: always, and joins
// the others over loopback routes on free ports. The server binary is built from the
// nats-server module the project already requires (Build).
//
//	bin, _ := cluster.Build(".", dir)
//	c, _ := cluster.Start(ctx, cluster.Options{Bin: bin, Dir: dir})
//	defer c.Stop()
//	nc, _ := nats.Connect(c.URLs())
//	leader, _ := c.Leader(ctx, js, "KV_sluice_leases")
//	leader.Kill()
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Build builds nats-server into outDir and returns its path. srcDir is any directory of a
// module (or workspace) that requires github.com/nats-io/nats-server/v2, so the binary is the
// version the project embeds; the Go build cache makes a second build a link only.
func Build(srcDir, outDir string) (string, error) {
	bin := filepath.Join(outDir, "nats-server")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	cmd.Dir = srcDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build nats-server: %v\n%s", err, out)
	}
	return bin, nil
}

// Options describe a cluster.
type Options struct {
	// Bin is the nats-server binary (Build).
	Bin string
	// Dir holds each node's config, store (<node>/store) and logs.
	Dir string
	// Nodes is how many servers; 0 is 3.
	Nodes int
	// Name is the cluster's name; empty is "sluice".
	Name string
	// Extra is appended to every node's config (accounts, limits).
	Extra string
}

// Cluster is the running servers.
type Cluster struct {
	Name  string
	Nodes []*Node
}

// Node is one server: its name (n1, n2, ...), ports, store and process.
type Node struct {
	Name      string
	Port      int // clients
	RoutePort int // the other servers
	HTTPPort  int // monitoring (/healthz, /jsz, /connz)
	Store     string
	Conf      string
	bin, dir  string

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	log   string
	start int
}

// Start writes each node's config, starts every node and waits until the cluster has elected
// its JetStream meta leader and every node reports healthy.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Name == "" {
		o.Name = "sluice"
	}
	ports, err := freePorts(3 * o.Nodes)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Name: o.Name}
	routes := make([]string, o.Nodes)
	for i := range o.Nodes {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+1])
	}
	for i := range o.Nodes {
		n := &Node{Name: fmt.Sprintf("n%d", i+1), Port: ports[3*i], RoutePort: ports[3*i+1], HTTPPort: ports[3*i+2], bin: o.Bin}
		n.dir = filepath.Join(o.Dir, n.Name)
		n.Store = filepath.Join(n.dir, "store")
		n.Conf = filepath.Join(n.dir, "nats.conf")
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			return nil, err
		}
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
  # Acknowledged means on every replica's disk: the default syncs every two minutes.
  sync_interval: always
}
cluster {
  name: %s
  listen: 127.0.0.1:%d
  routes: [%s]
}
%s
`, n.Name, n.Port, n.HTTPPort, n.Store, o.Name, n.RoutePort, strings.Join(routes, ", "), o.Extra)
		if err := os.WriteFile(n.Conf, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := n.Start(ctx); err != nil {
			c.Stop()
			return nil, err
		}
	}
	for _, n := range c.Nodes {
		if err := n.WaitHealthy(ctx); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// URLs is every node's client URL, comma-separated: what a client that may fail over is given.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// Node returns the node named name (a stream's Cluster.Leader), or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Stop ends every node gracefully.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		_ = n.Stop()
	}
}

// ErrNoLeader is a stream with no leader at the moment (an election is under way).
var ErrNoLeader = errors.New("no leader")

// Leader is the node leading stream (for a KV bucket, its stream "KV_<bucket>"), as the
// JetStream API reports it.
func (c *Cluster) Leader(ctx context.Context, js jetstream.JetStream, stream string) (*Node, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return nil, fmt.Errorf("stream %s: %w", stream, ErrNoLeader)
	}
	n := c.Node(info.Cluster.Leader)
	if n == nil {
		return nil, fmt.Errorf("stream %s: leader %q is not a node of cluster %s", stream, info.Cluster.Leader, c.Name)
	}
	return n, nil
}

// WaitLeader waits until stream has a leader other than not (nil: any) and returns it.
func (c *Cluster) WaitLeader(ctx context.Context, js jetstream.JetStream, stream string, not *Node) (*Node, error) {
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		n, err := c.Leader(attempt, js, stream)
		cancel()
		if err == nil && n != not {
			return n, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stream %s: no new leader: %w (last: %v)", stream, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitCurrent waits until stream has a leader and every one of its replicas runs and is
// current: each node holds every message again (a restarted or wiped node caught up).
func (c *Cluster) WaitCurrent(ctx context.Context, js jetstream.JetStream, stream string) error {
	var why string
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		why = c.current(attempt, js, stream)
		cancel()
		if why == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stream %s: replicas not current: %s: %w", stream, why, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// current says why stream is not fully replicated yet, or "".
func (c *Cluster) current(ctx context.Context, js jetstream.JetStream, stream string) string {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err.Error()
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "no leader"
	}
	if got, want := len(info.Cluster.Replicas)+1, info.Config.Replicas; got < want {
		return fmt.Sprintf("%d of %d replicas known", got, want)
	}
	for _, p := range info.Cluster.Replicas {
		if !p.Current || p.Offline {
			return fmt.Sprintf("replica %s: current %v, offline %v, lag %d", p.Name, p.Current, p.Offline, p.Lag)
		}
	}
	return ""
}

// URL is the node's client URL.
func (n *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port) }

// Log is the log file of the node's current (or last) process.
func (n *Node) Log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.log
}

// Running reports whether the node's process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Start starts the node's process (again, on the same ports and store) and waits until it
// accepts clients. It does not wait for JetStream to catch up: WaitHealthy does.
func (n *Node) Start(ctx context.Context) error {
	if n.Running() {
		return fmt.Errorf("node %s is running", n.Name)
	}
	n.mu.Lock()
	n.start++
	logPath := filepath.Join(n.dir, fmt.Sprintf("nats-server.%d.log", n.start))
	n.mu.Unlock()
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(n.bin, "-c", n.Conf)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start node %s: %w", n.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	n.mu.Lock()
	n.cmd, n.done, n.log = cmd, done, logPath
	n.mu.Unlock()
	addr := fmt.Sprintf("127.0.0.1:%d", n.Port)
	for {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-done:
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("node %s exited at start:\n%s", n.Name, b)
		case <-ctx.Done():
			return fmt.Errorf("node %s did not listen on %s: %w", n.Name, addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitHealthy waits until the node's /healthz answers ok: JetStream is enabled, the meta
// leader is known and every stream and consumer assigned to the node is current.
func (n *Node) WaitHealthy(ctx context.Context) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", n.HTTPPort)
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var b [512]byte
			k, _ := resp.Body.Read(b[:])
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = strings.TrimSpace(string(b[:k]))
		} else {
			last = err.Error()
		}
		if !n.Running() {
			return fmt.Errorf("node %s is not running (log %s)", n.Name, n.Log())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s not healthy: %s: %w", n.Name, last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Kill SIGKILLs the node: no flush, no goodbye to its peers.
func (n *Node) Kill() error { return n.signal(syscall.SIGKILL) }

// Stop ends the node with SIGTERM (SIGKILL after 20 s).
func (n *Node) Stop() error { return n.signal(syscall.SIGTERM) }

func (n *Node) signal(sig syscall.Signal) error {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if !n.Running() {
		return nil
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal node %s: %w", n.Name, err)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	return nil
}

// Wipe removes the node's store, as a replaced disk would; the node must be stopped. Started
// again, it rejoins empty and catches up from its peers.
func (n *Node) Wipe() error {
	if n.Running() {
		return fmt.Errorf("wipe node %s: it is running", n.Name)
	}
	return os.RemoveAll(n.Store)
}

// freePorts returns k distinct free loopback ports.
func freePorts(k int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, k)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// StepDown asks stream's leader to step down in favour of to (nil: any other replica) and
// waits until to leads: a test places a leader where its fault needs it.
func (c *Cluster) StepDown(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, stream string, to *Node) error {
	req := []byte("{}")
	if to != nil {
		req = []byte(fmt.Sprintf(`{"placement":{"preferred":%q}}`, to.Name))
	}
	for {
		cur, err := c.WaitLeader(ctx, js, stream, nil)
		if err != nil {
			return err
		}
		if to != nil && cur == to {
			return nil
		}
		msg, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, req)
		if err != nil {
			return fmt.Errorf("step down %s: %w", stream, err)
		}
		var resp struct {
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		if err := json.Unmarshal(msg.Data, &resp); err != nil {
			return fmt.Errorf("step down %s: %w", stream, err)
		}
		if resp.Error != nil {
			return fmt.Errorf("step down %s: %s", stream, resp.Error.Description)
		}
		if to == nil {
			_, err := c.WaitLeader(ctx, js, stream, cur)
			return err
		}
		if _, err := c.WaitLeader(ctx, js, stream, cur); err != nil {
			return err
		}
	}
}
