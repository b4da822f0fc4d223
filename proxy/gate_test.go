package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// scriptConn is a net.Conn whose reads return the given chunks in turn,
// then io.EOF; writes are recorded.
type scriptConn struct {
	chunks  [][]byte
	written bytes.Buffer
	closed  bool
}

func (c *scriptConn) Read(p []byte) (int, error) {
	for len(c.chunks) > 0 && len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	return n, nil
}
func (c *scriptConn) Write(p []byte) (int, error)      { return c.written.Write(p) }
func (c *scriptConn) Close() error                     { c.closed = true; return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

var testLimits = gateLimits{maxBulk: 1 << 20, maxArgs: 1000, maxQueryBuf: 4 << 20}

// runGate feeds chunks through a gate, reading with buffers of readSize,
// and returns what redcon would see, the reply written at Close, and the
// final read error.
func runGate(t *testing.T, chunks []string, readSize int, unauth bool) (out, reply string, err error) {
	t.Helper()
	sc := &scriptConn{}
	for _, c := range chunks {
		sc.chunks = append(sc.chunks, []byte(c))
	}
	g := newGate(sc, &testLimits)
	g.unauth.Store(unauth)
	var got bytes.Buffer
	buf := make([]byte, readSize)
	for i := 0; ; i++ {
		if i > 1<<20 {
			t.Fatal("gate did not finish")
		}
		n, rerr := g.Read(buf)
		got.Write(buf[:n])
		if rerr != nil {
			err = rerr
			break
		}
		if n == 0 {
			t.Fatal("Read returned 0, nil")
		}
	}
	g.Close()
	if !sc.closed {
		t.Error("Close did not close the connection")
	}
	return got.String(), sc.written.String(), err
}

func TestGate(t *testing.T) {
	big := strings.Repeat("x", inlineMaxSize+10)
	tests := []struct {
		name   string
		in     string
		unauth bool
		out    string // canonical RESP handed on
		reply  string // protocol error written at close
	}{
		{name: "canonical", in: "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", out: "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"},
		{name: "pipeline", in: "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n", out: "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n"},
		{name: "binary body with CRLF inside", in: "*1\r\n$4\r\n\r\n\x00\xff\r\n", out: "*1\r\n$4\r\n\r\n\x00\xff\r\n"},
		{name: "empty bulk", in: "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", out: "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"},
		{name: "inline", in: "SET k v\r\n", out: "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"},
		{name: "inline LF only", in: "PING\n", out: "*1\r\n$4\r\nPING\r\n"},
		{name: "inline quotes", in: "SET \"a b\" 'c\\'d' \"\\x41\\n\"\r\n", out: "*4\r\n$3\r\nSET\r\n$3\r\na b\r\n$3\r\nc'd\r\n$2\r\nA\n\r\n"},
		{name: "empty lines ignored", in: "\r\n\r\n  \r\nPING\r\n", out: "*1\r\n$4\r\nPING\r\n"},
		{name: "empty multibulks ignored", in: "*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n", out: "*1\r\n$4\r\nPING\r\n"},
		{name: "bulk trailer not checked", in: "*1\r\n$4\r\nPINGxy*1\r\n$4\r\nPING\r\n", out: "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n"},
		{name: "CR then any byte ends a header", in: "*1\rx$4\ryPING\r\n", out: "*1\r\n$4\r\nPING\r\n"},
		{name: "bad multibulk length", in: "*1\r\n$4\r\nPING\r\n*x\r\n", out: "*1\r\n$4\r\nPING\r\n", reply: "-ERR Protocol error: invalid multibulk length\r\n"},
		{name: "leading zero count", in: "*01\r\n", reply: "-ERR Protocol error: invalid multibulk length\r\n"},
		{name: "plus sign count", in: "*+1\r\n", reply: "-ERR Protocol error: invalid multibulk length\r\n"},
		{name: "too many args", in: "*1001\r\n", reply: "-ERR Protocol error: invalid multibulk length\r\n"},
		{name: "count above INT_MAX", in: "*2147483648\r\n", reply: "-ERR Protocol error: invalid multibulk length\r\n"},
		{name: "huge count", in: "*9223372036854775807\r\n", reply: "-ERR Protocol error: invalid multibulk length\r\n"},
		{name: "expected dollar", in: "*1\r\n+PING\r\n", out: "*1\r\n", reply: "-ERR Protocol error: expected '$', got '+'\r\n"},
		{name: "expected dollar, got a newline", in: "*1\r0\n\r0", out: "*1\r\n", reply: "-ERR Protocol error: expected '$', got ' '\r\n"},
		{name: "negative bulk length", in: "*1\r\n$-1\r\n", out: "*1\r\n", reply: "-ERR Protocol error: invalid bulk length\r\n"},
		{name: "bulk too long", in: "*1\r\n$1048577\r\n", out: "*1\r\n", reply: "-ERR Protocol error: invalid bulk length\r\n"},
		{name: "unbalanced quotes", in: "SET \"a b\r\n", reply: "-ERR Protocol error: unbalanced quotes in request\r\n"},
		{name: "quote not followed by space", in: "SET \"a\"b\r\n", reply: "-ERR Protocol error: unbalanced quotes in request\r\n"},
		{name: "too big inline", in: big, reply: "-ERR Protocol error: too big inline request\r\n"},
		{name: "too big mbulk count", in: "*" + big, reply: "-ERR Protocol error: too big mbulk count string\r\n"},
		{name: "too big bulk count", in: "*1\r\n$" + big, out: "*1\r\n", reply: "-ERR Protocol error: too big bulk count string\r\n"},
		{name: "NUL hides the header end", in: "*1\x00\r\n" + big, reply: "-ERR Protocol error: too big mbulk count string\r\n"},
		{name: "unauthenticated multibulk", in: "*11\r\n", unauth: true, reply: "-ERR Protocol error: unauthenticated multibulk length\r\n"},
		{name: "unauthenticated bulk", in: "*1\r\n$16385\r\n", unauth: true, out: "*1\r\n", reply: "-ERR Protocol error: unauthenticated bulk length\r\n"},
		{name: "authenticated limits", in: "*11\r\n", unauth: false, out: "*11\r\n"},
		{name: "incomplete command at EOF", in: "*2\r\n$3\r\nGET\r\n", out: "*2\r\n$3\r\nGET\r\n"},
		{name: "body waits for its trailer", in: "*1\r\n$4\r\nPING", out: "*1\r\n$4\r\nPING"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The result must not depend on how the input is chunked or
			// how much redcon reads at a time.
			for _, split := range []int{0, 1, 3} {
				for _, readSize := range []int{1, 7, 4096} {
					if len(tt.in) > 1024 && (split == 1 || readSize == 1) {
						continue // slow, and covered by the short inputs
					}
					chunks := []string{tt.in}
					if split > 0 {
						chunks = nil
						for i := 0; i < len(tt.in); i += split {
							chunks = append(chunks, tt.in[i:min(i+split, len(tt.in))])
						}
					}
					out, reply, err := runGate(t, chunks, readSize, tt.unauth)
					if out != tt.out {
						t.Errorf("split %d read %d: handed on %q, want %q", split, readSize, trunc(out), trunc(tt.out))
					}
					if reply != tt.reply {
						t.Errorf("split %d read %d: reply %q, want %q", split, readSize, reply, tt.reply)
					}
					wantErr := io.EOF
					if tt.reply != "" {
						wantErr = errProtocol
					}
					if !errors.Is(err, wantErr) {
						t.Errorf("split %d read %d: error %v, want %v", split, readSize, err, wantErr)
					}
				}
			}
		})
	}
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func TestGateQueryBufferLimit(t *testing.T) {
	in := "*2\r\n$1048576\r\n" + strings.Repeat("a", 1<<20) + "\r\n$1048576\r\n" + strings.Repeat("a", 1<<20) + "\r\n"
	old := testLimits
	defer func() { testLimits = old }()
	testLimits.maxQueryBuf = 1<<20 + 100
	_, reply, err := runGate(t, []string{in}, 4096, false)
	if !errors.Is(err, errQueryBufferLimit) {
		t.Errorf("error %v, want %v", err, errQueryBufferLimit)
	}
	if reply != "" {
		t.Errorf("reply %q, want none: Redis closes such clients silently", reply)
	}
}

// TestGateReturnsWholeCommands checks that a Read does not block for more
// input once it has delivered a whole command: the command must run.
func TestGateReturnsWholeCommands(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	g := newGate(server, &testLimits)
	defer g.Close()
	go client.Write([]byte("*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n"))
	buf := make([]byte, 4096)
	got := ""
	for !strings.Contains(got, "PING\r\n") {
		n, err := g.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got += string(buf[:n])
	}
	if !strings.HasPrefix(got, "*1\r\n$4\r\nPING\r\n") {
		t.Fatalf("got %q", got)
	}
}

func TestGateDrain(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	g := newGate(server, &testLimits)
	done := make(chan error, 1)
	go func() {
		_, err := g.Read(make([]byte, 64))
		done <- err
	}()
	g.drain()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Read returned no error after drain")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("drain did not interrupt a blocked Read")
	}
	if _, err := g.Read(make([]byte, 64)); !errors.Is(err, io.EOF) && err == nil {
		t.Fatalf("Read after drain: %v, want an error", err)
	}
	g.Close()
}

