package contract

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrContract is matched (errors.Is) by every way data can break a contract: every *Violation.
var ErrContract = errors.New("contract violation")

// MaxRecordBytes bounds one CSV record, header included (give or take the 4 KiB read buffer),
// so a file with a runaway quoted field cannot make the reader hold it all in memory.
const MaxRecordBytes = 1 << 20

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
	if v.Line > 0 || v.Column != "" {
		return "contract violation at " + v.Detail()
	}
	return "contract violation: " + v.Rule
}

// Detail is the violation without its "contract violation at" prefix:
// `line 7, column amount: value "12a" is not a number`.
func (v *Violation) Detail() string {
	var b strings.Builder
	if v.Line > 0 {
		fmt.Fprintf(&b, "line %d", v.Line)
	}
	if v.Column != "" {
		if v.Line > 0 {
			b.WriteString(", ")
		}
		b.WriteString("column ")
		b.WriteString(v.Column)
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
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

// BadRow is a record that breaks the contract.
type BadRow struct {
	// Line is the line the record starts on.
	Line int
	// Record holds the record's fields as read, or nil when the CSV itself is malformed there.
	// It is only valid during the OnBadRow call.
	Record []string
	// Violations lists every broken rule of the record, at least one.
	Violations []*Violation
}

// Reader streams a CSV file through a contract one record at a time; memory does not grow with
// the file. Use it like bufio.Scanner:
//
//	for r.Next() { use(r.Values()) }
//	if err := r.Err(); err != nil { ... }
//
// By default the first bad row stops it (Err returns its first *Violation). With OnBadRow set,
// bad rows go to that function and reading goes on with the next record. A malformed header, an
// empty or header-only file and an over-long record always stop the reader: nothing after them
// could be read reliably.
type Reader struct {
	c       *Contract
	fields  []*field
	lim     *recordLimiter
	csv     *csv.Reader
	cols    []int // field index in the file -> column index in the contract, or -1 to skip
	width   int   // fields per record
	vals    []any
	bad     []*Violation
	onBad   func(BadRow) error
	line    int // last line of the last record read
	rows    int64
	badRows int64
	err     error
	done    bool
}

// NewReader reads the header of r and matches it to c's columns by name: order does not matter,
// optional columns may be absent, a missing required column is a *Violation, and so is an
// unknown column unless the contract ignores them. Errors reading r itself are returned as they
// are (they are not violations), as is an invalid contract.
func NewReader(r io.Reader, c *Contract, opts ...ReaderOption) (*Reader, error) {
	var o readerOptions
	for _, opt := range opts {
		opt(&o)
	}
	fields := make([]*field, len(c.Columns))
	for i, col := range c.Columns {
		f, err := compileColumn(col)
		if err != nil {
			return nil, fmt.Errorf("contract %s: column %s: %w", c.Name, col.Name, err)
		}
		fields[i] = f
	}
	in, err := decompress(r)
	if err != nil {
		return nil, err
	}
	if o.maxBytes > 0 {
		in = &sizeLimiter{r: in, left: o.maxBytes, max: o.maxBytes}
	}
	lim := &recordLimiter{r: in}
	br := bufio.NewReader(lim)
	b, err := br.Peek(len(bom))
	switch {
	case err == nil && bytes.Equal(b, bom):
		_, _ = br.Discard(len(bom))
	case err != nil && err != io.EOF:
		var v *Violation
		if errors.As(err, &v) { // broken gzip data at the very start
			return nil, &Violation{Line: 1, Rule: v.Rule}
		}
		return nil, fmt.Errorf("read csv: %w", err)
	case len(b) >= 2 && (b[0] == 0xFF && b[1] == 0xFE || b[0] == 0xFE && b[1] == 0xFF):
		return nil, violation(1, "", "", "the file is UTF-16 encoded (it starts with a UTF-16 byte order mark); it must be UTF-8")
	}
	cr := csv.NewReader(br) // uses br as is: it is already a large enough *bufio.Reader
	cr.ReuseRecord = true
	rd := &Reader{c: c, fields: fields, lim: lim, csv: cr, vals: make([]any, len(c.Columns))}

	header, err := cr.Read()
	if err == io.EOF {
		return nil, violation(1, "", "", "no header: the file is empty")
	}
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) && !errors.Is(pe.Err, csv.ErrFieldCount) {
			return nil, violation(pe.Line, "", "", fmt.Sprintf("malformed CSV header: %v (byte %d of the line)", pe.Err, pe.Column))
		}
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
	r.width = len(header)
	var unknown, dup []string
	for j, h := range header {
		if strings.ContainsRune(h, '\r') {
			// encoding/csv only ends lines at LF, so a file with CR line endings is one long line.
			return violation(line, "", "", "the header contains a carriage return: lines must end in LF or CRLF, not CR alone")
		}
		name := strings.TrimSpace(h)
		if name == "" {
			return violation(line, "", "", fmt.Sprintf("header field %d is empty", j+1))
		}
		i, ok := index[name]
		switch {
		case !ok:
			r.cols[j] = -1
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
	ignore := r.c.UnknownColumns == IgnoreUnknown
	switch {
	case len(missing) > 0:
		rule := "required column missing from the header"
		if len(unknown) > 0 {
			rule += "; the header has unknown column(s) " + list(unknown)
		}
		return violation(line, strings.Join(missing, ", "), "", rule)
	case len(unknown) > 0 && !ignore:
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

// OnBadRow makes the reader hand each bad row to fn and go on reading; if fn returns an error,
// the reader stops with it. Call it before the first Next.
func (r *Reader) OnBadRow(fn func(BadRow) error) { r.onBad = fn }

// Next reads the next good record. It returns false at the end of the file or when reading
// stops; Err tells which.
func (r *Reader) Next() bool {
	for r.err == nil && !r.done {
		ok, bad := r.read()
		if ok {
			return true
		}
		if bad == nil {
			continue
		}
		r.badRows++
		if r.onBad == nil {
			r.err = bad.Violations[0]
			return false
		}
		if err := r.onBad(*bad); err != nil {
			r.err = err
			return false
		}
	}
	return false
}

// read reads one record: ok for a good one, a BadRow for a bad one, neither at the end or when
// reading stops (r.done or r.err set).
func (r *Reader) read() (ok bool, bad *BadRow) {
	r.lim.n = 0
	rec, err := r.csv.Read()
	if err == io.EOF {
		r.done = true
		if r.rows == 0 && r.badRows == 0 {
			r.err = violation(r.line+1, "", "", "no data rows: the file has only a header")
		}
		return false, nil
	}
	r.bad = r.bad[:0]
	var pe *csv.ParseError
	switch {
	case err == nil:
	case errors.As(err, &pe) && errors.Is(pe.Err, csv.ErrFieldCount):
		r.line, _ = r.csv.FieldPos(len(rec) - 1)
		r.bad = append(r.bad, violation(pe.StartLine, "", "", fmt.Sprintf("record has %d fields, the header has %d", len(rec), r.width)))
		return false, &BadRow{Line: pe.StartLine, Record: rec, Violations: r.bad}
	case errors.As(err, &pe) && !errors.Is(err, errRecordTooLong):
		// A stray or unbalanced quote: encoding/csv has consumed the record's lines, so the next
		// record can still be read.
		r.line = pe.Line
		r.bad = append(r.bad, violation(pe.Line, "", "", fmt.Sprintf("malformed CSV: %v (byte %d of the line)", pe.Err, pe.Column)))
		return false, &BadRow{Line: pe.StartLine, Violations: r.bad}
	default:
		r.err = r.readErr(err, rec)
		return false, nil
	}
	for j, s := range rec {
		i := r.cols[j]
		if i < 0 {
			continue
		}
		f := r.fields[i]
		v, rule := f.parse(s)
		if rule != "" {
			line, _ := r.csv.FieldPos(j)
			r.bad = append(r.bad, violation(line, f.Name, s, rule))
			continue
		}
		r.vals[i] = v
	}
	r.line, _ = r.csv.FieldPos(len(rec) - 1)
	if len(r.bad) > 0 {
		start, _ := r.csv.FieldPos(0)
		return false, &BadRow{Line: start, Record: rec, Violations: r.bad}
	}
	r.rows++
	return true, nil
}

// Values returns the current record's values in the contract's column order: int64 (bigint),
// int32 (integer), pgtype.Numeric (numeric), string (text), time.Time (date, timestamptz), or
// nil for no value. The slice is reused by the next call to Next.
func (r *Reader) Values() []any { return r.vals }

// Err returns what stopped the reader: a *Violation, an error from OnBadRow's function, or a
// read error; nil after a clean end of file.
func (r *Reader) Err() error { return r.err }

// Rows returns how many good records have been read so far.
func (r *Reader) Rows() int64 { return r.rows }

// BadRows returns how many bad records have been read so far.
func (r *Reader) BadRows() int64 { return r.badRows }

// Line returns the last line of the last record read.
func (r *Reader) Line() int { return r.line }

func (r *Reader) readErr(err error, rec []string) error {
	var pe *csv.ParseError
	var v *Violation
	switch {
	case errors.As(err, &v): // from decompress: broken gzip data where the next record starts
		if v.Line == 0 {
			v = &Violation{Line: r.line + 1, Rule: v.Rule}
		}
		return v
	case errors.Is(err, errRecordTooLong):
		return violation(r.line+1, "", "", fmt.Sprintf("record is longer than %d bytes", MaxRecordBytes))
	case errors.As(err, &pe) && errors.Is(pe.Err, csv.ErrFieldCount):
		return violation(pe.StartLine, "", "", fmt.Sprintf("record has %d fields, the header has %d", len(rec), r.width))
	case errors.As(err, &pe):
		return violation(pe.Line, "", "", fmt.Sprintf("malformed CSV: %v (byte %d of the line)", pe.Err, pe.Column))
	}
	return fmt.Errorf("read csv: %w", err)
}

var errRecordTooLong = errors.New("csv record too long")

// ReaderOption configures NewReader.
type ReaderOption func(*readerOptions)

type readerOptions struct{ maxBytes int64 }

// MaxBytes fails the read with ErrTooLarge once the file's content (after gzip decoding) is
// longer than n bytes, so a small compressed object cannot expand without bound.
func MaxBytes(n int64) ReaderOption { return func(o *readerOptions) { o.maxBytes = n } }

// ErrTooLarge is a file whose content is longer than MaxBytes allows.
var ErrTooLarge = errors.New("the file is larger than allowed")

type sizeLimiter struct {
	r         io.Reader
	left, max int64
}

func (l *sizeLimiter) Read(p []byte) (int, error) {
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return 0, fmt.Errorf("%w (more than %d bytes after gzip decoding)", ErrTooLarge, l.max)
	}
	return n, err
}

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

// decompress returns r, or r's content when r is gzip-compressed (it starts with gzip's magic
// bytes, which no UTF-8 CSV does). Broken gzip data reads as a *Violation.
func decompress(r io.Reader) (io.Reader, error) {
	var head [2]byte
	n, err := io.ReadFull(r, head[:])
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, fmt.Errorf("read csv: %w", err)
	}
	r = io.MultiReader(bytes.NewReader(head[:n]), r)
	if n < 2 || head[0] != 0x1f || head[1] != 0x8b {
		return r, nil
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		if v, ok := gzipError(err).(*Violation); ok {
			v.Line = 1
			return nil, v
		}
		return nil, fmt.Errorf("read csv: %w", err)
	}
	return &gunzip{zr: zr}, nil
}

// gunzip reads a gzip stream, turning errors in the compressed data into violations.
type gunzip struct{ zr *gzip.Reader }

func (g *gunzip) Read(p []byte) (int, error) {
	n, err := g.zr.Read(p)
	if err != nil && err != io.EOF {
		err = gzipError(err)
	}
	return n, err
}

// gzipError names what is wrong with gzip data; other errors (reading the source) pass as they are.
func gzipError(err error) error {
	var corrupt flate.CorruptInputError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		// The compressed stream ended early; the caller's checksum tells whether the file was
		// cut short on the way or is itself truncated.
		return &Violation{Rule: "gzip data is truncated (the compressed stream ends early)"}
	case errors.Is(err, gzip.ErrChecksum):
		return &Violation{Rule: "gzip data is corrupt (checksum mismatch)"}
	case errors.Is(err, gzip.ErrHeader):
		return &Violation{Rule: "gzip data is corrupt (bad header, or bytes after the end of the stream)"}
	case errors.As(err, &corrupt):
		return &Violation{Rule: fmt.Sprintf("gzip data is corrupt at byte %d", int64(corrupt))}
	}
	return err
}
