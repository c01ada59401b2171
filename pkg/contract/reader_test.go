package contract

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

func mustLoad(t testing.TB, ref string) *Contract {
	t.Helper()
	c, err := Load(ref, "testdata")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// render shows a value with its Go type, so tests check both.
func render(v any) string {
	switch v := v.(type) {
	case nil:
		return "nil"
	case pgtype.Numeric:
		s, err := v.Value()
		if err != nil {
			return "numeric:" + err.Error()
		}
		return fmt.Sprintf("numeric:%v", s)
	case time.Time:
		return "time:" + v.UTC().Format(time.RFC3339Nano)
	default:
		return fmt.Sprintf("%T:%v", v, v)
	}
}

// readAll reads every record, rendering its values.
func readAll(c *Contract, input string) ([][]string, error) {
	r, err := NewReader(strings.NewReader(input), c)
	if err != nil {
		return nil, err
	}
	var rows [][]string
	for r.Next() {
		row := make([]string, len(r.Values()))
		for i, v := range r.Values() {
			row[i] = render(v)
		}
		rows = append(rows, row)
	}
	if r.Err() == nil && r.Rows() != int64(len(rows)) {
		return rows, fmt.Errorf("Rows() = %d, read %d", r.Rows(), len(rows))
	}
	return rows, r.Err()
}

func TestReaderGood(t *testing.T) {
	orders := mustLoad(t, "orders")
	events := mustLoad(t, "contracts/events.json")
	for _, tc := range []struct {
		name  string
		c     *Contract
		input string
		want  [][]string
	}{
		{
			name:  "orders",
			c:     orders,
			input: "order_id,customer_id,amount,updated_at\n1,10,12.50,2024-01-01T10:00:00Z\n2,11,-0.5,2024-01-01T10:00:00+02:00\n",
			want: [][]string{
				{"int64:1", "int32:10", "numeric:12.50", "time:2024-01-01T10:00:00Z"},
				{"int64:2", "int32:11", "numeric:-0.5", "time:2024-01-01T08:00:00Z"},
			},
		},
		{
			name:  "reordered columns, BOM, CRLF, no final newline",
			c:     orders,
			input: "\ufeffamount,updated_at,order_id,customer_id\r\n7,2024-01-01 00:00:00,3,12\r\n.5,2024-01-01T23:59:59.123456,4,13",
			want: [][]string{
				{"int64:3", "int32:12", "numeric:7", "time:2024-01-01T00:00:00Z"},
				{"int64:4", "int32:13", "numeric:0.5", "time:2024-01-01T23:59:59.123456Z"},
			},
		},
		{
			name:  "spaces around header names and numbers, quoted fields",
			c:     orders,
			input: " order_id , customer_id,amount,updated_at\n\" 5 \", +6 ,\"1000.\",2024-06-30 12:00:00-07:00\n",
			want: [][]string{
				{"int64:5", "int32:6", "numeric:1000", "time:2024-06-30T19:00:00Z"},
			},
		},
		{
			name:  "extremes",
			c:     orders,
			input: "order_id,customer_id,amount,updated_at\n9223372036854775807,-2147483648,-000123.4500,0001-01-01T00:00:00Z\n",
			want: [][]string{
				{"int64:9223372036854775807", "int32:-2147483648", "numeric:-123.4500", "time:0001-01-01T00:00:00Z"},
			},
		},
		{
			// encoding/csv turns a quoted CRLF into LF.
			name: "optional columns: absent, empty, N/A, NULL; quoted newline; blank line",
			c:    events,
			input: "at,id,note,x,day\n" +
				"2024-01-01T00:00:00Z,1,\"two\r\nlines, and a \"\"quote\"\"\",,2024-02-29\n" +
				"\n" +
				"2024-01-02T00:00:00Z,2,N/A,null,NULL\n" +
				"2024-01-03T00:00:00Z,3,  keep spaces ,1.25,\n",
			want: [][]string{
				{"int64:1", "nil", "nil", "string:two\nlines, and a \"quote\"", "time:2024-02-29T00:00:00Z", "time:2024-01-01T00:00:00Z"},
				{"int64:2", "nil", "nil", "nil", "nil", "time:2024-01-02T00:00:00Z"},
				{"int64:3", "nil", "numeric:1.25", "string:  keep spaces ", "nil", "time:2024-01-03T00:00:00Z"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(tc.c, tc.input)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("rows\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

const ordersHeader = "order_id,customer_id,amount,updated_at\n"

// row builds an orders record with one field replaced.
func row(field int, value string) string {
	f := []string{"1", "10", "12.50", "2024-01-01T00:00:00Z"}
	f[field] = value
	return strings.Join(f, ",") + "\n"
}

func TestReaderViolations(t *testing.T) {
	orders := mustLoad(t, "orders")
	events := mustLoad(t, "contracts/events.json")
	good := row(0, "1")
	const amount, ts, custID, orderID = 2, 3, 1, 0
	for _, tc := range []struct {
		name  string
		c     *Contract
		input string
		want  Violation
	}{
		{"empty file", orders, "", Violation{Line: 1, Rule: "no header: the file is empty"}},
		{"only a BOM", orders, "\ufeff", Violation{Line: 1, Rule: "no header: the file is empty"}},
		{"only blank lines", orders, "\n\r\n", Violation{Line: 1, Rule: "no header: the file is empty"}},
		{"header only", orders, ordersHeader, Violation{Line: 2, Rule: "no data rows: the file has only a header"}},
		{"header only, CRLF", orders, strings.ReplaceAll(ordersHeader, "\n", "\r\n"), Violation{Line: 2, Rule: "no data rows: the file has only a header"}},
		{"missing required columns", orders, "order_id,updated_at\n1,2024-01-01T00:00:00Z\n",
			Violation{Line: 1, Column: "customer_id, amount", Rule: "required column missing from the header"}},
		{"missing and unknown", orders, "order_id,customer,amount,updated_at\n",
			Violation{Line: 1, Column: "customer_id", Rule: "required column missing from the header; the header has unknown column(s) customer"}},
		{"unknown column", orders, "order_id,customer_id,amount,updated_at,colour\n",
			Violation{Line: 1, Column: "colour", Rule: "not a column of contract orders (order_id, customer_id, amount, updated_at)"}},
		{"unknown column with control bytes", orders, "order_id,customer_id,amount,updated_at,\"a\x01\"\n",
			Violation{Line: 1, Column: `"a\x01"`, Rule: "not a column of contract orders (order_id, customer_id, amount, updated_at)"}},
		{"duplicate column", orders, "order_id,customer_id,amount,updated_at,amount\n",
			Violation{Line: 1, Column: "amount", Rule: "column appears more than once in the header"}},
		{"empty header field", orders, "order_id,customer_id,,amount,updated_at\n", Violation{Line: 1, Rule: "header field 3 is empty"}},
		{"malformed header", orders, "order_id,\"customer_id\n", Violation{Line: 1, Rule: `malformed CSV: extraneous or missing " in quoted-field (byte 23 of the line)`}},

		{"bad amount on line 5", orders, ordersHeader + good + good + good + row(amount, "12a") + good,
			Violation{Line: 5, Column: "amount", Value: "12a", Rule: "is not a number"}},
		{"NaN", orders, ordersHeader + row(amount, "NaN"), Violation{Line: 2, Column: "amount", Value: "NaN", Rule: "is not a number"}},
		{"Infinity", orders, ordersHeader + row(amount, "-Infinity"), Violation{Line: 2, Column: "amount", Value: "-Infinity", Rule: "is not a number"}},
		{"exponent", orders, ordersHeader + row(amount, "1e309"), Violation{Line: 2, Column: "amount", Value: "1e309", Rule: "is not a number"}},
		{"decimal comma", orders, ordersHeader + row(amount, `"1,5"`), Violation{Line: 2, Column: "amount", Value: "1,5", Rule: "is not a number"}},
		{"two points", orders, ordersHeader + row(amount, "1.2.3"), Violation{Line: 2, Column: "amount", Value: "1.2.3", Rule: "is not a number"}},
		{"lone point", orders, ordersHeader + row(amount, "."), Violation{Line: 2, Column: "amount", Value: ".", Rule: "is not a number"}},
		{"lone sign", orders, ordersHeader + row(amount, "-"), Violation{Line: 2, Column: "amount", Value: "-", Rule: "is not a number"}},
		{"double sign", orders, ordersHeader + row(amount, "--1"), Violation{Line: 2, Column: "amount", Value: "--1", Rule: "is not a number"}},
		{"hex", orders, ordersHeader + row(amount, "0x10"), Violation{Line: 2, Column: "amount", Value: "0x10", Rule: "is not a number"}},
		{"too many fraction digits", orders, ordersHeader + row(amount, "0."+strings.Repeat("1", maxNumericFracDigits+1)),
			Violation{Line: 2, Column: "amount", Value: "0." + strings.Repeat("1", 38) + "…", Rule: "has more digits than numeric holds"}},
		{"empty required", orders, ordersHeader + row(amount, ""), Violation{Line: 2, Column: "amount", Value: "", Rule: missingRule}},
		{"N/A required", orders, ordersHeader + row(custID, "N/A"), Violation{Line: 2, Column: "customer_id", Value: "N/A", Rule: missingRule}},
		{"NULL required", orders, ordersHeader + row(orderID, "NULL"), Violation{Line: 2, Column: "order_id", Value: "NULL", Rule: missingRule}},
		{"blank required", orders, ordersHeader + row(ts, "   "), Violation{Line: 2, Column: "updated_at", Value: "   ", Rule: missingRule}},
		{"bigint with fraction", orders, ordersHeader + row(orderID, "1.0"), Violation{Line: 2, Column: "order_id", Value: "1.0", Rule: "is not an integer"}},
		{"bigint overflow", orders, ordersHeader + row(orderID, "9223372036854775808"),
			Violation{Line: 2, Column: "order_id", Value: "9223372036854775808", Rule: "is out of range for bigint"}},
		{"integer overflow", orders, ordersHeader + row(custID, "2147483648"),
			Violation{Line: 2, Column: "customer_id", Value: "2147483648", Rule: "is out of range for integer"}},
		{"date as timestamp", orders, ordersHeader + row(ts, "2024-01-01"), Violation{Line: 2, Column: "updated_at", Value: "2024-01-01", Rule: tsRule}},
		{"month 13", orders, ordersHeader + row(ts, "2024-13-01 00:00:00"), Violation{Line: 2, Column: "updated_at", Value: "2024-13-01 00:00:00", Rule: tsRule}},
		{"zone without colon", orders, ordersHeader + row(ts, "2024-01-01T10:00:00+0100"),
			Violation{Line: 2, Column: "updated_at", Value: "2024-01-01T10:00:00+0100", Rule: tsRule}},
		{"words", orders, ordersHeader + row(ts, "yesterday at noon"), Violation{Line: 2, Column: "updated_at", Value: "yesterday at noon", Rule: tsRule}},
		{"field count", orders, ordersHeader + good + "1,2,3\n", Violation{Line: 3, Rule: "record has 3 fields, the header has 4"}},
		{"bare quote", orders, ordersHeader + good + "1,2,3\"4,2024-01-01T00:00:00Z\n",
			Violation{Line: 3, Rule: `malformed CSV: bare " in non-quoted-field (byte 6 of the line)`}},
		{"unterminated quote", orders, ordersHeader + good + "1,2,\"3,2024-01-01T00:00:00Z\n",
			Violation{Line: 3, Rule: `malformed CSV: extraneous or missing " in quoted-field (byte 29 of the line)`}},
		{"long value is clipped", orders, ordersHeader + row(amount, strings.Repeat("9", 50)+"x"),
			Violation{Line: 2, Column: "amount", Value: strings.Repeat("9", 40) + "…", Rule: "is not a number"}},

		{"NUL in text", events, "id,at,note\n1,2024-01-01T00:00:00Z,\"a\x00b\"\n", Violation{Line: 2, Column: "note", Value: "a\x00b", Rule: "contains a NUL byte"}},
		{"invalid UTF-8", events, "id,at,note\n1,2024-01-01T00:00:00Z,caf\xe9\n", Violation{Line: 2, Column: "note", Value: "caf\xe9", Rule: "is not valid UTF-8"}},
		{"February 30", events, "id,at,day\n1,2024-01-01T00:00:00Z,2024-02-30\n", Violation{Line: 2, Column: "day", Value: "2024-02-30", Rule: "is not a date (YYYY-MM-DD)"}},
		{"optional integer", events, "id,at,n\n1,2024-01-01T00:00:00Z,x\n", Violation{Line: 2, Column: "n", Value: "x", Rule: "is not an integer"}},
		{"line after a quoted multi-line field", events,
			"id,at,note\n1,2024-01-01T00:00:00Z,\"a\nb\nc\"\n\n2,2024-01-01T00:00:00Z,ok\n3,soon,x\n",
			Violation{Line: 7, Column: "at", Value: "soon", Rule: tsRule}},
		{"bad field on a continuation line", events,
			"id,note,at\n1,\"a\nb\",later\n",
			Violation{Line: 3, Column: "at", Value: "later", Rule: tsRule}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readAll(tc.c, tc.input)
			if !errors.Is(err, ErrContract) {
				t.Fatalf("err = %v, want a contract violation", err)
			}
			var v *Violation
			if !errors.As(err, &v) {
				t.Fatalf("err = %T %v, want a *Violation", err, err)
			}
			if *v != tc.want {
				t.Fatalf("violation\n got %#v\nwant %#v", *v, tc.want)
			}
		})
	}
}

const tsRule = "is not a timestamp (RFC 3339 with a zone, or YYYY-MM-DD HH:MM:SS in UTC)"

func TestViolationMessage(t *testing.T) {
	for _, tc := range []struct {
		v    Violation
		want string
	}{
		{Violation{Line: 7, Column: "amount", Value: "12a", Rule: "is not a number"}, `contract violation at line 7, column amount: value "12a" is not a number`},
		{Violation{Line: 3, Column: "amount", Value: "", Rule: missingRule}, `contract violation at line 3, column amount: value "" is missing but the column is required`},
		{Violation{Line: 1, Column: "customer_id", Rule: "required column missing from the header"}, `contract violation at line 1, column customer_id: required column missing from the header`},
		{Violation{Line: 2, Rule: "no data rows: the file has only a header"}, `contract violation at line 2: no data rows: the file has only a header`},
		{Violation{Rule: "something"}, `contract violation: something`},
	} {
		if got := tc.v.Error(); got != tc.want {
			t.Errorf("Error() = %s\nwant %s", got, tc.want)
		}
	}
}

func TestRecordTooLong(t *testing.T) {
	orders := mustLoad(t, "orders")
	input := ordersHeader + row(0, "1") + "1,2,\"" + strings.Repeat("9", 2*MaxRecordBytes) + "\",2024-01-01T00:00:00Z\n"
	_, err := readAll(orders, input)
	var v *Violation
	if !errors.As(err, &v) || v.Line != 3 || v.Rule != fmt.Sprintf("record is longer than %d bytes", MaxRecordBytes) {
		t.Fatalf("err = %v, want a record-too-long violation at line 3", err)
	}
	// A record just under the bound is fine (and then fails as data, not as size).
	input = ordersHeader + "1,2,\"" + strings.Repeat("9", MaxRecordBytes-8192) + "x\",2024-01-01T00:00:00Z\n"
	_, err = readAll(orders, input)
	if !errors.As(err, &v) || v.Rule != "is not a number" {
		t.Fatalf("err = %v, want the value rejected as not a number", err)
	}
}

func TestReadErrorsAreNotViolations(t *testing.T) {
	orders := mustLoad(t, "orders")
	boom := errors.New("connection reset")
	for name, r := range map[string]io.Reader{
		"in the header": iotest.ErrReader(boom),
		"in the body":   io.MultiReader(strings.NewReader(ordersHeader+row(0, "1")), iotest.ErrReader(boom)),
	} {
		t.Run(name, func(t *testing.T) {
			rd, err := NewReader(r, orders)
			if err == nil {
				for rd.Next() {
				}
				err = rd.Err()
			}
			if !errors.Is(err, boom) || errors.Is(err, ErrContract) {
				t.Fatalf("err = %v, want the read error and no contract violation", err)
			}
		})
	}
}

// ordersStream generates an orders CSV of n rows without holding it.
type ordersStream struct {
	n, i int
	buf  []byte
}

func (s *ordersStream) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		switch {
		case s.i == 0:
			s.buf = append(s.buf, ordersHeader...)
		case s.i > s.n:
			return 0, io.EOF
		default:
			s.buf = strconv.AppendInt(s.buf, int64(s.i), 10)
			s.buf = append(s.buf, ",42,\"123.45\",2024-01-01 10:00:00\n"...)
		}
		s.i++
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

func TestReaderMemoryIsConstant(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 300k rows")
	}
	const rows = 300_000 // about 13 MB of CSV
	r, err := NewReader(&ordersStream{n: rows}, mustLoad(t, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	var ms runtime.MemStats
	var peak uint64
	for r.Next() {
		if r.Rows()%50_000 == 0 {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if r.Rows() != rows {
		t.Fatalf("read %d rows, want %d", r.Rows(), rows)
	}
	// The live heap holds the reader's buffers, not the file: far below the file's size.
	if peak > 4<<20 {
		t.Fatalf("live heap reached %d bytes while streaming", peak)
	}
}

func FuzzReader(f *testing.F) {
	for _, seed := range []string{
		"",
		"\ufeff",
		ordersHeader,
		ordersHeader + row(0, "1"),
		"\ufeffamount,updated_at,order_id,customer_id\r\n7,2024-01-01 00:00:00,3,12\r\n",
		ordersHeader + row(2, "12a"),
		ordersHeader + row(2, "1e309"),
		ordersHeader + row(2, "NaN"),
		ordersHeader + row(3, "2024-01-01T10:00:00.5+05:30"),
		ordersHeader + row(1, "N/A"),
		ordersHeader + "1,2,3\n",
		ordersHeader + "1,2,\"3\n",
		ordersHeader + "1,2,3\"4,5\n",
		"id,at,note,x,day,n\n1,2024-01-01T00:00:00Z,\"a\nb\",-.5,2024-02-29,7\n",
		"id,at,note\n1,2024-01-01T00:00:00Z,caf\xe9\n",
		"id,at,note\n1,2024-01-01T00:00:00Z,\"a\x00b\"\n",
		"order_id,order_id\n",
		",\n",
	} {
		f.Add([]byte(seed))
	}
	contracts := []*Contract{mustLoad(f, "orders"), mustLoad(f, "contracts/events.json")}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, c := range contracts {
			r, err := NewReader(bytes.NewReader(data), c)
			if err == nil {
				for r.Next() {
					checkValues(t, c, r.Values())
				}
				err = r.Err()
			}
			if err == nil {
				continue
			}
			var v *Violation
			if !errors.As(err, &v) || !errors.Is(err, ErrContract) {
				t.Fatalf("contract %s: err = %T %v, want a *Violation", c.Name, err, err)
			}
			if v.Line < 1 || v.Rule == "" || len(v.Value) > maxValueLen+len("…") {
				t.Fatalf("contract %s: malformed violation %#v", c.Name, v)
			}
		}
	})
}

// checkValues asserts each value has its column's Go type, and required ones are present.
func checkValues(t *testing.T, c *Contract, vals []any) {
	t.Helper()
	if len(vals) != len(c.Columns) {
		t.Fatalf("%d values for %d columns", len(vals), len(c.Columns))
	}
	for i, col := range c.Columns {
		v := vals[i]
		if v == nil {
			if col.Required {
				t.Fatalf("column %s is required but nil", col.Name)
			}
			continue
		}
		var ok bool
		switch col.Type {
		case Bigint:
			_, ok = v.(int64)
		case Integer:
			_, ok = v.(int32)
		case Numeric:
			var n pgtype.Numeric
			n, ok = v.(pgtype.Numeric)
			ok = ok && n.Valid && !n.NaN && n.InfinityModifier == pgtype.Finite
		case Text:
			var s string
			s, ok = v.(string)
			ok = ok && !strings.ContainsRune(s, 0) && strings.ToValidUTF8(s, "") == s
		case Date, Timestamptz:
			_, ok = v.(time.Time)
		}
		if !ok {
			t.Fatalf("column %s (%s): value %#v", col.Name, col.Type, v)
		}
	}
}
