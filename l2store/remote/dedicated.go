package remote

// Dedicated connections: a connection of one client's own to the upstream,
// for the commands that keep state on their connection (MULTI, WATCH,
// SUBSCRIBE, MONITOR) or hold it for long (BLPOP and the other blocking
// commands). go-redis's pools cannot serve them: a pooled connection is
// shared by every client, and go-redis reads exactly one reply per command.
//
// A Conn speaks RESP itself and hands out each reply as the upstream sent
// it (its raw bytes, pushes included), so the proxy forwards it unchanged.
// It is dialed the way the pass-through clients dial (their go-redis
// dialer: the Config's dial timeout and TLS; in Sentinel mode the current
// master, resolved through the sentinels), then set up like them: HELLO 3
// (with AUTH) or AUTH, then SELECT. Connections whose state is known to be
// clean are kept in a small idle pool per node and protocol (Release), so
// a client running transactions or blocking pops in a loop does not open a
// connection each time.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/commands"
)

// Bounds on what a Conn reads, against a broken or hostile upstream.
const (
	// maxReplyBulk bounds one bulk string: Redis's proto-max-bulk-len
	// default.
	maxReplyBulk = 512 << 20
)

// maxIdleDedicated bounds the idle connections kept per node and protocol.
const maxIdleDedicated = 8

var _ l2store.Conn = (*Conn)(nil)

// Conn is a dedicated connection to one upstream node. Send and Receive
// may run at the same time in two goroutines (one writing commands, one
// reading replies, as a subscriber's pump does); Close may be called from
// any goroutine at any time, and makes a blocked Receive return. The other
// methods belong to the goroutine that uses the connection.
type Conn struct {
	s    *Store
	idx  int    // protocol index: 0 RESP2, 1 RESP3
	node string // the pool it belongs to: the node's address in cluster mode, "" otherwise
	ctx  context.Context

	mu     sync.Mutex // guards nc against Close from another goroutine
	nc     net.Conn
	closed bool

	br      *bufio.Reader
	bw      *bufio.Writer
	timeout time.Duration // bound of each Receive; 0: none
	broken  atomic.Bool   // an I/O or protocol error: never reused
}

// Clustered reports whether the upstream is a Redis Cluster.
func (s *Store) Clustered() bool { return s.t.mode == Cluster }

// Dedicated returns a connection of the caller's own, speaking proto (2 or
// 3), to the node that owns key: the server; in Sentinel mode the current
// master; in cluster mode the master of key's slot, or of slot 0 when key
// is nil. It is an idle one from the pool if one is alive, else a new one.
// The caller must Release or Close it.
func (s *Store) Dedicated(ctx context.Context, proto int, key []byte) (*Conn, error) {
	select {
	case <-s.closed:
		return nil, l2store.ErrClosed
	default:
	}
	idx := 0
	if proto >= 3 {
		idx = 1
	}
	node, dial, err := s.dedicatedTarget(ctx, idx, key)
	if err != nil {
		return nil, err
	}
	if c := s.dedicatedPool().take(poolKey{node, idx}); c != nil {
		c.ctx = ctx
		return c, nil
	}
	nc, br, err := s.dialDedicated(ctx, idx, node, dial)
	if err != nil {
		return nil, err
	}
	return &Conn{
		s: s, idx: idx, node: node, ctx: ctx,
		nc: nc, br: br, bw: bufio.NewWriter(nc),
		timeout: s.cfg.ReadTimeout,
	}, nil
}

// DedicatedConn is Dedicated for package proxy (proxy.Dedicator).
func (s *Store) DedicatedConn(ctx context.Context, proto int, key []byte) (l2store.Conn, error) {
	c, err := s.Dedicated(ctx, proto, key)
	if err != nil {
		return nil, err
	}
	return c, nil
}

type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// dedicatedTarget returns the pool name and the dialer of the node for
// key. The dialers are the pass-through clients' own, which go-redis built
// from the Config (dial timeout, TLS); a Sentinel client's resolves the
// master each time.
func (s *Store) dedicatedTarget(ctx context.Context, idx int, key []byte) (string, func(ctx context.Context) (net.Conn, error), error) {
	if s.t.mode == Cluster {
		node, err := s.cluster[idx].MasterForKey(ctx, string(key))
		if err != nil {
			return "", nil, s.replyError(err)
		}
		o := node.Options()
		return o.Addr, func(ctx context.Context) (net.Conn, error) { return o.Dialer(ctx, "tcp", o.Addr) }, nil
	}
	c, ok := s.pass[idx].(*redis.Client)
	if !ok {
		return "", nil, fmt.Errorf("remote: no client for dedicated connections")
	}
	o := c.Options()
	return "", func(ctx context.Context) (net.Conn, error) { return o.Dialer(ctx, "tcp", o.Addr) }, nil
}

