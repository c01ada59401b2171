package sensor

// Push mode: POST /hooks/<pipeline> with {"ds": "YYYY-MM-DD"}, signed as the Standard Webhooks
// specification says (headers webhook-id, webhook-timestamp, webhook-signature; the signature is
// "v1," + base64 HMAC-SHA256 over "<id>.<timestamp>.<body>"). The id is signed with the rest, or
// replay protection by id could be dodged by changing the id.
//
// A waiting run is a message the broker holds back until its NakWithDelay expires, and no API
// shortens that delay. So the webhook does not try to wake the message: it does the sensor's work
// for the run in its place. It records a mark "source has <pipeline>/<ds>" (which the sensor
// consults before poking), and if the run holding the pipeline's lease is for that ds and has
// not passed the sensor yet, it confirms that run's lease (taking its fencing token), publishes
// the run's `available` itself with the message id the sensor would use, and deletes the parked
// `requested` message from the stream — the consumer then drops it as if terminated. If no run
// of that ds is active it requests one, which the sensor handles at once and passes on the mark.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/source"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// KV buckets the sensor owns (provisioned by bus.Provision).
const (
	// MarkBucket holds a mark per <pipeline>.<ds> whose file a webhook announced.
	MarkBucket = bus.MarkBucket
	// HookIDBucket remembers accepted webhook ids for twice the timestamp tolerance: inside that
	// window a replay is caught by its id, outside it by its timestamp.
	HookIDBucket = bus.HookIDBucket
)

// Webhook request headers (Standard Webhooks).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Tolerance is how far a webhook's timestamp may be from the sensor's clock; the id bucket
// keeps ids for twice as long (bus.HookIDTTL).
const Tolerance = bus.HookIDTTL / 2

// MinKeyBytes is the shortest signing key accepted: 24 bytes (192 bits) keep the HMAC out of
// reach of guessing; Standard Webhooks senders generate 24 to 64.
const MinKeyBytes = 24

// SigningKey turns a webhook secret into its HMAC key: "whsec_<base64>" is decoded as the
// Standard Webhooks specification says; any other text is used as it is. A key shorter than
// MinKeyBytes (after decoding: "whsec_" alone is no key at all) is refused.
func SigningKey(secret string) ([]byte, error) {
	k := []byte(secret)
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		var err error
		if k, err = base64.StdEncoding.DecodeString(rest); err != nil {
			return nil, errors.New("webhook secret starts with whsec_ but the rest is not base64")
		}
	}
	if len(k) < MinKeyBytes {
		return nil, fmt.Errorf("webhook signing key is %d bytes (after decoding); it must be at least %d", len(k), MinKeyBytes)
	}
	return k, nil
}

// Sign returns the webhook-signature header value for a push.
func Sign(key []byte, id, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + timestamp + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// verify checks the space-separated signatures of the header (a sender rotating its secret
// sends one per secret) in constant time.
func verify(key []byte, id, timestamp string, body []byte, header string) bool {
	want := []byte(Sign(key, id, timestamp, body))
	ok := false
	for _, sig := range strings.Fields(header) {
		if hmac.Equal([]byte(sig), want) {
			ok = true
		}
	}
	return ok
}

// mark is the value of a MarkBucket entry.
type mark struct {
	At        time.Time `json:"at"`
	WebhookID string    `json:"webhook_id"`
}

// marks reads and writes webhook marks and looks up a run's events in the stream.
type marks struct {
	kv     jetstream.KeyValue
	stream jetstream.Stream
	prefix string
}

func openMarks(ctx context.Context, js jetstream.JetStream, cfg *config.Config) (*marks, error) {
	kv, err := bus.KeyValue(ctx, js, MarkBucket)
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", MarkBucket, err)
	}
	bo := app.BusOptions(cfg)
	st, err := js.Stream(ctx, bo.Stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", bo.Stream, err)
	}
	return &marks{kv: kv, stream: st, prefix: bo.SubjectPrefix}, nil
}

func (m *marks) get(ctx context.Context, pipeline, ds string) (bool, error) {
	err := bus.Retry(ctx, func(ctx context.Context) error { _, err := m.kv.Get(ctx, pipeline+"."+ds); return err })
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read webhook mark %s %s: %w", pipeline, ds, err)
	}
	return true, nil
}

