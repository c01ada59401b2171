package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/pkg/trigger"
	"github.com/sluice-etl/sluice/services/console"
	"github.com/sluice-etl/sluice/services/console/consoletest"
)

const testConfig = `postgres:
  url: env:PG_URL
s3:
  bucket: sluice
console:
%s
pipelines:
  - name: orders
    schedule: "0 6 * * *"
    source:
      url: http://127.0.0.1:1/data/{ds}.csv
    sla:
      within: 2h
`

type world struct {
	srv  *httptest.Server
	js   jetstream.JetStream
	nc   *nats.Conn
	runs []consoletest.Run
	cfg  *config.Config
}

func start(t *testing.T, password string) *world {
	t.Helper()
	section := "  addr: 127.0.0.1:0"
	if password != "" {
		section += "\n  password: env:CONSOLE_PASSWORD"
	}
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(testConfig, section)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"PG_URL": "postgres://x@127.0.0.1/x", "CONSOLE_PASSWORD": password}
	cfg, err := config.Load(path, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	nc, js := testkit.Connect(t, testkit.NATS(t))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := bus.Provision(ctx, js, app.BusOptions(cfg)); err != nil {
		t.Fatal(err)
	}
	runs, err := consoletest.Seed(ctx, js, nc, app.BusOptions(cfg), "orders", time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC), 40)
	if err != nil {
		t.Fatal(err)
	}
	c, err := console.New(ctx, console.Deps{Config: cfg, Log: slog.New(slog.DiscardHandler), NC: nc, JS: js, Tracer: noop.NewTracerProvider()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return &world{srv: srv, js: js, nc: nc, runs: runs, cfg: cfg}
}

// browser is a client with a cookie jar that does not follow redirects.
func (w *world) browser(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func post(t *testing.T, c *http.Client, u string, form url.Values) (int, string, string) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(b)
}

var (
	csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	reqRe  = regexp.MustCompile(`name="request_id" value="([^"]+)"`)
)

// csrf loads a page with a form and returns the token in it.
func csrf(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	_, body := get(t, c, u)
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no csrf token on %s", u)
	}
	return m[1]
}

func (w *world) requested(t *testing.T, ds string) int {
	t.Helper()
	runs, err := runstate.New(context.Background(), w.js)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := runs.Runs(context.Background(), "orders", ds)
	if err != nil {
		t.Fatal(err)
	}
	return len(rs)
}

func TestPagesRenderAndBadURLsAnswer404(t *testing.T) {
	w := start(t, "")
	c := w.browser(t)
	failed := w.runs[5]
	if failed.State != runstate.Failed {
		t.Fatalf("seed: run 5 is %s", failed.State)
	}
	runPath := "/runs/orders/" + failed.DS + "/" + failed.RunID
	for _, tc := range []struct{ path, want string }{
		{"/", "orders"},
		{"/pipelines/orders", failed.DS},
		{"/pipelines/orders?state=failed&from=2026-10-01&to=2026-11-25", failed.DS},
		{runPath, "is not a number"},
		{runPath + "/logs", "is not a number"},
		{runPath + "/logs?level=error&step=validator", "is not a number"},
		{"/sla", "Missed deadlines"},
		{"/sla?pipeline=orders", `<span class="pill completed">sent</span>`},
		{"/sla?pipeline=orders", "slack: post message: 503"},
		{"/pipelines/orders/backfill?from=2026-11-01&to=2026-11-25", "2026-11-25"},
	} {
		code, body := get(t, c, w.srv.URL+tc.path)
		if code != http.StatusOK || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s: %d, want 200 with %q\n%.400s", tc.path, code, tc.want, body)
		}
	}
	if code, _ := get(t, c, w.srv.URL+"/runs/orders/"+failed.DS); code != http.StatusFound {
		t.Errorf("latest run of a date: %d, want a redirect", code)
	}
	for _, tc := range []struct{ path, want string }{
		{"/pipelines/nope", `unknown pipeline "nope"`},
		{"/runs/nope/2026-11-25/" + failed.RunID, `unknown pipeline "nope"`},
		{"/runs/orders/2026-13-45/" + failed.RunID, `"2026-13-45" is not YYYY-MM-DD`},
		{"/runs/orders/yesterday", `"yesterday" is not YYYY-MM-DD`},
		{"/runs/orders/2026-11-25/not-a-run", `"not-a-run" is not a run id`},
		{"/runs/orders/2026-11-25/01ARZ3NDEKTSV4RRFFQ69G5FAV", "no run 01ARZ3NDEKTSV4RRFFQ69G5FAV"},
		{"/pipelines/orders?from=11/25/2026", "from"},
		{"/pipelines/orders/backfill?from=2026-11-05&to=2026-11-01", "before"},
		{runPath + "/logs?level=loud", "unknown level"},
		{"/nothing/here", "no such page"},
	} {
		code, body := get(t, c, w.srv.URL+tc.path)
		if code != http.StatusNotFound || !strings.Contains(body, tc.want) || strings.Contains(body, "<html") {
			t.Errorf("GET %s: %d %q, want a plain 404 saying %q", tc.path, code, body, tc.want)
		}
	}
}

