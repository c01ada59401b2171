package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/samplesource"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/pkg/trigger"
	"github.com/sluice-etl/sluice/services/console"
	"github.com/sluice-etl/sluice/services/console/consoletest"
)

const consoleConfig = `console:
  password: env:CONSOLE_PASSWORD
pipelines:
  - name: orders
    schedule: "0 6 * * *"
    start_date: "2099-01-01"
    sla:
      within: 2h
    source:
      url: %s/data/{ds}.csv
    sensor:
      poke_interval: 300ms
      timeout: 2m
    lease:
      ttl: 20s
    retries:
      max: 1
      delay: 200ms
    dbt:
      select: stg_orders orders
  - name: orders_eu
    contract: orders
    schedule: "30 7 * * *"
    timezone: Europe/Berlin
    start_date: "2099-01-01"
    source:
      url: %[1]s/eu/{ds}.csv
`

// consoleTestConfig is the console's system: consoleConfig's pipelines reading sourceURL, and
// Jaeger's address for the trace links.
func consoleTestConfig(bucket, sourceURL string) testConfig {
	return testConfig{bucket: bucket, dbt: true, alerts: "  trace_url: http://127.0.0.1:16686/trace/{trace_id}\n",
		rest: fmt.Sprintf(consoleConfig, sourceURL)}
}

// chromium finds Debian's chromium; a machine without it fails the test naming the make target
// that installs it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed: run `make chromium` (Debian's chromium package; `make test` runs it)")
	return ""
}

