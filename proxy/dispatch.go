package proxy

import (
	"context"
	"errors"
	"runtime/debug"
	"strings"

	"github.com/tidwall/redcon"
	"go.uber.org/zap"

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
		"get":  s.cmdGet,
		"mget": s.cmdMGet,

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
	for _, name := range commands.Names() {
		if name == "command" || strings.HasPrefix(name, "command|") {
			byName[name] = s.cmdCommand
		}
	}
	hs := make(map[*commands.Meta]handler, len(byName))
	for name, h := range byName {
		m := commands.LookupFullName([]byte(name))
		if m == nil {
			panic("proxy: no Redis command named " + name)
		}
		hs[m] = h
	}
	return hs
}

// serveRESP is redcon's handler: it runs one command.
func (s *Server) serveRESP(conn redcon.Conn, cmd redcon.Command) {
	c, _ := conn.Context().(*client)
	if c == nil {
		conn.Close()
		return
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
	s.dispatch(c, cmd.Args)
	if c.quit {
		conn.Close()
		return
	}
	if c.gate.unflushed > maxUnflushed {
		// A long pipeline of big replies: send what is ready rather than
		// holding it all until the end of the batch.
		if w := redcon.BaseWriter(conn); w != nil {
			w.Flush()
		}
	}
}

// maxUnflushed is how many reply bytes a connection holds before it
// flushes in the middle of a pipeline.
const maxUnflushed = 64 << 10

// dispatch checks a command as Redis's processCommand does (existence,
// arity, then authentication) and runs it.
func (s *Server) dispatch(c *client, args [][]byte) {
	c.commands.Add(1)
	c.lastActive.Store(s.stats.ops.unixSeconds())
	m, errReply := commands.Check(args, s.supportedFn)
	switch {
	case m == nil:
		c.writeReply(errReply)
		return
	case !c.authed && m.Flags&commands.NoAuth == 0:
		c.writeError("NOAUTH Authentication required.")
		return
	}
	c.lastCmd.Store(m)
	if h := s.handlers[m]; h != nil {
		h(c, m, args)
		return
	}
	s.storeCommand(c, m, args)
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

// storeCommand runs a command on the store and keeps L1 coherent: after a
// write reaches the store, the keys it names are dropped from L1 before
// the reply is sent, so the client reads its own write. A keyless write
// (FLUSHDB, FLUSHALL) drops all of L1.
func (s *Server) storeCommand(c *client, m *commands.Meta, args [][]byte) {
	reply, err := s.store.Do(c.ctx, args)
	if m.Flags&commands.Write != 0 {
		// Even a failed write may have reached the store.
		c.keys = m.Keys(c.keys[:0], args)
		if len(c.keys) == 0 && m.Flags&commands.MovableKeys == 0 {
			s.cache.Flush()
		}
		for _, k := range c.keys {
			s.cache.Invalidate(k)
		}
		clear(c.keys)
	}
	if err != nil {
		c.writeError(s.errorText(err))
		return
	}
	c.writeReply(reply)
}

// errorText turns an error from the tiers into the text of a RESP error
// reply. Only the proxy does this.
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
	s.log.Warn("command failed", zap.Error(err))
	return "ERR sidecache: " + err.Error()
}

// cmdGet is the hot path: GET through L1.
func (s *Server) cmdGet(c *client, _ *commands.Meta, args [][]byte) {
	v, found, err := s.cache.Get(c.ctx, args[1])
	switch {
	case err != nil:
		c.writeError(s.errorText(err))
	case !found:
		c.misses.Add(1)
		c.writeNull()
	default:
		c.hits.Add(1)
		c.writeBulk(v)
	}
}

// cmdMGet reads every key through L1. A key holding another type reads as
// nil, as in Redis; any other error fails the whole command.
func (s *Server) cmdMGet(c *client, _ *commands.Meta, args [][]byte) {
	keys := args[1:]
	vals := make([][]byte, len(keys))
	found := make([]bool, len(keys))
	for i, k := range keys {
		v, ok, err := s.cache.Get(c.ctx, k)
		var re l2store.ReplyError
		if err != nil && !errors.As(err, &re) {
			c.writeError(s.errorText(err))
			return
		}
		vals[i], found[i] = v, ok && err == nil
	}
	c.conn.WriteArray(len(keys))
	for i := range keys {
		if found[i] {
			c.hits.Add(1)
			c.writeBulk(vals[i])
		} else {
			c.misses.Add(1)
			c.writeNull()
		}
	}
}