func TestReadOnlyConsoleRefusesActions(t *testing.T) {
	w := start(t, "")
	c := w.browser(t)
	get(t, c, w.srv.URL+"/login") // the browser id cookie
	token := "no form carries a token on a read-only console"
	before := w.requested(t, "2026-12-01")
	code, _, body := post(t, c, w.srv.URL+"/actions/trigger", url.Values{"csrf": {token}, "request_id": {"0123456789abcdef0123"}, "pipeline": {"orders"}, "ds": {"2026-12-01"}})
	if code != http.StatusForbidden || !strings.Contains(body, "read-only") {
		t.Errorf("trigger on a read-only console: %d %q, want 403 read-only", code, body)
	}
	if code, _, _ := post(t, c, w.srv.URL+"/login", url.Values{"csrf": {token}, "password": {""}}); code != http.StatusForbidden {
		t.Errorf("login on a read-only console: %d, want 403", code)
	}
	if code, _ := get(t, c, w.srv.URL+"/confirm/pause?pipeline=orders"); code != http.StatusForbidden {
		t.Errorf("confirm page on a read-only console: %d, want 403", code)
	}
	if after := w.requested(t, "2026-12-01"); after != before {
		t.Errorf("%d runs of 2026-12-01 after refused actions, want %d", after, before)
	}
}

