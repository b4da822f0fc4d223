package proxy

import (
	"context"
	"errors"
	"runtime/debug"
	"strings"

	"github.com/tidwall/redcon"
	"go.uber.org/zap"

	"github.com/sidecache/sidecache/l1"
	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/commands"
)

// handler runs one command whose existence, arity and authentication have
// been checked, and writes its reply.
type handler func(c *client, m *commands.Meta, args [][]byte)

// localHandlers maps the commands the proxy answers itself; every other
// supported command goes to the store.
func (s *Server) localHandlers() map[*commands.Meta]handler {
	byName := map[string]handler{
		"ping":   cmdPing,
		"echo":   cmdEcho,
		"quit":   cmdQuit,
		"select": cmdSelect,
		"auth":   s.cmdAuth,
		"hello":  s.cmdHello,
		"reset":  s.cmdReset,
		"time":   s.cmdTime,
		"info":   s.cmdInfo,

		"client|id":      cmdClientID,
		"client|getname": cmdClientGetName,
		"client|setname": cmdClientSetName,
		"client|setinfo": cmdClientSetInfo,
		"client|info":    s.cmdClientInfo,
		"client|list":    s.cmdClientList,
		"client|kill":    s.cmdClientKill,
		"client|help":    s.cmdClientHelp,

		"config|get":       s.cmdConfigGet,
		"config|resetstat": s.cmdConfigResetStat,
		"config|help":      s.cmdConfigHelp,
	}
	if s.cache != nil {
		byName["get"] = s.cmdGet
		byName["mget"] = s.cmdMGet
	}
	for _, name := range commands.Names() {
		if name == "command" || strings.HasPrefix(name, "command|") {
			byName[name] = s.cmdCommand
		}
	}
	hs := make(map[*commands.Meta]handler, len(byName))
	for name, h := range byName {
		hs[lookupMeta(name)] = h
	}
	return hs
}

// lookupMeta returns the command named name ("get", "client|setname"),
// which must be in the table.
func lookupMeta(name string) *commands.Meta {
	m := commands.LookupFullName([]byte(name))
	if m == nil {
		panic("proxy: no Redis command named " + name)
	}
	return m
}

// serveRESP is redcon's handler: it runs one command, or, when the store
// can run several in one round trip and the client has pipelined more,
// the whole pipeline (see runPipeline).
func (s *Server) serveRESP(conn redcon.Conn, cmd redcon.Command) {
	c, _ := conn.Context().(*client)
	if c == nil {
		conn.Close()
		return
	}
	if c.quit {
		return // closed (QUIT, output limit): the rest of the batch does not run
	}
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic serving a command; closing its connection",
				zap.Any("panic", r), zap.Int64("client", c.id),
				zap.String("command", cstring(cmd.Args[0], 32)),
				zap.ByteString("stack", debug.Stack()))
			c.writeError("ERR internal error")
			conn.Close()
		}
	}()
	if s.multi != nil && s.batchable(c, cmd.Args) {
		if rest := conn.PeekPipeline(); len(rest) > 0 && s.allBatchable(c, rest) {
			conn.ReadPipeline()
			s.runPipeline(conn, c, cmd, rest)
			return
		}
	}
	s.dispatch(c, cmd.Args)
	s.afterCommand(conn, c)
}

// afterCommand closes the connection after QUIT, and flushes replies in
// the middle of a long pipeline of big replies rather than holding them
// all until the end of the batch.
func (s *Server) afterCommand(conn redcon.Conn, c *client) bool {
	if c.quit {
		conn.Close()
		return false
	}
	if c.gate.unflushed > maxUnflushed {
		if w := redcon.BaseWriter(conn); w != nil && w.Flush() != nil {
			c.quit = true // the client is gone or over its output limit (output.go)
			conn.Close()
			return false
		}
	}
	return true
}

// maxUnflushed is how many reply bytes a connection holds before it
// flushes in the middle of a pipeline.
const maxUnflushed = 64 << 10

// route is where a command runs.
type route uint8

const (
	routeReject route = iota // answered with an error before it runs
	routeLocal               // answered by the proxy itself
	routeStore               // run by the store
)

// classify checks a command as Redis's processCommand does (existence,
// arity, authentication, the deny-list as Redis's ACL) and says where it
// runs. For routeReject it returns the error reply. m is nil for a
// command missing from the table that the store passes through (a remote
// store's module commands).
func (s *Server) classify(c *client, args [][]byte) (m *commands.Meta, r route, errReply l2store.Reply) {
	m, errReply = commands.Check(args, s.supportedFn)
	switch {
	case m == nil && !s.passUnknown(args):
		return nil, routeReject, errReply
	case m == nil:
		r = routeStore
	case s.handlers[m] != nil:
		r = routeLocal
	default:
		r = routeStore
	}
	if !c.authed && (m == nil || m.Flags&commands.NoAuth == 0) {
		return m, routeReject, errNoAuth
	}
	if s.deny.denied(m) {
		return m, routeReject, deniedReply(m) // the deny-list (security.go), Redis's ACL check
	}
	if m != nil && m.Flags&commands.DenyOOM != 0 && s.overMemory() {
		return m, routeReject, errOOM // output.go
	}
	return m, r, l2store.Reply{}
}