func (m *marks) put(ctx context.Context, pipeline, ds string, v mark) error {
	b, _ := json.Marshal(v)
	if err := bus.Retry(ctx, func(ctx context.Context) error { _, err := m.kv.Put(ctx, pipeline+"."+ds, b); return err }); err != nil {
		return fmt.Errorf("write webhook mark %s %s: %w", pipeline, ds, err)
	}
	return nil
}

// find returns runID's event of kind k for pipeline and ds from the stream, or nil. A ds has a
// handful of runs, and the server walks only the subject's own messages.
func (m *marks) find(ctx context.Context, k event.Kind, pipeline, ds, runID string) (*jetstream.RawStreamMsg, error) {
	subject := event.Subject(m.prefix, pipeline, k, ds)
	for seq := uint64(1); ; {
		msg, err := m.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("look up %s of run %s: %w", k, runID, err)
		}
		if runOf(msg) == runID {
			return msg, nil
		}
		seq = msg.Sequence + 1
	}
}

// last returns the newest event of kind k for pipeline and ds, or nil.
func (m *marks) last(ctx context.Context, k event.Kind, pipeline, ds string) (*jetstream.RawStreamMsg, error) {
	msg, err := m.stream.GetLastMsgForSubject(ctx, event.Subject(m.prefix, pipeline, k, ds))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up the last %s of %s %s: %w", k, pipeline, ds, err)
	}
	return msg, nil
}

func runOf(msg *jetstream.RawStreamMsg) string {
	var h struct {
		RunID string `json:"run_id"`
	}
	_ = json.Unmarshal(msg.Data, &h)
	return h.RunID
}

type markState int

const (
	markNone  markState = iota
	markReady           // a webhook announced the file: no need to poke
	markSent            // and the webhook already published this run's available
)

// marked tells whether a webhook announced req's ds, and whether it already completed req's
// sensor step.
func (s *Sensor) marked(ctx context.Context, p *config.Pipeline, req *event.Requested) (markState, error) {
	if s.marks == nil || p.Sensor.Webhook == nil {
		return markNone, nil
	}
	ok, err := s.marks.get(ctx, p.Name, req.DS)
	if err != nil || !ok {
		return markNone, err
	}
	sent, err := s.marks.find(ctx, event.KindAvailable, p.Name, req.DS, req.RunID)
	if err != nil {
		return markNone, err
	}
	if sent != nil {
		return markSent, nil
	}
	return markReady, nil
}

// ServeWebhooks mounts POST /hooks/{pipeline} on the process's HTTP endpoint for the pipelines
// that declare sensor.webhook, and lets the sensor see their marks. A push for a date with no
// run requests one through req. Without such pipelines it
// does nothing.
func (s *Sensor) ServeWebhooks(ctx context.Context, d *app.Deps, req *trigger.Requester) error {
	w := &webhooks{js: d.JS, router: d.Router, leases: d.Router.Leases(), runs: d.Router.Runs(), tp: d.Tracer,
		req: req,
		log: d.Logger("sensor").With("component", "webhook"), now: time.Now,
		pipelines: map[string]*config.Pipeline{}, keys: map[string][]byte{}}
	for i := range d.Config.Pipelines {
		p := &d.Config.Pipelines[i]
		if p.Sensor.Webhook == nil {
			continue
		}
		k, err := SigningKey(p.Sensor.Webhook.Secret.Reveal())
		if err != nil {
			return fmt.Errorf("pipeline %s: sensor.webhook.secret (%s): %w", p.Name, p.Sensor.Webhook.Secret, err)
		}
		w.pipelines[p.Name], w.keys[p.Name] = p, k
	}
	if len(w.pipelines) == 0 {
		return nil
	}
	m, err := openMarks(ctx, d.JS, d.Config)
	if err != nil {
		return err
	}
	ids, err := bus.KeyValue(ctx, d.JS, HookIDBucket)
	if err != nil {
		return fmt.Errorf("kv %s: %w", HookIDBucket, err)
	}
	w.marks, w.ids = m, ids
	w.requests = d.Metrics.WebhookRequests
	s.marks = m
	d.HandleHTTP("POST /hooks/{pipeline}", w)
	return nil
}

