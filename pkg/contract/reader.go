package contract

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
)

// ErrContract is matched (errors.Is) by every way data can break a contract: every *Violation.
var ErrContract = errors.New("contract violation")

// MaxRecordBytes bounds one CSV record, header included (give or take the 4 KiB read buffer),
// so a file with a runaway quoted field cannot make the reader hold it all in memory.
const MaxRecordBytes = 1 << 20

// PostgreSQL's numeric holds up to 131072 digits before the point and 16383 after; a longer
// value would fail the COPY on the server, which looks transient and would be retried forever.
const (
	maxNumericIntDigits  = 131072
	maxNumericFracDigits = 16383
)

// maxValueLen is how much of an offending value a Violation keeps.
const maxValueLen = 40

// Violation is one way a file breaks its contract.
type Violation struct {
	// Line is the 1-based line of the file (the header is line 1); 0 if unknown.
	Line int
	// Column is the contract column (or, for header problems, the comma-separated columns).
	Column string
	// Value is the offending value, cut to about 40 bytes.
	Value string
	// Rule says what is wrong, e.g. "is not a number".
	Rule string
}

// Error reads like `contract violation at line 7, column amount: value "12a" is not a number`.
func (v *Violation) Error() string {
	var b strings.Builder
	b.WriteString("contract violation")
	if v.Line > 0 {
		fmt.Fprintf(&b, " at line %d", v.Line)
	}
	if v.Column != "" {
		if v.Line > 0 {
			b.WriteString(",")
		}
		b.WriteString(" column ")
		b.WriteString(v.Column)
	}
	b.WriteString(": ")
	if v.Line > 1 && v.Column != "" {
		// A data row's value.
		fmt.Fprintf(&b, "value %q ", v.Value)
	}
	b.WriteString(v.Rule)
	return b.String()
}

// Is makes every Violation match ErrContract.
func (v *Violation) Is(target error) bool { return target == ErrContract }

func violation(line int, column, value, rule string) *Violation {
	return &Violation{Line: line, Column: column, Value: clip(value), Rule: rule}
}

// clip cuts s to about maxValueLen bytes on a rune boundary.
func clip(s string) string {
	if len(s) <= maxValueLen {
		return s
	}
	i := maxValueLen
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// Reader streams a CSV file through a contract one record at a time; memory does not grow with
// the file. Use it like bufio.Scanner:
//
//	for r.Next() { use(r.Values()) }
//	if err := r.Err(); err != nil { ... }
type Reader struct {
	c    *Contract
	lim  *recordLimiter
	csv  *csv.Reader
	cols []int // field index in the file -> column index in the contract
	vals []any
	line int // last line of the last record read
	rows int64
	err  error
	done bool
}

// NewReader reads the header of r and matches it to c's columns by name: order does not matter,
// optional columns may be absent, a missing required column or an unknown column is a
// *Violation. Errors reading r itself are returned as they are (they are not violations).
func NewReader(r io.Reader, c *Contract) (*Reader, error) {
	lim := &recordLimiter{r: r}
	br := bufio.NewReader(lim)
	b, err := br.Peek(len(bom))
	switch {
	case err == nil && bytes.Equal(b, bom):
		_, _ = br.Discard(len(bom))
	case err != nil && err != io.EOF:
		return nil, fmt.Errorf("read csv: %w", err)
	}
	cr := csv.NewReader(br) // uses br as is: it is already a large enough *bufio.Reader
	cr.ReuseRecord = true
	rd := &Reader{c: c, lim: lim, csv: cr, vals: make([]any, len(c.Columns))}

	header, err := cr.Read()
	if err == io.EOF {
		return nil, violation(1, "", "", "no header: the file is empty")
	}
	if err != nil {
		return nil, rd.readErr(err, header)
	}
	rd.line, _ = cr.FieldPos(len(header) - 1)
	line, _ := cr.FieldPos(0)
	if err := rd.matchHeader(header, line); err != nil {
		return nil, err
	}
	return rd, nil
}

var bom = []byte{0xEF, 0xBB, 0xBF}

func (r *Reader) matchHeader(header []string, line int) error {
	index := make(map[string]int, len(r.c.Columns))
	for i, col := range r.c.Columns {
		index[col.Name] = i
	}
	seen := make([]bool, len(r.c.Columns))
	r.cols = make([]int, len(header))
	var unknown, dup []string
	for j, h := range header {
		name := strings.TrimSpace(h)
		if name == "" {
			return violation(line, "", "", fmt.Sprintf("header field %d is empty", j+1))
		}
		i, ok := index[name]
		switch {
		case !ok:
			unknown = append(unknown, printable(clip(name)))
		case seen[i]:
			dup = append(dup, name)
		default:
			seen[i] = true
			r.cols[j] = i
		}
	}
	var missing []string
	for i, col := range r.c.Columns {
		if col.Required && !seen[i] {
			missing = append(missing, col.Name)
		}
	}
	switch {
	case len(missing) > 0:
		rule := "required column missing from the header"
		if len(unknown) > 0 {
			rule += "; the header has unknown column(s) " + list(unknown)
		}
		return violation(line, strings.Join(missing, ", "), "", rule)
	case len(unknown) > 0:
		return &Violation{Line: line, Column: list(unknown),
			Rule: fmt.Sprintf("not a column of contract %s (%s)", r.c.Name, strings.Join(r.c.ColumnNames(), ", "))}
	case len(dup) > 0:
		return violation(line, strings.Join(dup, ", "), "", "column appears more than once in the header")
	}
	// Optional columns absent from the file stay nil in every row.
	return nil
}

// printable quotes a header name that would garble a log line (control bytes, invalid UTF-8).
func printable(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// list joins up to five names, so a header of garbage makes a short message.
func list(names []string) string {
	if len(names) <= 5 {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:5], ", "), len(names)-5)
}

