package test

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/sidecache/sidecache/l2store"
)

// Small helpers shared by the end-to-end tests.

// do runs one command on c and returns its raw reply, failing the test on
// a connection error.
func do(t testing.TB, c *RESPConn, args ...string) []byte {
	t.Helper()
	r, err := c.DoStrings(args...)
	if err != nil {
		t.Fatalf("%s: %v", shorten(strings.Join(args, " ")), err)
	}
	return r
}

// expect runs one command on c and fails the test unless its raw reply is
// want.
func expect(t testing.TB, c *RESPConn, want string, args ...string) {
	t.Helper()
	if got := do(t, c, args...); string(got) != want {
		t.Errorf("%s = %s, want %s", shorten(strings.Join(args, " ")), shorten(strconv.Quote(string(got))), shorten(strconv.Quote(want)))
	}
}

// parseReply parses a raw RESP reply.
func parseReply(t testing.TB, raw []byte) l2store.Reply {
	t.Helper()
	r, err := l2store.ReadReply(bufio.NewReader(bytes.NewReader(raw)), 1<<30)
	if err != nil {
		t.Fatalf("parsing reply %q: %v", shorten(string(raw)), err)
	}
	return r
}

// bulkReply encodes v as a RESP bulk string.
func bulkReply(v string) string { return "$" + strconv.Itoa(len(v)) + "\r\n" + v + "\r\n" }

// infoFields runs INFO section on c and returns its fields.
func infoFields(t testing.TB, c *RESPConn, section string) map[string]string {
	t.Helper()
	r := parseReply(t, do(t, c, "INFO", section))
	text := r.Str
	switch r.Kind {
	case l2store.KindBulk:
	case l2store.KindVerbatim:
		text = bytes.TrimPrefix(text, []byte("txt:"))
	default:
		t.Fatalf("INFO %s: unexpected reply %v", section, r)
	}
	fields := make(map[string]string)
	for _, line := range strings.Split(string(text), "\r\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("INFO %s: line without ':': %q", section, line)
		}
		fields[k] = v
	}
	return fields
}

// infoInt returns an integer field of INFO section.
func infoInt(t testing.TB, c *RESPConn, section, field string) int64 {
	t.Helper()
	v, ok := infoFields(t, c, section)[field]
	if !ok {
		t.Fatalf("INFO %s has no field %s", section, field)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("INFO %s %s = %q: %v", section, field, v, err)
	}
	return n
}

// hello3 switches c to RESP3.
func hello3(t testing.TB, c *RESPConn) {
	t.Helper()
	r := parseReply(t, do(t, c, "HELLO", "3"))
	if r.Kind != l2store.KindMap {
		t.Fatalf("HELLO 3: %v", r)
	}
}
