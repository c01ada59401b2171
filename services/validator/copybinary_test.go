package validator

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-etl/sluice/pkg/contract"
)

// pgxField is how pgx.CopyFrom encodes v for a column of OID oid: length, then the value.
func pgxField(t *testing.T, oid uint32, v any) []byte {
	t.Helper()
	b, err := pgtype.NewMap().Encode(oid, pgtype.BinaryFormatCode, v, nil)
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

// numericText decodes a numeric field (length, then the send format) to its text form.
func numericText(t *testing.T, field []byte) string {
	t.Helper()
	var n pgtype.Numeric
	if err := pgtype.NewMap().Scan(pgtype.NumericOID, pgtype.BinaryFormatCode, field[4:], &n); err != nil {
		t.Fatalf("decode % x: %v", field, err)
	}
	b, err := pgtype.NewMap().Encode(pgtype.NumericOID, pgtype.TextFormatCode, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAppendNumericMatchesPgx(t *testing.T) {
	for _, s := range []string{"0", "-0", "0.00", "-0.00", "1", "-1", "10", "100", "1000", "10000", "12345",
		"1541.93", "760.37", "9999.99", "1.00", "0.5", "0.05", "0.0001", "0.00001", "-0.000123", "123456789012345678",
		"-123456789012345678", "99999999999999999.9", "1e0x", "12345678901234567890123.45", "+7.10", "5."} {
		var n pgtype.Numeric
		if err := n.Scan(s); err != nil {
			continue // not a number: the contract rejects it before encoding
		}
		got, err := appendNumeric(nil, n)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		want := pgxField(t, pgtype.NumericOID, n)
		if n.Int.Sign() == 0 {
			// PostgreSQL's own form of a zero: no digits, only the display scale (pgx sends one
			// zero digit, and its decoder drops the scale of the digitless form).
			zero := []byte{0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, byte(max(0, -n.Exp))}
			if !bytes.Equal(got, zero) {
				t.Errorf("%s: binary copy encodes % x, want % x", s, got, zero)
			}
			continue
		}
		if g, w := numericText(t, got), numericText(t, want); g != w {
			t.Errorf("%s: binary copy encodes %s (% x), pgx %s (% x)", s, g, got, w, want)
		}
	}
}

func TestAppendNumericSmallExponents(t *testing.T) {
	for v := int64(-20001); v <= 20001; v += 37 {
		for exp := int32(-9); exp <= 9; exp++ {
			n := pgtype.Numeric{Int: big.NewInt(v), Exp: exp, Valid: true}
			got, err := appendNumeric(nil, n)
			if err != nil {
				t.Fatal(err)
			}
			if v == 0 {
				continue // zeros: TestAppendNumericMatchesPgx
			}
			if g, w := numericText(t, got), numericText(t, pgxField(t, pgtype.NumericOID, n)); g != w {
				t.Fatalf("%dE%d: binary copy encodes %s, pgx %s", v, exp, g, w)
			}
		}
	}
}

func TestAppendValueMatchesPgx(t *testing.T) {
	ts := []time.Time{time.Date(2024, 2, 1, 20, 38, 1, 0, time.UTC), time.Date(1999, 12, 31, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(1970, 1, 1, 0, 0, 0, 1000, time.FixedZone("x", -3600)), time.Date(2262, 4, 11, 0, 0, 0, 0, time.UTC)}
	for _, tc := range []struct {
		typ contract.Type
		oid uint32
		v   any
	}{
		{contract.Bigint, pgtype.Int8OID, int64(8797000001)},
		{contract.Bigint, pgtype.Int8OID, int64(-1)},
		{contract.Integer, pgtype.Int4OID, int32(33439)},
		{contract.Integer, pgtype.Int4OID, int32(-2147483648)},
		{contract.Text, pgtype.TextOID, "héllo, \"world\""},
		{contract.Text, pgtype.TextOID, ""},
		{contract.Timestamptz, pgtype.TimestamptzOID, ts[0]},
		{contract.Timestamptz, pgtype.TimestamptzOID, ts[1]},
		{contract.Timestamptz, pgtype.TimestamptzOID, ts[2]},
		{contract.Timestamptz, pgtype.TimestamptzOID, ts[3]},
		{contract.Date, pgtype.DateOID, time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)},
		{contract.Date, pgtype.DateOID, time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)},
		{contract.Boolean, pgtype.BoolOID, true},
		{contract.Boolean, pgtype.BoolOID, false},
	} {
		got, err := appendValue(nil, tc.typ, tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if want := pgxField(t, tc.oid, tc.v); !bytes.Equal(got, want) {
			t.Errorf("%s %v: binary copy % x, pgx % x", tc.typ, tc.v, got, want)
		}
	}
	// jsonb: pgx encodes a string as the JSON text, behind the format's version byte.
	for _, doc := range []string{`{"a": [1, 2, "é"]}`, `null`, `"x"`} {
		got, err := appendValue(nil, contract.JSONB, contract.JSON(doc))
		if err != nil {
			t.Fatal(err)
		}
		if want := pgxField(t, pgtype.JSONBOID, []byte(doc)); !bytes.Equal(got, want) {
			t.Errorf("jsonb %s: binary copy % x, pgx % x", doc, got, want)
		}
	}
	if got, _ := appendValue(nil, contract.Text, nil); !bytes.Equal(got, []byte{0xff, 0xff, 0xff, 0xff}) {
		t.Errorf("NULL: % x", got)
	}
}

// TestBinaryCopyMatchesServerParsing loads values through the binary COPY and compares each with
// what PostgreSQL makes of the same text.
func TestBinaryCopyMatchesServerParsing(t *testing.T) {
	e := setup(t)
	amounts := []string{"0", "0.00", "-0.00", "1", "100", "1000.0", "10000", "0.0001", "0.00001", "+7.10",
		"1541.93", "99999999999999999.9", "123456789012345678901234567890.123456789", ".5", "5."}
	var body strings.Builder
	body.WriteString("order_id,customer_id,amount,updated_at\n")
	for i, a := range amounts {
		fmt.Fprintf(&body, "%d,1,%s,2024-12-31T23:59:59.999999Z\n", i+1, a)
	}
	e.mustLoad(t, landed("2024-01-01", 1, e.put(t, "raw/orders/2024-01-01.csv", body.String())))
	rows, err := e.pool.Query(t.Context(), `SELECT amount::text, updated_at::text FROM public.staging_orders ORDER BY order_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for i := 0; rows.Next(); i++ {
		var got, at, want string
		if err := rows.Scan(&got, &at); err != nil {
			t.Fatal(err)
		}
		if err := e.pool.QueryRow(t.Context(), "SELECT $1::text::numeric::text", amounts[i]).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("amount %s loaded as %s, PostgreSQL parses it as %s", amounts[i], got, want)
		}
		if !strings.HasPrefix(at, "2024-12-31 23:59:59.999999") {
			t.Errorf("updated_at loaded as %s", at)
		}
	}
}