// TestConsoleInABrowser drives the console in headless Chromium over the whole system (the six
// services on embedded JetStream, PostgreSQL, S3, dbt): a date is triggered from the grid and its
// run page turns completed without a reload; the failed step's logs of a bad-input run show the
// contract error; a rerun is started from the page after logging in; a schedule is paused. Every
// page is screenshotted (under the test's artifact dir; SLUICE_CONSOLE_SCREENSHOTS=DIR also
// copies the pipelines, grid and run pages there, for the README) and no page may log a
// console error or throw.
func TestConsoleInABrowser(t *testing.T) {
	chrome := chromium(t)
	const good, bad = "2026-11-24", "2026-11-23"
	gen, err := samplesource.Handler(samplesource.Options{Rows: 500, UpdateRatio: 0.1, Delay: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/data/"+bad+".csv" {
			_, _ = w.Write([]byte("order_id,customer_id,amount,updated_at\n1,10,6.00,2026-11-23T10:00:00Z\n4,13,12a,2026-11-23T10:00:00Z\n"))
			return
		}
		gen.ServeHTTP(w, r)
	}))
	defer src.Close()

	ns := testkit.NATS(t)
	s3cfg := testkit.S3(t)
	secrets := testSecrets(ns.ClientURL(), testkit.Postgres(t), s3cfg)
	secrets["CONSOLE_PASSWORD"] = "console-e2e-password"
	cfg := loadConfig(t, consoleTestConfig(s3cfg.Bucket, src.URL).write(t), secrets)
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	st, err := app.Start(ctx, cfg, telemetry.Logger(logs, slog.LevelInfo), app.Options{Provision: true}, allServices...)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = st.Wait()
		if t.Failed() {
			t.Logf("service logs:\n%s", logs.String())
		}
	})
	// A month of earlier runs (run records and log lines only, nothing the services would
	// consume), so the pages show a history next to the runs this test makes.
	if _, err := consoletest.SeedHistory(ctx, st.JS, st.NC, app.BusOptions(cfg), "orders", time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC), 40); err != nil {
		t.Fatal(err)
	}
	if _, err := consoletest.SeedHistory(ctx, st.JS, st.NC, app.BusOptions(cfg), "orders_eu", time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC), 30); err != nil {
		t.Fatal(err)
	}
	con, err := console.New(ctx, console.FromApp(st.Deps))
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(con)
	defer web.Close()

	// The browser, with every console error and uncaught exception recorded.
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, chromedp.ExecPath(chrome), chromedp.Headless, chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 900),
		// Chromium keeps its singleton socket in a directory of TMPDIR: the test's own, so the run
		// leaves nothing behind in /tmp.
		chromedp.Env("TMPDIR="+t.TempDir()))
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	var mu sync.Mutex
	var problems []string
	page := ""
	err = chromedp.Listen(browser, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range e.Args {
					args = append(args, string(a.Value))
				}
				problems = append(problems, page+": console."+string(e.Type)+": "+strings.Join(args, " "))
			}
		case *runtime.EventExceptionThrown:
			msg := e.ExceptionDetails.Text
			if ex := e.ExceptionDetails.Exception; ex != nil {
				msg += " " + ex.Description
			}
			problems = append(problems, page+": exception: "+msg)
		case *cdplog.EventEntryAdded:
			if e.Entry.Level == cdplog.EntryLevelError {
				problems = append(problems, page+": "+string(e.Entry.Source)+": "+e.Entry.Text+" "+e.Entry.URL)
			}
		}
	})
	if err != nil {
		t.Fatalf("start chromium (%s): %v", chrome, err)
	}
	shots := t.ArtifactDir()
	publish := os.Getenv("SLUICE_CONSOLE_SCREENSHOTS")
	at := func(name string) context.Context {
		mu.Lock()
		page = name
		mu.Unlock()
		actx, cancel := context.WithTimeout(browser, 4*time.Minute)
		t.Cleanup(cancel)
		return actx
	}
	fail := func(name string, err error) {
		t.Helper()
		loc, _ := chromedp.Run(browser, chromedp.Location())
		html, _ := chromedp.Run(browser, chromedp.Evaluate[string](`(document.getElementById("run-state")||{}).outerHTML + " live:" + document.getElementById("live-dot").className`))
		if runs, err := st.Router.Runs().List(ctx); err == nil {
			for _, r := range runs {
				if strings.Contains(loc, r.RunID) {
					t.Logf("run record: %+v", r)
				}
			}
		}
		t.Fatalf("%s (at %s, showing %s): %v", name, loc, html, err)
	}
	do := func(name string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(at(name), steps...); err != nil {
			fail(name, err)
		}
	}
	read := func(name string, a chromedp.Action[string]) string {
		t.Helper()
		v, err := chromedp.Run(at(name), a)
		if err != nil {
			fail(name, err)
		}
		return v
	}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
				return err
			}
			if publish != "" && (name == "pipelines" || name == "grid" || name == "run") {
				return os.WriteFile(filepath.Join(publish, "console-"+name+".png"), png, 0o644)
			}
			return nil
		})
	}
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	base := web.URL

	// Log in, trigger a date from the grid, and watch its run page turn completed with no reload.
	do("login", chromedp.Navigate(base+"/login?next=/pipelines/orders"), shot("login"),
		chromedp.SendKeys(css("#password"), "console-e2e-password"), chromedp.Click(css("#login")),
		chromedp.WaitVisible(css("#trigger-ds")))
	do("trigger", chromedp.SetValue(css("#trigger-ds"), good), chromedp.Click(css("#trigger")),
		chromedp.WaitVisible(css("#confirm")), shot("confirm"), chromedp.Click(css("#confirm")),
		chromedp.WaitVisible(css("#run-state")))
	runURL := read("run page", chromedp.Location())
	if _, err := chromedp.Run(at("run page"), chromedp.Evaluate[bool](`window.__noReload = true`)); err != nil {
		fail("run page", err)
	}
	if state := read("run page", chromedp.Text(css("#run-state"))); state == string(runstate.Completed) {
		t.Fatalf("the run page opened on a run already completed; the live update is not exercised")
	}
	do("run page goes live to completed", chromedp.WaitVisible(css("#run-state.completed")),
		chromedp.WaitVisible(chromedp.Search(`//th[text()="inserted"]`)), shot("run"))
	stayed, err := chromedp.Run(at("run page"), chromedp.Evaluate[bool](`window.__noReload === true`))
	if err != nil || !stayed {
		t.Errorf("the run page was reloaded to show completed (%v); it should update in place", err)
	}
	if !strings.Contains(runURL, "/runs/orders/"+good+"/") {
		t.Errorf("trigger led to %s, want the run page of %s", runURL, good)
	}

	// The grid, the pipelines page and the SLA page.
	do("grid", chromedp.Navigate(base+"/pipelines/orders"), chromedp.WaitVisible(chromedp.Search(`//a[text()="`+good+`"]`)), shot("grid"))
	do("pipelines", chromedp.Navigate(base+"/"), chromedp.WaitVisible(css("#pause-orders")), shot("pipelines"))
	do("sla", chromedp.Navigate(base+"/sla"), chromedp.WaitVisible(css("h1")), shot("sla"))

	// A bad-input run: its failed step's logs show the contract error.
	do("bad input", chromedp.Navigate(base+"/confirm/trigger?pipeline=orders&ds="+bad), chromedp.Click(css("#confirm")),
		chromedp.WaitVisible(css("#run-state.failed")), shot("run-failed"))
	badURL := read("bad input", chromedp.Location())
	do("failed step's logs", chromedp.Click(css("#failed-logs")), chromedp.WaitVisible(css(".lv-ERROR .msg")), shot("logs"))
	if line := read("failed step's logs", chromedp.Text(css(".lv-ERROR .msg"))); !strings.Contains(line, "column amount") {
		t.Errorf("the failed step's first error line is %q, want the contract error naming column amount", line)
	}

	// Rerun it from its page.
	do("rerun", chromedp.Navigate(badURL), chromedp.Click(css("#rerun")), chromedp.WaitVisible(css("#confirm")),
		chromedp.Click(css("#confirm")), chromedp.WaitVisible(css("#run-state")))
	rerunURL := read("rerun", chromedp.Location())
	if rerunURL == badURL || !strings.Contains(rerunURL, "/runs/orders/"+bad+"/") {
		t.Errorf("rerun led to %s, want a new run of %s (the failed one was %s)", rerunURL, bad, badURL)
	}
	runs, err := st.Router.Runs().Runs(ctx, "orders", bad)
	if err != nil || len(runs) != 2 || runs[1].Trigger != console.TriggeredBy {
		t.Errorf("runs of %s after the rerun: %+v (%v), want two, the second by the console", bad, runs, err)
	}

	// A backfill over dates that already ran (reprocess none: nothing is requested again) lands
	// on its progress view.
	do("backfill", chromedp.Navigate(base+"/confirm/backfill?pipeline=orders_eu&from=2026-11-01&to=2026-11-10&reprocess=none"),
		chromedp.Click(css("#confirm")), chromedp.WaitVisible(chromedp.Search(`//p[contains(., "10 of 10 date(s) ended")]`)), shot("backfill"))

	// Pause the schedule from the pipelines page.
	do("pause", chromedp.Navigate(base+"/"), chromedp.Click(css("#pause-orders")), chromedp.WaitVisible(css("#confirm")),
		chromedp.Click(css("#confirm")), chromedp.WaitVisible(chromedp.Search(`//span[contains(@class,"paused")]`)), shot("paused"))
	states, err := trigger.NewStates(ctx, st.JS)
	if err != nil {
		t.Fatal(err)
	}
	if s, _, err := states.Get(ctx, "orders"); err != nil || !s.Paused {
		t.Errorf("schedule state after pausing in the browser: %+v, %v", s, err)
	}

	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("browser: %s", p)
	}
	t.Logf("screenshots in %s", shots)
}

