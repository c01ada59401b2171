package contract

import (
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

func TestParseSmallMatchesScan(t *testing.T) {
	for _, s := range []string{"0", "-0", "00", "+0.0", "1", "-1", "10", "-100", "+100", "1541.93", "0.05", ".5", "5.",
		"-.25", "000123.4500", "123456789012345678", "-12345678.9012345678", "999999999999999999"} {
		if _, _, ok := plainDecimal(s); !ok {
			t.Fatalf("%q is not a plain decimal", s)
		}
		var want pgtype.Numeric
		if err := want.Scan(strings.TrimPrefix(s, "+")); err != nil {
			t.Fatal(err)
		}
		got := parseSmall(s).numeric()
		if got.Int.Cmp(want.Int) != 0 || got.Exp != want.Exp || !got.Valid {
			t.Errorf("parseSmall(%q) = %vE%d, Scan gives %vE%d", s, got.Int, got.Exp, want.Int, want.Exp)
		}
	}
}

func TestSmallCmpMatchesRat(t *testing.T) {
	vals := []string{"0", "-0.00", "0.01", "-0.01", "1", "1.0", "100", "99.999", "-100", "123456789012345678",
		"-999999999999999999", "0.000000000000000001", "5e0"}
	for _, a := range vals {
		for _, b := range vals {
			if _, _, ok := plainDecimal(a); !ok {
				continue
			}
			if _, _, ok := plainDecimal(b); !ok {
				continue
			}
			c, ok := parseSmall(a).cmp(parseSmall(b))
			ra, _ := new(big.Rat).SetString(a)
			rb, _ := new(big.Rat).SetString(b)
			if ok && c != ra.Cmp(rb) {
				t.Errorf("cmp(%s, %s) = %d, want %d", a, b, c, ra.Cmp(rb))
			}
		}
	}
}

func TestSmallNumericBounds(t *testing.T) {
	c, err := Parse([]byte(`{"name": "b", "key": "id", "columns": [{"name": "id", "type": "bigint", "required": true},
		{"name": "x", "type": "numeric", "min": -1.5, "max": 100}]}`))
	if err != nil {
		t.Fatal(err)
	}
	f, err := compileColumn(c.Columns[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ v, rule string }{
		{"-1.5", ""}, {"-1.50001", "is less than the minimum -1.5"}, {"100", ""}, {"100.000", ""},
		{"100.01", "is greater than the maximum 100"}, {"0", ""},
		{"100000000000000000000000", "is greater than the maximum 100"}, // past the fast path
		{"+7.10", ""}, {"+0.0000000000000000000001", ""}, // a leading + on either path
	} {
		v, rule := f.parse(tc.v)
		if rule != tc.rule {
			t.Errorf("%s: rule %q, want %q", tc.v, rule, tc.rule)
		}
		if rule == "" {
			var want pgtype.Numeric
			_ = want.Scan(strings.TrimPrefix(tc.v, "+"))
			if got := v.(pgtype.Numeric); got.Int.Cmp(want.Int) != 0 || got.Exp != want.Exp {
				t.Errorf("%s: %s", tc.v, fmt.Sprint(got))
			}
		}
	}
}

// FuzzSmallDecimal checks the integer fast path against math/big on any pair of inputs: the
// value parseSmall reads is the one pgtype.Numeric.Scan reads, and cmp orders two values as
// big.Rat does whenever it answers.
func FuzzSmallDecimal(f *testing.F) {
	for _, s := range [][2]string{{"0", "-0.00"}, {"1541.93", "0"}, {".5", "5."}, {"999999999999999999", "-0.000000000000000001"},
		{"000123.4500", "+123.45"}, {"12345678.9012345678", "1e5"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		small := func(s string) bool {
			i, fr, ok := plainDecimal(s)
			return ok && i+fr <= smallDigits
		}
		if !small(a) {
			return
		}
		var want pgtype.Numeric
		if err := want.Scan(strings.TrimPrefix(a, "+")); err != nil {
			t.Fatalf("Scan(%q): %v, but it is a plain decimal", a, err)
		}
		got := parseSmall(a).numeric()
		if got.Int.Cmp(want.Int) != 0 || got.Exp != want.Exp {
			t.Fatalf("parseSmall(%q) = %vE%d, Scan gives %vE%d", a, got.Int, got.Exp, want.Int, want.Exp)
		}
		if !small(b) {
			return
		}
		ra, rb := numericRat(want), numericRat(parseSmall(b).numeric())
		if c, ok := parseSmall(a).cmp(parseSmall(b)); ok && c != ra.Cmp(rb) {
			t.Fatalf("cmp(%s, %s) = %d, big.Rat says %d", a, b, c, ra.Cmp(rb))
		}
	})
}
