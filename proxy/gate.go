package proxy

import (
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sidecache/sidecache/l2store"
)

// Redis's fixed protocol limits (server.h).
const (
	inlineMaxSize     = 64 << 10 // PROTO_INLINE_MAX_SIZE: longest inline request or header line
	unauthMaxArgs     = 10       // multibulk length allowed before AUTH
	unauthMaxBulk     = 16384    // bulk length allowed before AUTH
	gateReadChunk     = 16 << 10 // PROTO_IOBUF_LEN
	gateMaxBufferSize = inlineMaxSize + gateReadChunk
)

// errQueryBufferLimit ends a connection whose pending command grew beyond
// the query buffer limit; like Redis, no reply is sent.
var errQueryBufferLimit = errors.New("proxy: client query buffer limit reached")

// gateLimits are the request limits a gate enforces.
type gateLimits struct {
	maxBulk     int64 // proto-max-bulk-len
	maxArgs     int64 // longest multibulk
	maxQueryBuf int64 // client-query-buffer-limit: bytes of one pending command
}

// gate is the net.Conn that redcon reads requests from. It parses the byte
// stream exactly as Redis does (processInlineBuffer and
// processMultibulkBuffer in networking.c), enforces the request limits, and
// hands redcon canonical RESP: inline requests are converted to multibulk
// ones, empty requests are dropped, and malformed framing never reaches
// redcon. Bytes before a protocol error are delivered; the error itself is
// returned by the next Read, and its Redis error reply is written when the
// connection is closed, after the replies of the commands before it.
//
// A gate also implements graceful shutdown: after drain, reads deliver
// what is already buffered and then end, so a command in flight finishes
// and the connection closes after its reply is flushed.
type gate struct {
	net.Conn
	lim *gateLimits

	// unauth makes the stricter pre-AUTH limits apply; the proxy updates it.
	unauth atomic.Bool
	// draining is set by drain; reads no longer block on the network.
	draining atomic.Bool

	in      []byte // input read from the network; in[r:] is unparsed
	r       int
	scanned int    // bytes of in[r:] searched for a line end without finding it
	hidden  bool   // a NUL byte hides the line end, as it would from strchr
	out     []byte // canonical bytes produced but not yet delivered: out[o:]
	o       int
	cmdEnd  int // if > 0, out[:cmdEnd] ends with a whole command

	args     int64 // bulks left in the current multibulk
	body     int64 // body bytes left in the current bulk
	trailer  int   // bytes of the current bulk's CRLF left to skip
	cmdBytes int64 // bytes of the current command so far

	// unflushed counts reply bytes written since the last flush; the
	// connection's goroutine adds to it and Write resets it.
	unflushed int

	err      error                  // sticky read error, returned once out is drained
	protoErr atomic.Pointer[string] // error reply to send on Close
	close    sync.Once
	closeErr error
}

func newGate(c net.Conn, lim *gateLimits) *gate {
	return &gate{Conn: c, lim: lim, in: make([]byte, 0, gateReadChunk)}
}

// Read delivers canonical RESP to redcon. It returns once p is full, or
// once it has delivered at least one whole command and no more input is
// buffered; so redcon, which re-parses a partial command on every read,
// parses each large command only O(log size) times.
func (g *gate) Read(p []byte) (int, error) {
	n, whole := 0, false
	for n < len(p) {
		if g.o < len(g.out) {
			c := copy(p[n:], g.out[g.o:])
			n += c
			g.o += c
			if g.cmdEnd > 0 && g.o >= g.cmdEnd {
				whole, g.cmdEnd = true, 0
			}
			if g.o == len(g.out) {
				g.out, g.o, g.cmdEnd = g.out[:0], 0, 0
			}
			continue
		}
		if g.err != nil {
			break
		}
		if whole && g.unauth.Load() {
			// Before AUTH, Redis applies the pre-AUTH limits to a command
			// only after running the one before it, which may be the AUTH:
			// so hand on one command at a time.
			break
		}
		if g.body > 0 && g.r < len(g.in) {
			c := int(min(g.body, int64(len(g.in)-g.r), int64(len(p)-n)))
			copy(p[n:], g.in[g.r:g.r+c])
			n += c
			g.consume(c)
			g.body -= int64(c)
			if g.body == 0 {
				g.trailer = 2
			}
			continue
		}
		if g.step() || g.err != nil {
			continue
		}
		if whole {
			break // nothing more is buffered; let redcon run what it has
		}
		if err := g.fill(); err != nil {
			g.err = err
		}
	}
	if n > 0 {
		return n, nil
	}
	return 0, g.err
}