// `sluice up` serves the console next to the services, on the address given (console.addr by
// default), and stops it with them.
func TestUpServesTheConsole(t *testing.T) {
	ns := testkit.NATS(t)
	s3cfg := testkit.S3(t)
	secrets := testSecrets(ns.ClientURL(), testkit.Postgres(t), s3cfg)
	secrets["CONSOLE_PASSWORD"] = "up-console-password"
	setenv(t, secrets)
	path := consoleTestConfig(s3cfg.Bucket, "http://127.0.0.1:1").write(t)
	var out bytes.Buffer // the broker's streams and buckets, as a deployment's provision Job makes them
	if err := run(context.Background(), []string{"provision", "--config", path, "--no-postgres"}, &out, &out); err != nil {
		t.Fatalf("sluice provision: %v\n%s", err, out.String())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	logs := &syncBuffer{}
	go func() {
		errc <- run(ctx, []string{"up", "--config", path, "--http", "127.0.0.1:0", "--console", addr}, io.Discard, logs)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sluice up:\n%s", logs.String())
		}
	})
	var body string
	testkit.Eventually(t, 60*time.Second, "sluice up serves the console", func() bool {
		select {
		case err := <-errc:
			t.Fatalf("sluice up ended: %v", err)
		default:
		}
		resp, err := http.Get("http://" + addr + "/pipelines/orders")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK
	})
	if !strings.Contains(body, "orders_eu") && !strings.Contains(body, "Pipelines</a> / orders") {
		t.Errorf("the console of sluice up served:\n%.300s", body)
	}
	cancel()
	select {
	case <-errc:
	case <-time.After(30 * time.Second):
		t.Fatal("sluice up did not stop within 30s")
	}
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("the console still answers after sluice up stopped")
	}
}
