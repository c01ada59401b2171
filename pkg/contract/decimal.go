package contract

import (
	"math/big"
	"math/bits"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"
)

// Most numerics in a file are small (an amount has a handful of digits), and doing their
// parsing and range checks in math/big was a third of the validator's CPU: these fast paths
// take any plain decimal of at most 18 significant digits, which fits an int64, and leave
// longer ones to math/big.

// smallDigits is the most significant digits the fast paths take.
const smallDigits = 18

// smallDec is the value v × 10^exp.
type smallDec struct {
	v   int64
	exp int32
}

// parseSmall reads a plain decimal (see plainDecimal) of at most smallDigits significant
// digits, with the value and exponent pgtype.Numeric.Scan gives it.
func parseSmall(s string) smallDec {
	neg := false
	switch s[0] {
	case '-':
		neg = true
		s = s[1:]
	case '+':
		s = s[1:]
	}
	var d smallDec
	if whole, frac, ok := strings.Cut(s, "."); ok {
		d.exp = -int32(len(frac))
		d.v = appendDigits(appendDigits(0, whole), frac)
	} else {
		// Scan moves an integer's trailing zeros into the exponent; so does this.
		for len(s) > 1 && s[len(s)-1] == '0' {
			s = s[:len(s)-1]
			d.exp++
		}
		d.v = appendDigits(0, s)
	}
	if neg {
		d.v = -d.v
	}
	return d
}

// appendDigits returns v followed by the decimal digits of s.
func appendDigits(v int64, s string) int64 {
	for i := 0; i < len(s); i++ {
		v = v*10 + int64(s[i]-'0')
	}
	return v
}

func (d smallDec) numeric() pgtype.Numeric {
	return pgtype.Numeric{Int: big.NewInt(d.v), Exp: d.exp, Valid: true}
}

var pow10 = [...]uint64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19}

// cmp compares a and b; ok is false when bringing them to one exponent would overflow.
func (a smallDec) cmp(b smallDec) (c int, ok bool) {
	e := min(a.exp, b.exp)
	av, aok := scale(a.v, a.exp-e)
	bv, bok := scale(b.v, b.exp-e)
	if !aok || !bok {
		return 0, false
	}
	switch {
	case av < bv:
		return -1, true
	case av > bv:
		return 1, true
	}
	return 0, true
}

// scale returns v × 10^k, or false if that leaves the int64 range.
func scale(v int64, k int32) (int64, bool) {
	if k == 0 || v == 0 {
		return v, true
	}
	if int(k) >= len(pow10) {
		return 0, false
	}
	abs := uint64(v)
	if v < 0 {
		abs = uint64(-v)
	}
	hi, lo := bits.Mul64(abs, pow10[k])
	if hi != 0 || lo > 1<<63-1 {
		return 0, false
	}
	if v < 0 {
		return -int64(lo), true
	}
	return int64(lo), true
}
