package proxy

// Connection state on a remote upstream. Most commands run on the store's
// pooled connections, shared by every client, which carry no state from
// one command to the next. The commands that keep state on their
// connection, or hold it for long, run on a dedicated upstream connection
// of the client's own (Dedicator), which the client is "pinned" to:
//
//	Command                          What the proxy does
//	MULTI (one server, Sentinel)     pins the client to a dedicated connection until EXEC or DISCARD
//	MULTI (Redis Cluster)            queues the commands itself; EXEC runs them (Dedicator.Transaction)
//	WATCH                            pins the client to the watched key's node until EXEC, DISCARD or UNWATCH
//	(P|S)SUBSCRIBE, (P|S)UNSUBSCRIBE detaches the connection and pumps it to and from a dedicated one, for good
//	MONITOR                          the same
//	blocking commands                run on a dedicated connection, which waits as long as the command
//	  (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP, WAIT, XREAD and XREADGROUP with BLOCK)
//	CLIENT TRACKING ON               error: sidecache's L1 is the client-side cache (OFF: +OK)
//	CLIENT CACHING                   Redis's error for a client without tracking
//	CLIENT GETREDIR                  -1 (no tracking), as Redis
//	CLIENT TRACKINGINFO              tracking off, as Redis
//	CLIENT REPLY                     ON: +OK; OFF and SKIP: error
//	CLIENT NO-EVICT                  ON, OFF: +OK (sidecache never evicts clients)
//	CLIENT UNBLOCK                   error: a client ID is the proxy's, not the upstream's
//	READONLY, READWRITE, ASKING      Redis's error for a server without cluster support, as sidecache presents itself
//	SYNC, PSYNC                      error: replication does not go through the proxy
//
// While pinned for a transaction or WATCH, every command of the client
// goes to its dedicated connection, GET included (a GET from L1 would not
// see what the transaction sees), and the commands Redis rejects too (so
// the upstream flags the transaction, as Redis does). The exceptions:
// QUIT and RESET end the pin and run as usual; the connection commands the
// proxy answers itself (AUTH, HELLO, SELECT, CLIENT SETNAME and the other
// CLIENT subcommands it answers) run in the proxy, and inside MULTI are
// refused with Redis's "Command not allowed inside a transaction" (they
// would change the proxy's connection, not the upstream's, at the wrong
// time), which also makes EXEC fail, like any rejected command. The other
// commands the proxy answers (PING, ECHO, INFO, TIME, COMMAND, CONFIG GET)
// are queued upstream inside MULTI and answered by the proxy outside it.
// SUBSCRIBE, MONITOR and the CLIENT, READONLY... commands the table says
// the proxy answers are refused inside MULTI the same way. A blocking
// command while WATCHing blocks on the pinned connection. In Redis
// Cluster, WATCH pins to the watched key's node, so a transaction's keys
// on other nodes get that node's -MOVED. After EXEC, the keys of every write
// queued in the transaction are dropped from L1 (FLUSHALL, FLUSHDB: all of
// L1), whether EXEC ran them or not. If the dedicated connection fails,
// its state is lost with it: the client gets the error and is
// disconnected, so that it knows.
//
// A subscriber or monitor connection receives replies at any time, so it
// leaves redcon's loop (Detach) for a pump of two goroutines: one forwards
// the upstream's replies and pushes to the client byte for byte, the other
// reads the client's commands and forwards them upstream unchanged, so
// that Redis itself answers what subscribed mode allows (PING's special
// reply, RESP2's errors for the rest). It stays a pump until it closes,
// even once unsubscribed: every command then runs upstream (reads skip
// L1; writes drop their keys from L1 once the upstream has run them). The
// connection commands the proxy answers, QUIT and RESET are answered by the
// proxy in their turn: it first sends a barrier (PING with a random token)
// and waits for its reply, which also tells whether the connection is in
// RESP2 subscribed mode, where Redis refuses them. RESET replaces the
// dedicated connection by a fresh one. HELLO switches the upstream's
// protocol too. In cluster mode a pump reaches one node: SUBSCRIBE and
// PSUBSCRIBE receive every node's messages (Redis Cluster broadcasts
// them), SSUBSCRIBE the first channel's node, MONITOR slot 0's master.
//
// A blocking command holds its client's goroutine (never another's) until
// the upstream replies. Meanwhile a watcher peeks at the client's socket:
// if the client hangs up, the dedicated connection is closed so the
// command ends. (A client that sends more commands behind a blocking one
// is not watched any further.)

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tidwall/redcon"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/commands"
)

