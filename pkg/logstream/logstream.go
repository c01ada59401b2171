// Package logstream puts the log records of runs on the bus: every record that names a run
// (pipeline, ds and run id) is published, besides going to stdout, on
// logs.<prefix>.<pipeline>.<ds>.<service> in a JetStream stream with age and size limits, so the
// console can show every line a service wrote for a run without a log store of its own.
//
// Publishing never holds up the caller: records go through a bounded queue to one publishing
// goroutine, and when the queue is full (a slow or absent broker) a record is dropped and
// counted, never waited for. A step must not stall because its logs cannot leave.
package logstream

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sluice-etl/sluice/pkg/event"
)

// StreamName is the log stream of the events stream named events: <events>_LOGS.
func StreamName(events string) string { return events + "_LOGS" }

// Limits bound the log stream; the oldest records go first.
type Limits struct {
	MaxAge   time.Duration
	MaxBytes int64
}

// StreamConfig is the log stream's configuration.
func StreamConfig(events, prefix string, l Limits) jetstream.StreamConfig {
	if l.MaxAge == 0 {
		l.MaxAge = 7 * 24 * time.Hour
	}
	if l.MaxBytes == 0 {
		l.MaxBytes = 1 << 30
	}
	return jetstream.StreamConfig{
		Name:        StreamName(events),
		Description: "sluice log records of runs",
		Subjects:    []string{event.LogsAll(prefix)},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      l.MaxAge,
		MaxBytes:    l.MaxBytes,
	}
}

// Record is one published log record, as the console reads it back.
type Record struct {
	Time     time.Time      `json:"time"`
	Level    string         `json:"level"`
	Msg      string         `json:"msg"`
	Pipeline string         `json:"pipeline"`
	DS       string         `json:"ds"`
	RunID    string         `json:"run_id"`
	Service  string         `json:"service,omitempty"`
	Step     string         `json:"step,omitempty"`
	Attempt  int            `json:"attempt,omitempty"`
	Attrs    map[string]any `json:"attrs,omitempty"`
}

// Publisher sends records from a bounded queue; it is shared by every Handler of a process.
type Publisher struct {
	nc      *nats.Conn
	prefix  string
	queue   chan *nats.Msg
	dropped atomic.Uint64
	done    chan struct{}
	once    sync.Once
}

// NewPublisher starts publishing on nc with room for queue records in flight (default 4096).
func NewPublisher(nc *nats.Conn, prefix string, queue int) *Publisher {
	if queue <= 0 {
		queue = 4096
	}
	p := &Publisher{nc: nc, prefix: prefix, queue: make(chan *nats.Msg, queue), done: make(chan struct{})}
	go p.loop()
	return p
}

func (p *Publisher) loop() {
	defer close(p.done)
	for m := range p.queue {
		// A core publish: the stream stores it without an ack round trip. While the connection
		// is down nats.go buffers (bounded) and then errors; an error is a dropped record.
		if err := p.nc.PublishMsg(m); err != nil {
			p.dropped.Add(1)
		}
	}
}

// Dropped is how many records were not published (queue full or connection refused).
func (p *Publisher) Dropped() uint64 { return p.dropped.Load() }

// Close publishes what is queued and stops; records logged afterwards are dropped.
func (p *Publisher) Close(ctx context.Context) {
	p.once.Do(func() { close(p.queue) })
	select {
	case <-p.done:
		if p.nc.IsConnected() {
			_ = p.nc.FlushWithContext(ctx)
		}
	case <-ctx.Done():
	}
}

func (p *Publisher) enqueue(m *nats.Msg) {
	defer func() {
		if recover() != nil { // closed: the process is stopping
			p.dropped.Add(1)
		}
	}()
	select {
	case p.queue <- m:
	default:
		p.dropped.Add(1)
	}
}

// Handler is a slog.Handler that publishes the records naming a run and ignores the others.
// Combine it with the stdout handler (telemetry.Tee) so it sees the same records.
type Handler struct {
	p     *Publisher
	level slog.Leveler
	attrs []slog.Attr // from WithAttrs, outside any group
	group string      // the open group's prefix ("a.b."), for attributes added in a group
}

// Handler returns a handler publishing records at level or above through p.
func (p *Publisher) Handler(level slog.Leveler) *Handler { return &Handler{p: p, level: level} }

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), prefixed(h.group, attrs)...)
	return &c
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	c := *h
	c.group = h.group + name + "."
	return &c
}

func prefixed(group string, attrs []slog.Attr) []slog.Attr {
	if group == "" {
		return attrs
	}
	out := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		out[i] = slog.Attr{Key: group + a.Key, Value: a.Value}
	}
	return out
}

// Handle implements slog.Handler: a record with pipeline, ds and run_id is queued for publishing.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	rec := Record{Time: r.Time.UTC(), Level: r.Level.String(), Msg: r.Message}
	var extra []slog.Attr
	take := func(a slog.Attr) {
		v := a.Value.Resolve()
		switch a.Key {
		case "pipeline":
			rec.Pipeline = v.String()
		case "ds":
			rec.DS = v.String()
		case "run_id":
			rec.RunID = v.String()
		case "service":
			rec.Service = v.String()
		case "step":
			rec.Step = v.String()
		case "attempt":
			if v.Kind() == slog.KindInt64 {
				rec.Attempt = int(v.Int64())
			}
		default:
			extra = append(extra, slog.Attr{Key: a.Key, Value: v})
		}
	}
	for _, a := range h.attrs {
		take(a)
	}
	var own []slog.Attr
	r.Attrs(func(a slog.Attr) bool { own = append(own, a); return true })
	for _, a := range prefixed(h.group, own) {
		take(a)
	}
	if rec.Pipeline == "" || rec.RunID == "" || !token(rec.Pipeline) || !token(rec.DS) {
		return nil
	}
	service := rec.Service
	if service == "" {
		service = rec.Step
	}
	if service == "" || !token(service) {
		service = "sluice"
	}
	if len(extra) > 0 {
		rec.Attrs = make(map[string]any, len(extra))
		for _, a := range extra {
			rec.Attrs[a.Key] = value(a.Value)
		}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode log record: %w", err)
	}
	h.p.enqueue(&nats.Msg{Subject: event.LogSubject(h.p.prefix, rec.Pipeline, rec.DS, service), Data: b})
	return nil
}

// token reports whether s can be one subject token.
func token(s string) bool { return s != "" && !strings.ContainsAny(s, ".*> \t\r\n") }

func value(v slog.Value) any {
	switch v.Kind() {
	case slog.KindGroup:
		m := map[string]any{}
		for _, a := range v.Group() {
			m[a.Key] = value(a.Value.Resolve())
		}
		return m
	case slog.KindDuration:
		return v.Duration().String()
	case slog.KindTime:
		return v.Time().UTC()
	case slog.KindAny:
		x := v.Any()
		if err, ok := x.(error); ok {
			return err.Error()
		}
		if _, err := json.Marshal(x); err != nil {
			return fmt.Sprint(x)
		}
		return x
	}
	return v.Any()
}
