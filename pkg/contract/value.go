package contract

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
)

// PostgreSQL's numeric holds up to 131072 digits before the point and 16383 after; a longer
// value would fail the COPY on the server, which looks transient and would be retried forever.
const (
	maxNumericIntDigits  = 131072
	maxNumericFracDigits = 16383
)

const (
	missingRule   = "is missing but the column is required"
	numberRule    = "is not a number"
	integerRule   = "is not an integer"
	dateRule      = "is not a date (YYYY-MM-DD)"
	timestampRule = "is not a timestamp (YYYY-MM-DD HH:MM:SS with an optional fraction and zone)"
	booleanRule   = "is not a boolean (true/false, t/f, yes/no, y/n, 1/0)"
	jsonRule      = "is not valid JSON"
)

// JSON is a jsonb column's value: valid JSON text.
type JSON string

// field is a contract column compiled for checking values: its parsed bounds, pattern and zone.
type field struct {
	Column
	loc *time.Location
	re  *regexp.Regexp
	// Bounds in the column's type: int64, *big.Rat or time.Time; nil when absent.
	min, max any
	// A numeric's bounds again, when they are small decimals (see parseSmall).
	minSmall, maxSmall *smallDec
}

func compileColumn(col Column) (*field, error) {
	f := &field{Column: col, loc: time.UTC}
	text := col.Type == Text
	if col.Pattern != "" {
		if !text {
			return nil, errors.New("pattern applies to text columns only")
		}
		re, err := regexp.Compile(`^(?:` + col.Pattern + `)$`)
		if err != nil {
			return nil, fmt.Errorf("pattern: %w", err)
		}
		f.re = re
	}
	if col.MaxLength != 0 && (!text || col.MaxLength < 0) {
		return nil, errors.New("max_length applies to text columns only and must be positive")
	}
	if col.Timezone != "" || col.RequireZone {
		if col.Type != Timestamptz {
			return nil, errors.New("timezone and require_zone apply to timestamptz columns only")
		}
	}
	if col.Timezone != "" {
		loc, err := time.LoadLocation(col.Timezone)
		if err != nil {
			return nil, fmt.Errorf("timezone %q: %w", col.Timezone, err)
		}
		f.loc = loc
	}
	for _, b := range []struct {
		name  string
		bound *Bound
		dst   *any
	}{{"min", col.Min, &f.min}, {"max", col.Max, &f.max}} {
		if b.bound == nil {
			continue
		}
		if text {
			return nil, fmt.Errorf("%s does not apply to text columns (use max_length or pattern)", b.name)
		}
		v, err := f.bound(b.bound.text)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", b.name, b.bound.text, err)
		}
		*b.dst = v
	}
	if f.min != nil && f.max != nil && compare(f.min, f.max) > 0 {
		return nil, fmt.Errorf("min %s is greater than max %s", col.Min, col.Max)
	}
	if col.Type == Numeric {
		for _, b := range []struct {
			bound *Bound
			dst   **smallDec
		}{{col.Min, &f.minSmall}, {col.Max, &f.maxSmall}} {
			if b.bound == nil {
				continue
			}
			if i, fr, ok := plainDecimal(b.bound.text); ok && i+fr <= smallDigits {
				d := parseSmall(b.bound.text)
				*b.dst = &d
			}
		}
	}
	return f, nil
}

// bound parses a min or max in the column's type.
func (f *field) bound(s string) (any, error) {
	switch f.Type {
	case Bigint, Integer:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, errors.New("not an integer")
		}
		return n, nil
	case Numeric:
		if _, _, ok := plainDecimal(s); !ok {
			return nil, errors.New("not a plain decimal number")
		}
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			return nil, errors.New("not a plain decimal number")
		}
		return r, nil
	case Date:
		d, err := time.Parse(time.DateOnly, s)
		if err != nil {
			return nil, errors.New("not a YYYY-MM-DD date")
		}
		return d, nil
	case Timestamptz:
		ts, rule := parseTimestamp(s, time.UTC, false)
		if rule != "" {
			return nil, errors.New("not a timestamp")
		}
		return ts, nil
	}
	return nil, fmt.Errorf("type %s takes no bounds", f.Type)
}

// compare orders two bounds or values of one type: int64, *big.Rat or time.Time.
func compare(a, b any) int {
	switch a := a.(type) {
	case int64:
		b := b.(int64)
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
		return 0
	case *big.Rat:
		return a.Cmp(b.(*big.Rat))
	case time.Time:
		return a.Compare(b.(time.Time))
	}
	panic(fmt.Sprintf("contract: cannot compare %T", a))
}