// Dedicator is implemented by stores that pass commands to a remote
// upstream (the remote store), and can give a client a connection of its
// own there. Without it, pinning is off and the commands above go to the
// store like any other.
type Dedicator interface {
	// DedicatedConn returns a connection speaking proto (2 or 3) to the
	// node that owns key (nil: any), set up for the store's database and
	// credentials. The caller must Release or Close it.
	DedicatedConn(ctx context.Context, proto int, key []byte) (l2store.Conn, error)
	// Clustered reports whether the upstream is a Redis Cluster: MULTI
	// without WATCH is then queued by the proxy and run by Transaction.
	Clustered() bool
	// Transaction runs MULTI, cmds, EXEC on the node of their keys and
	// returns EXEC's reply as the upstream sent it, or Redis Cluster's
	// -CROSSSLOT error if the keys span several slots.
	Transaction(ctx context.Context, proto int, cmds [][][]byte) ([]byte, error)
}

// pinKind is what a command needs of the upstream connection.
type pinKind uint8

const (
	pinNone     pinKind = iota
	pinMulti            // MULTI
	pinWatch            // WATCH
	pinPump             // subscriptions and MONITOR
	pinBlocking         // blocking commands (XREAD and XREADGROUP only with BLOCK)
	pinRefuse           // answered by the proxy (refuseReply): never on a pooled connection
)

var (
	mMulti        = lookupMeta("multi")
	mExec         = lookupMeta("exec")
	mDiscard      = lookupMeta("discard")
	mWatch        = lookupMeta("watch")
	mUnwatch      = lookupMeta("unwatch")
	mQuit         = lookupMeta("quit")
	mReset        = lookupMeta("reset")
	mHello        = lookupMeta("hello")
	mAuth         = lookupMeta("auth")
	mSelect       = lookupMeta("select")
	mPing         = lookupMeta("ping")
	mGet          = lookupMeta("get")
	mMGet         = lookupMeta("mget")
	mClient       = lookupMeta("client")
	mSSubscribe   = lookupMeta("ssubscribe")
	mSUnsubscribe = lookupMeta("sunsubscribe")
	mXRead        = lookupMeta("xread")
	mXReadGroup   = lookupMeta("xreadgroup")
)

// pinKinds maps the commands that need more than a pooled connection.
var pinKinds = func() map[*commands.Meta]pinKind {
	k := map[*commands.Meta]pinKind{mMulti: pinMulti, mWatch: pinWatch, lookupMeta("wait"): pinBlocking}
	for _, n := range []string{"subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe", "monitor"} {
		k[lookupMeta(n)] = pinPump
	}
	for _, n := range commands.Names() {
		if m := lookupMeta(n); m.Flags&commands.Blocking != 0 {
			k[m] = pinBlocking
		}
	}
	for _, n := range []string{
		"client|tracking", "client|caching", "client|getredir", "client|trackinginfo",
		"client|reply", "client|no-evict", "client|unblock",
		"readonly", "readwrite", "asking", "sync", "psync",
	} {
		k[lookupMeta(n)] = pinRefuse
	}
	return k
}()

// kind returns what m needs when invoked with args.
func kind(m *commands.Meta, args [][]byte) pinKind {
	k := pinKinds[m]
	if k == pinBlocking && (m == mXRead || m == mXReadGroup) && !streamBlock(args) {
		return pinNone
	}
	return k
}

// streamBlock reports whether XREAD or XREADGROUP args have the BLOCK
// option (before STREAMS; GROUP takes two arguments, COUNT one).
func streamBlock(args [][]byte) bool {
	for i := 1; i < len(args); i++ {
		switch a := args[i]; {
		case bytes.EqualFold(a, []byte("streams")):
			return false
		case bytes.EqualFold(a, []byte("block")):
			return true
		case bytes.EqualFold(a, []byte("group")):
			i += 2
		case bytes.EqualFold(a, []byte("count")):
			i++
		}
	}
	return false
}

const (
	errNotInMulti  = "ERR Command not allowed inside a transaction"
	errExecAbort   = "EXECABORT Transaction discarded because of previous errors."
	errNoCluster   = "ERR This instance has cluster support disabled"
	errUnsupported = "ERR sidecache does not support "
)

// refuseReply is the proxy's answer to a pinRefuse command (see the table
// at the top of this file).
func refuseReply(m *commands.Meta, args [][]byte) l2store.Reply {
	arg := func(i int) string {
		if i < len(args) {
			return strings.ToLower(cstring(args[i], -1))
		}
		return ""
	}
	switch m.Name {
	case "client|tracking":
		if arg(2) == "off" {
			return l2store.OK
		}
		return l2store.Error(errUnsupported + "CLIENT TRACKING: its L1 is the client-side cache")
	case "client|caching":
		return l2store.Error("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled")
	case "client|getredir":
		return l2store.Int(-1)
	case "client|trackinginfo":
		return l2store.Map(
			l2store.BulkString("flags"), l2store.Reply{Kind: l2store.KindSet, Elems: []l2store.Reply{l2store.BulkString("off")}},
			l2store.BulkString("redirect"), l2store.Int(-1),
			l2store.BulkString("prefixes"), l2store.Array(),
		)
	case "client|reply":
		switch arg(2) {
		case "on":
			return l2store.OK
		case "off", "skip":
			return l2store.Error(errUnsupported + "CLIENT REPLY OFF or SKIP")
		}
		return l2store.Error("ERR syntax error")
	case "client|no-evict":
		switch arg(2) {
		case "on", "off":
			return l2store.OK
		}
		return l2store.Error("ERR syntax error")
	case "client|unblock":
		return l2store.Error(errUnsupported + "CLIENT UNBLOCK")
	case "readonly", "readwrite", "asking":
		return l2store.Error(errNoCluster)
	}
	return l2store.Error(errUnsupported + "replication (SYNC, PSYNC)")
}

