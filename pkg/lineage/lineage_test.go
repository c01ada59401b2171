package lineage_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/lineage"
)

func TestStepDatasetsFollowTheRun(t *testing.T) {
	ns := lineage.PostgresNamespaces("postgres://app:secret@db.internal/warehouse?sslmode=require")
	if ns.Postgres != "postgres://db.internal:5432" || ns.Database != "warehouse" {
		t.Fatalf("namespaces %+v", ns)
	}
	run := event.Run{RunID: "r", Pipeline: "orders", DS: "2026-11-25"}
	obj := event.Object{Bucket: "landing", Key: "raw/orders/2026-11-25.csv", SourceURL: "https://user:pw@api.example.com/data/2026-11-25.csv?token=abc"}
	av := &event.Available{Run: run, URL: obj.SourceURL}
	landed := &event.Landed{Run: run, Object: obj}
	validated := &event.Validated{Run: run, Object: obj, StagingTable: "public.staging_orders"}
	part := &event.Partitioned{Run: run, Object: obj, StagingTable: "public.staging_orders", Table: "public.orders", Partition: "public.orders_p20261125"}
	done := &event.Completed{Run: run, Object: obj, Table: "public.orders", Models: []event.ModelResult{
		{Node: "model.sluice.stg_orders"}, {Node: "model.sluice.orders"}, {Node: "test.sluice.unique_orders_order_id"}}}
	str := func(ds []lineage.Dataset) string {
		var out []string
		for _, d := range ds {
			out = append(out, d.String())
		}
		return strings.Join(out, " ")
	}
	for _, c := range []struct {
		name    string
		in, out event.Event
		inputs  string
		outputs string
	}{
		{"sensor", &event.Requested{Run: run}, av, "https://api.example.com/data/2026-11-25.csv", ""},
		{"fetcher", av, landed, "https://api.example.com/data/2026-11-25.csv", "s3://landing/raw/orders/2026-11-25.csv"},
		{"validator", landed, validated, "s3://landing/raw/orders/2026-11-25.csv", "postgres://db.internal:5432/warehouse.public.staging_orders"},
		{"partitioner", validated, part, "postgres://db.internal:5432/warehouse.public.staging_orders", "postgres://db.internal:5432/warehouse.public.orders"},
		{"dbtrunner", part, done, "postgres://db.internal:5432/warehouse.public.staging_orders",
			"postgres://db.internal:5432/warehouse.public.orders postgres://db.internal:5432/warehouse.public.stg_orders"},
	} {
		in, out := ns.Step(c.in, c.out)
		if str(in) != c.inputs || str(out) != c.outputs {
			t.Errorf("%s: %q -> %q, want %q -> %q", c.name, str(in), str(out), c.inputs, c.outputs)
		}
	}
}

func TestEmitterWritesAndPostsEventsInOrder(t *testing.T) {
	var mu sync.Mutex
	var posted []lineage.RunEvent
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev lineage.RunEvent
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad event", http.StatusBadRequest)
			return
		}
		mu.Lock()
		posted = append(posted, ev)
		mu.Unlock()
	}))
	defer srv.Close()
	file := filepath.Join(t.TempDir(), "lineage.jsonl")
	e := lineage.NewEmitter("sluice", srv.URL, file, nil, nil)
	id := ulid.Make()
	run := &event.Run{RunID: id.String(), Pipeline: "orders", DS: "2026-11-25"}
	e.Emit(e.Event(lineage.Start, time.Now(), run, "", nil, nil, ""))
	e.Emit(e.Event(lineage.Fail, time.Now(), run, "validator", []lineage.Dataset{{Namespace: "s3://b", Name: "k"}}, nil, "bad row"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.Close(ctx)
	e.Emit(e.Event(lineage.Start, time.Now(), run, "", nil, nil, "")) // after Close: dropped, no panic

	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) != 2 || len(posted) != 2 {
		t.Fatalf("%d lines in the file, %d posted; want 2 each", len(lines), len(posted))
	}
	var fail lineage.RunEvent
	if err := json.Unmarshal(lines[1], &fail); err != nil {
		t.Fatal(err)
	}
	if fail.EventType != lineage.Fail || fail.Job.Name != "orders.validator" || fail.Run.RunID != lineage.StepUUID(id.String(), "validator") ||
		fail.Run.Facets["errorMessage"] == nil || fail.Run.Facets["parent"] == nil || len(fail.Inputs) != 1 || fail.Outputs == nil {
		t.Errorf("fail event %s", lines[1])
	}
	if posted[0].EventType != lineage.Start || posted[0].Job.Name != "orders" || posted[0].Run.RunID != lineage.RunUUID(id.String()) {
		t.Errorf("first posted event %+v", posted[0])
	}
	// The run's UUID is its ULID's bytes.
	u := strings.ReplaceAll(lineage.RunUUID(id.String()), "-", "")
	if got, _ := ulid.Parse(id.String()); strings.ToLower(u) != strings.ToLower(hexOf(got[:])) {
		t.Errorf("run uuid %s is not ulid %s", u, id)
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, len(b)*2)
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
