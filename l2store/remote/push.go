package remote

// Server-assisted invalidation of L1 with RESP3 pushes (TrackingPush).
//
// Some upstreams (Dragonfly) refuse CLIENT TRACKING ... REDIRECT: they
// offer tracking only as RESP3 push messages on the connection that read
// the key. In TrackingPush mode the read path therefore has, per upstream
// node, one connection of its own (a pushConn): a dedicated RESP3
// connection with CLIENT TRACKING ON, owned by a reader goroutine. Store.Get
// writes GET and PTTL on it and waits for their replies; the reader hands
// each reply to the oldest waiting request (the server answers in order)
// and turns each push ">2 invalidate <keys | null>" into an Invalidation on
// the Store's channel (a null: Flush). A ping goroutine PINGs the
// connection so the reader, which waits at most the ping interval plus the
// read timeout, notices a dead peer.
//
// The server forgets what a connection read when it closes. So when a
// pushConn fails (an I/O or protocol error, a reply late by the
// ReadTimeout, a CLIENT KILL), it fails its waiting requests, is dropped,
// and L1 is flushed; the next Get for its node dials a new one. A Get for a
// node without a pushConn (its dial failed: it retries with backoff) reads
// through the untracked fill client and returns the value already expired:
// served, never kept. A Get whose read overlapped the failure of any
// pushConn is not kept either (the pusher's epoch, sampled before and after
// the read, as tracking.go's mark and keep do).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sidecache/sidecache/l2store"
)

// TrackingStatusPush: Config.Tracking is TrackingPush and every node in
// use has its tracked RESP3 connection.
const TrackingStatusPush = "push"

var (
	// errPushTimeout fails a pushConn whose reply is later than the
	// ReadTimeout, as go-redis discards such a connection.
	errPushTimeout = errors.New("remote: no reply within the read timeout")
	// errPushMoved: the dedicated connection reached another node than
	// the one asked for (the cluster's slots moved meanwhile).
	errPushMoved = errors.New("remote: the slot moved while connecting")
)

var (
	getCmd         = []byte("GET")
	pttlCmd        = []byte("PTTL")
	pingArgs       = [][]byte{[]byte("PING")}
	trackingOnArgs = [][]byte{[]byte("CLIENT"), []byte("TRACKING"), []byte("ON")}
)

// invalidatePushName is the kind of a RESP3 invalidation push.
const invalidatePushName = "invalidate"

// pusher owns the pushConns of a Store. Invalidations go to the tracking's
// channel, flushes through its flusher.
type pusher struct {
	s   *Store
	tr  *tracking
	log *zap.Logger

	ctx    context.Context // cancelled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup // connect, read and ping goroutines

	// epoch counts pushConn failures; Get samples it before and after a
	// read.
	epoch atomic.Uint64

	mu     sync.Mutex
	nodes  map[string]*pushNode // by Conn.node: "" or a cluster node's address
	down   int                  // nodes whose last connection failed
	closed bool
}

// pushNode is one upstream node of the read path. Its fields are guarded
// by pusher.mu.
type pushNode struct {
	name    string
	pc      *pushConn     // nil while none is up
	dialing chan struct{} // non-nil while connecting; closed when the attempt is over
	retryAt time.Time     // no dial before then after a failed one
	backoff time.Duration
	down    bool // counted in pusher.down
	started bool // it was up once (for the logs)
}

// pushConn is a tracked RESP3 connection to one node.
type pushConn struct {
	p    *pusher
	n    *pushNode
	c    *Conn
	done chan struct{} // closed by fail: stops the ping goroutine

	mu      sync.Mutex // guards sending, waiters and dead
	waiters []chan pushResult
	dead    bool
}

// pushResult is one reply of a pushConn, raw, or the error that ended it.
type pushResult struct {
	raw []byte
	err error
}

func newPusher(s *Store) *pusher {
	ctx, cancel := context.WithCancel(context.Background())
	return &pusher{s: s, tr: s.trk, log: s.log, ctx: ctx, cancel: cancel, nodes: make(map[string]*pushNode)}
}

// start connects the node of slot 0 (the server, or Sentinel's master), so
// that tracking starts, and is logged, with the Store.
func (p *pusher) start(ctx context.Context) {
	p.conn(ctx, nil)
}

// status returns the TrackingStatus of push mode.
func (p *pusher) status() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down > 0 {
		return TrackingStatusBroken
	}
	return TrackingStatusPush
}