// pinState is a client's dedicated connection and what it holds. Only the
// client's goroutine uses it, and, once detached, its pump.
type pinState struct {
	conn    l2store.Conn // nil when not pinned
	proto   int          // conn's protocol
	reproto bool         // conn's protocol was switched by HELLO: close it, never pool it
	multi   bool         // in MULTI
	watch   bool         // keys are watched
	local   bool         // cluster MULTI without WATCH: queued here, in queued
	dirty   bool         // a command was refused in MULTI: EXEC aborts
	queued  queue        // cluster MULTI: every command; else the writes, for L1
	pump    *pump        // set when the connection is detached
}

func (p *pinState) reset() {
	p.queued.reset()
	*p = pinState{queued: p.queued, pump: p.pump}
}

// queue holds the commands queued in a MULTI.
type queue []queuedCommand

type queuedCommand struct {
	m    *commands.Meta // nil: missing from the table
	args [][]byte       // a copy
}

// add queues a copy of args.
func (q *queue) add(m *commands.Meta, args [][]byte) {
	n := 0
	for _, a := range args {
		n += len(a)
	}
	buf := make([]byte, 0, n)
	cp := make([][]byte, len(args))
	for i, a := range args {
		buf = append(buf, a...)
		cp[i] = buf[len(buf)-len(a):]
	}
	*q = append(*q, queuedCommand{m, cp})
}

func (q *queue) reset() {
	clear(*q)
	*q = (*q)[:0]
}

// pinned reports whether the client's commands all go to its dedicated
// connection (or queue, in cluster MULTI).
func (c *client) pinned() bool { return c.pin != nil && (c.pin.conn != nil || c.pin.local) }

func (c *client) pinState() *pinState {
	if c.pin == nil {
		c.pin = &pinState{}
	}
	return c.pin
}

// pinnedCommand runs a command that needs a dedicated upstream connection
// (see the table at the top of this file), for a client that is not
// pinned, and reports whether it did. The command's existence, arity and
// authentication have been checked.
func (s *Server) pinnedCommand(c *client, m *commands.Meta, args [][]byte) bool {
	k := kind(m, args)
	if k == pinNone {
		return false
	}
	if k == pinRefuse {
		c.writeReply(refuseReply(m, args))
		return true
	}
	d := s.ded
	if d == nil {
		return false
	}
	switch k {
	case pinMulti:
		if d.Clustered() {
			p := c.pinState()
			p.local, p.multi = true, true
			c.writeReply(l2store.OK)
			return true
		}
		s.pin(c, d, nil, m, args)
	case pinWatch:
		s.pin(c, d, args[1], m, args)
	case pinPump:
		s.startPump(c, d, nil, m, args)
	case pinBlocking:
		s.blockingCommand(c, d, m, args)
	}
	return true
}

// wantsPin reports whether the command must not be batched with others:
// the client is pinned, or the command needs a dedicated connection or
// the proxy's answer (pinnedCommand takes it). m is nil for a command
// missing from the table.
func (s *Server) wantsPin(c *client, m *commands.Meta, args [][]byte) bool {
	return c.pinned() || m != nil && kind(m, args) != pinNone
}

// pin opens the client's dedicated connection to key's node and runs the
// command (MULTI, WATCH) there.
func (s *Server) pin(c *client, d Dedicator, key []byte, m *commands.Meta, args [][]byte) {
	proto := int(c.proto.Load())
	conn, err := d.DedicatedConn(c.ctx, proto, key)
	if err != nil {
		c.writeError(s.errorText(err))
		return
	}
	p := c.pinState()
	p.conn, p.proto = conn, proto
	s.forward(c, p, m, true, args)
}

// unpin ends the pin, giving the connection back for reuse (release) or
// closing it.
func (s *Server) unpin(c *client, release bool) {
	p := c.pin
	if p == nil {
		return
	}
	if p.conn != nil {
		if release && !p.reproto {
			p.conn.Release()
		} else {
			p.conn.Close()
		}
	}
	p.reset()
}

// pinLost ends a pin whose connection failed: its state is gone, so the
// client gets the error and is disconnected.
func (s *Server) pinLost(c *client, err error) {
	s.unpin(c, false)
	c.writeError(s.errorText(err))
	c.quit = true
}

