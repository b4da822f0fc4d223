package l2store

import (
	"bytes"
	"math"
)

// ParseInt parses b exactly as Redis's string2ll does, which is how Redis
// reads every integer argument and protocol length: an optional '-', then
// "0" or a digit 1-9 followed by digits; nothing else (no '+', no spaces, no
// leading zeros); at most 20 bytes; within int64.
func ParseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) >= 21 { // LONG_STR_SIZE
		return 0, false
	}
	if len(b) == 1 && b[0] == '0' {
		return 0, true
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || b[0] < '1' || b[0] > '9' {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	if neg {
		if v > 1<<63 {
			return 0, false
		}
		return int64(-v), true
	}
	if v > math.MaxInt64 {
		return 0, false
	}
	return int64(v), true
}

// CString returns b up to its first NUL byte: what Redis's C string
// functions (strcasecmp, printf's %s) see of an argument.
func CString(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}
