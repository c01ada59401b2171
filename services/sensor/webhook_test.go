package sensor_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/services/sensor"
)

const hookSensor = `      poke_interval: 1m
      webhook:
        secret: env:HOOK_SECRET
        max_body: 256`

func newSecret(t *testing.T) (string, []byte) {
	t.Helper()
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	secret := "whsec_" + base64.StdEncoding.EncodeToString(raw)
	key, err := sensor.SigningKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	return secret, key
}

// push is one webhook request.
type push struct {
	id   string
	ts   time.Time
	body []byte
	key  []byte
}

func (p push) send(t *testing.T, e *env, pipeline string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+e.stack.HTTPAddr()+"/hooks/"+pipeline, bytes.NewReader(p.body))
	if err != nil {
		t.Fatal(err)
	}
	ts := strconv.FormatInt(p.ts.Unix(), 10)
	req.Header.Set(sensor.HeaderID, p.id)
	req.Header.Set(sensor.HeaderTimestamp, ts)
	if p.key != nil {
		req.Header.Set(sensor.HeaderSignature, sensor.Sign(p.key, p.id, ts, p.body))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func body(ds string) []byte { return []byte(`{"ds":"` + ds + `"}`) }

// streamSeq is the events stream's last sequence: a push that triggered anything published.
func streamSeq(t *testing.T, e *env) uint64 {
	t.Helper()
	st, err := e.js.Stream(context.Background(), "SLUICE")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

func marked(t *testing.T, e *env, key string) bool {
	t.Helper()
	kv, err := e.js.KeyValue(context.Background(), sensor.MarkBucket)
	if err != nil {
		t.Fatal(err)
	}
	_, err = kv.Get(context.Background(), key)
	return err == nil
}

func pending(t *testing.T, e *env) int {
	t.Helper()
	c, err := e.js.Consumer(context.Background(), "SLUICE", "sensor")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumAckPending + int(info.NumPending)
}

// The acceptance test of push mode: each bad push is refused with its own status and leaves no
// trace (no event, no mark, the waiting run still parked); a good push moves the waiting run on
// at once; replaying it is refused.
func TestWebhookRejectsBadPushesAndTriggersNothing(t *testing.T) {
	src := newSource(t)
	secret, key := newSecret(t)
	_, otherKey := newSecret(t)
	e := startSensor(t, pipeline("orders", src.URL, hookSensor, "      ttl: 2m"), map[string]string{"HOOK_SECRET": secret})
	ds := "2026-11-24"
	run := e.request(t, "orders", ds)
	testkit.Eventually(t, 10*time.Second, "the run waits in the sensor", func() bool {
		return e.state(t, "orders", ds, run).State == runstate.Waiting
	})
	now := time.Now()
	for _, tc := range []struct {
		name   string
		p      push
		status int
		reason string
	}{
		{"bad signature", push{"msg_1", now, body(ds), otherKey}, http.StatusUnauthorized, "signature does not match"},
		{"no signature", push{"msg_2", now, body(ds), nil}, http.StatusUnauthorized, "missing webhook-signature"},
		{"stale timestamp", push{"msg_3", now.Add(-6 * time.Minute), body(ds), key}, http.StatusUnauthorized, "tolerance 5m0s"},
		{"future timestamp", push{"msg_4", now.Add(6 * time.Minute), body(ds), key}, http.StatusUnauthorized, "tolerance 5m0s"},
		{"oversized body", push{"msg_5", now, []byte(`{"ds":"` + ds + `","pad":"` + strings.Repeat("x", 300) + `"}`), key}, http.StatusRequestEntityTooLarge, "larger than 256 bytes"},
		{"bad date", push{"msg_6", now, body("2026-13-45"), key}, http.StatusBadRequest, "not YYYY-MM-DD"},
	} {
		before := streamSeq(t, e)
		status, answer := tc.p.send(t, e, "orders")
		if status != tc.status || !strings.Contains(answer, tc.reason) {
			t.Errorf("%s: got %d %s, want %d mentioning %q", tc.name, status, answer, tc.status, tc.reason)
		}
		if after := streamSeq(t, e); after != before {
			t.Errorf("%s: the stream grew from %d to %d: a rejected push triggered something", tc.name, before, after)
		}
		if marked(t, e, "orders."+ds) {
			t.Fatalf("%s: a rejected push marked %s available", tc.name, ds)
		}
	}
	if status, _ := (push{"msg_7", now, body(ds), key}).send(t, e, "customers"); status != http.StatusNotFound {
		t.Errorf("push to a pipeline without a webhook: %d, want 404", status)
	}
	if len(e.find(run, event.KindAvailable)) != 0 || e.state(t, "orders", ds, run).State != runstate.Waiting {
		t.Fatal("rejected pushes moved the waiting run")
	}

	// A good push: the parked run (poke interval 1m) gets its available at once.
	good := push{"msg_ok", time.Now(), body(ds), key}
	status, answer := good.send(t, e, "orders")
	var res sensor.HookResult
	if err := json.Unmarshal([]byte(answer), &res); status != http.StatusAccepted || err != nil || res.Action != "available" || res.RunID != run {
		t.Fatalf("good push: %d %s, want 202 with action available for run %s", status, answer, run)
	}
	av := e.await(t, run, event.KindAvailable, 5*time.Second).(*event.Available)
	h, held, err := e.stack.Router.Leases().Get(context.Background(), "orders")
	if err != nil || !held || h.RunID != run || av.Fence != h.Fence {
		t.Errorf("available carries fence %d; lease %+v held %v: want the run's own token", av.Fence, h, held)
	}
	if len(av.Steps) != 1 || av.Steps[0].Step != "sensor" {
		t.Errorf("available lists steps %+v, want the sensor step", av.Steps)
	}
	// The parked copy is gone from the sensor's consumer, so it can never publish a second time.
	testkit.Eventually(t, 5*time.Second, "the parked request leaves the sensor's consumer", func() bool { return pending(t, e) == 0 })
	if rec := e.state(t, "orders", ds, run); rec.State != runstate.Running || rec.Stage != runstate.StageOf(event.KindAvailable, false) || len(rec.Steps) != 1 {
		t.Errorf("run state after the push: %+v, want handed on to the next step with the sensor step recorded", rec)
	}

	// The same push again: refused as a replay, nothing published.
	before := streamSeq(t, e)
	if status, answer := good.send(t, e, "orders"); status != http.StatusConflict || !strings.Contains(answer, "already used") {
		t.Errorf("replayed push: %d %s, want 409", status, answer)
	}
	if after := streamSeq(t, e); after != before {
		t.Errorf("a replayed push published %d messages", after-before)
	}
	if n := len(e.find(run, event.KindAvailable)); n != 1 {
		t.Errorf("%d available events for the run, want 1", n)
	}
}

func TestWebhookRequestsARunWhenNoneIsActive(t *testing.T) {
	src := newSource(t)
	secret, key := newSecret(t)
	e := startSensor(t, pipeline("orders", src.URL, hookSensor, "      ttl: 2m"), map[string]string{"HOOK_SECRET": secret})
	status, answer := push{"msg_1", time.Now(), body("2026-11-25"), key}.send(t, e, "orders")
	var res sensor.HookResult
	if err := json.Unmarshal([]byte(answer), &res); status != http.StatusAccepted || err != nil || res.Action != "requested" {
		t.Fatalf("push: %d %s, want 202 requested", status, answer)
	}
	req := e.await(t, res.RunID, event.KindRequested, 5*time.Second).(*event.Requested)
	if req.Trigger != "webhook" {
		t.Errorf("trigger %q, want webhook", req.Trigger)
	}
	e.await(t, res.RunID, event.KindAvailable, 5*time.Second)
	if n := src.count("2026-11-25"); n != 0 {
		t.Errorf("the sensor poked the source %d times although the webhook announced the file", n)
	}

	// A second push for a ds whose run is still active (it holds the lease past the sensor)
	// requests nothing.
	before := streamSeq(t, e)
	status, answer = push{"msg_2", time.Now(), body("2026-11-25"), key}.send(t, e, "orders")
	if err := json.Unmarshal([]byte(answer), &res); status != http.StatusAccepted || err != nil || res.Action != "marked" {
		t.Fatalf("second push: %d %s, want 202 marked", status, answer)
	}
	if after := streamSeq(t, e); after != before {
		t.Errorf("a push for an active run published %d messages", after-before)
	}
}

// If the webhook published a run's available but could not delete the parked request, the copy
// that comes back is dropped: no second available, and the lease is left alone.
func TestParkedCopyOfAWebhookCompletedRunIsDropped(t *testing.T) {
	src := newSource(t)
	secret, _ := newSecret(t)
	e := startSensor(t, pipeline("orders", src.URL, strings.Replace(hookSensor, "1m", "100ms", 1), "      ttl: 5s"),
		map[string]string{"HOOK_SECRET": secret})
	ds := "2026-11-24"
	run := e.request(t, "orders", ds)
	testkit.Eventually(t, 10*time.Second, "the sensor pokes", func() bool { return src.count(ds) >= 1 })
	ctx := context.Background()
	kv, err := e.js.KeyValue(ctx, sensor.MarkBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "orders."+ds, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	req := e.find(run, event.KindRequested)[0].(*event.Requested)
	h, _, _ := e.stack.Router.Leases().Get(ctx, "orders")
	r := req.Run
	r.Fence = h.Fence
	if err := flow.Publish(ctx, e.js, "etl", &event.Available{Run: r, URL: src.URL, Pokes: 1}); err != nil {
		t.Fatal(err)
	}
	if err := e.stack.Router.Leases().Release(ctx, "orders", run); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the parked copy is dropped", func() bool { return pending(t, e) == 0 })
	if n := len(e.find(run, event.KindAvailable)); n != 1 {
		t.Errorf("%d available events, want only the webhook's", n)
	}
	if _, held, _ := e.stack.Router.Leases().Get(ctx, "orders"); held {
		t.Error("the dropped copy took the lease again")
	}
}