// releasePin is Server.closed's hook. For a connection redcon has just
// detached, it starts the pump and reports true: the connection is not
// closed yet (the pump calls closed again when it ends). Otherwise it
// closes the client's dedicated connection, if any.
func (s *Server) releasePin(c *client) bool {
	p := c.pin
	if p == nil {
		return false
	}
	if p.pump != nil && p.pump.start() {
		return true
	}
	s.unpin(c, false)
	return false
}

// pinnedDispatch runs a command of a pinned client (see the top of this
// file). It replaces dispatch's checks: the upstream, or the proxy's
// queue, applies Redis's.
func (s *Server) pinnedDispatch(c *client, args [][]byte) {
	p := c.pin
	m := commands.Find(args)
	ok := m != nil && m.ArityOK(len(args))
	if ok {
		c.lastCmd.Store(m)
		switch k := kind(m, args); {
		case m == mQuit || m == mReset:
			s.unpin(c, false)
			s.handlers[m](c, m, args)
			return
		case s.connCommand(m):
			if p.multi {
				p.dirty = true
				c.writeError(errNotInMulti)
				return
			}
			proto := c.proto.Load()
			s.handlers[m](c, m, args)
			if c.proto.Load() != proto && p.conn != nil {
				s.switchProto(c, p)
			}
			return
		case (k == pinRefuse || k == pinPump) && p.multi:
			p.dirty = true
			c.writeError(errNotInMulti)
			return
		case k == pinRefuse:
			c.writeReply(refuseReply(m, args))
			return
		case k == pinPump:
			// WATCH, then SUBSCRIBE or MONITOR: the pump takes the
			// connection over, and forwards the rest (EXEC included).
			conn := p.conn
			p.reset()
			s.startPump(c, s.ded, conn, m, args)
			return
		case !p.multi && s.handlers[m] != nil && m != mGet && m != mMGet:
			s.handlers[m](c, m, args) // PING, INFO...: not data
			return
		case k == pinBlocking && !p.multi:
			reply, hung, err := s.block(c, p.conn, args, false)
			if err != nil {
				s.pinLost(c, err)
				return
			}
			s.invalidate(c, m, args)
			c.writeReply(l2store.Raw(reply))
			c.quit = hung
			return
		}
	}
	switch {
	case p.local:
		s.queueLocal(c, p, m, ok, args)
	case ok && m == mExec && p.multi && p.dirty:
		s.abortExec(c, p)
	default:
		s.forward(c, p, m, ok, args)
	}
}

// abortExec answers EXEC for a transaction in which the proxy refused a
// command: the upstream does not know it must fail, so it gets DISCARD.
func (s *Server) abortExec(c *client, p *pinState) {
	err := p.conn.Send([][]byte{[]byte("DISCARD")})
	if err == nil {
		_, err = p.conn.Receive()
	}
	if err != nil {
		s.pinLost(c, err)
		return
	}
	s.unpin(c, true)
	c.writeError(errExecAbort)
}

// connCommand reports whether m is a connection command the proxy answers
// itself (AUTH, HELLO, SELECT, its CLIENT subcommands).
func (s *Server) connCommand(m *commands.Meta) bool {
	return (m == mAuth || m == mHello || m == mSelect || m.Parent == mClient) && s.handlers[m] != nil
}

// switchProto makes the dedicated connection speak the client's new
// protocol, after HELLO.
func (s *Server) switchProto(c *client, p *pinState) {
	proto := int(c.proto.Load())
	err := p.conn.Send([][]byte{[]byte("HELLO"), []byte(strconv.Itoa(proto))})
	var reply []byte
	if err == nil {
		reply, err = p.conn.Receive()
	}
	if err != nil || len(reply) == 0 || reply[0] == '-' {
		// The proxy's reply to HELLO is written; what follows fails.
		s.unpin(c, false)
		c.quit = true
		return
	}
	p.proto, p.reproto = proto, true
}

var (
	replyOK     = []byte("+OK\r\n")
	replyQueued = []byte("+QUEUED\r\n")
)

// forward runs a command on the pinned connection, tracks the state it
// changes there, and writes its reply. ok is false for a command Redis
// rejects (unknown, wrong arity), which the upstream rejects too.
func (s *Server) forward(c *client, p *pinState, m *commands.Meta, ok bool, args [][]byte) {
	err := p.conn.Send(args)
	var reply []byte
	if err == nil {
		reply, err = p.conn.Receive()
	}
	if err != nil {
		s.pinLost(c, err)
		return
	}
	switch {
	case m == mExec && (p.multi || !ok):
		// EXEC ends the transaction and the watch, even when it aborts,
		// and so does an EXEC with arguments.
		s.invalidateQueued(c, &p.queued)
		p.multi, p.watch = false, false
	case !ok:
		if p.multi && bytes.Equal(reply, replyQueued) {
			p.queued.add(nil, args) // the upstream knows it (a module's): count it as a write
		}
	case m == mDiscard:
		if p.multi && bytes.Equal(reply, replyOK) {
			p.multi, p.watch = false, false
		}
	case m == mMulti:
		if bytes.Equal(reply, replyOK) {
			p.multi = true
		}
	case m == mWatch:
		if !p.multi && bytes.Equal(reply, replyOK) {
			p.watch = true
		}
	case m == mUnwatch:
		if !p.multi {
			p.watch = false
		}
	case p.multi:
		if bytes.Equal(reply, replyQueued) && m.Flags&(commands.Write|commands.MayReplicate) != 0 {
			p.queued.add(m, args)
		}
	default:
		s.invalidate(c, m, args) // run now (WATCH without MULTI)
	}
	c.writeReply(l2store.Raw(reply))
	if !p.multi && !p.watch {
		s.unpin(c, true)
	}
}