// webhooks is the POST /hooks/{pipeline} handler.
type webhooks struct {
	js        jetstream.JetStream
	router    *flow.Router
	req       *trigger.Requester
	marks     *marks
	ids       jetstream.KeyValue
	leases    *lease.Leases
	runs      *runstate.Store
	tp        trace.TracerProvider
	log       *slog.Logger
	now       func() time.Time
	pipelines map[string]*config.Pipeline
	keys      map[string][]byte
	requests  *prometheus.CounterVec
	rejectLog logWindow
}

// HookResult is the webhook's answer to an accepted push.
type HookResult struct {
	Pipeline string `json:"pipeline"`
	DS       string `json:"ds"`
	// Action is "available" (the waiting run's available was published), "requested" (a new
	// run was requested) or "marked" (a run of this ds is queued or past the sensor; it will
	// see the mark when it needs it).
	Action string `json:"action"`
	RunID  string `json:"run_id,omitempty"`
}

// rejection is a refused push: its status and why.
type rejection struct {
	status  int
	outcome string
	msg     string
}

func (w *webhooks) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	received := w.now()
	name := r.PathValue("pipeline")
	p, ok := w.pipelines[name]
	if !ok {
		w.reject(rw, name, "", &rejection{http.StatusNotFound, "unknown", fmt.Sprintf("pipeline %q has no webhook", name)})
		return
	}
	// The body is small: a sender that trickles it must not hold the handler for long.
	_ = http.NewResponseController(rw).SetReadDeadline(received.Add(10 * time.Second))
	ds, id, rej := w.check(rw, r, p, received)
	if rej != nil {
		w.reject(rw, name, id, rej)
		return
	}
	ctx := r.Context()
	// The lease is only read here, so the read overlaps the id's record: every round trip to the
	// broker is on the way to the waiting run's `available`.
	lease := make(chan leaseRead, 1)
	go func() {
		var l leaseRead
		l.h, l.rev, l.held, l.err = w.leases.Lookup(ctx, name)
		lease <- l
	}()
	// Create, not Put: of two concurrent copies of one push, exactly one gets through.
	idKey := name + "." + idDigest(id)
	if _, err := w.ids.Create(ctx, idKey, []byte(strconv.FormatInt(received.Unix(), 10))); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			w.reject(rw, name, id, &rejection{http.StatusConflict, "replayed", fmt.Sprintf("webhook id %q was already used", id)})
			return
		}
		w.fail(rw, name, ds, id, err)
		return
	}
	res, err := w.act(ctx, p, ds, id, received, <-lease)
	if err != nil {
		// Forget the id, or the sender's retry of this push would be refused as a replay.
		if derr := w.ids.Delete(context.WithoutCancel(ctx), idKey); derr != nil {
			w.log.Warn("forget webhook id after failure", "pipeline", name, "webhook_id", id, "err", derr)
		}
		w.fail(rw, name, ds, id, err)
		return
	}
	w.requests.WithLabelValues(name, res.Action).Inc()
	w.log.Info("webhook accepted", "pipeline", name, "ds", ds, "webhook_id", id, "action", res.Action, "run_id", res.RunID,
		"duration_ms", time.Since(received).Milliseconds())
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(rw).Encode(res)
}

// check authenticates a push and returns its ds and id, or why it is refused. Nothing is
// recorded before a push passes it.
func (w *webhooks) check(rw http.ResponseWriter, r *http.Request, p *config.Pipeline, now time.Time) (ds, id string, _ *rejection) {
	limit := p.Sensor.Webhook.MaxBody
	tooBig := &rejection{http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body larger than %d bytes", limit)}
	if r.ContentLength > limit {
		return "", "", tooBig
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, limit))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return "", "", tooBig
		}
		return "", "", &rejection{http.StatusBadRequest, "bad_request", "read body: " + err.Error()}
	}
	id, ts, sig := r.Header.Get(HeaderID), r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature)
	if sig == "" {
		return "", id, &rejection{http.StatusUnauthorized, "bad_signature", "missing " + HeaderSignature + " header"}
	}
	if id == "" || ts == "" {
		return "", id, &rejection{http.StatusBadRequest, "bad_request", "missing " + HeaderID + " or " + HeaderTimestamp + " header"}
	}
	sent, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", id, &rejection{http.StatusBadRequest, "bad_request", HeaderTimestamp + " must be Unix seconds"}
	}
	if !verify(w.keys[p.Name], id, ts, body, sig) {
		return "", id, &rejection{http.StatusUnauthorized, "bad_signature", "signature does not match"}
	}
	if skew := now.Sub(time.Unix(sent, 0)); skew > Tolerance || skew < -Tolerance {
		return "", id, &rejection{http.StatusUnauthorized, "stale", fmt.Sprintf("timestamp %s is %s away from the sensor's clock (tolerance %s)",
			time.Unix(sent, 0).UTC().Format(time.RFC3339), skew.Abs().Round(time.Second), Tolerance)}
	}
	var b struct {
		DS string `json:"ds"`
	}
	if err := json.Unmarshal(body, &b); err != nil || b.DS == "" {
		return "", id, &rejection{http.StatusBadRequest, "bad_request", `body must be JSON {"ds": "YYYY-MM-DD"}`}
	}
	if _, err := event.ParseDS(b.DS); err != nil {
		return "", id, &rejection{http.StatusBadRequest, "bad_request", err.Error()}
	}
	return b.DS, id, nil
}