func TestSplitArgs(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		ok   bool
	}{
		{"", nil, true},
		{"   ", nil, true},
		{"set k v", []string{"set", "k", "v"}, true},
		{"  a \t b  ", []string{"a", "b"}, true},
		{`"a\x41\x4g\n\r\t\b\a\\\""`, []string{"aAx4g\n\r\t\b\a\\\""}, true},
		{`'it\'s' "x"`, []string{"it's", "x"}, true},
		{`'a\nb'`, []string{`a\nb`}, true},
		{`a"b c"`, []string{"ab c"}, true},
		{`""`, []string{""}, true},
		{`"abc`, nil, false},
		{`'abc`, nil, false},
		{`"a"b`, nil, false},
		{`'a'b`, nil, false},
		{"a\x00 b", []string{"a"}, true},
		{"a\vb", []string{"a\vb"}, true},
	}
	for _, tt := range tests {
		got, ok := SplitArgs([]byte(tt.in))
		if ok != tt.ok {
			t.Errorf("SplitArgs(%q) ok = %v, want %v", tt.in, ok, tt.ok)
			continue
		}
		var gs []string
		for _, a := range got {
			gs = append(gs, string(a))
		}
		if strings.Join(gs, "|") != strings.Join(tt.want, "|") || len(gs) != len(tt.want) {
			t.Errorf("SplitArgs(%q) = %q, want %q", tt.in, gs, tt.want)
		}
	}
}

// TestGateUnauthOneCommandAtATime: before AUTH the gate hands on one
// command per read, so a command pipelined after AUTH is checked against
// the limits that apply once AUTH has run, as in Redis.
func TestGateUnauthOneCommandAtATime(t *testing.T) {
	auth := "*2\r\n$4\r\nAUTH\r\n$1\r\np\r\n"
	big := "*11\r\n" + strings.Repeat("$1\r\nx\r\n", 11)
	sc := &scriptConn{chunks: [][]byte{[]byte(auth + big)}}
	g := newGate(sc, &testLimits)
	g.unauth.Store(true)
	buf := make([]byte, 4096)
	n, err := g.Read(buf)
	if err != nil || string(buf[:n]) != auth {
		t.Fatalf("first read: %q, %v; want only the AUTH command", buf[:n], err)
	}
	g.unauth.Store(false) // AUTH succeeded
	n, err = g.Read(buf)
	if err != nil || string(buf[:n]) != big {
		t.Fatalf("second read: %q, %v; want the 11-argument command", buf[:n], err)
	}
}