// invalidateQueued drops from L1 the keys of a transaction's writes.
func (s *Server) invalidateQueued(c *client, q *queue) {
	for _, cmd := range *q {
		s.invalidate(c, cmd.m, cmd.args)
	}
	q.reset()
}

// queueLocal queues a command of a cluster MULTI, after the checks Redis
// makes when it queues one, or runs EXEC or DISCARD.
func (s *Server) queueLocal(c *client, p *pinState, m *commands.Meta, ok bool, args [][]byte) {
	switch {
	case m == mExec && !ok:
		p.reset()
		c.writeReply(commands.WrongArity(m))
	case m == mExec:
		s.execLocal(c, p)
	case !ok:
		if m == nil && s.passUnknown(args) && s.metas != nil && upstreamKnows(s.metas.CommandMeta(c.ctx, args)) {
			p.queued.add(nil, args) // the upstream knows it (a module's)
			c.writeReply(l2store.Status("QUEUED"))
			return
		}
		_, errReply := commands.Check(args, s.supportedFn)
		p.dirty = true
		c.writeReply(errReply)
	case m == mDiscard:
		p.reset()
		c.writeReply(l2store.OK)
	case m == mMulti:
		c.writeError("ERR MULTI calls can not be nested")
	case m == mWatch:
		c.writeError("ERR WATCH inside MULTI is not allowed")
	case m.Flags&commands.NoMulti != 0:
		p.dirty = true
		c.writeError(errNotInMulti)
	default:
		p.queued.add(m, args)
		c.writeReply(l2store.Status("QUEUED"))
	}
}

// execLocal runs a cluster MULTI's queued commands as one transaction.
func (s *Server) execLocal(c *client, p *pinState) {
	if p.dirty {
		p.reset()
		c.writeError(errExecAbort)
		return
	}
	d := s.ded
	cmds := make([][][]byte, len(p.queued))
	for i, q := range p.queued {
		cmds[i] = q.args
	}
	reply, err := d.Transaction(c.ctx, int(c.proto.Load()), cmds)
	s.invalidateQueued(c, &p.queued)
	p.reset()
	if err != nil {
		c.writeError(s.errorText(err))
		return
	}
	c.writeReply(l2store.Raw(reply))
}

// blockingCommand runs a blocking command on a dedicated connection to
// its first key's node, and gives the connection back afterwards.
func (s *Server) blockingCommand(c *client, d Dedicator, m *commands.Meta, args [][]byte) {
	var key []byte
	if ks := m.Keys(c.keys[:0], args); len(ks) > 0 {
		key = ks[0]
		clear(ks)
	}
	conn, err := d.DedicatedConn(c.ctx, int(c.proto.Load()), key)
	if err != nil {
		c.writeError(s.errorText(err))
		return
	}
	reply, hung, err := s.block(c, conn, args, true)
	s.invalidate(c, m, args) // even a failed pop may have popped
	if err != nil {
		conn.Close()
		c.writeError(s.errorText(err))
		c.quit = hung
		return
	}
	conn.Release()
	c.writeReply(l2store.Raw(reply))
	c.quit = hung
}

// block runs a blocking command on conn with no read timeout, while a
// watcher closes conn if the client hangs up, or the client's context
// ends (Shutdown's deadline). follow lets conn follow cluster
// redirections (a connection without state). It reports whether the
// client is gone.
func (s *Server) block(c *client, conn l2store.Conn, args [][]byte, follow bool) (reply []byte, hung bool, err error) {
	conn.SetReadTimeout(0)
	stop := watchHangup(c.gate, func() { conn.Close() })
	stopCtx := context.AfterFunc(c.ctx, func() { conn.Close() })
	if follow {
		reply, err = conn.Do(args)
	} else if err = conn.Send(args); err == nil {
		reply, err = conn.Receive()
	}
	canceled := !stopCtx()
	hung = stop() || canceled
	conn.SetReadTimeout(-1)
	return reply, hung, err
}