var errNoAuth = l2store.Error("NOAUTH Authentication required.")

// passUnknown reports whether a command missing from the table goes to
// the store anyway: a remote store's upstream may know it (a module's
// command, a newer Redis's), and answers it, or its own error. The
// commands the proxy answers itself keep their unknown-subcommand errors.
func (s *Server) passUnknown(args [][]byte) bool {
	if !s.storeTakesAll || len(args) == 0 || commands.Find(args) != nil {
		return false // known: its error is an arity error
	}
	m := commands.Lookup(args[0])
	return m == nil || !s.localParents[m]
}

// dispatch runs one command and counts it for the metrics (metrics.go):
// here, or in storeCommand, or by outcome in a read through L1.
func (s *Server) dispatch(c *client, args [][]byte) {
	c.commands.Add(1)
	c.lastActive.Store(s.stats.ops.unixSeconds())
	if c.pinned() {
		defer s.countPinned(args, c, c.errors.Load())
		if s.refuseDeniedPinned(c, args) || s.refuseOOMPinned(c, args) {
			return
		}
		s.pinnedDispatch(c, args) // all to the dedicated connection (pinned.go)
		return
	}
	m, r, errReply := s.classify(c, args)
	if r == routeReject {
		c.writeReply(errReply)
		s.countRejected(m, args)
		return
	}
	errs := c.errors.Load()
	if m != nil {
		c.lastCmd.Store(m)
		if s.pinnedCommand(c, m, args) {
			s.stats.cmds.count(m, c.errors.Load() != errs)
			return
		}
	}
	if r == routeLocal {
		s.handlers[m](c, m, args)
		s.countLocal(c, m, errs)
		return
	}
	s.storeCommand(c, m, args)
}

// batchable reports whether a command may run as part of a pipeline
// batch: anything but a command that needs or holds a dedicated upstream
// connection.
func (s *Server) batchable(c *client, args [][]byte) bool {
	return !s.wantsPin(c, commands.Find(args), args)
}

func (s *Server) allBatchable(c *client, cmds []redcon.Command) bool {
	for _, cmd := range cmds {
		if !s.batchable(c, cmd.Args) {
			return false
		}
	}
	return true
}

// runPipeline runs a client's pipelined commands in order. Consecutive
// commands for the store go to it together (Store.DoMulti: one round trip
// to a remote upstream instead of one each); a command the proxy answers
// itself (a GET through L1) first waits for the store's replies before
// it, so the client reads its own writes.
func (s *Server) runPipeline(conn redcon.Conn, c *client, first redcon.Command, rest []redcon.Command) {
	group := c.group[:0]
	run := func(args [][]byte) bool {
		m, r, errReply := s.classify(c, args)
		if r == routeStore {
			c.commands.Add(1)
			if m != nil {
				c.lastCmd.Store(m)
			}
			group = append(group, pending{m, args})
			return true
		}
		s.storeGroup(c, group)
		group = group[:0]
		c.commands.Add(1)
		if r == routeReject {
			c.writeReply(errReply)
			s.countRejected(m, args)
			return true
		}
		c.lastCmd.Store(m)
		errs := c.errors.Load()
		s.handlers[m](c, m, args)
		s.countLocal(c, m, errs)
		return s.afterCommand(conn, c)
	}
	c.lastActive.Store(s.stats.ops.unixSeconds())
	if run(first.Args) {
		for _, cmd := range rest {
			if !run(cmd.Args) {
				break
			}
		}
	}
	if !c.quit {
		s.storeGroup(c, group)
		s.afterCommand(conn, c)
	}
	clear(group)
	c.group = group[:0]
}

// pending is a command waiting in a pipeline batch.
type pending struct {
	m    *commands.Meta
	args [][]byte
}

// storeGroup runs a batch of store commands and writes their replies.
func (s *Server) storeGroup(c *client, group []pending) {
	switch len(group) {
	case 0:
		return
	case 1:
		s.storeCommand(c, group[0].m, group[0].args)
		return
	}
	cmds := make([][][]byte, len(group))
	for i, p := range group {
		cmds[i] = p.args
	}
	start := s.startTimer()
	replies, err := s.multi.DoMulti(c.storeCtx(), cmds)
	s.observeStore(start)
	for _, p := range group {
		s.invalidate(c, p.m, p.args)
	}
	for i, p := range group {
		if err != nil {
			c.writeError(s.errorText(err))
		} else {
			c.writeReply(replies[i])
		}
		s.stats.cmds.count(p.m, err != nil || replies[i].IsError())
	}
}