// nodeDialer returns the dialer of the cluster node at addr.
func (s *Store) nodeDialer(idx int, addr string) func(ctx context.Context) (net.Conn, error) {
	o := s.nodeClient(idx, addr).Options()
	return func(ctx context.Context) (net.Conn, error) { return o.Dialer(ctx, "tcp", addr) }
}

// dialDedicated connects and sets the connection up: HELLO 3 [AUTH] or
// AUTH, then SELECT.
func (s *Store) dialDedicated(ctx context.Context, idx int, node string, dial func(ctx context.Context) (net.Conn, error)) (net.Conn, *bufio.Reader, error) {
	dctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	nc, err := dial(dctx)
	if err != nil {
		return nil, nil, s.dedicatedError(node, err)
	}
	var cmds [][]string
	switch user := s.t.username; {
	case idx == 1 && s.t.password != "":
		if user == "" {
			user = "default"
		}
		cmds = append(cmds, []string{"HELLO", "3", "AUTH", user, s.t.password})
	case idx == 1:
		cmds = append(cmds, []string{"HELLO", "3"})
	case s.t.password != "" && user != "":
		cmds = append(cmds, []string{"AUTH", user, s.t.password})
	case s.t.password != "":
		cmds = append(cmds, []string{"AUTH", s.t.password})
	}
	if s.t.db != 0 {
		cmds = append(cmds, []string{"SELECT", strconv.Itoa(s.t.db)})
	}
	br := bufio.NewReader(nc)
	if len(cmds) == 0 {
		return nc, br, nil
	}
	nc.SetDeadline(time.Now().Add(s.cfg.DialTimeout + s.cfg.ReadTimeout))
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	var buf []byte
	for _, c := range cmds {
		buf = appendCommand(buf, c...)
	}
	_, err = nc.Write(buf)
	for i := 0; err == nil && i < len(cmds); i++ {
		var reply []byte
		if reply, err = l2store.ReadRaw(br, nil, maxReplyBulk); err == nil && len(reply) > 0 && reply[0] == '-' {
			// The reply is the upstream's error text: no password in it.
			err = fmt.Errorf("%s: %s", cmds[i][0], trimCRLF(reply[1:]))
		}
	}
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		nc.Close()
		return nil, nil, s.dedicatedError(node, err)
	}
	nc.SetDeadline(time.Time{})
	return nc, br, nil
}

func (s *Store) dedicatedError(node string, err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	if node == "" {
		node = redactURL(s.cfg.URL)
	}
	return fmt.Errorf("%w: %s: %v", l2store.ErrUnavailable, node, err)
}

func trimCRLF(b []byte) []byte {
	if len(b) >= 2 && b[len(b)-2] == '\r' && b[len(b)-1] == '\n' {
		return b[:len(b)-2]
	}
	return b
}

// Proto returns the protocol the connection speaks.
func (c *Conn) Proto() int { return c.idx + 2 }

// Addr returns the address of the node the connection is to.
func (c *Conn) Addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc == nil {
		return ""
	}
	return c.nc.RemoteAddr().String()
}

// Send writes one command and flushes it, within the Config's
// WriteTimeout.
func (c *Conn) Send(args [][]byte) error { return c.send(args) }

func (c *Conn) send(cmds ...[][]byte) error {
	for _, args := range cmds {
		c.bw.WriteString("*")
		c.bw.WriteString(strconv.Itoa(len(args)))
		c.bw.WriteString("\r\n")
		for _, a := range args {
			c.bw.WriteString("$")
			c.bw.WriteString(strconv.Itoa(len(a)))
			c.bw.WriteString("\r\n")
			c.bw.Write(a)
			c.bw.WriteString("\r\n")
		}
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	if err := c.bw.Flush(); err != nil {
		c.broken.Store(true)
		return c.ioError(err)
	}
	return nil
}

// Receive reads one reply and returns its bytes exactly as the upstream
// sent them: a RESP3 push is one reply, an attribute comes with the reply
// it annotates. It waits at most the read timeout (see SetReadTimeout).
func (c *Conn) Receive() ([]byte, error) {
	if c.timeout > 0 {
		c.nc.SetReadDeadline(time.Now().Add(c.timeout))
	} else {
		c.nc.SetReadDeadline(time.Time{})
	}
	b, err := l2store.ReadRaw(c.br, nil, maxReplyBulk)
	if err != nil {
		c.broken.Store(true)
		return nil, c.ioError(err)
	}
	return b, nil
}

// Buffered returns how many bytes of replies are read but not yet
// returned by Receive: when 0, a reader that forwards replies may flush.
func (c *Conn) Buffered() int { return c.br.Buffered() }

// SetReadTimeout bounds each Receive by d; 0 waits as long as it takes (a
// blocking command, a subscriber), a negative d restores the Config's
// ReadTimeout, the default.
func (c *Conn) SetReadTimeout(d time.Duration) {
	if d < 0 {
		d = c.s.cfg.ReadTimeout
	}
	c.timeout = d
}

func (c *Conn) ioError(err error) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return fmt.Errorf("%w: dedicated connection closed", l2store.ErrClosed)
	}
	return fmt.Errorf("%w: %v", l2store.ErrUnavailable, err)
}

