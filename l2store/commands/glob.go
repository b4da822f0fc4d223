package commands

// globMatch reports whether s matches the glob pattern, ignoring case, with
// the semantics of Redis 7.0.15's stringmatchlen (as COMMAND LIST FILTERBY
// PATTERN uses it): '*' matches any run of bytes, '?' any one byte,
// "[...]" a set of bytes with '^' negation, "a-z" ranges (ends in either
// order) and '\' escapes, and '\' escapes any byte outside a set. Redis's
// quirks are kept: an unterminated set ends at the end of the pattern, an
// escaped byte in a set is compared case-sensitively, and range ends are
// compared as C's signed chars.
func globMatch(pattern []byte, s string) bool {
	skip := false
	return globMatchFrom(pattern, s, &skip)
}

// globMatchFrom matches s against p. *skipLonger is set once a '*' found
// that the rest of the pattern matches nowhere in the rest of s: then no
// earlier '*' can match either, so the search stops (Redis's
// skipLongerMatches, which keeps patterns like "a*a*a*a*b" linear).
func globMatchFrom(p []byte, s string, skipLonger *bool) bool {
	// at returns p[i], or 0 past the end, where C sees the terminating NUL.
	at := func(i int) byte {
		if i < len(p) {
			return p[i]
		}
		return 0
	}
	pi, si := 0, 0
	for pi < len(p) && si < len(s) {
		switch p[pi] {
		case '*':
			for at(pi+1) == '*' {
				pi++
			}
			if pi == len(p)-1 {
				return true
			}
			for ; si < len(s); si++ {
				if globMatchFrom(p[pi+1:], s[si:], skipLonger) {
					return true
				}
				if *skipLonger {
					return false
				}
			}
			*skipLonger = true
			return false
		case '?':
			si++
		case '[':
			pi++
			not := at(pi) == '^'
			if not {
				pi++
			}
			match := false
			for {
				if at(pi) == '\\' && len(p)-pi >= 2 {
					pi++
					if p[pi] == s[si] {
						match = true
					}
				} else if at(pi) == ']' {
					break
				} else if pi >= len(p) {
					pi-- // unterminated: the set ends with the pattern
					break
				} else if len(p)-pi >= 3 && p[pi+1] == '-' {
					lo, hi, c := lowerSigned(p[pi]), lowerSigned(p[pi+2]), lowerSigned(s[si])
					if signedChar(p[pi]) > signedChar(p[pi+2]) {
						lo, hi = hi, lo
					}
					pi += 2
					if c >= lo && c <= hi {
						match = true
					}
				} else if lower(p[pi]) == lower(s[si]) {
					match = true
				}
				pi++
			}
			if not {
				match = !match
			}
			if !match {
				return false
			}
			si++
		case '\\':
			if len(p)-pi >= 2 {
				pi++
			}
			fallthrough
		default:
			if lower(p[pi]) != lower(s[si]) {
				return false
			}
			si++
		}
		pi++
		if si == len(s) {
			for at(pi) == '*' {
				pi++
			}
			break
		}
	}
	return pi == len(p) && si == len(s)
}

// signedChar is b as a C (signed) char.
func signedChar(b byte) int { return int(int8(b)) }

// lowerSigned is C's tolower of b as a signed char: ASCII letters are
// lowered, other values kept.
func lowerSigned(b byte) int { return signedChar(lower(b)) }

// Match reports whether s matches the glob pattern, ignoring case, as
// Redis's stringmatchlen does for COMMAND LIST and CONFIG GET.
func Match(pattern []byte, s string) bool { return globMatch(pattern, s) }