// cstring returns b as C's printf "%.*s" would print it: up to the first
// NUL, at most max bytes (max < 0: no limit).
func cstring(b []byte, max int) string {
	b = l2store.CString(b)
	if max >= 0 && len(b) > max {
		b = b[:max]
	}
	return string(b)
}

// storeCommand runs a command on the store and keeps L1 coherent (see
// invalidate) before the reply is sent, so the client reads its own
// write.
func (s *Server) storeCommand(c *client, m *commands.Meta, args [][]byte) {
	start := s.startTimer()
	reply, err := s.store.Do(c.storeCtx(), args)
	s.observeStore(start)
	s.invalidate(c, m, args) // even a failed write may have reached the store
	s.stats.cmds.count(m, err != nil || reply.IsError())
	if err != nil {
		c.writeError(s.errorText(err))
		return
	}
	c.writeReply(reply)
}

// invalidate drops from L1 the keys a write names. A keyless write
// (FLUSHDB, FLUSHALL, SWAPDB) drops all of L1. Commands flagged
// may_replicate count as writes of their keys: scripts and functions
// (EVAL, FCALL) of their declared keys, and PFCOUNT, which caches the
// cardinality in the value. A command missing from the table is looked up
// in the store (a remote upstream's COMMAND INFO); if nothing is known of it,
// all of L1 is dropped.
func (s *Server) invalidate(c *client, m *commands.Meta, args [][]byte) {
	if s.cache == nil {
		return
	}
	if m == nil && s.metas != nil {
		m = s.metas.CommandMeta(c.ctx, args)
	}
	if m == nil {
		s.cache.Flush()
		return
	}
	if m.Flags&(commands.Write|commands.MayReplicate) == 0 {
		return
	}
	c.keys = m.Keys(c.keys[:0], args)
	if len(c.keys) == 0 && m.Flags&commands.Write != 0 && m.Flags&commands.MovableKeys == 0 {
		s.cache.Flush()
	}
	for _, k := range c.keys {
		s.cache.Invalidate(k)
	}
	clear(c.keys)
}

// errorText turns an error from the tiers into the text of a RESP error
// reply. Only the proxy does this. Failures of the L2 are the breaker's
// to report (it logs its transitions): they are logged at Debug, so an
// outage does not flood the log; anything unexpected at Warn.
func (s *Server) errorText(err error) string {
	var re l2store.ReplyError
	switch {
	case errors.As(err, &re):
		return string(re)
	case errors.Is(err, l2store.ErrOOM):
		return "OOM command not allowed when used memory > 'maxmemory'."
	case errors.Is(err, context.Canceled):
		return "ERR connection closed"
	}
	if text := tierErrorText(err); text != "" {
		s.log.Debug("command failed", zap.Error(err))
		return text
	}
	s.log.Warn("command failed", zap.Error(err))
	return "ERR sidecache: " + err.Error()
}

// cmdGet is the hot path: GET through L1 (and, on a miss, the tiers
// below it).
func (s *Server) cmdGet(c *client, _ *commands.Meta, args [][]byte) {
	start := s.startTimer()
	r, err := s.cache.Lookup(c.ctx, args[1])
	o := outcomeOf(r, err)
	s.observeRead(start, o)
	c.reads[readGet][o].Add(1)
	switch {
	case err != nil:
		c.writeError(s.errorText(err))
	case r.Outcome == l1.Miss:
		c.writeNull()
	default:
		c.writeBulk(r.Value)
	}
}

// cmdMGet reads every key through L1. A key holding another type reads as
// nil, as in Redis; any other error (a shed read among them) fails the
// whole command, as MGET has no per-key error.
func (s *Server) cmdMGet(c *client, _ *commands.Meta, args [][]byte) {
	keys := args[1:]
	vals := make([][]byte, len(keys))
	found := make([]bool, len(keys))
	for i, k := range keys {
		start := s.startTimer()
		r, err := s.cache.Lookup(c.ctx, k)
		o := outcomeOf(r, err)
		s.observeRead(start, o)
		var re l2store.ReplyError
		if err != nil && errors.As(err, &re) {
			o = readMiss // WRONGTYPE: MGET reads it as nil
		}
		c.reads[readMGet][o].Add(1)
		if err != nil && o != readMiss {
			c.writeError(s.errorText(err))
			return
		}
		vals[i], found[i] = r.Value, err == nil && r.Outcome != l1.Miss
	}
	c.conn.WriteArray(len(keys))
	for i := range keys {
		if found[i] {
			c.writeBulk(vals[i])
		} else {
			c.writeNull()
		}
	}
}