// Do sends one command and returns its reply. In cluster mode it follows
// -MOVED and -ASK: it reconnects to the node named and sends the command
// again (after ASKING for -ASK). Use it only on a connection that holds no
// state (no MULTI, WATCH or subscription), which a reconnection would lose:
// for a blocking command, say, on a slot that has moved.
func (c *Conn) Do(args [][]byte) ([]byte, error) {
	asking := false
	for hops := 0; ; hops++ {
		var err error
		if asking {
			err = c.send(askingArgs, args)
		} else {
			err = c.send(args)
		}
		if err != nil {
			return nil, err
		}
		if asking {
			if _, err := c.Receive(); err != nil { // ASKING's +OK
				return nil, err
			}
		}
		reply, err := c.Receive()
		if err != nil {
			return nil, err
		}
		moved, ask, addr := redirection(reply)
		if c.s.t.mode != Cluster || !moved && !ask || hops >= maxRedirects {
			return reply, nil
		}
		if moved {
			c.s.cluster[c.idx].ReloadState(c.ctx)
		}
		if err := c.redirect(addr); err != nil {
			return nil, err
		}
		asking = ask
	}
}

var (
	askingArgs = [][]byte{[]byte("ASKING")}
	multiArgs  = [][]byte{[]byte("MULTI")}
	execArgs   = [][]byte{[]byte("EXEC")}
)

// redirect replaces the connection by one to the cluster node at addr.
func (c *Conn) redirect(addr string) error {
	nc, br, err := c.s.dialDedicated(c.ctx, c.idx, addr, c.s.nodeDialer(c.idx, addr))
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		nc.Close()
		return fmt.Errorf("%w: dedicated connection closed", l2store.ErrClosed)
	}
	old := c.nc
	c.nc, c.br, c.node = nc, br, addr
	c.bw.Reset(nc)
	c.mu.Unlock()
	old.Close()
	return nil
}

// Release gives the connection back for reuse by any client. Call it only
// when its state is as Dedicated returned it: every reply read, no MULTI,
// WATCH, subscription or MONITOR, same protocol. Otherwise, or after an
// error, Release closes it.
func (c *Conn) Release() {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	switch {
	case closed:
		return
	case c.broken.Load() || c.br.Buffered() > 0:
		c.Close()
		return
	}
	c.timeout = c.s.cfg.ReadTimeout
	c.ctx = context.Background()
	if !c.s.dedicatedPool().put(c) {
		c.Close()
	}
}

// Close closes the connection. It is safe to call more than once and from
// any goroutine.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.broken.Store(true)
	return c.nc.Close()
}

// Transaction runs cmds as one transaction on a dedicated connection:
// MULTI, cmds, EXEC, sent together, and returns EXEC's reply as the
// upstream sent it. In cluster mode every key of cmds must hash to one
// slot, whose master runs it; if they do not, the reply is Redis Cluster's
// -CROSSSLOT error, and nothing is sent. If the slot moves meanwhile (a
// -MOVED or -ASK reply to a queued command, which aborts the transaction),
// it runs it once more on the node named.
func (s *Store) Transaction(ctx context.Context, proto int, cmds [][][]byte) ([]byte, error) {
	var key []byte
	if s.t.mode == Cluster {
		slot := -1
		var buf [][]byte
		for _, args := range cmds {
			buf = s.commandKeys(ctx, buf[:0], args)
			for _, k := range buf {
				switch ks := KeySlot(k); {
				case slot < 0:
					slot, key = ks, k
				case ks != slot:
					return []byte(crossSlotReply), nil
				}
			}
		}
	}
	c, err := s.Dedicated(ctx, proto, key)
	if err != nil {
		return nil, err
	}
	reply, err := c.transaction(cmds)
	if err != nil {
		c.Close()
		return nil, err
	}
	c.Release()
	return reply, nil
}

