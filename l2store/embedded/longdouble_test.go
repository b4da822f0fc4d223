package embedded

import "testing"

// TestIncrByFloatArithmetic checks parse, add and format against values
// printed by a C program on x86-64 (glibc strtold, long double addition,
// "%.17Lf") running Redis's string2ld and ld2string steps. "ERRA" and
// "ERRB" mean string2ld rejects the first or second operand, "NAN" that
// the sum is NaN or infinite.
func TestIncrByFloatArithmetic(t *testing.T) {
	tests := []struct{ a, b, want string }{
		{"0", "0.1", "0.1"},
		{"0.1", "0.1", "0.2"},
		{"0.2", "0.1", "0.3"},
		{"10.5", "0.1", "10.6"},
		{"0", "1e17", "100000000000000000"},
		{"1e17", "0.1", "100000000000000000.1015625"},
		{"0", "-0", "0"},
		{"-0", "-0", "0"},
		{"0", "3.0e3", "3000"},
		{"0", "5.0e-5", "0.00005"},
		{"5.0e-5", "1", "1.00005"},
		{"0", "0x1p3", "8"},
		{"0", "inf", "NAN"},
		{"inf", "-inf", "NAN"},
		{"0", "nan", "ERRB"},
		{"0", " 1", "ERRB"},
		{"0", "1 ", "ERRB"},
		{"0", "+1.5", "1.5"},
		{"0", ".5", "0.5"},
		{"0", "5.", "5"},
		{"0", ".", "ERRB"},
		{"0", "1e", "ERRB"},
		{"0", "0x", "ERRB"},
		{"0", "0x.8", "0.5"},
		{"0", "1e-4940", "0"},
		{"0", "1e-5000", "ERRB"},
		{"0", "0e-99999", "0"},
		{"0", "1e4933", "ERRB"},
		{"1.18973149535723176502e4932", "1.18973149535723176502e4932", "NAN"},
		{"0", "0x1p-16446", "ERRB"},
		{"0", "0x1.8p-16446", "0"},
		{"0", "0x1p-16445", "0"},
		{"0", "infinity", "NAN"},
		{"0", "infin", "ERRB"},
		{"0", "00012", "12"},
		{"0", "-00.000", "0"},
		{"0", "1.0000000000000000000000001", "1"},
		{"0", "3.000000000000000000001", "3"},
		{"0", "0x3.8p-61", "0"},
		{"3", "-3", "0"},
		{"-1", "0.5", "-0.5"},
		{"12345678901234567890", "1", "12345678901234567891"},
		{"9223372036854775807", "1", "9223372036854775808"},
		{"0", "0.000000000000000005", "0"},
		{"0", "0.000000000000000015", "0.00000000000000002"},
		{"0", "-0.000000000000000015", "-0.00000000000000002"},
		{"0", "1.5e-17", "0.00000000000000002"},
		{"1", "0x1p-64", "1"},
		{"1", "0x1.8p-64", "1"},
		{"0", "1E2", "100"},
		{"0", "0X1P3", "8"},
		{"0", "1e+2", "100"},
		{"abc", "1", "ERRA"},
		{"1", "abc", "ERRB"},
		{"0", "\xc4\xb0nf", "ERRB"}, // 'İ' lower-cases to 'i' in Unicode, not in strtold
		{"0", "1\x00", "ERRB"},
	}
	for _, tt := range tests {
		t.Run(tt.a+"+"+tt.b, func(t *testing.T) {
			if got := incrByFloat(tt.a, tt.b); got != tt.want {
				t.Errorf("%q + %q = %q, want %q", tt.a, tt.b, got, tt.want)
			}
		})
	}
}

func incrByFloat(a, b string) string {
	x, ok := parseLongDouble([]byte(a))
	if !ok {
		return "ERRA"
	}
	y, ok := parseLongDouble([]byte(b))
	if !ok {
		return "ERRB"
	}
	z, ok := addLongDouble(x, y)
	if !ok {
		return "NAN"
	}
	return string(formatLongDouble(z))
}

func TestParseLongDoubleLimits(t *testing.T) {
	// The longest accepted string is one byte under MAX_LONG_DOUBLE_CHARS.
	long := make([]byte, ldMaxChars-1)
	for i := range long {
		long[i] = '0'
	}
	long[0], long[1] = '1', '.'
	if _, ok := parseLongDouble(long); !ok {
		t.Errorf("%d-digit number rejected", len(long))
	}
	if _, ok := parseLongDouble(append(long, '0')); ok {
		t.Errorf("%d-digit number accepted", len(long)+1)
	}
	// A huge exponent must neither hang nor allocate a huge power of 10.
	for _, s := range []string{"1e999999999999999999999", "1e-999999999999999999999", "0x1p99999999999999", "0.0000001e999999999"} {
		if _, ok := parseLongDouble([]byte(s)); ok {
			t.Errorf("%s accepted", s)
		}
	}
}
