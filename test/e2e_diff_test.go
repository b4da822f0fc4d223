package test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sidecache/sidecache/l2store"
)

// The end-to-end differential tests send the same bytes to the sidecache
// binary and to a real redis-server and require the same bytes back.

// TestE2EDiffScripts runs every script of testdata/diff through sidecache
// and through redis-server, in RESP2 and in RESP3, comparing replies byte
// for byte. Unlike TestDiffStore, the commands go through the whole binary:
// the RESP parser, the proxy's arity checks, L1 on the read path, and the
// embedded store.
func TestE2EDiffScripts(t *testing.T) {
	srv := StartRedisServer(t)
	sc := StartSidecache(t)
	scripts := LoadScripts(t, "testdata/diff/*.redis")
	for _, proto := range []int{2, 3} {
		redis, side := srv.Dial(t), sc.Dial(t)
		if proto == 3 {
			hello3(t, redis)
			hello3(t, side)
		}
		for _, s := range scripts {
			t.Run(fmt.Sprintf("resp%d/%s", proto, s.Name), func(t *testing.T) {
				flushAll(t, redis)
				flushAll(t, side)
				CompareScript(t, s, redisDo(redis), redisDo(side))
			})
		}
	}
}

// TestE2ELocalCommands runs testdata/e2e/local.redis, the commands the
// proxy answers itself (PING, ECHO, SELECT, AUTH, HELLO, CLIENT, CONFIG,
// COMMAND, RESET, TIME) and the errors it gives before running a command
// (unknown commands and subcommands, wrong arity), on both targets. Ids,
// times and configuration values are masked (see maskReply).
func TestE2ELocalCommands(t *testing.T) {
	// sidecache has one database; so has this redis-server.
	srv := StartRedisServer(t, "--databases", "1")
	sc := StartSidecache(t)
	scripts := LoadScripts(t, "testdata/e2e/local.redis")
	for _, proto := range []int{2, 3} {
		for _, s := range scripts {
			t.Run(fmt.Sprintf("resp%d/%s", proto, s.Name), func(t *testing.T) {
				redis, side := srv.Dial(t), sc.Dial(t)
				if proto == 3 {
					hello3(t, redis)
					hello3(t, side)
				}
				flushAll(t, redis)
				flushAll(t, side)
				CompareScript(t, s, maskedDo(t, redis), maskedDo(t, side))
			})
		}
	}
}

// maskedDo runs commands on c and masks what may differ between two
// servers in their replies (see maskReply).
func maskedDo(t *testing.T, c *RESPConn) DoFunc {
	return func(args [][]byte) ([]byte, error) {
		r, err := c.Do(args...)
		if err != nil {
			return nil, err
		}
		return maskReply(t, args, r), nil
	}
}

var (
	helloID   = regexp.MustCompile(`\$2\r\nid\r\n:[0-9]+\r\n`)
	timeBulks = regexp.MustCompile(`\$[0-9]+\r\n[0-9]+\r\n`)
)

// maskReply replaces the parts of a reply that legitimately differ between
// sidecache and redis-server: the connection id in HELLO and CLIENT ID,
// the digits of TIME, and the values of CONFIG GET (the parameter names
// are kept). Error replies are never masked.
func maskReply(t *testing.T, args [][]byte, raw []byte) []byte {
	if len(raw) == 0 || raw[0] == '-' || raw[0] == '!' {
		return raw
	}
	name := strings.ToLower(string(args[0]))
	sub := ""
	if len(args) > 1 {
		sub = strings.ToLower(string(args[1]))
	}
	switch {
	case name == "hello":
		return helloID.ReplaceAllLiteral(raw, []byte("$2\r\nid\r\n:<id>\r\n"))
	case name == "client" && sub == "id":
		if raw[0] == ':' {
			return []byte(":<id>\r\n")
		}
	case name == "time":
		return timeBulks.ReplaceAllLiteral(raw, []byte("$<n>\r\n<digits>\r\n"))
	case name == "config" && sub == "get":
		r := parseReply(t, raw)
		if r.Kind != l2store.KindArray && r.Kind != l2store.KindMap {
			return raw
		}
		for i := 1; i < len(r.Elems); i += 2 {
			r.Elems[i] = l2store.BulkString("<value>")
		}
		proto := 2
		if raw[0] == '%' {
			proto = 3
		}
		return r.AppendRESP(nil, proto)
	}
	return raw
}