func idDigest(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:16])
}

func (w *webhooks) reject(rw http.ResponseWriter, pipeline, id string, rej *rejection) {
	if w.requests != nil && rej.outcome != "unknown" {
		w.requests.WithLabelValues(pipeline, rej.outcome).Inc()
	}
	// Anyone who reaches the endpoint can send rejected requests: log each with bounded fields,
	// and at most rejectLogBurst of them a minute, then one line counting the rest.
	if n, ok := w.rejectLog.allow(w.now()); ok {
		args := []any{"pipeline", bounded(pipeline), "webhook_id", bounded(id), "status", rej.status, "reason", bounded(rej.msg)}
		if n > 0 {
			args = append(args, "not_logged_before", n)
		}
		w.log.Warn("webhook rejected", args...)
	}
	writeError(rw, rej.status, rej.msg)
}

// bounded keeps text a sender chose short enough for a log line.
func bounded(s string) string {
	const limit = 128
	if len(s) > limit {
		return strings.ToValidUTF8(s[:limit], "") + "…"
	}
	return s
}

// rejectLogBurst is how many rejected requests are logged per minute.
const rejectLogBurst = 20

// logWindow allows burst lines per minute and counts the lines it held back.
type logWindow struct {
	mu      sync.Mutex
	start   time.Time
	logged  int
	dropped int
}

// allow reports whether to log now, and how many lines were held back since the last one logged.
func (l *logWindow) allow(now time.Time) (dropped int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= time.Minute {
		l.start, l.logged = now, 0
	}
	if l.logged >= rejectLogBurst {
		l.dropped++
		return 0, false
	}
	l.logged++
	dropped, l.dropped = l.dropped, 0
	return dropped, true
}

func (w *webhooks) fail(rw http.ResponseWriter, pipeline, ds, id string, err error) {
	w.requests.WithLabelValues(pipeline, "error").Inc()
	w.log.Error(fmt.Sprintf("%s %s webhook: %v", pipeline, ds, err), "pipeline", pipeline, "ds", ds, "webhook_id", id)
	writeError(rw, http.StatusServiceUnavailable, "could not record the push; retry it")
}

func writeError(rw http.ResponseWriter, status int, msg string) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	_ = json.NewEncoder(rw).Encode(map[string]string{"error": msg})
}

// leaseRead is the pipeline's lease as the webhook read it.
type leaseRead struct {
	h    lease.Holder
	rev  uint64
	held bool
	err  error
}