// watchHangup watches the client's socket while its goroutine waits on a
// blocking command, and calls hangup if the client goes away: the end of
// its stream, an error, or its connection closed by the server (CLIENT
// KILL). It peeks without reading; once the client has sent more, or the
// server drains, it stops watching. stop ends the watch, restores the
// socket's read deadline, and reports whether hangup was called.
func watchHangup(g *gate, hangup func()) (stop func() bool) {
	sc, ok := g.Conn.(syscall.Conn)
	if !ok {
		return func() bool { return false }
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return func() bool { return false }
	}
	var stopping, hung atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b [1]byte
		for !stopping.Load() {
			var n int
			var perr error
			err := rc.Read(func(fd uintptr) bool {
				n, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
				return perr != syscall.EAGAIN && perr != syscall.EWOULDBLOCK
			})
			switch {
			case stopping.Load():
				return
			case errors.Is(err, os.ErrDeadlineExceeded) && g.draining.Load():
				// Shutdown's drain: the command may finish; if not, the
				// client's context ends at Shutdown's deadline.
				return
			case errors.Is(err, os.ErrDeadlineExceeded):
				// redcon's idle deadline: a blocked client is not idle
				// (Redis does not time it out either). Watch on.
				g.Conn.SetReadDeadline(time.Time{})
			case perr == syscall.EINTR:
			case err != nil || perr != nil || n == 0:
				hung.Store(true)
				hangup()
				return
			default:
				return // the client sent more: it is there
			}
		}
	}()
	return func() bool {
		stopping.Store(true)
		g.Conn.SetReadDeadline(time.Unix(1, 0))
		<-done
		if g.draining.Load() {
			g.Conn.SetReadDeadline(time.Unix(1, 0)) // as drain left it
		} else {
			g.Conn.SetReadDeadline(time.Time{}) // redcon sets its idle deadline before its next read
		}
		return hung.Load()
	}
}

// pump moves a detached connection's traffic: fromUpstream writes the
// dedicated connection's replies and pushes to the client, fromClient
// forwards the client's commands, or answers those the proxy answers.
type pump struct {
	s  *Server
	c  *client
	d  Dedicator
	dc redcon.DetachedConn

	wmu sync.Mutex // serializes writes and flushes to dc

	mu       sync.Mutex
	up       l2store.Conn  // the dedicated connection; RESET replaces it
	replace  []byte        // HELLO: the reply written instead of the upstream's
	replaced chan struct{} // closed when replace is written
	finished bool

	// The barrier: PING token. Its reply is one of syncReply and
	// syncReplySub (in RESP2 subscribed mode); syncMonitor ends the line
	// MONITOR shows for it.
	token, syncReply, syncReplySub, syncMonitor []byte
	barrier                                     chan bool // the barrier's reply arrived: in RESP2 subscribed mode?

	started atomic.Bool
	done    chan struct{} // closed by finish
	once    sync.Once
	exits   atomic.Int32

	// fromClient's: a transaction's writes, dropped from L1 after EXEC.
	multi  bool
	queued queue
}

// startPump detaches the client's connection and starts pumping it to and
// from conn (nil: a new dedicated connection), beginning with args. The
// goroutines start once redcon has let go of the connection (releasePin).
func (s *Server) startPump(c *client, d Dedicator, conn l2store.Conn, m *commands.Meta, args [][]byte) {
	if conn == nil {
		var key []byte
		if (m == mSSubscribe || m == mSUnsubscribe) && len(args) > 1 {
			key = args[1]
		}
		var err error
		if conn, err = d.DedicatedConn(c.ctx, int(c.proto.Load()), key); err != nil {
			c.writeError(s.errorText(err))
			return
		}
	}
	var tok [16]byte
	rand.Read(tok[:])
	token := []byte("sidecache-barrier-" + hex.EncodeToString(tok[:]))
	bulk := append(appendHeader(nil, '$', int64(len(token))), token...)
	bulk = append(bulk, '\r', '\n')
	pp := &pump{
		s: s, c: c, d: d, up: conn,
		token:        token,
		syncReply:    bulk,
		syncReplySub: append([]byte("*2\r\n$4\r\npong\r\n"), bulk...),
		syncMonitor:  []byte(`"PING" "` + string(token) + "\"\r\n"),
		barrier:      make(chan bool),
		done:         make(chan struct{}),
	}
	conn.SetReadTimeout(0)
	sendErr := conn.Send(args)
	c.pinState().pump = pp
	pp.dc = c.conn.Detach()
	c.conn = pp.dc
	c.gate.SetReadDeadline(time.Time{}) // Redis does not time out subscribers
	if sendErr != nil {
		pp.finish()
	}
}

// start starts the pump's goroutines, once; it reports whether it did.
func (pp *pump) start() bool {
	if !pp.started.CompareAndSwap(false, true) {
		return false
	}
	// The client's context ends at Shutdown's deadline, or when closed
	// unregisters the client after the pump (then finish does nothing).
	context.AfterFunc(pp.c.ctx, pp.finish)
	go pp.fromUpstream()
	go pp.fromClient()
	return true
}

func (pp *pump) upstream() l2store.Conn {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.up
}