// TestMaskReply checks that masking keeps what must still be compared.
func TestMaskReply(t *testing.T) {
	args := func(s ...string) [][]byte {
		out := make([][]byte, len(s))
		for i, a := range s {
			out[i] = []byte(a)
		}
		return out
	}
	tests := []struct {
		args      [][]byte
		raw, want string
	}{
		{args("HELLO", "3"), "%2\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:17\r\n", "%2\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:<id>\r\n"},
		{args("HELLO", "4"), "-NOPROTO unsupported protocol version\r\n", "-NOPROTO unsupported protocol version\r\n"},
		{args("client", "ID"), ":5\r\n", ":<id>\r\n"},
		{args("TIME"), "*2\r\n$10\r\n1700000000\r\n$5\r\n12345\r\n", "*2\r\n$<n>\r\n<digits>\r\n$<n>\r\n<digits>\r\n"},
		{args("CONFIG", "GET", "port"), "*2\r\n$4\r\nport\r\n$4\r\n6379\r\n", "*2\r\n$4\r\nport\r\n$7\r\n<value>\r\n"},
		{args("CONFIG", "GET", "port"), "%1\r\n$4\r\nport\r\n$4\r\n6379\r\n", "%1\r\n$4\r\nport\r\n$7\r\n<value>\r\n"},
		{args("CONFIG", "GET", "x"), "*0\r\n", "*0\r\n"},
		{args("GET", "id"), "$2\r\nid\r\n", "$2\r\nid\r\n"},
	}
	for _, tt := range tests {
		if got := maskReply(t, tt.args, []byte(tt.raw)); string(got) != tt.want {
			t.Errorf("maskReply(%q, %q) = %q, want %q", tt.args, tt.raw, got, tt.want)
		}
	}
}

// TestE2EQuit checks that QUIT is answered and then the connection is
// closed, by both servers, even with commands pipelined after it.
func TestE2EQuit(t *testing.T) {
	srv := StartRedisServer(t)
	sc := StartSidecache(t)
	in := "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nQUIT\r\n*1\r\n$4\r\nPING\r\n"
	want := exchange(t, srv.Addr, []byte(in))
	got := exchange(t, sc.Addr, []byte(in))
	if string(want.data) != "+PONG\r\n+OK\r\n" || !want.closed {
		t.Fatalf("redis-server: %s", want.text())
	}
	if !bytes.Equal(got.data, want.data) || !got.closed {
		t.Errorf("sidecache: %s, want %s", got.text(), want.text())
	}
}

// exchangeResult is what a server sent back on one connection.
type exchangeResult struct {
	data   []byte
	closed bool  // the server closed the connection (EOF or reset)
	err    error // the read error that ended the exchange
}

func (r exchangeResult) text() string {
	s := shorten(strconv.Quote(string(r.data)))
	if r.closed {
		return s + " <closed>"
	}
	return fmt.Sprintf("%s <open: %v>", s, r.err)
}

// exchangeTimeout bounds how long exchange waits for a server to close.
const exchangeTimeout = 10 * time.Second

// exchange opens a fresh connection to addr, writes in (concurrently, so a
// server that closes early cannot block the write), and reads everything
// the server sends until it closes the connection or exchangeTimeout
// passes.
func exchange(t *testing.T, addr string, in []byte, chunks ...int) exchangeResult {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(exchangeTimeout))
	go func() {
		// Write errors are expected when the server closes first.
		rest := in
		for _, n := range chunks {
			if n > len(rest) {
				break
			}
			if _, err := c.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
		c.Write(rest)
	}()
	data, err := io.ReadAll(c)
	res := exchangeResult{data: data, err: err}
	res.closed = err == nil || errors.Is(err, syscall.ECONNRESET)
	return res
}

