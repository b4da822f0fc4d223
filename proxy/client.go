package proxy

import (
	"context"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"

	"github.com/tidwall/redcon"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/commands"
)

// client is the state of one connection. Only the connection's goroutine
// writes the plain fields; fields read by other connections (CLIENT LIST,
// INFO) are atomic.
type client struct {
	srv    *Server
	conn   redcon.Conn
	gate   *gate
	id     int64
	addr   string // peer, "ip:port"
	laddr  string // local, "ip:port"
	fd     int
	ctx    context.Context // canceled when the connection closes
	cancel context.CancelFunc
	// protoCtx holds ctx carrying RESP2 and RESP3 (l2store.WithProto),
	// for the store's calls: see storeCtx.
	protoCtx [2]context.Context

	created int64        // Unix seconds
	proto   atomic.Int32 // 2 or 3
	authed  bool
	quit    bool // close after this reply

	name       atomicString
	libName    atomicString
	libVer     atomicString
	lastActive atomic.Int64 // Unix seconds
	lastCmd    atomic.Pointer[commands.Meta]

	commands atomic.Uint64
	reads    readCounters
	errors   atomic.Uint64

	scratch []byte    // reply encoding buffer
	keys    [][]byte  // key positions buffer
	group   []pending // pipeline batch buffer

	pin *pinState // dedicated upstream connection (pinned.go), nil if never pinned
}

func newClient(s *Server, conn redcon.Conn, g *gate) *client {
	ctx, cancel := context.WithCancel(context.Background())
	now := s.cfg.Now().Unix()
	c := &client{
		srv:     s,
		conn:    conn,
		gate:    g,
		id:      s.nextID.Add(1),
		addr:    conn.RemoteAddr(),
		laddr:   g.LocalAddr().String(),
		fd:      connFD(g.Conn),
		ctx:     ctx,
		cancel:  cancel,
		created: now,
		authed:  s.cfg.RequirePass == "",
	}
	c.protoCtx = [2]context.Context{l2store.WithProto(ctx, 2), l2store.WithProto(ctx, 3)}
	c.lastActive.Store(now)
	c.proto.Store(2)
	g.unauth.Store(!c.authed)
	return c
}

type atomicString = atomic.Pointer[string]

// connFD returns the socket's file descriptor, for CLIENT LIST, or -1.
func connFD(c net.Conn) int {
	fd := -1
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			rc.Control(func(f uintptr) { fd = int(f) })
		}
	}
	return fd
}

func (c *client) setAuthed(ok bool) {
	c.authed = ok
	c.gate.unauth.Store(!ok)
}

// storeCtx is the context of the store's calls: canceled when the
// connection closes, and carrying the client's protocol version.
func (c *client) storeCtx() context.Context {
	if c.proto.Load() >= 3 {
		return c.protoCtx[1]
	}
	return c.protoCtx[0]
}

// writeReply encodes r for the client's protocol.
func (c *client) writeReply(r l2store.Reply) {
	if r.IsError() {
		c.errors.Add(1)
	}
	c.scratch = r.AppendRESP(c.scratch[:0], int(c.proto.Load()))
	c.conn.WriteRaw(c.scratch)
	c.gate.unflushed += len(c.scratch)
	if cap(c.scratch) > 64<<10 {
		c.scratch = nil
	}
}

// writeError writes an error reply; msg starts with its code ("ERR ...").
func (c *client) writeError(msg string) {
	c.errors.Add(1)
	c.conn.WriteError(msg)
}

func (c *client) writeBulk(b []byte) {
	c.conn.WriteBulk(b)
	c.gate.unflushed += len(b)
}

func (c *client) writeNull() {
	if c.proto.Load() >= 3 {
		c.conn.WriteRaw(resp3Null)
		return
	}
	c.conn.WriteNull()
}

var resp3Null = []byte("_\r\n")

// info formats the client the way CLIENT LIST and CLIENT INFO do (Redis
// 7.2's fields). Figures Redis keeps per client that the proxy does not
// (query and output buffer sizes, memory) are reported as 0.
func (c *client) info(dst []byte, now int64) []byte {
	str := func(p *atomic.Pointer[string]) string {
		if s := p.Load(); s != nil {
			return *s
		}
		return ""
	}
	cmd := "NULL"
	if m := c.lastCmd.Load(); m != nil {
		cmd = m.Name
	}
	dst = append(dst, "id="...)
	dst = strconv.AppendInt(dst, c.id, 10)
	dst = append(dst, " addr="...)
	dst = append(dst, c.addr...)
	dst = append(dst, " laddr="...)
	dst = append(dst, c.laddr...)
	dst = append(dst, " fd="...)
	dst = strconv.AppendInt(dst, int64(c.fd), 10)
	dst = append(dst, " name="...)
	dst = append(dst, str(&c.name)...)
	dst = append(dst, " age="...)
	dst = strconv.AppendInt(dst, now-c.created, 10)
	dst = append(dst, " idle="...)
	dst = strconv.AppendInt(dst, now-c.lastActive.Load(), 10)
	dst = append(dst, " flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd="...)
	dst = append(dst, cmd...)
	dst = append(dst, " user=default redir=-1 resp="...)
	dst = strconv.AppendInt(dst, int64(c.proto.Load()), 10)
	dst = append(dst, " lib-name="...)
	dst = append(dst, str(&c.libName)...)
	dst = append(dst, " lib-ver="...)
	dst = append(dst, str(&c.libVer)...)
	return append(dst, '\n')
}
