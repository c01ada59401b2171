package config_test

import (
	"strings"
	"testing"

	"github.com/sluice-etl/sluice/pkg/config"
)

func TestScheduleKeys(t *testing.T) {
	cfg, err := config.Load(write(t, good+"    schedule: \"@hourly\"\n    timezone: Europe/Paris\n    catchup: true\n    start_date: \"2026-11-01\"\n"), env(secrets))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := cfg.Pipeline("orders")
	if p.Schedule != "@hourly" || p.Timezone != "Europe/Paris" || !p.Catchup || p.StartDate != "2026-11-01" {
		t.Errorf("schedule keys not loaded: %+v", p)
	}
	cfg, err = config.Load(write(t, good), env(secrets))
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := cfg.Pipeline("orders"); p.Schedule != "" || p.Timezone != "UTC" || p.Catchup {
		t.Errorf("defaults: schedule %q timezone %q catchup %v, want none, UTC, false", p.Schedule, p.Timezone, p.Catchup)
	}
}

func TestBadScheduleNamesTheLine(t *testing.T) {
	for _, tc := range []struct{ extra, want string }{
		{"    schedule: \"0 25 * * *\"\n", ":17: pipelines[0].schedule: schedule \"0 25 * * *\": hour field"},
		{"    schedule: \"@daily\"\n    timezone: Moon/Base\n", ":18: pipelines[0].timezone: \"Moon/Base\" is not an IANA time zone name"},
		{"    schedule: \"@daily\"\n    start_date: 2026-13-01\n", ":18: pipelines[0].start_date: \"2026-13-01\" is not YYYY-MM-DD"},
		{"    catchup: true\n", "pipelines[0].schedule: catchup and start_date need a schedule"},
		{"    schedule: \"@every 100ms\"\n", "at least 1s"},
	} {
		_, err := config.Load(write(t, good+tc.extra), env(secrets))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.extra, err, tc.want)
		}
	}
}
