package event

import (
	"strings"
	"testing"
	"time"
)

func TestQuarantineNeedsBothFields(t *testing.T) {
	run := Run{RunID: "01M8ADKA5TWM9G3AJZJGH6NDNM", Pipeline: "orders", DS: "2024-01-01", Fence: 1, Trigger: "manual", RequestedAt: time.Unix(0, 0).UTC()}
	v := &Validated{Run: run, Object: Object{Bucket: "b", Key: "raw/orders/2024-01-01.csv", SHA256: strings.Repeat("0", 64), SourceURL: "http://127.0.0.1/x"},
		StagingTable: "public.staging_orders", Rows: 3}
	if _, err := Encode(v); err != nil {
		t.Fatalf("a validated event without a quarantine: %v", err)
	}
	v.Quarantine = Quarantine{Rejected: 2, RejectsKey: "raw/orders/2024-01-01.rejects.csv"}
	b, err := Encode(v)
	if err != nil {
		t.Fatalf("a validated event with a quarantine: %v", err)
	}
	if !strings.Contains(string(b), `"rejected":2,"rejects_key":"raw/orders/2024-01-01.rejects.csv"`) {
		t.Fatalf("encoded as %s", b)
	}
	v.Quarantine = Quarantine{Rejected: 2}
	if _, err := Encode(v); err == nil {
		t.Fatal("a quarantine without its rejects file encoded")
	}
}