// parse turns one field into the value COPY sends for the column, or returns the rule it breaks.
func (f *field) parse(s string) (any, string) {
	// Before anything else, so a binary or Latin-1 value is named for what it is rather than
	// for the type it fails to be.
	if strings.IndexByte(s, 0) >= 0 {
		return nil, "contains a NUL byte"
	}
	if !utf8.ValidString(s) {
		return nil, "is not valid UTF-8 (the file must be UTF-8 encoded)"
	}
	t := strings.TrimSpace(s)
	if t == "" || strings.EqualFold(t, "N/A") || strings.EqualFold(t, "NULL") {
		if f.Required {
			return nil, missingRule
		}
		return nil, ""
	}
	switch f.Type {
	case Bigint, Integer:
		return f.parseInt(t)
	case Numeric:
		return f.parseNumeric(t)
	case Text:
		if f.MaxLength > 0 && utf8.RuneCountInString(s) > f.MaxLength {
			return nil, fmt.Sprintf("is longer than %d characters", f.MaxLength)
		}
		if f.re != nil && !f.re.MatchString(s) {
			return nil, "does not match the pattern " + f.Pattern
		}
		return s, ""
	case Boolean:
		switch strings.ToLower(t) {
		case "true", "t", "yes", "y", "1":
			return true, ""
		case "false", "f", "no", "n", "0":
			return false, ""
		}
		return nil, booleanRule
	case JSONB:
		if !json.Valid([]byte(t)) {
			return nil, jsonRule
		}
		if strings.Contains(t, `\u0000`) {
			return nil, "holds \\u0000, which jsonb cannot store"
		}
		return JSON(t), ""
	case Date:
		d, err := time.Parse(time.DateOnly, t)
		if err != nil {
			return nil, dateRule
		}
		if rule := f.inRange(d); rule != "" {
			return nil, rule
		}
		return d, ""
	case Timestamptz:
		ts, rule := parseTimestamp(t, f.loc, f.RequireZone)
		if rule != "" {
			return nil, rule
		}
		if rule := f.inRange(ts); rule != "" {
			return nil, rule
		}
		return ts, ""
	}
	return nil, fmt.Sprintf("has unknown type %q", f.Type)
}

// parseInt parses a bigint or integer field (trimmed).
func (f *field) parseInt(t string) (any, string) {
	bits := 64
	if f.Type == Integer {
		bits = 32
	}
	n, err := strconv.ParseInt(t, 10, bits)
	if err != nil {
		return nil, intRule(err, string(f.Type))
	}
	if rule := f.inRange(n); rule != "" {
		return nil, rule
	}
	if f.Type == Integer {
		return int32(n), ""
	}
	return n, ""
}

// parseNumeric parses a numeric field (trimmed): a small decimal on the fast path, anything
// longer through pgtype.Numeric.
func (f *field) parseNumeric(t string) (any, string) {
	intDigits, fracDigits, ok := plainDecimal(t)
	if !ok {
		return nil, numberRule
	}
	if intDigits > maxNumericIntDigits || fracDigits > maxNumericFracDigits {
		return nil, "has more digits than numeric holds"
	}
	if intDigits+fracDigits <= smallDigits {
		d := parseSmall(t)
		if rule, ok := f.inSmallRange(d); ok {
			if rule != "" {
				return nil, rule
			}
			return d.numeric(), ""
		}
	}
	var n pgtype.Numeric
	// Scan refuses the leading + that PostgreSQL (and the fast path) accept.
	if err := n.Scan(strings.TrimPrefix(t, "+")); err != nil {
		return nil, numberRule
	}
	if f.min != nil || f.max != nil {
		if rule := f.inRange(numericRat(n)); rule != "" {
			return nil, rule
		}
	}
	return n, ""
}

func (f *field) inRange(v any) string {
	if f.min != nil && compare(v, f.min) < 0 {
		return "is less than the minimum " + f.Min.text
	}
	if f.max != nil && compare(v, f.max) > 0 {
		return "is greater than the maximum " + f.Max.text
	}
	return ""
}

// inSmallRange is inRange for a small numeric against small bounds; ok is false when a bound is
// not small or the comparison would overflow, and inRange must decide.
func (f *field) inSmallRange(d smallDec) (rule string, ok bool) {
	if f.min != nil {
		if f.minSmall == nil {
			return "", false
		}
		c, ok := d.cmp(*f.minSmall)
		if !ok {
			return "", false
		}
		if c < 0 {
			return "is less than the minimum " + f.Min.text, true
		}
	}
	if f.max != nil {
		if f.maxSmall == nil {
			return "", false
		}
		c, ok := d.cmp(*f.maxSmall)
		if !ok {
			return "", false
		}
		if c > 0 {
			return "is greater than the maximum " + f.Max.text, true
		}
	}
	return "", true
}

