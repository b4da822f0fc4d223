package embedded

import (
	"bytes"
	"math/big"
	"strings"
)

// INCRBYFLOAT computes in C's long double, which on x86-64 is the x87
// 80-bit extended format: a 64-bit mantissa, exponents down to 2^-16382 for
// normal numbers and 2^-16445 for the smallest subnormal, and a largest
// finite value just under 2^16384. Redis parses with strtold, adds, and
// prints with "%.17Lf". This file emulates those three steps exactly with
// math/big: every value is a big.Float of precision 64 rounded to nearest
// even, kept within the x87 exponent range.

const (
	ldPrec = 64
	// Exponents in big.Float's MantExp convention (mantissa in [0.5, 1)).
	ldMaxExp = 16384  // largest finite value is (1-2^-64) * 2^16384
	ldMinExp = -16381 // smallest normal value is 0.5 * 2^-16381 = 2^-16382
	// ldTiny is the exponent of the smallest subnormal value, 2^-16445.
	ldTiny = -16445
	// ldMaxChars is Redis's MAX_LONG_DOUBLE_CHARS: string2ld rejects
	// strings this long or longer.
	ldMaxChars = 5 * 1024
)

// newLD returns a zero of the emulated long double type.
func newLD() *big.Float { return new(big.Float).SetPrec(ldPrec).SetMode(big.ToNearestEven) }

// ldFromRat rounds the exact non-negative value r to the nearest long
// double, honouring subnormals. It reports overflow (the value rounds past
// the largest finite long double). A nonzero r that rounds to zero comes
// back as zero; the caller decides what that means.
func ldFromRat(r *big.Rat, neg bool) (f *big.Float, overflow bool) {
	f = newLD()
	if r.Sign() == 0 {
		if neg {
			f.Neg(f)
		}
		return f, false
	}
	// The exponent of the exact value: truncation never changes it.
	e := new(big.Float).SetPrec(ldPrec).SetMode(big.ToZero).SetRat(r).MantExp(nil)
	if e > ldMaxExp {
		return nil, true
	}
	prec := ldPrec
	if e < ldMinExp {
		// Subnormal: only the bits down to 2^ldTiny remain.
		prec = e - ldTiny
	}
	switch {
	case prec > 0:
		f.SetPrec(uint(prec)).SetRat(r).SetPrec(ldPrec)
	case prec == 0:
		// r is in [2^(ldTiny-1), 2^ldTiny): it rounds to the smallest
		// subnormal, except exactly half of it, which ties to even (zero).
		half := new(big.Rat).SetFrac(big.NewInt(1), new(big.Int).Lsh(big.NewInt(1), uint(1-ldTiny)))
		if r.Cmp(half) != 0 {
			f.SetMantExp(big.NewFloat(0.5), ldTiny+1)
		}
	}
	if f.MantExp(nil) > ldMaxExp {
		return nil, true
	}
	if neg {
		f.Neg(f)
	}
	return f, false
}

// parseLongDouble parses b the way Redis's string2ld does: strtold's syntax
// (decimal and hexadecimal floats, "inf", "infinity"), with nothing before
// or after the number, rejecting NaN, overflow, and nonzero values that
// underflow to zero. Infinity is accepted.
func parseLongDouble(b []byte) (*big.Float, bool) {
	if len(b) == 0 || len(b) >= ldMaxChars {
		return nil, false
	}
	switch b[0] {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return nil, false
	}
	neg := false
	if b[0] == '+' || b[0] == '-' {
		neg = b[0] == '-'
		b = b[1:]
	}
	s := asciiLower(b)
	switch {
	case s == "inf" || s == "infinity":
		return newLD().SetInf(neg), true
	case strings.HasPrefix(s, "nan"), strings.HasPrefix(s, "inf"):
		return nil, false
	case strings.HasPrefix(s, "0x") && len(s) > 2 && (isHex(s[2]) || (s[2] == '.' && len(s) > 3 && isHex(s[3]))):
		return parseHexFloat(s[2:], neg)
	}
	return parseDecFloat(s, neg)
}