// endCommand marks the end of out as the end of a whole command.
func (g *gate) endCommand() { g.cmdEnd = len(g.out) }

// step advances the parser over buffered input by one element, queueing
// canonical output. It reports whether it made progress.
func (g *gate) step() bool {
	buf := g.in[g.r:]
	if g.trailer > 0 {
		c := min(g.trailer, len(buf))
		if c == 0 {
			return false
		}
		g.consume(c)
		g.trailer -= c
		if g.trailer == 0 {
			g.out = append(g.out, '\r', '\n')
			if g.args--; g.args == 0 {
				g.endCommand()
			}
		}
		return true
	}
	if g.body > 0 || len(buf) == 0 {
		return false
	}
	if g.args == 0 {
		if buf[0] == '*' {
			return g.multibulkHeader(buf)
		}
		return g.inline(buf)
	}
	return g.bulkHeader(buf)
}

// find returns the index of the first c in buf (buf is g.in[g.r:]) the way
// Redis's strchr finds it in its NUL-terminated query buffer: a NUL byte
// before it hides it for good. It remembers how far it has scanned, so a
// client trickling a long line costs linear, not quadratic, time.
func (g *gate) find(buf []byte, c byte) int {
	if g.hidden {
		return -1
	}
	for i := g.scanned; i < len(buf); i++ {
		switch buf[i] {
		case c:
			g.scanned = i
			return i
		case 0:
			g.hidden = true
			return -1
		}
	}
	g.scanned = len(buf)
	return -1
}

// consume advances past n parsed bytes.
func (g *gate) consume(n int) {
	g.r += n
	g.scanned, g.hidden = 0, false
}

// headerLine finds the '\r' ending a header line and reports whether the
// byte after it, which Redis skips unseen, has arrived too. It fails with
// tooBig once more than inlineMaxSize bytes are buffered without a line end.
func (g *gate) headerLine(buf []byte, tooBig string) (end int, ok bool) {
	if end = g.find(buf, '\r'); end >= 0 {
		return end, end+1 < len(buf)
	}
	if len(buf) > inlineMaxSize {
		g.fail(tooBig)
	}
	return 0, false
}

func (g *gate) multibulkHeader(buf []byte) bool {
	end, ok := g.headerLine(buf, "too big mbulk count string")
	if !ok {
		return false
	}
	n, ok := l2store.ParseInt(buf[1:end])
	switch {
	case !ok || n > maxInt32 || n > g.lim.maxArgs:
		return g.fail("invalid multibulk length")
	case n > unauthMaxArgs && g.unauth.Load():
		return g.fail("unauthenticated multibulk length")
	}
	g.consume(end + 2)
	if n <= 0 {
		return true // Redis ignores empty multibulks
	}
	g.args = n
	g.cmdBytes = int64(end + 2)
	g.out = appendHeader(g.out, '*', n)
	return true
}

func (g *gate) bulkHeader(buf []byte) bool {
	end, ok := g.headerLine(buf, "too big bulk count string")
	if !ok {
		return false
	}
	if buf[0] != '$' {
		return g.fail("expected '$', got '" + string(buf[:1]) + "'")
	}
	n, ok := l2store.ParseInt(buf[1:end])
	switch {
	case !ok || n < 0 || n > g.lim.maxBulk:
		return g.fail("invalid bulk length")
	case n > unauthMaxBulk && g.unauth.Load():
		return g.fail("unauthenticated bulk length")
	}
	g.cmdBytes += int64(end+2) + n + 2
	if g.cmdBytes > g.lim.maxQueryBuf {
		g.err = errQueryBufferLimit
		return false
	}
	g.consume(end + 2)
	g.out = appendHeader(g.out, '$', n)
	g.body = n
	if n == 0 {
		g.trailer = 2
	}
	return true
}