// get is Store.Get in push mode.
func (p *pusher) get(ctx context.Context, key []byte) (l2store.Item, bool, error) {
	start := p.s.now()
	pc, err := p.conn(ctx, key)
	if err != nil {
		return l2store.Item{}, false, err
	}
	if pc == nil {
		return p.untracked(ctx, key, start)
	}
	mark := p.epoch.Load()
	get, pttl, err := pc.getPTTL(ctx, key)
	if err != nil {
		return l2store.Item{}, false, err
	}
	switch get.Kind {
	case l2store.KindNull:
		return l2store.Item{}, false, nil
	case l2store.KindError:
		if moved, ask, _ := redirection(append(append([]byte{'-'}, get.Str...), '\r', '\n')); p.s.t.mode == Cluster && (moved || ask) {
			// The slot moved: read this once through go-redis, which
			// follows the redirection; the next Get finds the right node.
			if moved {
				p.s.cluster[1].ReloadState(ctx)
			}
			return p.untracked(ctx, key, start)
		}
		return l2store.Item{}, false, l2store.ReplyError(string(get.Str))
	case l2store.KindBulk:
	default:
		return l2store.Item{}, false, fmt.Errorf("%w: unexpected reply to GET: %v", l2store.ErrProtocol, get)
	}
	item := l2store.Item{Value: get.Str}
	switch {
	case pttl.Kind == l2store.KindError:
		return l2store.Item{}, false, l2store.ReplyError(string(pttl.Str))
	case pttl.Kind != l2store.KindInt:
		return l2store.Item{}, false, fmt.Errorf("%w: unexpected reply to PTTL: %v", l2store.ErrProtocol, pttl)
	case pttl.Int == -1: // no expiry
	case pttl.Int < 0: // gone between GET and PTTL: serve it, never keep it
		item.Expires = start
	default:
		item.Expires = start.Add(time.Duration(pttl.Int) * time.Millisecond)
	}
	if p.epoch.Load() != mark {
		// A pushConn failed during the read: an invalidation of this
		// value may be lost. Serve it, never keep it.
		item.Expires = start
	}
	return item, true, nil
}

// untracked reads key through the fill client, which is untracked in push
// mode: the value is served, never kept.
func (p *pusher) untracked(ctx context.Context, key []byte, start time.Time) (l2store.Item, bool, error) {
	k := string(key)
	var get *redis.StringCmd
	_, err := p.s.fill.Pipelined(ctx, func(pl redis.Pipeliner) error {
		get = pl.Get(ctx, k)
		return nil
	})
	switch {
	case errors.Is(get.Err(), redis.Nil):
		return l2store.Item{}, false, nil
	case get.Err() != nil:
		return l2store.Item{}, false, p.s.replyError(get.Err())
	case err != nil:
		return l2store.Item{}, false, p.s.replyError(err)
	}
	return l2store.Item{Value: []byte(get.Val()), Expires: start}, true, nil
}

// conn returns the pushConn of key's node, connecting one if there is none
// and no dial failed recently; nil if there is none to use.
func (p *pusher) conn(ctx context.Context, key []byte) (*pushConn, error) {
	name, _, err := p.s.dedicatedTarget(ctx, 1, key)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	n := p.nodes[name]
	if n == nil {
		n = &pushNode{name: name}
		p.nodes[name] = n
	}
	for {
		switch {
		case p.closed:
			p.mu.Unlock()
			return nil, l2store.ErrClosed
		case n.pc != nil:
			pc := n.pc
			p.mu.Unlock()
			return pc, nil
		case n.dialing == nil && time.Now().Before(n.retryAt):
			p.mu.Unlock()
			return nil, nil
		case n.dialing == nil:
			n.dialing = make(chan struct{})
			p.wg.Add(1)
			go p.connect(n, bytes.Clone(key)) // the caller may reuse key
		}
		dialing := n.dialing
		p.mu.Unlock()
		select {
		case <-dialing:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.ctx.Done():
			return nil, l2store.ErrClosed
		}
		p.mu.Lock()
		if n.pc == nil && !p.closed {
			p.mu.Unlock()
			return nil, nil // the attempt failed: read untracked
		}
	}
}

