// Package schedule turns a pipeline's schedule (cron with a time zone, a predefined @daily-style
// name, or @every <duration>) into the two things sluice needs: the pattern the NATS server
// fires (a JetStream message schedule, `Nats-Schedule`), and the data intervals those fires
// close, with the execution date ds of each. It does no I/O; the cron semantics (six fields with
// seconds, day-of-month OR day-of-week, names, ranges and steps) are those of nats-server's own
// cron parser, so the intervals computed here agree with the ticks the server sends.
package schedule

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // time zones resolve in minimal containers too
)

// Interval is the data interval [Start, End) that a schedule tick closes.
type Interval struct {
	Start, End time.Time
}

// IsZero reports an empty interval.
func (i Interval) IsZero() bool { return i.End.IsZero() }

// String is the ISO 8601 interval, in UTC.
func (i Interval) String() string {
	return i.Start.UTC().Format(time.RFC3339) + "/" + i.End.UTC().Format(time.RFC3339)
}

// Schedule is a parsed pipeline schedule.
type Schedule struct {
	expr  string
	loc   *time.Location
	every time.Duration // for @every; zero for cron
	cron  *cronSpec
}

// Parse parses expr in time zone tz (an IANA name; "" means UTC). expr is a 5-field cron
// (minute hour day-of-month month day-of-week, as in Airflow), a 6-field cron with seconds first
// (as NATS takes it), @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, or
// @every <Go duration> of at least one second.
func Parse(expr, tz string) (*Schedule, error) {
	if tz == "" {
		tz = "UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: not an IANA zone name", tz)
	}
	s := &Schedule{expr: strings.TrimSpace(expr), loc: loc}
	if rest, ok := strings.CutPrefix(s.expr, "@every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil {
			return nil, fmt.Errorf("schedule %q: %v", expr, err)
		}
		// The server rounds @every fires to whole seconds and refuses less than one.
		if d < time.Second || d%time.Second != 0 {
			return nil, fmt.Errorf("schedule %q: @every needs a whole number of seconds, at least 1s", expr)
		}
		s.every = d
		return s, nil
	}
	pattern := s.expr
	if p, ok := predefined[pattern]; ok {
		pattern = p
	} else if strings.HasPrefix(pattern, "@") {
		return nil, fmt.Errorf("schedule %q: unknown; use cron, @hourly, @daily, @weekly, @monthly, @yearly or @every <duration>", expr)
	}
	fields := strings.Fields(pattern)
	switch len(fields) {
	case 5:
		fields = append([]string{"0"}, fields...) // standard cron fires at second 0
	case 6:
	default:
		return nil, fmt.Errorf("schedule %q: cron needs 5 fields (minute hour day month weekday) or 6 (with seconds first), got %d", expr, len(fields))
	}
	c, err := parseCron(fields)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %v", expr, err)
	}
	if _, ok := c.next(time.Date(2000, 1, 1, 0, 0, 0, 0, loc)); !ok { // e.g. 30 February
		return nil, fmt.Errorf("schedule %q never fires", expr)
	}
	s.cron = c
	return s, nil
}

var predefined = map[string]string{
	"@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *",
	"@weekly": "0 0 0 * * 0", "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *", "@hourly": "0 0 * * * *",
}

// String returns the schedule as written.
func (s *Schedule) String() string { return s.expr }

// Location is the schedule's time zone; ds dates are calendar dates there.
func (s *Schedule) Location() *time.Location { return s.loc }

// Pattern is the value of the Nats-Schedule header: six-field cron, or @every as written.
func (s *Schedule) Pattern() string {
	if s.every > 0 {
		return "@every " + s.every.String()
	}
	return s.cron.pattern
}

// TimeZone is the value of the Nats-Schedule-Time-Zone header, or "" when none is sent: the
// server takes time zones only with cron, and UTC is its default.
func (s *Schedule) TimeZone() string {
	if s.every > 0 || s.loc == time.UTC {
		return ""
	}
	return s.loc.String()
}