// numericRat is n's exact value.
func numericRat(n pgtype.Numeric) *big.Rat {
	r := new(big.Rat).SetInt(n.Int)
	if n.Exp == 0 {
		return r
	}
	exp := int64(n.Exp)
	if exp < 0 {
		exp = -exp
	}
	p := new(big.Int).Exp(big.NewInt(10), big.NewInt(exp), nil)
	if n.Exp > 0 {
		return r.Mul(r, new(big.Rat).SetInt(p))
	}
	return r.Quo(r, new(big.Rat).SetInt(p))
}

func intRule(err error, typ string) string {
	if errors.Is(err, strconv.ErrRange) {
		return "is out of range for " + typ
	}
	return integerRule
}

// plainDecimal checks s is [+-]digits[.digits] (at least one digit) and counts the significant
// digits before the point and the digits after it.
func plainDecimal(s string) (intDigits, fracDigits int, ok bool) {
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" && frac == "" {
		return 0, 0, false
	}
	for _, part := range []string{whole, frac} {
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return 0, 0, false
			}
		}
	}
	return len(strings.TrimLeft(whole, "0")), len(frac), true
}

// parseTimestamp reads YYYY-MM-DD[T ]HH:MM:SS[.fraction][zone], zone being Z, ±HH, ±HHMM or
// ±HH:MM. A timestamp without a zone is read in loc, unless requireZone; a local time that a
// daylight-saving change skips is refused, and one it repeats is taken at its first occurrence.
func parseTimestamp(s string, loc *time.Location, requireZone bool) (time.Time, string) {
	const n = len("2006-01-02T15:04:05")
	if len(s) < n || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != ' ') || s[13] != ':' || s[16] != ':' {
		return time.Time{}, timestampRule
	}
	year, ok1 := digits(s[0:4])
	month, ok2 := digits(s[5:7])
	day, ok3 := digits(s[8:10])
	hour, ok4 := digits(s[11:13])
	minute, ok5 := digits(s[14:16])
	sec, ok6 := digits(s[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return time.Time{}, timestampRule
	}
	rest := s[n:]
	nsec := 0
	if rest != "" && rest[0] == '.' {
		i := 1
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		frac := rest[1:i]
		if frac == "" || len(frac) > 9 {
			return time.Time{}, timestampRule
		}
		nsec, _ = digits(frac + strings.Repeat("0", 9-len(frac)))
		rest = rest[i:]
	}
	zone, naive := loc, false
	switch {
	case rest == "":
		if requireZone {
			return time.Time{}, "has no time zone, and the column requires one"
		}
		naive = true
	case rest == "Z":
		zone = time.UTC
	case rest[0] == '+' || rest[0] == '-':
		off, ok := zoneOffset(rest[1:])
		if !ok {
			return time.Time{}, timestampRule
		}
		if rest[0] == '-' {
			off = -off
		}
		zone = time.FixedZone("", off)
	default:
		return time.Time{}, timestampRule
	}
	if month < 1 || month > 12 || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, timestampRule
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, zone)
	if t.Day() != day || t.Month() != time.Month(month) {
		return time.Time{}, timestampRule // February 30 and the like
	}
	if naive && zone != time.UTC {
		if t.Hour() != hour || t.Minute() != minute {
			return time.Time{}, fmt.Sprintf("does not exist in time zone %s (a daylight-saving change skips it)", zone)
		}
		// In a repeated hour time.Date may pick either instant; take the earlier one.
		if e := t.Add(-time.Hour); e.Hour() == hour && e.Minute() == minute && e.Day() == day {
			t = e
		}
	}
	return t, ""
}

// zoneOffset reads HH, HHMM or HH:MM as seconds east of UTC.
func zoneOffset(s string) (int, bool) {
	var hh, mm string
	switch len(s) {
	case 2:
		hh = s
	case 4:
		hh, mm = s[:2], s[2:]
	case 5:
		if s[2] != ':' {
			return 0, false
		}
		hh, mm = s[:2], s[3:]
	default:
		return 0, false
	}
	h, ok := digits(hh)
	if !ok || h > 23 {
		return 0, false
	}
	m := 0
	if mm != "" {
		if m, ok = digits(mm); !ok || m > 59 {
			return 0, false
		}
	}
	return h*3600 + m*60, true
}

// digits parses a non-empty run of ASCII digits.
func digits(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}