// Next reads and checks the next record. It returns false at the end of the file or at the first
// problem; Err tells which.
func (r *Reader) Next() bool {
	if r.err != nil || r.done {
		return false
	}
	r.lim.n = 0
	rec, err := r.csv.Read()
	if err == io.EOF {
		r.done = true
		if r.rows == 0 {
			r.err = violation(r.line+1, "", "", "no data rows: the file has only a header")
		}
		return false
	}
	if err != nil {
		r.err = r.readErr(err, rec)
		return false
	}
	for j, s := range rec {
		col := r.c.Columns[r.cols[j]]
		v, rule := parse(col, s)
		if rule != "" {
			line, _ := r.csv.FieldPos(j)
			r.err = violation(line, col.Name, s, rule)
			return false
		}
		r.vals[r.cols[j]] = v
	}
	r.line, _ = r.csv.FieldPos(len(rec) - 1)
	r.rows++
	return true
}

// Values returns the current record's values in the contract's column order: int64 (bigint),
// int32 (integer), pgtype.Numeric (numeric), string (text), time.Time (date, timestamptz), or
// nil for no value. The slice is reused by the next call to Next.
func (r *Reader) Values() []any { return r.vals }

// Err returns the first violation or read error, or nil after a clean end of file.
func (r *Reader) Err() error { return r.err }

// Rows returns how many records have been read and accepted so far.
func (r *Reader) Rows() int64 { return r.rows }

func (r *Reader) readErr(err error, rec []string) error {
	var pe *csv.ParseError
	switch {
	case errors.Is(err, errRecordTooLong):
		return violation(r.line+1, "", "", fmt.Sprintf("record is longer than %d bytes", MaxRecordBytes))
	case errors.As(err, &pe) && errors.Is(pe.Err, csv.ErrFieldCount):
		return violation(pe.StartLine, "", "", fmt.Sprintf("record has %d fields, the header has %d", len(rec), len(r.cols)))
	case errors.As(err, &pe):
		return violation(pe.Line, "", "", fmt.Sprintf("malformed CSV: %v (byte %d of the line)", pe.Err, pe.Column))
	}
	return fmt.Errorf("read csv: %w", err)
}

const missingRule = "is missing but the column is required"

// parse turns one field into the value COPY sends for col, or returns the rule it breaks.
func parse(col Column, s string) (any, string) {
	t := strings.TrimSpace(s)
	if t == "" || strings.EqualFold(t, "N/A") || strings.EqualFold(t, "NULL") {
		if col.Required {
			return nil, missingRule
		}
		return nil, ""
	}
	switch col.Type {
	case Bigint:
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil {
			return nil, intRule(err, "bigint")
		}
		return n, ""
	case Integer:
		n, err := strconv.ParseInt(t, 10, 32)
		if err != nil {
			return nil, intRule(err, "integer")
		}
		return int32(n), ""
	case Numeric:
		intDigits, fracDigits, ok := plainDecimal(t)
		if !ok {
			return nil, "is not a number"
		}
		if intDigits > maxNumericIntDigits || fracDigits > maxNumericFracDigits {
			return nil, "has more digits than numeric holds"
		}
		var n pgtype.Numeric
		if err := n.Scan(t); err != nil {
			return nil, "is not a number"
		}
		return n, ""
	case Text:
		if strings.IndexByte(s, 0) >= 0 {
			return nil, "contains a NUL byte"
		}
		if !utf8.ValidString(s) {
			return nil, "is not valid UTF-8"
		}
		return s, ""
	case Date:
		d, err := time.Parse(time.DateOnly, t)
		if err != nil {
			return nil, "is not a date (YYYY-MM-DD)"
		}
		return d, ""
	case Timestamptz:
		ts, ok := parseTimestamp(t)
		if !ok {
			return nil, "is not a timestamp (RFC 3339 with a zone, or YYYY-MM-DD HH:MM:SS in UTC)"
		}
		return ts, ""
	}
	return nil, fmt.Sprintf("has unknown type %q", col.Type)
}

func intRule(err error, typ string) string {
	if errors.Is(err, strconv.ErrRange) {
		return "is out of range for " + typ
	}
	return "is not an integer"
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

// parseTimestamp accepts RFC 3339 with a zone, or a naive timestamp taken as UTC; the date and
// time may be separated by T or a space, and seconds may have a fraction.
func parseTimestamp(s string) (time.Time, bool) {
	if len(s) < len("2006-01-02T15:04:05") {
		return time.Time{}, false
	}
	layout := "2006-01-02T15:04:05.999999999"
	switch s[10] {
	case 'T':
	case ' ':
		layout = "2006-01-02 15:04:05.999999999"
	default:
		return time.Time{}, false
	}
	if tail := s[19:]; strings.HasSuffix(tail, "Z") || strings.ContainsAny(tail, "+-") {
		layout += "Z07:00"
	}
	ts, err := time.Parse(layout, s) // without a zone in the layout, time.Parse returns UTC
	if err != nil {
		return time.Time{}, false
	}
	return ts, true
}

var errRecordTooLong = errors.New("csv record too long")

// recordLimiter fails a read once more than MaxRecordBytes have been read since n was reset
// (at the start of each record).
type recordLimiter struct {
	r io.Reader
	n int
}

func (l *recordLimiter) Read(p []byte) (int, error) {
	if l.n >= MaxRecordBytes {
		return 0, errRecordTooLong
	}
	if len(p) > MaxRecordBytes-l.n {
		p = p[:MaxRecordBytes-l.n]
	}
	n, err := l.r.Read(p)
	l.n += n
	return n, err
}
