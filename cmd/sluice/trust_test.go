package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/objstore"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

// Events are claims, not orders. Crafted events on the bus — an available naming a metadata
// URL, a landed naming another pipeline's object, a landed with fence 0, a request for a
// pipeline nobody configured — are refused with one line each and change nothing: no table,
// no object (the foreign object's rejects file is not deleted), no KV entry, no metric but the
// refused counter.
func TestCraftedEventsAreRefusedAndChangeNothing(t *testing.T) {
	var metadataHits atomic.Int32
	metadata := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		metadataHits.Add(1)
		fmt.Fprint(w, "order_id,customer_id,amount,updated_at\n1,10,5.00,2026-11-01T10:00:00Z\n")
	}))
	defer metadata.Close()
	source := httptest.NewServer(http.NotFoundHandler())
	defer source.Close()
	e := startEnv(t, source.URL, time.Minute)
	ctx := context.Background()

	// Another pipeline's object, valid for the orders contract, with a rejects file next to it.
	s3c, err := objstore.New(ctx, e.cfg.S3)
	if err != nil {
		t.Fatal(err)
	}
	bucket := e.cfg.S3.Bucket
	foreign := "order_id,customer_id,amount,updated_at\n1,10,5.00,2026-11-01T10:00:00Z\n"
	for key, body := range map[string]string{"raw/payments/2026-11-25.csv": foreign, "raw/payments/2026-11-25.rejects.csv": "line,error\n"} {
		if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(body)}); err != nil {
			t.Fatal(err)
		}
	}
	objectsBefore := listObjects(t, s3c, bucket)
	metricsBefore := e.sluiceMetrics(t)

	now := time.Now().UTC().Format(time.RFC3339Nano)
	run := func(pipeline, fence string) string {
		return fmt.Sprintf(`"run_id":%q,"pipeline":%q,"ds":"2026-11-25","requested_at":%q%s`, ulid.Make().String(), pipeline, now, fence)
	}
	object := func(key string) string {
		return fmt.Sprintf(`"object":{"bucket":%q,"key":%q,"size":%d,"sha256":%q,"source_url":"x"}`, bucket, key, len(foreign), sha256Hex(foreign))
	}
	crafted := []struct{ name, subject, data string }{
		{"metadata URL", "etl.orders.available.2026-11-25", "{" + run("orders", `,"fence":9`) + `,"url":"` + metadata.URL + `/latest/meta-data/","pokes":1}`},
		{"foreign key", "etl.orders.landed.2026-11-25", "{" + run("orders", `,"fence":9`) + "," + object("raw/payments/2026-11-25.csv") + "}"},
		{"fence 0", "etl.orders.landed.2026-11-25", "{" + run("orders", `,"fence":0`) + "," + object("raw/orders/2026-11-25.csv") + "}"},
		{"unknown pipeline", "etl.ghost.requested.2026-11-25", "{" + run("ghost", "") + "}"},
	}
	js := e.stacks[0].JS
	e.events.crafted.Store(true)
	for _, c := range crafted {
		if _, err := js.Publish(ctx, c.subject, []byte(c.data)); err != nil {
			t.Fatal(err)
		}
	}
	refusals := func() []string {
		var out []string
		for _, l := range strings.Split(e.logs.String(), "\n") {
			if strings.Contains(l, ": refused ") {
				out = append(out, l)
			}
		}
		return out
	}
	testkit.Eventually(t, 30*time.Second, "a refusal line per crafted event", func() bool { return len(refusals()) >= len(crafted) })
	time.Sleep(time.Second) // anything a refused event would set off has had time to happen
	if got := refusals(); len(got) != len(crafted) {
		t.Fatalf("%d refusal lines for %d crafted events:\n%s", len(got), len(crafted), strings.Join(got, "\n"))
	}
	for _, want := range []string{"is not the source of pipeline orders", "is not the landing key of pipeline orders", "minimum: got 0, want 1", "pipeline \\\"ghost\\\" is not configured"} {
		if !strings.Contains(strings.Join(refusals(), "\n"), want) {
			t.Errorf("no refusal line says %s:\n%s", want, strings.Join(refusals(), "\n"))
		}
	}

	if n := metadataHits.Load(); n != 0 {
		t.Errorf("the metadata URL was fetched %d times", n)
	}
	if got := listObjects(t, s3c, bucket); strings.Join(got, " ") != strings.Join(objectsBefore, " ") {
		t.Errorf("bucket changed: %v -> %v", objectsBefore, got)
	}
	conn, err := pgx.Connect(ctx, e.pg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{"SELECT count(*) FROM staging_orders", "SELECT count(*) FROM sluice_fences"} {
		var n int
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if n != 0 {
			t.Errorf("%s = %d after crafted events", q, n)
		}
	}
	if len(e.orders(t)) != 0 {
		t.Error("orders holds rows after crafted events")
	}
	for _, b := range []string{bus.RunBucket, bus.LeaseBucket, bus.AlertBucket} {
		kv, err := js.KeyValue(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		if keys, err := kv.Keys(ctx); !errors.Is(err, jetstream.ErrNoKeysFound) {
			t.Errorf("%s holds %v (%v)", b, keys, err)
		}
	}
	after := e.sluiceMetrics(t)
	refused := 0.0
	for series, v := range after {
		if strings.Contains(series, "sluice_events_refused_total") {
			refused += v - metricsBefore[series]
			continue
		}
		if metricsBefore[series] != v {
			t.Errorf("%s changed: %v -> %v", series, metricsBefore[series], v)
		}
	}
	if refused != float64(len(crafted)) {
		t.Errorf("sluice_events_refused_total grew by %v, want %d", refused, len(crafted))
	}
	if n := e.slack.Attempts(); n != 0 {
		t.Errorf("crafted events raised %d Slack alerts", n)
	}
}

// sluiceMetrics is every sluice_* series of every service's registry (consumer gauges aside:
// they follow the broker's delivery of anything), by service and labels.
func (e *env) sluiceMetrics(t *testing.T) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for i, st := range e.stacks {
		mfs, err := st.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if !strings.HasPrefix(mf.GetName(), "sluice_") || strings.HasPrefix(mf.GetName(), "sluice_consumer_") {
				continue
			}
			for _, m := range mf.GetMetric() {
				key := fmt.Sprintf("%d/%s", i, mf.GetName())
				for _, l := range m.GetLabel() {
					key += fmt.Sprintf("{%s=%s}", l.GetName(), l.GetValue())
				}
				switch {
				case m.Counter != nil:
					out[key] = m.Counter.GetValue()
				case m.Gauge != nil:
					out[key] = m.Gauge.GetValue()
				case m.Histogram != nil:
					out[key] = float64(m.Histogram.GetSampleCount())
				}
			}
		}
	}
	return out
}

func listObjects(t *testing.T, c *s3.Client, bucket string) []string {
	t.Helper()
	out, err := c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key)+"@"+aws.ToString(o.ETag))
	}
	sort.Strings(keys)
	return keys
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