// finish closes both connections, once.
func (pp *pump) finish() {
	pp.once.Do(func() {
		close(pp.done)
		pp.mu.Lock()
		pp.finished = true
		up := pp.up
		pp.mu.Unlock()
		up.Close()
		pp.wmu.Lock()
		pp.dc.Close()
		pp.wmu.Unlock()
	})
}

// exit is called by each goroutine as it ends; the last one unregisters
// the client.
func (pp *pump) exit() {
	if pp.exits.Add(1) == 2 {
		pp.s.closed(pp.dc, nil)
	}
}

func (pp *pump) fromUpstream() {
	defer pp.exit()
	defer pp.finish()
	unflushed := true // replies to the commands before the detach
	for {
		up := pp.upstream()
		if unflushed && up.Buffered() == 0 {
			// Nothing more to forward at once: send what is written.
			pp.wmu.Lock()
			err := pp.dc.Flush()
			pp.wmu.Unlock()
			if err != nil {
				return
			}
			unflushed = false
		}
		frame, err := up.Receive()
		if err != nil {
			if pp.upstream() != up {
				continue // RESET replaced it
			}
			return
		}
		switch {
		case bytes.Equal(frame, pp.syncReply) || bytes.Equal(frame, pp.syncReplySub):
			select {
			case pp.barrier <- len(frame) != len(pp.syncReply):
			case <-pp.done:
				return
			}
			continue
		case frame[0] == '+' && bytes.HasSuffix(frame, pp.syncMonitor):
			continue // MONITOR's line for the barrier
		}
		pp.mu.Lock()
		if pp.replace != nil && frame[0] != '>' && frame[0] != '+' {
			frame = pp.replace
			pp.replace = nil
			close(pp.replaced)
		}
		pp.mu.Unlock()
		pp.wmu.Lock()
		pp.dc.WriteRaw(frame)
		pp.wmu.Unlock()
		unflushed = true
	}
}

func (pp *pump) fromClient() {
	defer pp.exit()
	defer pp.finish()
	for {
		cmd, err := pp.dc.ReadCommand()
		if err != nil {
			if pp.c.gate.draining.Load() {
				pp.sync(drainSyncTimeout) // the replies to what came before reach the client
			}
			return
		}
		if !pp.command(cmd.Args) {
			return
		}
	}
}

// drainSyncTimeout bounds how long a draining pump waits for the replies
// to its client's last commands.
const drainSyncTimeout = time.Second

// sync sends the barrier and waits for its reply, which comes after the
// replies to every command sent before. It reports whether the connection
// is in RESP2 subscribed mode, and false for ok if the pump ended (or
// timeout > 0 passed) first.
func (pp *pump) sync(timeout time.Duration) (restricted, ok bool) {
	if err := pp.upstream().Send([][]byte{[]byte("PING"), pp.token}); err != nil {
		return false, false
	}
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case r := <-pp.barrier:
		return r, true
	case <-pp.done:
	case <-expired:
	}
	return false, false
}

// command runs one of the client's commands; false ends the pump.
func (pp *pump) command(args [][]byte) bool {
	s, c := pp.s, pp.c
	c.commands.Add(1)
	c.lastActive.Store(s.stats.ops.unixSeconds())
	m := commands.Find(args)
	ok := m != nil && m.ArityOK(len(args))
	if ok {
		c.lastCmd.Store(m)
	}
	switch {
	case !c.authed && !(ok && m.Flags&commands.NoAuth != 0):
		reply := l2store.Error("NOAUTH Authentication required.")
		if m != nil && !ok {
			reply = commands.WrongArity(m)
		}
		return pp.local(nil, func() { c.writeReply(reply) })
	case !ok:
		return pp.forward(m, ok, args)
	case s.deny.denied(m): // security.go; not forwarded, so not in a MULTI upstream either
		return pp.local(nil, func() { c.writeReply(deniedReply(m)) })
	case m == mQuit:
		pp.local(nil, func() { c.writeReply(l2store.OK) })
		return false
	case m == mReset:
		return pp.reset(m, args)
	case pinKinds[m] == pinRefuse:
		return pp.local(m, func() { c.writeReply(refuseReply(m, args)) })
	case m == mHello:
		return pp.hello(m, args)
	case s.handlers[m] != nil && m != mPing && m != mGet && m != mMGet:
		return pp.local(m, func() { s.handlers[m](c, m, args) })
	}
	return pp.forward(m, ok, args)
}

// local answers a command in the proxy, in its turn: after the replies to
// the commands before it. Like Redis, it refuses m (if not nil) in RESP2
// subscribed mode.
func (pp *pump) local(m *commands.Meta, answer func()) bool {
	restricted, ok := pp.sync(0)
	if !ok {
		return false
	}
	pp.wmu.Lock()
	defer pp.wmu.Unlock()
	if m != nil && restricted {
		pp.c.writeError(subscribedError(m))
	} else {
		answer()
	}
	return pp.dc.Flush() == nil && !pp.c.quit
}