// quitCmd ends the protocol cases that do not make the server close the
// connection.
const quitCmd = "*1\r\n$4\r\nQUIT\r\n"

// protocolCases are byte streams, well-formed or not, on which sidecache's
// parser must behave exactly like Redis's (processInlineBuffer and
// processMultibulkBuffer): same replies, same error texts, and the
// connection closed after a protocol error.
var protocolCases = []struct {
	name   string
	in     string
	chunks []int // if set, the sizes of the first writes
}{
	{name: "bad multibulk count", in: "*x\r\n"},
	{name: "multibulk count leading zero", in: "*01\r\n$4\r\nPING\r\n"},
	{name: "multibulk count plus sign", in: "*+1\r\n$4\r\nPING\r\n"},
	{name: "multibulk count over int32", in: "*3000000000\r\n"},
	{name: "multibulk count overflow", in: "*99999999999999999999\r\n"},
	{name: "multibulk header LF only", in: "*1\n$4\r\nPING\r\n"},
	{name: "negative multibulk ignored", in: "*-1\r\n*1\r\n$4\r\nPING\r\n" + quitCmd},
	{name: "empty multibulk ignored", in: "*0\r\n*1\r\n$4\r\nPING\r\n" + quitCmd},
	{name: "simple string instead of bulk", in: "*1\r\n+a\r\n"},
	{name: "integer instead of bulk", in: "*2\r\n$4\r\nECHO\r\n:1\r\n"},
	{name: "command instead of bulk", in: "*2\r\n$3\r\nGET\r\n" + quitCmd},
	{name: "negative bulk length", in: "*1\r\n$-5\r\n"},
	{name: "null bulk", in: "*1\r\n$-1\r\n"},
	{name: "bulk length leading zero", in: "*1\r\n$04\r\nPING\r\n"},
	{name: "bulk length space", in: "*1\r\n$ 4\r\nPING\r\n"},
	{name: "bulk length not a number", in: "*1\r\n$four\r\nPING\r\n"},
	{name: "bulk length over proto-max-bulk-len", in: "*2\r\n$4\r\nECHO\r\n$1048577\r\n"},
	{name: "bulk length at proto-max-bulk-len", in: "*2\r\n$4\r\nECHO\r\n$1048576\r\n" + strings.Repeat("b", 1<<20) + "\r\n" + quitCmd},
	{name: "bulk trailer not CRLF", in: "*1\r\n$4\r\nPINGxx*2\r\n$4\r\nECHO\r\n$1\r\naXY" + quitCmd},
	{name: "bulk with NUL and CRLF", in: "*2\r\n$4\r\nECHO\r\n$5\r\na\x00\r\nb\r\n" + quitCmd},
	{name: "top-level bulk header is inline", in: "$4\r\n" + quitCmd},
	{name: "top-level simple string is inline", in: "+PING\r\n:1\r\n" + quitCmd},
	{name: "too big inline request", in: strings.Repeat("A", 70<<10)},
	{name: "too big inline after NUL", in: "ECHO a\x00b\r\n" + strings.Repeat("x", 70<<10)},
	{name: "too big multibulk count", in: "*" + strings.Repeat("1", 70<<10)},
	{name: "too big bulk count", in: "*1\r\n$" + strings.Repeat("1", 70<<10)},
	{name: "inline just under the limit", in: "ECHO " + strings.Repeat("y", 60<<10) + "\r\n" + quitCmd},
	{name: "command then garbage", in: "PING\r\n*x\r\n"},
	{name: "multibulk then garbage", in: "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n*1\r\n!\r\n"},
	{name: "unbalanced double quote", in: "SET \"abc\r\n"},
	{name: "unbalanced single quote", in: "SET 'abc\r\n"},
	{name: "quote not followed by space", in: "ECHO \"a\"b\r\n"},
	{name: "command then unbalanced quotes", in: "PING\r\nECHO \"x\r\n"},
	{name: "inline quotes and escapes", in: "ECHO \"a\\x41\\n\\t\\\"\\\\\"\r\nECHO 'it\\'s' \r\nECHO \"\\xzz\\q\"\r\nECHO ''\r\nECHO \"\"\r\n" + quitCmd},
	{name: "inline unknown command with args", in: "NOSUCH \"a b\" 'c d' e\r\n" + quitCmd},
	{name: "inline wrong arity", in: "GET\r\nGET a b\r\n" + quitCmd},
	{name: "inline LF only and tabs", in: "ECHO\ta\nPING\n  PING   x  \r\n" + quitCmd},
	{name: "empty lines", in: "\r\n\n\r\n   \r\n\t\r\nPING\r\n" + quitCmd},
	{name: "inline set and get", in: "SET inlinekey \"v 1\"\r\nGET inlinekey\r\nDEL inlinekey\r\n" + quitCmd},
	{name: "mixed inline and multibulk", in: "PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nPING x\r\n" + quitCmd},
	{name: "pipeline written byte by byte", in: "SET a b\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$3\r\nDEL\r\n" + quitCmd,
		chunks: []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
	{name: "quit then more", in: quitCmd + "*1\r\n$4\r\nPING\r\n"},
	{name: "inline quit", in: "QUIT\r\nPING\r\n"},
}

// TestE2EProtocolErrors sends each of protocolCases on a fresh connection
// to redis-server and to sidecache, both started with the same
// proto-max-bulk-len, and compares all the bytes each sends back and
// whether each closes the connection. After each case a fresh connection
// must still answer PING.
func TestE2EProtocolErrors(t *testing.T) {
	srv := StartRedisServer(t, "--proto-max-bulk-len", "1mb")
	sc := StartSidecache(t, "--proto-max-bulk-len", "1mb")
	for _, tc := range protocolCases {
		t.Run(tc.name, func(t *testing.T) {
			want := exchange(t, srv.Addr, []byte(tc.in), tc.chunks...)
			if !want.closed {
				t.Fatalf("redis-server did not close the connection: %s (fix the case)", want.text())
			}
			got := exchange(t, sc.Addr, []byte(tc.in), tc.chunks...)
			if !bytes.Equal(got.data, want.data) || got.closed != want.closed {
				t.Errorf("input %s\n  redis-server: %s\n  sidecache:    %s",
					shorten(strconv.Quote(tc.in)), want.text(), got.text())
			}
			expect(t, sc.Dial(t), "+PONG\r\n", "PING")
		})
	}
}

// TestE2EQueryBufferLimit: a command bigger than client-query-buffer-limit
// makes both servers close the connection without a reply; smaller ones
// still work.
func TestE2EQueryBufferLimit(t *testing.T) {
	srv := StartRedisServer(t, "--client-query-buffer-limit", "1mb")
	sc := StartSidecache(t, "--client-query-buffer-limit", "1mb")
	cases := []struct{ name, in string }{
		{"one big argument", "*2\r\n$4\r\nECHO\r\n$2000000\r\n" + strings.Repeat("x", 2000000) + "\r\n" + quitCmd},
		{"many arguments", "*3\r\n$3\r\nSET\r\n$1\r\nq\r\n$1200000\r\n" + strings.Repeat("y", 1200000) + "\r\n" + quitCmd},
		{"under the limit", "*2\r\n$4\r\nECHO\r\n$900000\r\n" + strings.Repeat("z", 900000) + "\r\n" + quitCmd},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := exchange(t, srv.Addr, []byte(tc.in))
			if !want.closed {
				t.Fatalf("redis-server did not close the connection: %s", want.text())
			}
			got := exchange(t, sc.Addr, []byte(tc.in))
			if !bytes.Equal(got.data, want.data) || got.closed != want.closed {
				t.Errorf("redis-server: %s\n  sidecache:    %s", want.text(), got.text())
			}
			expect(t, sc.Dial(t), "+PONG\r\n", "PING")
		})
	}
}
