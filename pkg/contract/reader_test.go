package contract

import (
	"bytes"
	"compress/gzip"
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
	checks := mustLoad(t, "contracts/checks.json")
	for _, tc := range []struct {
		name  string
		c     *Contract
		input string
		want  [][]string
	}{
		{
			name:  "orders",
			c:     orders,
			input: "order_id,customer_id,amount,updated_at\n1,10,12.50,2024-01-01T10:00:00Z\n2,11,0.5,2024-01-01T10:00:00+02:00\n",
			want: [][]string{
				{"int64:1", "int32:10", "numeric:12.50", "time:2024-01-01T10:00:00Z"},
				{"int64:2", "int32:11", "numeric:0.5", "time:2024-01-01T08:00:00Z"},
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
			c:     events,
			input: "id,n,x,at\n9223372036854775807,-2147483648,-000123.4500,0001-01-01T00:00:00Z\n-9223372036854775808,2147483647,0,9999-12-31T23:59:59.999999999Z\n",
			want: [][]string{
				{"int64:9223372036854775807", "int32:-2147483648", "numeric:-123.4500", "nil", "nil", "time:0001-01-01T00:00:00Z"},
				{"int64:-9223372036854775808", "int32:2147483647", "numeric:0", "nil", "nil", "time:9999-12-31T23:59:59.999999999Z"},
			},
		},
		{
			name: "timestamps in mixed formats and zones",
			c:    events,
			input: "id,at\n" +
				"1,2024-03-10T10:00:00Z\n" +
				"2,2024-03-10 10:00:00+01:00\n" +
				"3,2024-03-10T10:00:00+0100\n" +
				"4,2024-03-10T10:00:00-01\n" +
				"5,2024-03-10 10:00:00.5\n" +
				"6,2024-03-10T10:00:00.123456789+05:30\n",
			want: [][]string{
				{"int64:1", "nil", "nil", "nil", "nil", "time:2024-03-10T10:00:00Z"},
				{"int64:2", "nil", "nil", "nil", "nil", "time:2024-03-10T09:00:00Z"},
				{"int64:3", "nil", "nil", "nil", "nil", "time:2024-03-10T09:00:00Z"},
				{"int64:4", "nil", "nil", "nil", "nil", "time:2024-03-10T11:00:00Z"},
				{"int64:5", "nil", "nil", "nil", "nil", "time:2024-03-10T10:00:00.5Z"},
				{"int64:6", "nil", "nil", "nil", "nil", "time:2024-03-10T04:30:00.123456789Z"},
			},
		},
		{
			// Europe/Paris: 2024-03-31 02:30 does not exist, 2024-10-27 02:30 happens twice.
			name: "checks within bounds, naive times in the column's zone, unknown columns ignored",
			c:    checks,
			input: "id,colour,code,label,price,day,local,strict\n" +
				"1,red,AB-123,héllo,0.01,2024-01-01,2024-01-15 12:00:00,2029-12-31T23:00:00Z\n" +
				"1000,blue,,,99.99,2024-12-31,2024-07-15 12:00:00,\n" +
				"2,,ZZ-000,,50,,2024-10-27 02:30:00,\n" +
				"3,,,,,,2024-10-27 02:30:00+01:00,\n",
			want: [][]string{
				{"int64:1", "string:AB-123", "string:héllo", "numeric:0.01", "time:2024-01-01T00:00:00Z", "time:2024-01-15T11:00:00Z", "time:2029-12-31T23:00:00Z"},
				{"int64:1000", "nil", "nil", "numeric:99.99", "time:2024-12-31T00:00:00Z", "time:2024-07-15T10:00:00Z", "nil"},
				{"int64:2", "string:ZZ-000", "nil", "numeric:50", "nil", "time:2024-10-27T00:30:00Z", "nil"},
				{"int64:3", "nil", "nil", "nil", "nil", "time:2024-10-27T01:30:00Z", "nil"},
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
	checks := mustLoad(t, "contracts/checks.json")
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
		{"UTF-16", orders, "\xff\xfeo\x00r\x00", Violation{Line: 1, Rule: "the file is UTF-16 encoded (it starts with a UTF-16 byte order mark); it must be UTF-8"}},
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
		{"malformed header", orders, "order_id,\"customer_id\n", Violation{Line: 1, Rule: `malformed CSV header: extraneous or missing " in quoted-field (byte 23 of the line)`}},
		{"CR line endings", orders, "order_id,customer_id,amount,updated_at\r1,10,1,2024-01-01T00:00:00Z\r",
			Violation{Line: 1, Rule: "the header contains a carriage return: lines must end in LF or CRLF, not CR alone"}},
		{"renamed column", orders, "order_id,customer_id,total,updated_at\n",
			Violation{Line: 1, Column: "amount", Rule: "required column missing from the header; the header has unknown column(s) total"}},

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
		{"zone of three digits", orders, ordersHeader + row(ts, "2024-01-01T10:00:00+010"),
			Violation{Line: 2, Column: "updated_at", Value: "2024-01-01T10:00:00+010", Rule: tsRule}},
		{"zone hour 24", orders, ordersHeader + row(ts, "2024-01-01T10:00:00+24:00"),
			Violation{Line: 2, Column: "updated_at", Value: "2024-01-01T10:00:00+24:00", Rule: tsRule}},
		{"no seconds", orders, ordersHeader + row(ts, "2024-01-01T10:00Z"), Violation{Line: 2, Column: "updated_at", Value: "2024-01-01T10:00Z", Rule: tsRule}},
		{"leap second", orders, ordersHeader + row(ts, "2024-06-30T23:59:60Z"), Violation{Line: 2, Column: "updated_at", Value: "2024-06-30T23:59:60Z", Rule: tsRule}},
		{"ten fraction digits", orders, ordersHeader + row(ts, "2024-01-01T10:00:00.1234567890Z"),
			Violation{Line: 2, Column: "updated_at", Value: "2024-01-01T10:00:00.1234567890Z", Rule: tsRule}},
		{"US date", orders, ordersHeader + row(ts, "01/02/2024 10:00:00"), Violation{Line: 2, Column: "updated_at", Value: "01/02/2024 10:00:00", Rule: tsRule}},
		{"order_id below min", orders, ordersHeader + row(orderID, "0"), Violation{Line: 2, Column: "order_id", Value: "0", Rule: "is less than the minimum 1"}},
		{"negative amount", orders, ordersHeader + row(amount, "-0.01"), Violation{Line: 2, Column: "amount", Value: "-0.01", Rule: "is less than the minimum 0"}},
		{"updated_at before 2000", orders, ordersHeader + row(ts, "1999-12-31T23:59:59Z"),
			Violation{Line: 2, Column: "updated_at", Value: "1999-12-31T23:59:59Z", Rule: "is less than the minimum 2000-01-01T00:00:00Z"}},
		{"formula in a number", orders, ordersHeader + row(amount, "=1+2"), Violation{Line: 2, Column: "amount", Value: "=1+2", Rule: "is not a number"}},
		{"at sign in an integer", orders, ordersHeader + row(custID, "@SUM(1)"), Violation{Line: 2, Column: "customer_id", Value: "@SUM(1)", Rule: "is not an integer"}},
		{"NUL in a number", orders, ordersHeader + row(amount, "1\x002"), Violation{Line: 2, Column: "amount", Value: "1\x002", Rule: "contains a NUL byte"}},
		{"Latin-1 in a number", orders, ordersHeader + row(amount, "1\xa0"), Violation{Line: 2, Column: "amount", Value: "1\xa0", Rule: utf8Rule}},

		{"id above max", checks, "id\n1001\n", Violation{Line: 2, Column: "id", Value: "1001", Rule: "is greater than the maximum 1000"}},
		{"pattern", checks, "id,code\n1,ab-123\n", Violation{Line: 2, Column: "code", Value: "ab-123", Rule: "does not match the pattern [A-Z]{2}-[0-9]{3}"}},
		{"pattern is anchored", checks, "id,code\n1,XAB-123\n", Violation{Line: 2, Column: "code", Value: "XAB-123", Rule: "does not match the pattern [A-Z]{2}-[0-9]{3}"}},
		{"max_length counts characters", checks, "id,label\n1,héllos\n", Violation{Line: 2, Column: "label", Value: "héllos", Rule: "is longer than 5 characters"}},
		{"price below min", checks, "id,price\n1,0.009\n", Violation{Line: 2, Column: "price", Value: "0.009", Rule: "is less than the minimum 0.01"}},
		{"price above max", checks, "id,price\n1,99.991\n", Violation{Line: 2, Column: "price", Value: "99.991", Rule: "is greater than the maximum 99.99"}},
		{"day above max", checks, "id,day\n1,2025-01-01\n", Violation{Line: 2, Column: "day", Value: "2025-01-01", Rule: "is greater than the maximum 2024-12-31"}},
		{"daylight-saving gap", checks, "id,local\n1,2024-03-31 02:30:00\n",
			Violation{Line: 2, Column: "local", Value: "2024-03-31 02:30:00", Rule: "does not exist in time zone Europe/Paris (a daylight-saving change skips it)"}},
		{"zone required", checks, "id,strict\n1,2024-01-01 00:00:00\n", Violation{Line: 2, Column: "strict", Value: "2024-01-01 00:00:00", Rule: "has no time zone, and the column requires one"}},
		{"strict above max", checks, "id,strict\n1,2030-01-01T00:00:01Z\n",
			Violation{Line: 2, Column: "strict", Value: "2030-01-01T00:00:01Z", Rule: "is greater than the maximum 2030-01-01 00:00:00Z"}},
		{"words", orders, ordersHeader + row(ts, "yesterday at noon"), Violation{Line: 2, Column: "updated_at", Value: "yesterday at noon", Rule: tsRule}},
		{"field count", orders, ordersHeader + good + "1,2,3\n", Violation{Line: 3, Rule: "record has 3 fields, the header has 4"}},
		{"bare quote", orders, ordersHeader + good + "1,2,3\"4,2024-01-01T00:00:00Z\n",
			Violation{Line: 3, Rule: `malformed CSV: bare " in non-quoted-field (byte 6 of the line)`}},
		{"unterminated quote", orders, ordersHeader + good + "1,2,\"3,2024-01-01T00:00:00Z\n",
			Violation{Line: 3, Rule: `malformed CSV: extraneous or missing " in quoted-field (byte 29 of the line)`}},
		{"long value is clipped", orders, ordersHeader + row(amount, strings.Repeat("9", 50)+"x"),
			Violation{Line: 2, Column: "amount", Value: strings.Repeat("9", 40) + "…", Rule: "is not a number"}},

		{"NUL in text", events, "id,at,note\n1,2024-01-01T00:00:00Z,\"a\x00b\"\n", Violation{Line: 2, Column: "note", Value: "a\x00b", Rule: "contains a NUL byte"}},
		{"invalid UTF-8", events, "id,at,note\n1,2024-01-01T00:00:00Z,caf\xe9\n", Violation{Line: 2, Column: "note", Value: "caf\xe9", Rule: utf8Rule}},
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

const (
	tsRule   = timestampRule
	utf8Rule = "is not valid UTF-8 (the file must be UTF-8 encoded)"
)

func TestOnBadRowGoesOn(t *testing.T) {
	input := ordersHeader +
		"1,10,1.00,2024-01-01T00:00:00Z\n" + // line 2: good
		"2,x,-1,2024-01-01T00:00:00Z\n" + // line 3: two violations
		"3,1\"2,1,2024-01-01T00:00:00Z\n" + // line 4: a bare quote
		"4,13,1\n" + // line 5: a truncated row
		"5,14,2.50,2024-01-01T00:00:00Z\n" + // line 6: good
		"6,15,\"multi\nline\",2024-01-01T00:00:00Z\n" + // lines 7-8: not a number
		"7,16,3,2024-01-01 00:00:00\n" // line 9: good
	r, err := NewReader(strings.NewReader(input), mustLoad(t, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	r.OnBadRow(func(b BadRow) error {
		var vs []string
		for _, v := range b.Violations {
			vs = append(vs, v.Error())
		}
		bad = append(bad, fmt.Sprintf("line %d %q: %s", b.Line, b.Record, strings.Join(vs, " | ")))
		return nil
	})
	var ids []int64
	for r.Next() {
		ids = append(ids, r.Values()[0].(int64))
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ids) != "[1 5 7]" || r.Rows() != 3 || r.BadRows() != 4 {
		t.Fatalf("good ids %v, Rows %d, BadRows %d; bad rows:\n%s", ids, r.Rows(), r.BadRows(), strings.Join(bad, "\n"))
	}
	want := []string{
		`line 3 ["2" "x" "-1" "2024-01-01T00:00:00Z"]: contract violation at line 3, column customer_id: value "x" is not an integer | ` +
			`contract violation at line 3, column amount: value "-1" is less than the minimum 0`,
		`line 4 []: contract violation at line 4: malformed CSV: bare " in non-quoted-field (byte 4 of the line)`,
		`line 5 ["4" "13" "1"]: contract violation at line 5: record has 3 fields, the header has 4`,
		`line 7 ["6" "15" "multi\nline" "2024-01-01T00:00:00Z"]: contract violation at line 7, column amount: value "multi\nline" is not a number`,
	}
	if strings.Join(bad, "\n") != strings.Join(want, "\n") {
		t.Fatalf("bad rows\n%s\nwant\n%s", strings.Join(bad, "\n"), strings.Join(want, "\n"))
	}

	// The function's error stops the reader.
	r, err = NewReader(strings.NewReader(input), mustLoad(t, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("too many")
	r.OnBadRow(func(BadRow) error { return stop })
	for r.Next() {
	}
	if !errors.Is(r.Err(), stop) || r.Rows() != 1 {
		t.Fatalf("err = %v after %d rows, want the function's error after 1 row", r.Err(), r.Rows())
	}
}

func TestAllBadRowsIsNotHeaderOnly(t *testing.T) {
	r, err := NewReader(strings.NewReader(ordersHeader+row(2, "x")), mustLoad(t, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	r.OnBadRow(func(BadRow) error { return nil })
	for r.Next() {
		t.Fatal("a bad row came out as good")
	}
	if r.Err() != nil || r.BadRows() != 1 {
		t.Fatalf("err = %v, bad rows %d; want no error and 1 bad row", r.Err(), r.BadRows())
	}
}

func gz(t testing.TB, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestReaderGzip(t *testing.T) {
	orders := mustLoad(t, "orders")
	body := "\ufeff" + ordersHeader + row(0, "1") + row(0, "2")
	z := gz(t, body)
	corrupt := bytes.Clone(z)
	corrupt[len(corrupt)-6] ^= 0xff // inside the CRC-32 trailer
	for _, tc := range []struct {
		name  string
		input []byte
		rows  int
		rule  string
	}{
		{"compressed", z, 2, ""},
		{"two members", append(gz(t, ordersHeader+row(0, "1")), gz(t, row(0, "2"))...), 2, ""},
		{"truncated", z[:len(z)-10], 0, "gzip data is truncated (the compressed stream ends early)"},
		{"cut in the header", z[:5], 0, "gzip data is truncated (the compressed stream ends early)"},
		{"checksum", corrupt, 0, "gzip data is corrupt (checksum mismatch)"},
		{"trailing garbage", append(bytes.Clone(z), "garbage after the stream"...), 0, "gzip data is corrupt (bad header, or bytes after the end of the stream)"},
		{"empty content", gz(t, ""), 0, "no header: the file is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := readAll(orders, string(tc.input))
			if tc.rule == "" {
				if err != nil || len(rows) != tc.rows {
					t.Fatalf("rows %d, err %v; want %d rows", len(rows), err, tc.rows)
				}
				return
			}
			var v *Violation
			if !errors.As(err, &v) || v.Rule != tc.rule {
				t.Fatalf("err = %v, want a violation %q", err, tc.rule)
			}
		})
	}
}

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
		"order_id,customer_id,amount,updated_at\r1,10,1,2024-01-01T00:00:00Z\r",
		ordersHeader + "1,10,1.00,2024-01-01T00:00:00Z\r\n2,11,2,2024-01-01 00:00:00+0100\n3,1\"2,1,2024-01-01T00:00:00Z\n",
		ordersHeader + row(2, "=1+2") + row(1, "@x") + row(1, "+5") + row(2, "-1"),
		ordersHeader + row(3, "2024-03-31 02:30:00+02") + row(3, "2024-01-01T10:00:00.123456789-05"),
		"id,colour,code,label,price,day,local,strict\n1,red,AB-123,h\xe9llo,0.01,2024-01-01,2024-03-31 02:30:00,2029-12-31T23:00:00Z\n",
		"id,local\n1,2024-10-27 02:30:00\n2,2024-03-31 02:30:00\n",
	} {
		f.Add([]byte(seed))
	}
	f.Add(gz(f, ordersHeader+row(0, "1")))
	f.Add(gz(f, ordersHeader+row(0, "1"))[:30])
	contracts := []*Contract{mustLoad(f, "orders"), mustLoad(f, "contracts/events.json"), mustLoad(f, "contracts/checks.json")}
	f.Fuzz(func(t *testing.T, data []byte) {
		for i, c := range contracts {
			r, err := NewReader(bytes.NewReader(data), c)
			if err == nil {
				goOn := i%2 == 0 // stop at the first bad row for some contracts, go on for others
				if goOn {
					r.OnBadRow(func(b BadRow) error {
						if len(b.Violations) == 0 || b.Line < 1 {
							t.Fatalf("contract %s: malformed bad row %+v", c.Name, b)
						}
						for _, v := range b.Violations {
							if v.Line < b.Line || v.Rule == "" || len(v.Value) > maxValueLen+len("…") {
								t.Fatalf("contract %s: malformed violation %#v in row at line %d", c.Name, v, b.Line)
							}
						}
						return nil
					})
				}
				for r.Next() {
					checkValues(t, c, r.Values())
				}
				err = r.Err()
				if goOn && err == nil && r.Rows()+r.BadRows() == 0 {
					t.Fatalf("contract %s: a clean end with no rows", c.Name)
				}
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