func TestLoginCSRFAndIdempotentActions(t *testing.T) {
	w := start(t, "s3cret-console-pass")
	c := w.browser(t)
	base := w.srv.URL
	token := csrf(t, c, base+"/login")
	form := url.Values{"csrf": {token}, "request_id": {"0123456789abcdef0123"}, "pipeline": {"orders"}, "ds": {"2026-12-01"}}

	// Without a session: 401 and nothing requested.
	if code, _, _ := post(t, c, base+"/actions/trigger", form); code != http.StatusUnauthorized {
		t.Errorf("trigger without login: %d, want 401", code)
	}
	if code, loc := get(t, c, base+"/confirm/trigger?pipeline=orders&ds=2026-12-01"); code != http.StatusSeeOther || !strings.HasPrefix(loc, "") {
		t.Errorf("confirm page without login: %d, want a redirect to the login", code)
	}
	// Login: CSRF token required, wrong password refused.
	if code, _, _ := post(t, c, base+"/login", url.Values{"password": {"s3cret-console-pass"}}); code != http.StatusForbidden {
		t.Errorf("login without a CSRF token: %d, want 403", code)
	}
	other := w.browser(t)
	if code, _, _ := post(t, other, base+"/login", url.Values{"csrf": {token}, "password": {"s3cret-console-pass"}}); code != http.StatusForbidden {
		t.Errorf("login with another browser's CSRF token: %d, want 403", code)
	}
	if code, _, _ := post(t, c, base+"/login", url.Values{"csrf": {token}, "password": {"guess"}}); code != http.StatusUnauthorized {
		t.Errorf("login with a wrong password: %d, want 401", code)
	}
	if n := w.requested(t, "2026-12-01"); n != 0 {
		t.Fatalf("%d runs requested before logging in", n)
	}
	if code, loc, _ := post(t, c, base+"/login", url.Values{"csrf": {token}, "password": {"s3cret-console-pass"}, "next": {"/pipelines/orders"}}); code != http.StatusSeeOther || loc != "/pipelines/orders" {
		t.Fatalf("login: %d to %q, want 303 to /pipelines/orders", code, loc)
	}
	// Logged in, but a forged form (no or wrong token): 403, nothing requested.
	bad := url.Values{"request_id": {"0123456789abcdef0123"}, "pipeline": {"orders"}, "ds": {"2026-12-01"}, "csrf": {"forged"}}
	if code, _, _ := post(t, c, base+"/actions/trigger", bad); code != http.StatusForbidden {
		t.Errorf("trigger with a forged CSRF token: %d, want 403", code)
	}
	if n := w.requested(t, "2026-12-01"); n != 0 {
		t.Fatalf("%d runs requested by refused posts", n)
	}
	// The confirm page's form, posted twice, requests one run and answers the same both times.
	_, page := get(t, c, base+"/confirm/trigger?pipeline=orders&ds=2026-12-01")
	m := reqRe.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("confirm page has no request id:\n%s", page)
	}
	form = url.Values{"csrf": {csrfRe.FindStringSubmatch(page)[1]}, "request_id": {m[1]}, "pipeline": {"orders"}, "ds": {"2026-12-01"}}
	code1, loc1, body := post(t, c, base+"/actions/trigger", form)
	if code1 != http.StatusSeeOther || !strings.HasPrefix(loc1, "/runs/orders/2026-12-01/") {
		t.Fatalf("trigger: %d to %q (%s), want 303 to the run", code1, loc1, body)
	}
	// The run is requested and queued; end it so that a second request would start another.
	runs, _ := runstate.New(context.Background(), w.js)
	rs, _ := runs.Runs(context.Background(), "orders", "2026-12-01")
	if len(rs) != 1 || rs[0].Trigger != console.TriggeredBy {
		t.Fatalf("runs after one trigger: %+v", rs)
	}
	if code, body := get(t, c, base+loc1); code != http.StatusOK || !strings.Contains(body, rs[0].RunID) {
		t.Errorf("the run page of the new run: %d", code)
	}
	kv, _ := w.js.KeyValue(context.Background(), bus.RunBucket)
	rec := rs[0]
	rec.State = runstate.Completed
	b, _ := jsonMarshal(rec)
	if _, err := kv.Put(context.Background(), runstate.Key("orders", "2026-12-01", rec.RunID), b); err != nil {
		t.Fatal(err)
	}
	code2, loc2, _ := post(t, c, base+"/actions/trigger", form)
	if code2 != http.StatusSeeOther || loc2 != loc1 {
		t.Errorf("the same form posted again: %d to %q, want 303 to %q", code2, loc2, loc1)
	}
	if n := w.requested(t, "2026-12-01"); n != 1 {
		t.Errorf("%d runs of 2026-12-01 after posting one form twice, want 1", n)
	}
	// Pause, through the CLI's code path: the schedule state says paused.
	_, page = get(t, c, base+"/confirm/pause?pipeline=orders")
	form = url.Values{"csrf": {csrfRe.FindStringSubmatch(page)[1]}, "request_id": {reqRe.FindStringSubmatch(page)[1]}, "pipeline": {"orders"}}
	if code, _, body := post(t, c, base+"/actions/pause", form); code != http.StatusSeeOther {
		t.Fatalf("pause: %d %s", code, body)
	}
	states, _ := trigger.NewStates(context.Background(), w.js)
	if st, _, _ := states.Get(context.Background(), "orders"); !st.Paused {
		t.Error("orders is not paused after the pause action")
	}
	// A backfill over three dates, one of which already ran: the others are requested.
	_, page = get(t, c, base+"/confirm/backfill?pipeline=orders&from=2026-11-30&to=2026-12-02&reprocess=none")
	form = url.Values{"csrf": {csrfRe.FindStringSubmatch(page)[1]}, "request_id": {reqRe.FindStringSubmatch(page)[1]}, "pipeline": {"orders"},
		"from": {"2026-11-30"}, "to": {"2026-12-02"}, "reprocess": {"none"}}
	if code, loc, body := post(t, c, base+"/actions/backfill", form); code != http.StatusSeeOther || !strings.Contains(loc, "/backfill?") {
		t.Fatalf("backfill: %d %q %s", code, loc, body)
	}
	for ds, want := range map[string]int{"2026-11-30": 1, "2026-12-01": 1, "2026-12-02": 1} {
		if n := w.requested(t, ds); n != want {
			t.Errorf("%s: %d runs after the backfill, want %d", ds, n, want)
		}
	}
	// Logging out ends the session.
	token = csrf(t, c, base+"/")
	post(t, c, base+"/logout", url.Values{"csrf": {token}})
	if code, _, _ := post(t, c, base+"/actions/unpause", url.Values{"csrf": {token}, "request_id": {"abcdefabcdefabcdef12"}, "pipeline": {"orders"}}); code != http.StatusUnauthorized {
		t.Errorf("unpause after logout: %d, want 401", code)
	}
}