// connect dials a tracked RESP3 connection to n, and starts its reader.
func (p *pusher) connect(n *pushNode, key []byte) {
	defer p.wg.Done()
	cfg := &p.s.cfg
	ctx, cancel := context.WithTimeout(p.ctx, cfg.DialTimeout+cfg.ReadTimeout)
	c, err := p.s.Dedicated(ctx, 3, key)
	if err == nil && c.node != n.name {
		c.Close()
		err = fmt.Errorf("%w: %s", errPushMoved, n.name)
	}
	if err == nil {
		if err = enablePush(c); err != nil {
			c.Close()
		}
	}
	cancel()

	p.mu.Lock()
	dialing := n.dialing
	n.dialing = nil
	if err == nil && p.closed {
		c.Close()
		err = l2store.ErrClosed
	}
	if err != nil {
		n.backoff = min(max(2*n.backoff, trackerMinBackoff), trackerMaxBackoff)
		var ce *cmdError
		refused := errors.As(err, &ce) && ce.refused()
		if refused {
			n.backoff = trackerMaxBackoff
		}
		n.retryAt = time.Now().Add(n.backoff)
		first := !n.down
		if first {
			n.down = true
			p.down++
		}
		closed := p.closed
		p.mu.Unlock()
		close(dialing)
		switch {
		case closed:
		case refused && first:
			p.log.Error("L2 upstream refuses CLIENT TRACKING ON (RESP3 push): L1 keeps no value from this node",
				zap.String("node", n.name), zap.Error(err))
		case first:
			p.log.Warn("L2 push tracking connection failed: values from this node are not kept until it connects",
				zap.String("node", n.name), zap.Error(err))
		default:
			p.log.Debug("L2 push tracking reconnect failed", zap.String("node", n.name), zap.Error(err))
		}
		return
	}
	c.SetReadTimeout(trackerPingInterval + cfg.ReadTimeout)
	pc := &pushConn{p: p, n: n, c: c, done: make(chan struct{})}
	n.pc, n.backoff, n.retryAt = pc, 0, time.Time{}
	restored := n.started
	n.started = true
	if n.down {
		n.down = false
		p.down--
	}
	p.wg.Add(2)
	go pc.read()
	go pc.ping()
	p.mu.Unlock()
	close(dialing)
	if restored {
		p.log.Info("L2 push tracking restored: values are kept again", zap.String("node", n.name))
	} else {
		p.log.Info("L2 tracking enabled (RESP3 push): L1 drops values the upstream reports changed", zap.String("node", n.name))
	}
}

// enablePush turns tracking on on a new dedicated RESP3 connection.
func enablePush(c *Conn) error {
	raw, err := c.Do(trackingOnArgs)
	if err != nil {
		return err
	}
	rep, err := parseRaw(raw)
	if err != nil {
		return err
	}
	if err := replyError("CLIENT TRACKING", rep); err != nil {
		return err
	}
	if rep.Kind != l2store.KindStatus || c.Buffered() > 0 {
		return fmt.Errorf("%w: unexpected reply to CLIENT TRACKING ON: %v", l2store.ErrProtocol, rep)
	}
	return nil
}

// parseRaw parses one raw reply.
func parseRaw(raw []byte) (l2store.Reply, error) {
	return l2store.ReadReply(bufio.NewReaderSize(bytes.NewReader(raw), len(raw)), maxReplyBulk)
}

// send writes cmds and queues a reply for each on w, which must have room
// for them.
func (pc *pushConn) send(w chan pushResult, cmds ...[][]byte) error {
	pc.mu.Lock()
	if pc.dead {
		pc.mu.Unlock()
		return fmt.Errorf("%w: %s: push tracking connection lost", l2store.ErrUnavailable, pc.n.name)
	}
	for range cmds {
		pc.waiters = append(pc.waiters, w)
	}
	err := pc.c.send(cmds...)
	pc.mu.Unlock()
	if err != nil {
		pc.fail(err)
	}
	return nil // the waiters receive the error
}