func (g *gate) inline(buf []byte) bool {
	nl := g.find(buf, '\n')
	if nl < 0 {
		if len(buf) > inlineMaxSize {
			g.fail("too big inline request")
		}
		return false
	}
	line := buf[:nl]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	args, ok := SplitArgs(line)
	if !ok {
		return g.fail("unbalanced quotes in request")
	}
	g.consume(nl + 1)
	if len(args) == 0 {
		return true
	}
	g.out = appendHeader(g.out, '*', int64(len(args)))
	for _, a := range args {
		g.out = appendHeader(g.out, '$', int64(len(a)))
		g.out = append(g.out, a...)
		g.out = append(g.out, '\r', '\n')
	}
	g.endCommand()
	return true
}

// fail records a protocol error; it is reported once the bytes before it
// are delivered. It returns false: no further progress.
func (g *gate) fail(msg string) bool {
	// Like Redis's addReplyErrorFormat, keep the reply on one line.
	msg = strings.NewReplacer("\r", " ", "\n", " ").Replace(msg)
	reply := "-ERR Protocol error: " + msg + "\r\n"
	g.protoErr.Store(&reply)
	g.err = errProtocol
	return false
}

var errProtocol = errors.New("proxy: protocol error")

// fill reads more input from the network, compacting or growing the
// buffer as needed.
func (g *gate) fill() error {
	if g.draining.Load() {
		return io.EOF
	}
	switch {
	case g.r == len(g.in):
		if cap(g.in) > gateReadChunk {
			// Give back a buffer grown for a long line.
			g.in = make([]byte, 0, gateReadChunk)
		}
		g.in, g.r = g.in[:0], 0
	case len(g.in) == cap(g.in) && g.r > 0:
		g.in, g.r = g.in[:copy(g.in, g.in[g.r:])], 0
	case len(g.in) == cap(g.in):
		// A header or inline line fails at inlineMaxSize, before this
		// reaches gateMaxBufferSize.
		grown := make([]byte, len(g.in), min(2*cap(g.in), gateMaxBufferSize))
		copy(grown, g.in)
		g.in = grown
	}
	m, err := g.Conn.Read(g.in[len(g.in):cap(g.in)])
	g.in = g.in[:len(g.in)+m]
	if m > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// Write sends replies; redcon calls it to flush.
func (g *gate) Write(p []byte) (int, error) {
	g.unflushed = 0
	return g.Conn.Write(p)
}

// SetReadDeadline is ignored once the gate drains, so redcon's idle
// deadline cannot undo drain's.
func (g *gate) SetReadDeadline(t time.Time) error {
	if g.draining.Load() {
		return nil
	}
	return g.Conn.SetReadDeadline(t)
}

// drain makes the connection finish: buffered commands still run, a read
// blocked on the network returns at once, and no more input is read.
func (g *gate) drain() {
	g.draining.Store(true)
	g.Conn.SetReadDeadline(time.Now())
}

// lingerTimeout bounds how long a draining connection waits for its client
// to stop sending before it is closed.
const lingerTimeout = 2 * time.Second

// Close writes a pending protocol error reply, then closes the connection.
// It is safe to call more than once and from any goroutine.
//
// A connection closed by drain lingers: closing a socket with unread input
// makes the kernel reset it, and a reset can destroy replies the client has
// not read yet. So it first half-closes (the client reads every reply, then
// EOF) and discards input until the client closes too, or lingerTimeout.
func (g *gate) Close() error {
	g.close.Do(func() {
		if reply := g.protoErr.Load(); reply != nil {
			g.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			g.Conn.Write([]byte(*reply))
		}
		if tc, ok := g.Conn.(interface{ CloseWrite() error }); ok && g.draining.Load() {
			if tc.CloseWrite() == nil {
				g.Conn.SetReadDeadline(time.Now().Add(lingerTimeout))
				io.Copy(io.Discard, g.Conn)
			}
		}
		g.closeErr = g.Conn.Close()
	})
	return g.closeErr
}

const maxInt32 = 1<<31 - 1

func appendHeader(dst []byte, prefix byte, n int64) []byte {
	dst = append(dst, prefix)
	dst = strconv.AppendInt(dst, n, 10)
	return append(dst, '\r', '\n')
}