// A page's live stream says "change" when its run changes.
func TestLiveStreamAnnouncesChanges(t *testing.T) {
	w := start(t, "")
	r := w.runs[0]
	key := runstate.Key(r.Pipeline, r.DS, r.RunID)
	resp, err := http.Get(w.srv.URL + "/live?topic=" + url.QueryEscape("r:"+key))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	got := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() == "event: change" {
				got <- sc.Text()
				return
			}
		}
	}()
	kv, _ := w.js.KeyValue(context.Background(), bus.RunBucket)
	e, err := kv.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the stream has joined the hub once its first bytes came
	if _, err := kv.Put(context.Background(), key, e.Value()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no change event within 5s of the run's update")
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// alerts.run_url defaults to the console's run page, and the link of an alert opens its run.
func TestAlertLinksOpenTheirRun(t *testing.T) {
	w := start(t, "")
	if want := "http://127.0.0.1:0/runs/{pipeline}/{ds}/{run_id}"; w.cfg.Alerts.RunURL != want {
		t.Fatalf("alerts.run_url defaults to %q, want %q", w.cfg.Alerts.RunURL, want)
	}
	for _, r := range []consoletest.Run{w.runs[0], w.runs[5], w.runs[len(w.runs)-1]} {
		link := config.Expand(w.cfg.Alerts.RunURL, r.Pipeline, r.DS, r.RunID) // as the alerter builds it
		u, err := url.Parse(link)
		if err != nil {
			t.Fatal(err)
		}
		code, body := get(t, w.browser(t), w.srv.URL+u.Path)
		if code != http.StatusOK || !strings.Contains(body, r.RunID) || !strings.Contains(body, "</a> / "+r.DS+"</h1>") {
			t.Errorf("alert link %s: %d, want the page of run %s", link, code, r.RunID)
		}
	}
}

// A run that changes between the page's render and its live stream's start (a bad-input run
// fails within milliseconds) is announced as soon as the stream opens, not missed.
func TestLiveStreamAnnouncesAChangeMadeWhileThePageLoaded(t *testing.T) {
	w := start(t, "")
	r := w.runs[1]
	key := runstate.Key(r.Pipeline, r.DS, r.RunID)
	_, page := get(t, w.browser(t), w.srv.URL+"/runs/orders/"+r.DS+"/"+r.RunID)
	m := regexp.MustCompile(`data-seq="(\d+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatal("the page carries no data-seq")
	}
	kv, _ := w.js.KeyValue(context.Background(), bus.RunBucket)
	e, err := kv.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), key, e.Value()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the console's watch applies the change
	for _, tc := range []struct {
		since string
		want  bool
	}{{m[1], true}, {"999999999", false}} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", w.srv.URL+"/live?topic="+url.QueryEscape("r:"+key)+"&since="+tc.since, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		got := false
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() == "event: change" {
				got = true
				break
			}
		}
		resp.Body.Close()
		cancel()
		if got != tc.want {
			t.Errorf("live stream since %s: change announced %v, want %v", tc.since, got, tc.want)
		}
	}
}