// act marks ds available for p and moves the run that waits for it; l is p's lease.
func (w *webhooks) act(ctx context.Context, p *config.Pipeline, ds, id string, received time.Time, l leaseRead) (HookResult, error) {
	res := HookResult{Pipeline: p.Name, DS: ds, Action: "marked"}
	if l.err != nil {
		return res, fmt.Errorf("read lease %s: %w", p.Name, l.err)
	}
	markErr := make(chan error, 1)
	go func() { markErr <- w.marks.put(ctx, p.Name, ds, mark{At: received.UTC(), WebhookID: id}) }()
	if l.held && l.h.DS == ds {
		res.RunID = l.h.RunID
		done, err := w.complete(ctx, p, l, received, markErr)
		if done {
			res.Action = "available"
		}
		return res, err
	}
	// The mark is written before a run is requested: that run's check must find it.
	if err := <-markErr; err != nil {
		return res, err
	}
	last, err := w.marks.last(ctx, event.KindRequested, p.Name, ds)
	if err != nil {
		return res, err
	}
	if last != nil {
		res.RunID = runOf(last)
		rec, err := w.runs.Get(ctx, p.Name, ds, res.RunID)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			return res, nil // requested, not yet seen by the sensor: it will see the mark
		case err != nil:
			return res, fmt.Errorf("read run %s: %w", res.RunID, err)
		case !rec.State.Final():
			return res, nil // queued behind another run, or past the sensor
		}
	}
	req, err := w.req.Request(ctx, trigger.Request{Pipeline: p.Name, DS: ds, Trigger: "webhook", SLA: p.SLA})
	if err != nil {
		return res, err
	}
	res.RunID = req.RunID
	if req.Queued { // else a run of ds was queued meanwhile: it will see the mark
		res.Action = "requested"
	}
	return res, nil
}

// complete does the sensor step of the run that holds p's lease (l) for ds, if it is still
// parked in the sensor: confirm its lease, publish its available, remove the parked message.
// markErr delivers the outcome of writing the mark, which must succeed before anything is
// published.
func (w *webhooks) complete(ctx context.Context, p *config.Pipeline, l leaseRead, received time.Time, markErr <-chan error) (bool, error) {
	runID, ds := l.h.RunID, l.h.DS
	// Independent look-ups, at once.
	var (
		wg           sync.WaitGroup
		sent, parked *jetstream.RawStreamMsg
		sentErr, err error
		rec          runstate.Record
		recErr       error
	)
	wg.Add(2)
	go func() { defer wg.Done(); sent, sentErr = w.marks.find(ctx, event.KindAvailable, p.Name, ds, runID) }()
	go func() { defer wg.Done(); rec, recErr = w.runs.Get(ctx, p.Name, ds, runID) }()
	parked, err = w.marks.find(ctx, event.KindRequested, p.Name, ds, runID)
	wg.Wait()
	if merr := <-markErr; merr != nil {
		return false, merr
	}
	if sentErr != nil || sent != nil {
		return false, sentErr // already past the sensor
	}
	if err != nil || parked == nil {
		return false, err
	}
	in, err := event.Decode(event.KindRequested, parked.Data)
	if err != nil {
		return false, fmt.Errorf("decode requested of run %s: %w", runID, err)
	}
	req := in.(*event.Requested)
	holder, err := w.leases.RenewAt(ctx, p.Name, l.h, l.rev, p.Lease.TTL)
	if errors.Is(err, lease.ErrHeld) {
		return false, nil // the run lost its lease meanwhile; the next holder will see the mark
	}
	if err != nil {
		return false, err
	}
	// The run's root span, as the parked request carries it: the available is published with it.
	runCtx := flow.WithLogger(telemetry.Extract(ctx, parked.Header), w.log.With("pipeline", p.Name, "ds", ds, "run_id", runID))
	ctx, span := w.tp.Tracer("github.com/sluice-etl/sluice/services/sensor").Start(runCtx, "sensor webhook",
		trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attribute.String("sluice.pipeline", p.Name),
			attribute.String("sluice.ds", ds), attribute.String("sluice.run_id", runID)))
	defer span.End()

	pokes := 1
	if recErr == nil && rec.Attempts > 0 {
		pokes = rec.Attempts
	}
	run := req.Run
	run.Fence = holder.Fence
	av := &event.Available{Run: run, URL: source.Display(p, ds, runID), Pokes: pokes}
	// The sensor step, done by the webhook in the sensor's place: the run handed on as the
	// sensor would hand it on.
	if err := w.router.Advance(runCtx, req.Run, flow.StepResult(event.StepSensor, received, pokes, av), av); err != nil {
		return false, err
	}
	// Deleting the parked message from the stream ends it in the sensor's consumer as if it were
	// terminated. Should this fail, the sensor drops the copy when it comes back (markSent).
	if err := w.marks.stream.DeleteMsg(ctx, parked.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		w.log.Warn("remove parked request", "pipeline", p.Name, "ds", ds, "run_id", runID, "err", err)
	}
	return true, nil
}
