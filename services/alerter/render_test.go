package alerter

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/sla"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// fixedNow is the alerts' clock in tests, so run times render the same every time.
var fixedNow = time.Date(2024, 6, 2, 0, 17, 42, 0, time.UTC)

// newAlert is the failure alert the tests expect, with the run link only.
func newAlert(f *event.Failed, runURL string) alert {
	return failureAlert(f, links{run: runURL}, fixedNow)
}

// golden compares got with testdata/<name>.golden, or rewrites that file with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test -update if the change is intended)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestRenderGolden(t *testing.T) {
	requested := time.Date(2024, 6, 2, 0, 5, 0, 0, time.UTC)
	l := links{run: "https://sluice.example.com/runs/{pipeline}/{ds}/{run_id}",
		trace: "https://jaeger.example.com/trace/{trace_id}", traceID: "4bf92f3577b34da6a3ce929d0e0e4736"}
	run := func(id, ds string) event.Run {
		return event.Run{RunID: id, Pipeline: "orders", DS: ds, RequestedAt: requested}
	}
	completed := &event.Completed{Run: run("01J0RDERS0000000000000000C", "2024-06-01"), Table: "public.orders",
		Partition: "public.orders_p20240601", Staged: 1000, Inserted: 900, Updated: 100}
	quarantined := *completed
	quarantined.Object = event.Object{Bucket: "landing", Key: "raw/orders/2024-06-01.csv"}
	quarantined.Quarantine = event.Quarantine{Rejected: 3, RejectsKey: "raw/orders/2024-06-01.rejects.csv"}
	tests := []struct {
		name string
		a    alert
	}{
		{"orders", newAlert(&event.Failed{
			Run:      run("01J0RDERS0000000000000000A", "2024-06-01"),
			Step:     "validate",
			Attempts: 3,
			Class:    "permanent",
			Error:    `contract orders: column "amount" is missing`,
		}, "https://sluice.example.com/runs/{pipeline}/{ds}/{run_id}")},
		{"escaping", failureAlert(&event.Failed{
			Run:      event.Run{RunID: "01J0ESCAPE0000000000000000", Pipeline: "orders", DS: "2024-06-02"},
			Attempts: 1,
			Error:    "row 7: <script>alert('x')</script> & <!channel>\nsee `dbt run` output",
		}, links{}, fixedNow)},
		{"failed-trace", failureAlert(&event.Failed{Run: run("01J0RDERS0000000000000000A", "2024-06-01"),
			Step: "fetcher", Attempts: 4, Class: "transient", Error: "put s3://landing/raw/orders/2024-06-01.csv: 503 Slow Down"}, l, fixedNow)},
		{"sla-missed", slaAlert(&event.SLAMissed{Run: run("01J0RDERS0000000000000000B", "2024-06-01"),
			Deadline: requested.Add(10 * time.Minute)},
			sla.Verdict{Missed: true, Step: "sensor", State: runstate.Waiting, Detail: "source http://api/data/2024-06-01.csv answered 404"}, l, fixedNow)},
		{"sla-missed-queued", slaAlert(&event.SLAMissed{Run: run("01J0RDERS0000000000000000B", "2024-06-01"),
			Deadline: requested.Add(10 * time.Minute)}, sla.Judge(nil, requested), links{}, fixedNow)},
		{"success", noticeAlert(completed, "", l, fixedNow)},
		{"recovery", noticeAlert(completed, "01J0RDERS0000000000000000A", l, fixedNow)},
		{"success-quarantined", noticeAlert(&quarantined, "", l, fixedNow)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tt.a
			text, blocks, err := slackMessage(a)
			if err != nil {
				t.Fatal(err)
			}
			js, err := slackBlocksJSON(blocks)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name+".slack.txt", []byte(text+"\n"))
			golden(t, tt.name+".slack.json", js)

			subject, err := emailSubject(a)
			if err != nil {
				t.Fatal(err)
			}
			plain, html, err := emailBodies(a)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name+".email.txt", []byte("Subject: "+subject+"\n\n"+plain))
			golden(t, tt.name+".email.html", []byte(html))
			if strings.Contains(html, "<script>") {
				t.Errorf("html is not escaped:\n%s", html)
			}
		})
	}
}

func TestSlackEscape(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 10, "plain"},
		{"a<b>&c", 20, "a&lt;b&gt;&amp;c"},
		{"a<b>&c", 16, "a&lt;b&gt;&amp;c"},
		{"a<b>&c", 12, "a&lt;b…"}, // never half an escape
		{"ééééé", 8, "éé…"},       // never half a character
		{"<<<<<<<<", 9, "&lt;…"},  // the escape, not the input, counts
		{strings.Repeat("x", 30), 30, strings.Repeat("x", 30)},
	}
	for _, tt := range tests {
		got := slackEscape(tt.in, tt.max)
		if got != tt.want {
			t.Errorf("slackEscape(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
		if len(got) > tt.max || !utf8.ValidString(got) {
			t.Errorf("slackEscape(%q, %d) = %q: too long or broken", tt.in, tt.max, got)
		}
	}
}

func TestSlackMessageStaysWithinLimits(t *testing.T) {
	f := event.Failed{
		Run:   event.Run{RunID: "01J0L0NG000000000000000000", Pipeline: strings.Repeat("p", 200), DS: "2024-06-01"},
		Step:  strings.Repeat("s", 3000),
		Error: strings.Repeat("<", 10000),
	}
	text, blocks, err := slackMessage(newAlert(&f, ""))
	if err != nil {
		t.Fatal(err)
	}
	// Slack rejects header text over 150 characters, fields over 2000 and sections over 3000.
	if n := utf8.RuneCountInString(blocks[0].(*slack.HeaderBlock).Text.Text); n > 150 {
		t.Errorf("header has %d characters", n)
	}
	for _, field := range blocks[1].(*slack.SectionBlock).Fields {
		if n := utf8.RuneCountInString(field.Text); n > 2000 {
			t.Errorf("field has %d characters", n)
		}
	}
	if n := utf8.RuneCountInString(blocks[2].(*slack.SectionBlock).Text.Text); n > 3000 {
		t.Errorf("error section has %d characters", n)
	}
	if n := utf8.RuneCountInString(text); n > 40000 {
		t.Errorf("fallback text has %d characters", n)
	}
}