// DS is the execution date of an interval: the date its start falls on in the schedule's time
// zone (Airflow's logical date). A daily schedule's tick at midnight closes the previous day.
func (s *Schedule) DS(i Interval) string { return i.Start.In(s.loc).Format(time.DateOnly) }

// Latest returns the most recent interval that has closed at ref (End <= ref).
func (s *Schedule) Latest(ref time.Time) (Interval, bool) {
	if s.every > 0 {
		end := ref.Truncate(s.every) // multiples of the duration since the Unix epoch
		return Interval{Start: end.Add(-s.every).In(s.loc), End: end.In(s.loc)}, true
	}
	end, ok := s.prev(ref)
	if !ok {
		return Interval{}, false
	}
	start, ok := s.prev(end.Add(-time.Second))
	if !ok {
		return Interval{}, false
	}
	return Interval{Start: start, End: end}, true
}

// After returns the first interval that starts at or after t.
func (s *Schedule) After(t time.Time) (Interval, bool) {
	if s.every > 0 {
		start := t.Truncate(s.every)
		if start.Before(t) {
			start = start.Add(s.every)
		}
		return Interval{Start: start.In(s.loc), End: start.Add(s.every).In(s.loc)}, true
	}
	start, ok := s.next(t.Add(-time.Second))
	if !ok {
		return Interval{}, false
	}
	end, ok := s.next(start)
	if !ok {
		return Interval{}, false
	}
	return Interval{Start: start, End: end}, true
}

// Next returns the first fire time strictly after t (whole seconds, as the server fires).
func (s *Schedule) Next(t time.Time) (time.Time, bool) {
	if s.every > 0 {
		return t.Truncate(s.every).Add(s.every).In(s.loc), true
	}
	return s.next(t)
}

// next walks the cron in the schedule's zone: fields are wall-clock values there.
func (s *Schedule) next(t time.Time) (time.Time, bool) { return s.cron.next(t.In(s.loc)) }

// prev returns the latest cron fire time at or before t.
func (s *Schedule) prev(t time.Time) (time.Time, bool) {
	// Search forward from ever further back: cron has no cheap backward step, but fires are
	// dense enough that a window doubling from a minute finds one in a few rounds.
	for w := time.Minute; w <= 6*366*24*time.Hour; w *= 2 {
		f, ok := s.next(t.Add(-w))
		if !ok || f.After(t) {
			continue
		}
		for {
			n, ok := s.next(f)
			if !ok || n.After(t) {
				return f, true
			}
			f = n
		}
	}
	return time.Time{}, false
}

// cronSpec is a six-field cron: one bit per allowed value.
type cronSpec struct {
	pattern                               string
	second, minute, hour, dom, month, dow uint64
	domStar, dowStar                      bool
}

type bounds struct {
	min, max uint
	names    map[string]uint
}

