package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
)

// cache holds every run record in memory, kept current by a watch on the run-state bucket: the
// grid of a pipeline with a thousand runs is rendered without a thousand reads.
type cache struct {
	store *runstate.Store
	hub   *hub
	mu    sync.RWMutex
	byPL  map[string]map[string]runstate.Record // pipeline -> key -> record
	ready chan struct{}
}

func newCache(ctx context.Context, js jetstream.JetStream, h *hub) (*cache, error) {
	store, err := runstate.New(ctx, js)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, bus.RunBucket)
	if err != nil {
		return nil, fmt.Errorf("run state bucket: %w", err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch run state: %w", err)
	}
	c := &cache{store: store, hub: h, byPL: map[string]map[string]runstate.Record{}, ready: make(chan struct{})}
	go c.follow(ctx, w)
	select {
	case <-c.ready:
	case <-time.After(30 * time.Second):
		return nil, errors.New("run state: initial values not received within 30s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return c, nil
}

func (c *cache) follow(ctx context.Context, w jetstream.KeyWatcher) {
	defer func() { _ = w.Stop() }()
	initial := true
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil { // the end of the initial values
				if initial {
					initial = false
					close(c.ready)
				}
				continue
			}
			c.apply(e)
		}
	}
}

func (c *cache) apply(e jetstream.KeyValueEntry) {
	parts := strings.SplitN(e.Key(), ".", 3)
	if len(parts) != 3 {
		return
	}
	pipeline := parts[0]
	c.mu.Lock()
	m := c.byPL[pipeline]
	if m == nil {
		m = map[string]runstate.Record{}
		c.byPL[pipeline] = m
	}
	if e.Operation() != jetstream.KeyValuePut {
		delete(m, e.Key())
	} else {
		var rec runstate.Record
		if json.Unmarshal(e.Value(), &rec) == nil {
			m[e.Key()] = rec
		}
	}
	c.mu.Unlock()
	c.hub.notify("p:"+pipeline, "r:"+e.Key())
}

// runs returns the pipeline's runs, newest request first (run ids are ULIDs).
func (c *cache) runs(pipeline string) []runstate.Record {
	c.mu.RLock()
	out := make([]runstate.Record, 0, len(c.byPL[pipeline]))
	for _, r := range c.byPL[pipeline] {
		out = append(out, r)
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].RunID > out[j].RunID })
	return out
}

func (c *cache) get(pipeline, ds, runID string) (runstate.Record, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	r, ok := c.byPL[pipeline][runstate.Key(pipeline, ds, runID)]
	return r, ok
}

func (c *cache) byRunID(runID string) (runstate.Record, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, m := range c.byPL {
		for _, r := range m {
			if r.RunID == runID {
				return r, true
			}
		}
	}
	return runstate.Record{}, false
}

// latest is the date's most recently requested run.
func (c *cache) latest(pipeline, ds string) (runstate.Record, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var best runstate.Record
	found := false
	for _, r := range c.byPL[pipeline] {
		if r.DS == ds && (!found || r.RunID > best.RunID) {
			best, found = r, true
		}
	}
	return best, found
}

func (c *cache) latestCompleted(_ context.Context, pipeline string) (string, string, bool, error) {
	for _, r := range c.runs(pipeline) {
		if r.State == runstate.Completed {
			return r.DS, r.RunID, true, nil
		}
	}
	return "", "", false, nil
}

// followLogs notes each new log record so pages tailing a run's logs refresh.
func (c *Console) followLogs(ctx context.Context) error {
	sub, err := c.nc.Subscribe(event.LogsAll(c.cfg.NATS.SubjectPrefix), func(m *nats.Msg) {
		if pipeline, ds, _, ok := event.ParseLogSubject(m.Subject); ok {
			c.hub.notify("l:" + pipeline + "." + ds)
		}
	})
	if err != nil {
		return fmt.Errorf("follow logs: %w", err)
	}
	go func() { <-ctx.Done(); _ = sub.Unsubscribe() }()
	return nil
}

// hub fans change notices out to the open live streams. Each client has a one-slot mailbox: a
// notice arriving while one is pending is merged into it, so a slow client costs one slot,
// never a queue, and the broker's pace never waits for a browser.
type hub struct {
	mu      sync.Mutex
	clients map[*client]struct{}
	max     int
	closed  bool
	// seq counts notices. A page records it before it reads what it shows and its live stream
	// sends it back: a change between the two (a run that ended while the page loaded) is
	// announced at once instead of missed.
	seq uint64
}

type client struct {
	topics []string
	mail   chan struct{}
}

func newHub(max int) *hub { return &hub{clients: map[*client]struct{}{}, max: max} }

var errFull = errors.New("too many live pages open")

func (h *hub) join(topics []string, since uint64) (*client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || len(h.clients) >= h.max {
		return nil, errFull
	}
	cl := &client{topics: topics, mail: make(chan struct{}, 1)}
	if since < h.seq {
		cl.mail <- struct{}{}
	}
	h.clients[cl] = struct{}{}
	return cl, nil
}

func (h *hub) now() uint64 { h.mu.Lock(); defer h.mu.Unlock(); return h.seq }

func (h *hub) leave(cl *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.clients[cl]; ok {
		delete(h.clients, cl)
		close(cl.mail)
	}
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for cl := range h.clients {
		delete(h.clients, cl)
		close(cl.mail)
	}
}

func (h *hub) size() int { h.mu.Lock(); defer h.mu.Unlock(); return len(h.clients) }

func (h *hub) notify(topics ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	for cl := range h.clients {
		if matches(cl.topics, topics) {
			select {
			case cl.mail <- struct{}{}:
			default: // a notice is already pending: this one is merged into it
			}
		}
	}
}

func matches(want, got []string) bool {
	for _, w := range want {
		if w == "*" {
			return true
		}
		for _, g := range got {
			if w == g {
				return true
			}
		}
	}
	return false
}

// live is the server-sent event stream of a page: one "change" event whenever something the
// page shows may have changed (its topics), at most every half second.
func (c *Console) live(w http.ResponseWriter, r *http.Request) {
	topics := r.URL.Query()["topic"]
	if len(topics) == 0 || len(topics) > 8 {
		http.Error(w, "live: give 1 to 8 topics", http.StatusBadRequest)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	since, _ := strconv.ParseUint(r.URL.Query().Get("since"), 10, 64)
	cl, err := c.hub.join(topics, since)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer c.hub.leave(cl)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	_, _ = w.Write([]byte("retry: 2000\n: live\n\n"))
	fl.Flush()
	beat := time.NewTicker(25 * time.Second)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-beat.C:
			if _, err := w.Write([]byte(": beat\n\n")); err != nil {
				return
			}
			fl.Flush()
		case _, ok := <-cl.mail:
			if !ok {
				return
			}
			if _, err := w.Write([]byte("event: change\ndata: {}\n\n")); err != nil {
				return
			}
			fl.Flush()
			select { // merge a burst of changes into one refresh
			case <-r.Context().Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}