// getPTTL sends GET and PTTL for key and returns their replies, waiting at
// most the ReadTimeout (after which the connection fails) and ctx.
func (pc *pushConn) getPTTL(ctx context.Context, key []byte) (get, pttl l2store.Reply, err error) {
	w := make(chan pushResult, 2)
	if err := pc.send(w, [][]byte{getCmd, key}, [][]byte{pttlCmd, key}); err != nil {
		return get, pttl, err
	}
	timer := time.NewTimer(pc.p.s.cfg.ReadTimeout)
	defer timer.Stop()
	var replies [2]l2store.Reply
	for i := range replies {
		var r pushResult
		for received := false; !received; {
			select {
			case r = <-w:
				received = true
			case <-ctx.Done():
				return get, pttl, ctx.Err()
			case <-timer.C:
				pc.fail(errPushTimeout) // the waiters receive the error
			}
		}
		if r.err != nil {
			return get, pttl, r.err
		}
		if replies[i], err = parseRaw(r.raw); err != nil {
			pc.fail(err)
			return get, pttl, fmt.Errorf("%w: %s: %v", l2store.ErrUnavailable, pc.n.name, err)
		}
	}
	return replies[0], replies[1], nil
}

// read is the reader: it hands replies to the waiters in order and pushes
// to the Invalidations channel, until the connection fails.
func (pc *pushConn) read() {
	defer pc.p.wg.Done()
	for {
		b, err := pc.c.Receive()
		if err != nil {
			pc.fail(err)
			return
		}
		if b[0] == '>' {
			inv, ok, err := parsePush(b)
			if err != nil {
				pc.fail(err)
				return
			}
			if ok {
				select {
				case pc.p.tr.out <- inv:
				case <-pc.p.ctx.Done():
					pc.fail(l2store.ErrClosed)
					return
				}
			}
			continue
		}
		pc.mu.Lock()
		if len(pc.waiters) == 0 {
			pc.mu.Unlock()
			pc.fail(fmt.Errorf("%w: a reply nothing asked for: %q", l2store.ErrProtocol, b))
			return
		}
		w := pc.waiters[0]
		pc.waiters[0] = nil
		pc.waiters = pc.waiters[1:]
		pc.mu.Unlock()
		w <- pushResult{raw: b} // w has room for every reply queued on it
	}
}

// ping PINGs the connection while it lives, so that the reader hears
// something within its read timeout.
func (pc *pushConn) ping() {
	defer pc.p.wg.Done()
	t := time.NewTicker(trackerPingInterval)
	defer t.Stop()
	for {
		select {
		case <-pc.done:
			return
		case <-t.C:
		}
		pc.send(make(chan pushResult, 1), pingArgs)
	}
}

// fail ends the connection: it fails the waiters, drops the connection
// from its node and flushes L1 (the server forgets what it read). The
// first call does it; later ones do nothing.
func (pc *pushConn) fail(cause error) {
	pc.mu.Lock()
	if pc.dead {
		pc.mu.Unlock()
		return
	}
	pc.dead = true
	waiters := pc.waiters
	pc.waiters = nil
	pc.mu.Unlock()
	pc.c.Close()
	close(pc.done)

	p := pc.p
	p.epoch.Add(1) // before the flush: reads in progress are not kept
	p.mu.Lock()
	n := pc.n
	if n.pc == pc {
		n.pc = nil
		if !n.down {
			n.down = true
			p.down++
		}
	}
	closed := p.closed
	p.mu.Unlock()

	err := fmt.Errorf("%w: %s: push tracking connection: %v", l2store.ErrUnavailable, n.name, cause)
	if closed {
		err = l2store.ErrClosed
	}
	for _, w := range waiters {
		w <- pushResult{err: err}
	}
	if !closed {
		p.tr.requestFlush()
		p.log.Warn("L2 push tracking lost: L1 entries made stale; values from this node are not kept until it reconnects",
			zap.String("node", n.name), zap.Error(cause))
	}
}

// close ends every pushConn and waits for their goroutines. Store.Close
// calls it before closing the Invalidations channel.
func (p *pusher) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.cancel()
	var conns []*pushConn
	for _, n := range p.nodes {
		if n.pc != nil {
			conns = append(conns, n.pc)
		}
	}
	p.mu.Unlock()
	for _, pc := range conns {
		pc.fail(l2store.ErrClosed)
	}
	p.wg.Wait()
}

// parsePush interprets a RESP3 push: ok is true for an invalidation
// message (">2 invalidate <keys | null>"); other pushes are ignored.
func parsePush(raw []byte) (inv Invalidation, ok bool, err error) {
	r, err := parseRaw(raw)
	if err != nil {
		return Invalidation{}, false, err
	}
	if r.Kind != l2store.KindPush || len(r.Elems) != 2 || string(r.Elems[0].Str) != invalidatePushName {
		return Invalidation{}, false, nil
	}
	return invalidationOf(r.Elems[1])
}