var (
	secondsB = bounds{0, 59, nil}
	minutesB = bounds{0, 59, nil}
	hoursB   = bounds{0, 23, nil}
	domB     = bounds{1, 31, nil}
	monthsB  = bounds{1, 12, map[string]uint{"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
		"jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12}}
	dowB = bounds{0, 6, map[string]uint{"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}}
)

func parseCron(f []string) (*cronSpec, error) {
	c := &cronSpec{pattern: strings.Join(f, " ")}
	var err error
	names := []string{"second", "minute", "hour", "day of month", "month", "day of week"}
	dst := []*uint64{&c.second, &c.minute, &c.hour, &c.dom, &c.month, &c.dow}
	bs := []bounds{secondsB, minutesB, hoursB, domB, monthsB, dowB}
	stars := []*bool{nil, nil, nil, &c.domStar, nil, &c.dowStar}
	for i := range f {
		var star bool
		if *dst[i], star, err = parseField(f[i], bs[i]); err != nil {
			return nil, fmt.Errorf("%s field %q: %v", names[i], f[i], err)
		}
		if stars[i] != nil {
			*stars[i] = star
		}
	}
	return c, nil
}

// parseField parses a comma-separated list of `*`, `?`, `N`, `N-M`, each with an optional
// `/step`; star reports an unrestricted field (`*` or `?` without a step above 1).
func parseField(field string, b bounds) (bits uint64, star bool, err error) {
	for _, expr := range strings.Split(field, ",") {
		rangeStep := strings.Split(expr, "/")
		if len(rangeStep) > 2 {
			return 0, false, errors.New("too many slashes")
		}
		lohi := strings.Split(rangeStep[0], "-")
		var lo, hi uint
		isStar := false
		switch {
		case lohi[0] == "*" || lohi[0] == "?":
			if len(lohi) > 1 {
				return 0, false, errors.New("a range cannot start with *")
			}
			lo, hi, isStar = b.min, b.max, true
		case len(lohi) > 2:
			return 0, false, errors.New("too many hyphens")
		default:
			if lo, err = value(lohi[0], b); err != nil {
				return 0, false, err
			}
			hi = lo
			if len(lohi) == 2 {
				if hi, err = value(lohi[1], b); err != nil {
					return 0, false, err
				}
			}
		}
		step := uint(1)
		if len(rangeStep) == 2 {
			n, err := strconv.Atoi(rangeStep[1])
			if err != nil || n <= 0 {
				return 0, false, fmt.Errorf("step %q must be a positive number", rangeStep[1])
			}
			step = uint(n)
			if len(lohi) == 1 && !isStar {
				hi = b.max // "N/step" means N through the maximum
			}
			if step > 1 {
				isStar = false
			}
		}
		if lo < b.min || hi > b.max || lo > hi {
			return 0, false, fmt.Errorf("range %d-%d outside %d-%d", lo, hi, b.min, b.max)
		}
		for v := lo; v <= hi; v += step {
			bits |= 1 << v
		}
		star = star || isStar
	}
	return bits, star, nil
}

func value(s string, b bounds) (uint, error) {
	if v, ok := b.names[strings.ToLower(s)]; ok {
		return v, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	return uint(n), nil
}

func (c *cronSpec) dayMatches(t time.Time) bool {
	domOK := c.dom&(1<<uint(t.Day())) != 0
	dowOK := c.dow&(1<<uint(t.Weekday())) != 0
	if c.domStar || c.dowStar {
		return domOK && dowOK
	}
	return domOK || dowOK // both restricted: either matches, as in every cron
}

// next returns the first fire strictly after t, searching field by field from the largest,
// in the time zone of t (the same walk as nats-server's cron, so DST gaps and repeats agree).
func (c *cronSpec) next(t time.Time) (time.Time, bool) {
	loc := t.Location()
	t = t.Truncate(time.Second).Add(time.Second)
	truncated := false
	limit := t.Year() + 5
wrap:
	if t.Year() > limit {
		return time.Time{}, false
	}
	for c.month&(1<<uint(t.Month())) == 0 {
		if !truncated {
			truncated = true
			t = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, loc)
		}
		if t = t.AddDate(0, 1, 0); t.Month() == time.January {
			goto wrap
		}
	}
	for !c.dayMatches(t) {
		if !truncated {
			truncated = true
			t = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, loc)
		}
		if t = t.AddDate(0, 0, 1); t.Day() == 1 {
			goto wrap
		}
	}
	for c.hour&(1<<uint(t.Hour())) == 0 {
		if !truncated {
			truncated = true
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), 0, 0, 0, loc)
		}
		if t = t.Add(time.Hour); t.Hour() == 0 {
			goto wrap
		}
	}
	for c.minute&(1<<uint(t.Minute())) == 0 {
		if !truncated {
			truncated = true
			t = t.Truncate(time.Minute)
		}
		if t = t.Add(time.Minute); t.Minute() == 0 {
			goto wrap
		}
	}
	for c.second&(1<<uint(t.Second())) == 0 {
		if !truncated {
			truncated = true
			t = t.Truncate(time.Second)
		}
		if t = t.Add(time.Second); t.Second() == 0 {
			goto wrap
		}
	}
	return t, true
}