// asciiLower returns b with ASCII letters in lower case; other bytes are
// kept as they are (strtold's syntax is ASCII).
func asciiLower(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return string(out)
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// splitMantissa splits s into the digits before and after an optional '.',
// and the rest. It requires at least one digit.
func splitMantissa(s string, digit func(byte) bool) (intPart, frac, rest string, ok bool) {
	i := 0
	for i < len(s) && digit(s[i]) {
		i++
	}
	intPart = s[:i]
	if i < len(s) && s[i] == '.' {
		j := i + 1
		for j < len(s) && digit(s[j]) {
			j++
		}
		frac, i = s[i+1:j], j
	}
	return intPart, frac, s[i:], len(intPart)+len(frac) > 0
}

// parseExp parses the exponent after 'e' or 'p': an optional sign and at
// least one decimal digit, saturating far beyond any meaningful value, and
// requires it to end the string.
func parseExp(s string) (int64, bool) {
	neg := false
	if len(s) > 0 && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if len(s) == 0 {
		return 0, false
	}
	var n int64
	for i := range len(s) {
		if !isDigit(s[i]) {
			return 0, false
		}
		if n < 1e9 {
			n = n*10 + int64(s[i]-'0')
		}
	}
	if neg {
		n = -n
	}
	return n, true
}

func parseDecFloat(s string, neg bool) (*big.Float, bool) {
	intPart, frac, rest, ok := splitMantissa(s, isDigit)
	if !ok {
		return nil, false
	}
	var exp int64
	if rest != "" {
		if rest[0] != 'e' {
			return nil, false
		}
		if exp, ok = parseExp(rest[1:]); !ok {
			return nil, false
		}
	}
	digits := strings.TrimLeft(intPart+frac, "0")
	exp -= int64(len(frac))
	if digits == "" {
		return ldZero(neg), true
	}
	// The value lies in [10^(mag-1), 10^mag).
	mag := exp + int64(len(digits))
	switch {
	case mag > 4934: // beyond 1.19e4932
		return nil, false
	case mag < -4952: // below half the smallest subnormal, 3.6e-4951
		return nil, false
	}
	m, _ := new(big.Int).SetString(digits, 10)
	r := new(big.Rat)
	p := new(big.Int).Exp(big.NewInt(10), big.NewInt(abs64(exp)), nil)
	if exp >= 0 {
		r.SetInt(m.Mul(m, p))
	} else {
		r.SetFrac(m, p)
	}
	return ldFinish(r, neg)
}

func parseHexFloat(s string, neg bool) (*big.Float, bool) {
	intPart, frac, rest, ok := splitMantissa(s, isHex)
	if !ok {
		return nil, false
	}
	var exp int64
	if rest != "" {
		if rest[0] != 'p' {
			return nil, false
		}
		if exp, ok = parseExp(rest[1:]); !ok {
			return nil, false
		}
	}
	digits := strings.TrimLeft(intPart+frac, "0")
	exp -= 4 * int64(len(frac))
	if digits == "" {
		return ldZero(neg), true
	}
	m, _ := new(big.Int).SetString(digits, 16)
	// The value lies in [2^(mag-1), 2^mag).
	mag := exp + int64(m.BitLen())
	switch {
	case mag > ldMaxExp+1:
		return nil, false
	case mag < ldTiny-1:
		return nil, false
	}
	r := new(big.Rat)
	if exp >= 0 {
		r.SetInt(m.Lsh(m, uint(exp)))
	} else {
		r.SetFrac(m, new(big.Int).Lsh(big.NewInt(1), uint(-exp)))
	}
	return ldFinish(r, neg)
}

// ldFinish rounds a parsed nonzero value, rejecting overflow and underflow
// to zero as string2ld does (strtold reports both as ERANGE).
func ldFinish(r *big.Rat, neg bool) (*big.Float, bool) {
	f, overflow := ldFromRat(r, neg)
	if overflow || f.Sign() == 0 {
		return nil, false
	}
	return f, true
}

func ldZero(neg bool) *big.Float {
	f := newLD()
	if neg {
		f.Neg(f)
	}
	return f
}

func abs64(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

// addLongDouble returns a+b rounded to a long double, or false if the sum
// is NaN or infinite.
func addLongDouble(a, b *big.Float) (*big.Float, bool) {
	if a.IsInf() || b.IsInf() {
		return nil, false
	}
	// Both operands are multiples of 2^ldTiny, so a sum in the subnormal
	// range is exact in 64 bits: rounding once at 64 bits is what the FPU
	// does.
	z := newLD().Add(a, b)
	if z.MantExp(nil) > ldMaxExp {
		return nil, false
	}
	return z, true
}

// formatLongDouble prints f the way Redis's ld2string does in its
// human-friendly mode: "%.17Lf", then trailing zeros and a trailing '.'
// removed, and "-0" printed as "0".
func formatLongDouble(f *big.Float) []byte {
	if f.IsInf() {
		if f.Sign() > 0 {
			return []byte("inf")
		}
		return []byte("-inf")
	}
	b := f.Append(nil, 'f', 17)
	if bytes.IndexByte(b, '.') >= 0 {
		for b[len(b)-1] == '0' {
			b = b[:len(b)-1]
		}
		if b[len(b)-1] == '.' {
			b = b[:len(b)-1]
		}
	}
	if len(b) == 2 && b[0] == '-' && b[1] == '0' {
		b = append(b[:0], '0')
	}
	return b
}