func subscribedError(m *commands.Meta) string {
	return "ERR Can't execute '" + m.Name + "': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
}

// forward sends a command upstream; its reply comes through fromUpstream.
// A write's keys are dropped from L1 before it is sent and again once the
// upstream has run it (after EXEC in a transaction).
func (pp *pump) forward(m *commands.Meta, ok bool, args [][]byte) bool {
	s, c := pp.s, pp.c
	write := m == nil || m.Flags&(commands.Write|commands.MayReplicate) != 0
	if write && !pp.multi {
		s.invalidate(c, m, args)
	}
	if err := pp.upstream().Send(args); err != nil {
		return false
	}
	switch {
	case m == mMulti && ok:
		pp.multi = true
	case m == mExec && (pp.multi || !ok):
		pp.multi = false
		if _, ok := pp.sync(0); !ok {
			return false
		}
		s.invalidateQueued(c, &pp.queued)
	case m == mDiscard && ok:
		pp.multi = false
		pp.queued.reset()
	case pp.multi:
		if write {
			pp.queued.add(m, args)
		}
	case write:
		if _, ok := pp.sync(0); !ok {
			return false
		}
		s.invalidate(c, m, args)
	}
	return true
}

// reset answers RESET: the dedicated connection is replaced by a fresh
// one, and the client's state is reset as Redis resets it.
func (pp *pump) reset(m *commands.Meta, args [][]byte) bool {
	if _, ok := pp.sync(0); !ok {
		return false
	}
	c := pp.c
	up, err := pp.d.DedicatedConn(c.ctx, 2, nil)
	if err != nil {
		pp.wmu.Lock()
		c.writeError(pp.s.errorText(err))
		pp.dc.Flush()
		pp.wmu.Unlock()
		return false
	}
	up.SetReadTimeout(0)
	pp.mu.Lock()
	if pp.finished {
		pp.mu.Unlock()
		up.Close()
		return false
	}
	old := pp.up
	pp.up = up
	pp.mu.Unlock()
	old.Close()
	pp.multi = false
	pp.queued.reset()
	pp.wmu.Lock()
	defer pp.wmu.Unlock()
	pp.s.handlers[m](c, m, args)
	return pp.dc.Flush() == nil
}

// hello answers HELLO. If it switches the protocol, the upstream switches
// too, and the proxy's reply takes the place of the upstream's: the pushes
// before it are in the old protocol, those after it in the new, as with
// Redis.
func (pp *pump) hello(m *commands.Meta, args [][]byte) bool {
	c := pp.c
	restricted, ok := pp.sync(0)
	if !ok {
		return false
	}
	if restricted {
		pp.wmu.Lock()
		defer pp.wmu.Unlock()
		c.writeError(subscribedError(m))
		return pp.dc.Flush() == nil
	}
	before := c.proto.Load()
	capture := &captureConn{Conn: pp.dc}
	capture.w = redcon.NewWriter(&capture.buf)
	c.conn = capture
	pp.s.handlers[m](c, m, args)
	c.conn = pp.dc
	capture.w.Flush()
	out := capture.buf.Bytes()
	if c.proto.Load() == before {
		pp.wmu.Lock()
		defer pp.wmu.Unlock()
		pp.dc.WriteRaw(out)
		return pp.dc.Flush() == nil
	}
	replaced := make(chan struct{})
	pp.mu.Lock()
	pp.replace, pp.replaced = out, replaced
	pp.mu.Unlock()
	if err := pp.upstream().Send([][]byte{[]byte("HELLO"), []byte(strconv.Itoa(int(c.proto.Load())))}); err != nil {
		return false
	}
	select {
	case <-replaced:
		return true
	case <-pp.done:
		return false
	}
}

// captureConn is a redcon.Conn whose replies go to a buffer.
type captureConn struct {
	redcon.Conn
	w   *redcon.Writer
	buf bytes.Buffer
}

func (cc *captureConn) WriteString(str string)      { cc.w.WriteString(str) }
func (cc *captureConn) WriteBulk(bulk []byte)       { cc.w.WriteBulk(bulk) }
func (cc *captureConn) WriteBulkString(bulk string) { cc.w.WriteBulkString(bulk) }
func (cc *captureConn) WriteInt(num int)            { cc.w.WriteInt(num) }
func (cc *captureConn) WriteInt64(num int64)        { cc.w.WriteInt64(num) }
func (cc *captureConn) WriteUint64(num uint64)      { cc.w.WriteUint64(num) }
func (cc *captureConn) WriteError(msg string)       { cc.w.WriteError(msg) }
func (cc *captureConn) WriteArray(count int)        { cc.w.WriteArray(count) }
func (cc *captureConn) WriteNull()                  { cc.w.WriteNull() }
func (cc *captureConn) WriteRaw(data []byte)        { cc.w.WriteRaw(data) }
func (cc *captureConn) WriteAny(v any)              { cc.w.WriteAny(v) }
