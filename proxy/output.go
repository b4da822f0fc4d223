package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/commands"
)

// Memory bounds of a connection's replies, and the write guard under
// memory pressure.
//
// Redis buffers a client's replies in memory for as long as the client
// does not read them, and client-output-buffer-limit closes a client
// whose buffer grows past a limit. The proxy holds fewer replies: redcon
// buffers a pipeline batch's replies and flushes them (afterCommand
// flushes every 64 KiB in the middle of a batch), and a flush to a client
// that does not read blocks the connection's goroutine, which stops
// reading commands. So a client that stops reading cannot make its
// buffer grow; it holds one batch of replies, and its goroutine, for as
// long as it does not read. Two bounds apply, in outputConn:
//
//   - Size (Config.ClientOutputBufferLimit, Redis's hard limit): a flush
//     of more reply bytes than the limit closes the connection without
//     sending them. Only one large reply (a big value, a long MGET or
//     LRANGE), or a batch of them, can reach it.
//   - Time (Config.ClientOutputTimeout): a client that takes less than
//     outputChunk bytes of its replies in that long has stopped reading,
//     and is closed, freeing its buffers and goroutine.
//
// Both close the connection with an error that Server.closed logs as
// Redis does ("closing client that reached max output buffer"). The pub/sub
// and MONITOR pumps (pinned.go) write through the same connection, so the
// bounds apply to them too.

// errOutputBufferLimit ends a connection whose pending replies exceed
// Config.ClientOutputBufferLimit.
var errOutputBufferLimit = errors.New("proxy: client output buffer limit reached")

// errOutputTimeout ends a connection whose client has not read its
// replies within Config.ClientOutputTimeout.
var errOutputTimeout = errors.New("proxy: client stopped reading its replies")

// outputChunk is how many reply bytes a client must take within
// ClientOutputTimeout: each write to the socket is at most this long and
// has its own deadline.
const outputChunk = 64 << 10

// outputLimits are the bounds an outputConn enforces.
type outputLimits struct {
	maxPending int64         // ClientOutputBufferLimit; 0 none
	timeout    time.Duration // ClientOutputTimeout; 0 none
	now        func() time.Time
}

// on reports whether any bound applies.
func (l *outputLimits) on() bool { return l.maxPending > 0 || l.timeout > 0 }

// outputConn is the connection under a gate: its Write, which redcon's
// flush reaches through the gate, enforces the output bounds. Reads and
// everything else go to the connection it wraps.
type outputConn struct {
	net.Conn
	lim    *outputLimits
	failed atomic.Pointer[error] // the bound that was reached, for the log
}

func newOutputConn(c net.Conn, lim *outputLimits) *outputConn {
	return &outputConn{Conn: c, lim: lim}
}

// Write sends p, the replies of one flush. It fails with
// errOutputBufferLimit, sending nothing, when p is longer than the limit,
// and with errOutputTimeout when the client takes no chunk of it within
// the timeout.
func (o *outputConn) Write(p []byte) (int, error) {
	if o.lim.maxPending > 0 && int64(len(p)) > o.lim.maxPending {
		return 0, o.fail(fmt.Errorf("%w: %d bytes pending, limit %d", errOutputBufferLimit, len(p), o.lim.maxPending))
	}
	if o.lim.timeout <= 0 {
		return o.Conn.Write(p)
	}
	written := 0
	for written < len(p) {
		chunk := p[written:min(len(p), written+outputChunk)]
		if err := o.Conn.SetWriteDeadline(o.lim.now().Add(o.lim.timeout)); err != nil {
			return written, err
		}
		n, err := o.Conn.Write(chunk)
		written += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return written, o.fail(fmt.Errorf("%w: %d bytes pending, not taken in %v", errOutputTimeout, len(p)-written, o.lim.timeout))
		}
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

func (o *outputConn) fail(err error) error {
	o.failed.Store(&err)
	return err
}

// outputFailure returns the bound g's connection reached, or nil.
func outputFailure(g *gate) error {
	if o, ok := g.Conn.(*outputConn); ok {
		if err := o.failed.Load(); err != nil {
			return *err
		}
	}
	return nil
}

// CloseWrite half-closes the connection, if the wrapped one can (gate.Close
// lingers with it).
func (o *outputConn) CloseWrite() error {
	if cw, ok := o.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// isOutputLimit reports whether err ended a connection for its output.
func isOutputLimit(err error) bool {
	return errors.Is(err, errOutputBufferLimit) || errors.Is(err, errOutputTimeout)
}

// errOOM is Redis's reply to a command that may grow memory when used
// memory is over maxmemory.
var errOOM = l2store.Error("OOM command not allowed when used memory > 'maxmemory'.")

// overMemory reports whether commands that may grow memory (Redis's
// denyoom flag: SET, APPEND, LPUSH...) are refused: Config.OverMemory
// says the process is short of memory.
func (s *Server) overMemory() bool {
	return s.cfg.OverMemory != nil && s.cfg.OverMemory()
}

// refuseOOMPinned answers -OOM, while the process is short of memory, to
// a command on a pinned connection (in a transaction, after WATCH) as Redis
// 7.0's processCommand does: a command that may grow memory (denyoom), and
// inside MULTI any command but EXEC, DISCARD, QUIT and RESET, since
// queueing takes memory too. The transaction then fails with EXECABORT.
func (s *Server) refuseOOMPinned(c *client, args [][]byte) bool {
	if !s.overMemory() {
		return false
	}
	m := commands.Find(args)
	if m == nil || !m.ArityOK(len(args)) {
		return false
	}
	p := c.pin
	reject := m.Flags&commands.DenyOOM != 0
	if p.multi {
		switch m.Name {
		case "exec", "discard", "quit", "reset":
		default:
			reject = true
		}
	}
	if !reject {
		return false
	}
	if p.multi {
		p.dirty = true
	}
	c.writeReply(errOOM)
	return true
}
