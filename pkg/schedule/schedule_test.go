package schedule

import (
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, expr, tz string) *Schedule {
	t.Helper()
	s, err := Parse(expr, tz)
	if err != nil {
		t.Fatalf("Parse(%q, %q): %v", expr, tz, err)
	}
	return s
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ expr, tz, want string }{
		{"", "", "cron needs 5 fields"},
		{"* * *", "", "cron needs 5 fields"},
		{"@fortnightly", "", "unknown"},
		{"@every 500ms", "", "at least 1s"},
		{"@every 1.5s", "", "whole number of seconds"},
		{"@every soon", "", "invalid duration"},
		{"61 * * * *", "", "minute field"},
		{"0 0 30 2 *", "", "never fires"},
		{"*/0 * * * *", "", "positive number"},
		{"0 0 * * *", "Mars/Olympus", "not an IANA zone"},
		{"0 0 * * mon-fri-sat", "", "too many hyphens"},
	} {
		_, err := Parse(tc.expr, tc.tz)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q, %q) = %v, want error containing %q", tc.expr, tc.tz, err, tc.want)
		}
	}
}

func TestPatternForTheServer(t *testing.T) {
	for _, tc := range []struct{ expr, tz, pattern, zone string }{
		{"0 * * * *", "", "0 0 * * * *", ""},
		{"30 2 * * mon", "Europe/Paris", "0 30 2 * * mon", "Europe/Paris"},
		{"*/5 * * * * *", "UTC", "*/5 * * * * *", ""},
		{"@hourly", "", "0 0 * * * *", ""},
		{"@daily", "America/New_York", "0 0 0 * * *", "America/New_York"},
		{"@every 1s", "Europe/Paris", "@every 1s", ""}, // the server takes no zone with @every
		{"@every 90m", "", "@every 1h30m0s", ""},
	} {
		s := mustParse(t, tc.expr, tc.tz)
		if s.Pattern() != tc.pattern || s.TimeZone() != tc.zone {
			t.Errorf("%q in %q: pattern %q zone %q, want %q %q", tc.expr, tc.tz, s.Pattern(), s.TimeZone(), tc.pattern, tc.zone)
		}
	}
}

func TestLatestIntervalAndDS(t *testing.T) {
	for _, tc := range []struct {
		name, expr, tz, ref, start, end, ds string
	}{
		// Airflow's convention: the midnight tick closes yesterday, whose date is ds.
		{"daily at midnight", "@daily", "", "2026-11-26T00:00:00.2Z", "2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z", "2026-11-25"},
		{"daily, late in the day", "@daily", "", "2026-11-26T17:45:00Z", "2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z", "2026-11-25"},
		{"hourly", "@hourly", "", "2026-11-25T14:00:01Z", "2026-11-25T13:00:00Z", "2026-11-25T14:00:00Z", "2026-11-25"},
		{"hourly, first hour of the day closes the last of yesterday", "0 * * * *", "", "2026-11-26T00:00:00Z", "2026-11-25T23:00:00Z", "2026-11-26T00:00:00Z", "2026-11-25"},
		{"daily in a zone", "0 0 * * *", "America/New_York", "2026-11-26T05:00:03Z", "2026-11-25T05:00:00Z", "2026-11-26T05:00:00Z", "2026-11-25"},
		{"ds is the date in the zone, not in UTC", "0 1 * * *", "Asia/Tokyo", "2026-11-26T16:00:00Z", "2026-11-25T16:00:00Z", "2026-11-26T16:00:00Z", "2026-11-26"},
		{"weekdays at 06:30 over a weekend", "30 6 * * mon-fri", "", "2026-11-30T06:30:00Z", "2026-11-27T06:30:00Z", "2026-11-30T06:30:00Z", "2026-11-27"},
		{"every second", "@every 1s", "", "2026-11-25T10:00:07.4Z", "2026-11-25T10:00:06Z", "2026-11-25T10:00:07Z", "2026-11-25"},
		{"every 6h, epoch aligned", "@every 6h", "", "2026-11-25T13:20:00Z", "2026-11-25T06:00:00Z", "2026-11-25T12:00:00Z", "2026-11-25"},
		{"every 6h, ds in zone", "@every 6h", "America/Los_Angeles", "2026-11-25T07:00:00Z", "2026-11-25T00:00:00Z", "2026-11-25T06:00:00Z", "2026-11-24"},
		{"monthly", "@monthly", "", "2026-12-15T00:00:00Z", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", "2026-11-01"},
		// 02:30 does not exist on 2026-03-08 in New York (DST starts); like nats-server's cron
		// the schedule does not fire that day, so one interval spans two days.
		{"DST gap", "30 2 * * *", "America/New_York", "2026-03-09T12:00:00Z", "2026-03-07T07:30:00Z", "2026-03-09T06:30:00Z", "2026-03-07"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustParse(t, tc.expr, tc.tz)
			iv, ok := s.Latest(at(tc.ref))
			if !ok {
				t.Fatal("no interval")
			}
			if !iv.Start.Equal(at(tc.start)) || !iv.End.Equal(at(tc.end)) {
				t.Errorf("Latest(%s) = %s, want %s/%s", tc.ref, iv, tc.start, tc.end)
			}
			if got := s.DS(iv); got != tc.ds {
				t.Errorf("ds = %s, want %s", got, tc.ds)
			}
		})
	}
}

func TestIntervalsAreContiguous(t *testing.T) {
	for _, expr := range []string{"@hourly", "*/7 * * * * *", "0 9,17 * * mon-fri", "@every 45s", "@monthly"} {
		s := mustParse(t, expr, "Europe/Berlin")
		iv, ok := s.After(at("2026-10-20T00:00:00Z"))
		if !ok {
			t.Fatal(expr)
		}
		for i := 0; i < 500; i++ {
			next, ok := s.After(iv.End)
			if !ok || !next.Start.Equal(iv.End) || !next.End.After(next.Start) {
				t.Fatalf("%s: interval after %s is %s", expr, iv, next)
			}
			// The latest interval closed at an interval's end is that interval.
			if l, _ := s.Latest(next.End); !l.Start.Equal(next.Start) || !l.End.Equal(next.End) {
				t.Fatalf("%s: Latest(%s) = %s, want %s", expr, next.End, l, next)
			}
			iv = next
		}
	}
}

func TestAfterStartsAtOrAfter(t *testing.T) {
	s := mustParse(t, "@daily", "")
	iv, _ := s.After(at("2026-11-01T00:00:00Z"))
	if !iv.Start.Equal(at("2026-11-01T00:00:00Z")) {
		t.Errorf("After(midnight) = %s, want the interval starting then", iv)
	}
	iv, _ = s.After(at("2026-11-01T00:00:01Z"))
	if !iv.Start.Equal(at("2026-11-02T00:00:00Z")) {
		t.Errorf("After(just past midnight) = %s, want the next day's", iv)
	}
}

func TestDayOfMonthOrDayOfWeek(t *testing.T) {
	// Both restricted: either matches (the 13th or any Friday), as in every cron.
	s := mustParse(t, "0 0 13 * fri", "")
	got, _ := s.Next(at("2026-11-01T00:00:00Z"))
	if !got.Equal(at("2026-11-06T00:00:00Z")) {
		t.Errorf("first fire %s, want Friday 2026-11-06", got)
	}
	got, _ = s.Next(got)
	if !got.Equal(at("2026-11-13T00:00:00Z")) {
		t.Errorf("second fire %s, want 2026-11-13", got)
	}
}
