package embedded

import "github.com/sidecache/sidecache/l2store"

// maxInt64Digits is Redis's LONG_STR_SIZE: a string this long or longer is
// never an integer.

// isOpt reports whether the argument a names the option opt (lower-case
// ASCII), compared as Redis does: case-insensitively, as C strings.
func isOpt(a []byte, opt string) bool {
	a = l2store.CString(a)
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
