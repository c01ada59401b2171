package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/config"
)

const reliable = `postgres:
  url: env:DATABASE_URL
s3:
  bucket: landing
alerts:
  trace_url: https://jaeger.example.com/trace/{trace_id}
pipelines:
  - name: orders
    source:
      url: http://api.local/data/{ds}.csv
    retries:
      max: 4
      delay: 30s
      backoff: 2
      jitter: 0.25
      steps:
        dbtrunner: {max: 1, delay: 5m}
        fetcher: {max_delay: 10m}
    sla:
      within: 2h
    notices: {recovery: true}
`

func TestRetryPolicyPerStep(t *testing.T) {
	cfg, err := config.Parse("sluice.yaml", []byte(reliable))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := cfg.Pipeline("orders")
	if cfg.Alerts.TraceURL == "" || p.SLA == nil || p.SLA.Within != 2*time.Hour || !p.Notices.Recovery || p.Notices.Success {
		t.Errorf("trace_url, sla or notices not read: %+v %+v %+v", cfg.Alerts, p.SLA, p.Notices)
	}
	base := p.RetryPolicy("validator")
	if base.MaxRetries() != 4 || base.Delay != 30*time.Second || base.Cap() != 5*time.Minute {
		t.Errorf("pipeline policy %+v, want 4 retries from 30s up to 5m (10x the delay with a backoff)", base)
	}
	// Exponential, capped, and jitter only ever shortens a wait.
	for n, want := range map[int]time.Duration{1: 30 * time.Second, 2: time.Minute, 3: 2 * time.Minute, 4: 4 * time.Minute, 5: 5 * time.Minute, 9: 5 * time.Minute} {
		if got := base.DelayFor(n, 0); got != want {
			t.Errorf("retry %d waits %v, want %v", n, got, want)
		}
		if got := base.DelayFor(n, 0.999); got > want || got < want*3/4 {
			t.Errorf("retry %d with jitter waits %v, want within [%v, %v]", n, got, want*3/4, want)
		}
	}
	dbt := p.RetryPolicy("dbtrunner")
	if dbt.MaxRetries() != 1 || dbt.Delay != 5*time.Minute || dbt.Backoff != 2 || dbt.Cap() != 50*time.Minute {
		t.Errorf("dbtrunner policy %+v, want 1 retry after 5m, inheriting the backoff", dbt)
	}
	if f := p.RetryPolicy("fetcher"); f.MaxRetries() != 4 || f.Cap() != 10*time.Minute || f.DelayFor(9, 0) != 10*time.Minute {
		t.Errorf("fetcher policy %+v, want the pipeline's with a 10m cap", f)
	}
}

func TestRetryDefaultsAreTheSeeds(t *testing.T) {
	cfg, err := config.Parse("sluice.yaml", []byte(strings.Split(reliable, "    retries:")[0]))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := cfg.Pipeline("orders")
	r := p.RetryPolicy("fetcher")
	for n := 1; n <= 3; n++ {
		if got := r.DelayFor(n, 0.9); got != 10*time.Minute {
			t.Errorf("retry %d waits %v, want the seed's fixed 10 minutes", n, got)
		}
	}
	if r.MaxRetries() != 3 || p.SLA != nil {
		t.Errorf("defaults: %d retries, sla %v", r.MaxRetries(), p.SLA)
	}
}

func TestBadRetryAndSLAConfig(t *testing.T) {
	tests := []struct{ replace, with, want string }{
		{"backoff: 2", "backoff: 0.5", "sluice.yaml:14: pipelines[0].retries.backoff: 0.5 must be between 1"},
		{"jitter: 0.25", "jitter: 1", "pipelines[0].retries.jitter: 1 must be at least 0 and less than 1"},
		{"dbtrunner: {max: 1, delay: 5m}", "dbt: {max: 1}", "pipelines[0].retries.steps: unknown step \"dbt\""},
		{"fetcher: {max_delay: 10m}", "fetcher: {max_delay: 1s}", "sluice.yaml:18: pipelines[0].retries.steps.fetcher.max_delay: 1s is shorter than the delay (30s)"},
		{"dbtrunner: {max: 1, delay: 5m}", "dbtrunner: {max: -1}", "pipelines[0].retries.steps.dbtrunner.max: must not be negative"},
		{"within: 2h", "within: 10ms", "sluice.yaml:20: pipelines[0].sla.within: 10ms must be at least one second"},
		{"notices: {recovery: true}", "notices: {recover: true}", "field recover not found"},
	}
	for _, tt := range tests {
		text := strings.Replace(reliable, tt.replace, tt.with, 1)
		_, err := config.Parse("sluice.yaml", []byte(text))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.with, err, tt.want)
		}
	}
}
