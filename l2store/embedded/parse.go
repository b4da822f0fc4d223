package embedded

import (
	"bytes"
)

// maxInt64Digits is Redis's LONG_STR_SIZE: a string this long or longer is
// never an integer.

// cstr returns b up to its first NUL byte: what Redis's C string functions
// (strcasecmp and friends) see of an argument when it parses option names.
func cstr(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// isOpt reports whether the argument a names the option opt (lower-case
// ASCII), compared as Redis does: case-insensitively, as C strings.
func isOpt(a []byte, opt string) bool {
	a = cstr(a)
	if len(a) != len(opt) {
		return false
	}
	for i := range len(a) {
		c := a[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != opt[i] {
			return false
		}
	}
	return true
}

// sanitizeLine replaces CR and LF by spaces, as Redis does to the
// user-provided parts of formatted error messages.
func sanitizeLine(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		if c == '\r' || c == '\n' {
			c = ' '
		}
		out[i] = c
	}
	return out
}