// crossSlotReply is Redis Cluster's error for keys in several slots.
const crossSlotReply = "-CROSSSLOT Keys in request don't hash to the same slot\r\n"

// commandKeys appends the keys of the command args to dst: the table's key
// positions, the upstream's COMMAND INFO for a command missing from it, or
// else its first argument (as go-redis does).
func (s *Store) commandKeys(ctx context.Context, dst [][]byte, args [][]byte) [][]byte {
	m := commands.Find(args)
	if m == nil {
		m = s.CommandMeta(ctx, args)
	}
	if m != nil {
		return m.Keys(dst, args)
	}
	if len(args) > 1 {
		return append(dst, args[1])
	}
	return dst
}

func (c *Conn) transaction(cmds [][][]byte) ([]byte, error) {
	batch := make([][][]byte, 0, len(cmds)+3)
	asking := false
	for attempt := 0; ; attempt++ {
		batch = batch[:0]
		if asking {
			batch = append(batch, askingArgs)
		}
		batch = append(batch, multiArgs)
		batch = append(batch, cmds...)
		batch = append(batch, execArgs)
		if err := c.send(batch...); err != nil {
			return nil, err
		}
		var redirect string
		var moved, ask bool
		var reply []byte
		for i := range batch {
			r, err := c.Receive()
			if err != nil {
				return nil, err
			}
			if redirect == "" && i < len(batch)-1 {
				moved, ask, redirect = redirection(r)
			}
			reply = r
		}
		if c.s.t.mode != Cluster || redirect == "" || attempt > 0 {
			return reply, nil
		}
		if moved {
			c.s.cluster[c.idx].ReloadState(c.ctx)
		}
		if err := c.redirect(redirect); err != nil {
			return nil, err
		}
		asking = ask
	}
}

// KeySlot returns the Redis Cluster hash slot of key: CRC16 of the key, or
// of its hash tag (the part between the first '{' and the next '}', if not
// empty), modulo 16384.
func KeySlot(key []byte) int {
	for i, b := range key {
		if b == '{' {
			for j := i + 1; j < len(key); j++ {
				if key[j] == '}' {
					if j > i+1 {
						key = key[i+1 : j]
					}
					break
				}
			}
			break
		}
	}
	return int(crc16(key) & 16383)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021), Redis Cluster's.
func crc16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// poolKey names an idle pool: a node (its address in cluster mode, ""
// otherwise) and a protocol index.
type poolKey struct {
	node string
	idx  int
}

// pools holds each Store's idle dedicated connections, until the Store
// closes. (A field of Store would do as well.)
var pools sync.Map // *Store -> *dedicatedPool

func (s *Store) dedicatedPool() *dedicatedPool {
	if p, ok := pools.Load(s); ok {
		return p.(*dedicatedPool)
	}
	v, loaded := pools.LoadOrStore(s, &dedicatedPool{})
	p := v.(*dedicatedPool)
	if !loaded {
		go func() {
			<-s.closed
			p.close()
			pools.Delete(s)
		}()
	}
	return p
}

// dedicatedPool holds idle dedicated connections. Its zero value is ready.
type dedicatedPool struct {
	mu   sync.Mutex
	idle map[poolKey][]*Conn
	done bool
}

// take returns the most recently released connection of k that is still
// open and has nothing to read, closing the dead ones it finds.
func (p *dedicatedPool) take(k poolKey) *Conn {
	for {
		p.mu.Lock()
		list := p.idle[k]
		if len(list) == 0 {
			p.mu.Unlock()
			return nil
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[k] = list[:len(list)-1]
		p.mu.Unlock()
		if idleUsable(c.nc) {
			return c
		}
		c.Close()
	}
}

// put keeps c, and reports whether it did.
func (p *dedicatedPool) put(c *Conn) bool {
	select {
	case <-c.s.closed:
		p.close()
		return false
	default:
	}
	k := poolKey{c.node, c.idx}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || len(p.idle[k]) >= maxIdleDedicated {
		return false
	}
	if p.idle == nil {
		p.idle = make(map[poolKey][]*Conn)
	}
	p.idle[k] = append(p.idle[k], c)
	return true
}

// close closes the idle connections and keeps no more.
func (p *dedicatedPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.done = nil, true
	p.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.Close()
		}
	}
}

// idleUsable reports whether an idle connection is still open and has
// nothing to read (for TLS, a close_notify is data, which also
// disqualifies it).
func idleUsable(nc net.Conn) bool {
	st := peek(nc)
	return st == peekIdle || st == peekUnknown
}
