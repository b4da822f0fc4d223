package remote

// Server-assisted invalidation of L1 (CLIENT TRACKING with REDIRECT).
//
// Per upstream data node there is a tracker: one connection of its own that
// learns its client ID (CLIENT ID), subscribes to __redis__:invalidate and
// reads forever. Every connection of the read path (the fill client) is
// dialed by tracking.dial, which enables CLIENT TRACKING ON REDIRECT <the
// tracker's ID> on it before go-redis's own handshake (HELLO, AUTH and
// SELECT keep tracking on). The server then remembers which keys each fill
// connection read and, when one is written, expired, evicted or flushed,
// sends the key (or a null, on FLUSHALL/FLUSHDB) to the tracker, which
// passes it on as an Invalidation.
//
// The server tracks keys per fill connection and forgets them when that
// connection closes; it sends nothing when the tracker's connection is gone.
// So:
//   - a fill connection that closes (go-redis discards it, or the watchdog
//     finds it closed by the server) flushes L1;
//   - a tracker that loses its connection flushes L1, marks its node
//     untracked and reconnects with backoff; with a new client ID, it retires
//     the fill connections still redirecting to the old one (their socket
//     check and writes fail, so go-redis discards them before reuse) and
//     flushes L1 again;
//   - a read made while any node with fill connections is untracked, or
//     while the tracking state changed, is served but not kept (Store.Get
//     returns it already expired).
//
// A flush is coarse but safe: the consumer drops every L1 entry, and L1
// drops the fills in flight. The Store keeps one state word (an epoch, an
// "untracked" bit and an "off" bit) that Get samples before and after a read.
//
// go-redis calls the Dialer with the address of the node it connects to: the
// server (one server), each cluster node (ClusterOptions.Dialer is copied
// into every node's Options), the current master (Sentinel's
// masterReplicaDialer resolves it first) — and the sentinels too, since
// FailoverOptions.Dialer also dials them: the configured sentinels are
// dialed plainly, and a discovered one is told apart by its ROLE.

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/sidecache/sidecache/l2store"
)

// Invalidation tells L1 to drop keys it holds: the upstream reports them
// changed, or, with Flush, that L1 may hold stale values of any key.
type Invalidation struct {
	// Keys are the changed keys. The slices are the consumer's to keep.
	Keys [][]byte
	// Flush reports that any key may have changed: on FLUSHALL/FLUSHDB
	// upstream, and when an invalidation may have been lost (a tracking or
	// fill connection closed). No value read before may be served as
	// fresh; sidecache keeps them as stale copies for when the L2 fails.
	Flush bool
}

// Values of Store.TrackingStatus.
const (
	// TrackingStatusRedirect: tracking is on for every node in use.
	TrackingStatusRedirect = "redirect"
	// TrackingStatusBroken: some node in use is untracked (its tracking
	// connection is down, or it refused tracking in TrackingRedirect mode);
	// reads are served but L1 does not keep them until it is restored.
	TrackingStatusBroken = "broken"
	// TrackingStatusRefused: in TrackingAuto mode the upstream refused
	// tracking; L1 keeps values for its TTL cap, as with TrackingOff.
	TrackingStatusRefused = "refused"
	// TrackingStatusOff: Config.Tracking is TrackingOff.
	TrackingStatusOff = "off"
)

const (
	trackingChannel = "__redis__:invalidate"
	// invalidationBuffer is the capacity of the Invalidations channel.
	invalidationBuffer = 1024
	// A tracker reconnects after trackerMinBackoff, doubling up to
	// trackerMaxBackoff while it fails.
	trackerMinBackoff = 50 * time.Millisecond
	trackerMaxBackoff = 2 * time.Second
	// trackerPingInterval is how often a tracker PINGs; a tracker that
	// hears nothing for this plus Config.ReadTimeout reconnects.
	trackerPingInterval = time.Second
	// fillCheckInterval is how often the watchdog looks for fill
	// connections the server closed (e.g. its idle timeout) while go-redis
	// holds them idle: their tracked keys are forgotten from then on.
	fillCheckInterval = 250 * time.Millisecond
	// maxInvalidationBulk bounds a key and the keys of one message (Redis's
	// own proto-max-bulk-len).
	maxInvalidationBulk = 512 << 20
	// maxHandshakeBulk bounds the replies of the handshakes.
	maxHandshakeBulk = 1 << 20
	// fillDialAttempts bounds the dials of one fill connection when the
	// tracking state changes under it.
	fillDialAttempts = 3
)

var (
	// errSentinel: the address is a Sentinel, not a data node.
	errSentinel = errors.New("remote: the address is a Sentinel")
	// errRetired is returned by writes on a fill connection whose tracking
	// lapsed; go-redis then discards it.
	errRetired = errors.New("remote: connection retired: its tracking lapsed")
	// errTrackingChanged makes tracking.dial try again.
	errTrackingChanged = errors.New("remote: tracking changed while connecting")
)

// cmdError is an error reply to a command of a handshake.
type cmdError struct{ cmd, msg string }

func (e *cmdError) Error() string { return e.cmd + ": " + e.msg }

// refused reports whether the error means the upstream does not support or
// allow the command (unknown command or option, syntax, ACL), as opposed to
// a passing condition (LOADING, a missing redirect client, too many clients).
func (e *cmdError) refused() bool {
	code, _, _ := strings.Cut(e.msg, " ")
	switch code {
	case "NOPERM":
		return true
	case "ERR":
		low := strings.ToLower(e.msg)
		return !strings.Contains(low, "does not exist") && !strings.Contains(low, "max number of clients")
	}
	return false
}

// nodeState is the tracking state of one upstream node.
type nodeState uint8

const (
	nodeStarting nodeState = iota // the tracker's first connection attempt
	nodeUp                        // the tracker is subscribed; fill connections redirect to it
	nodeDown                      // the tracker is reconnecting; fill connections are untracked
	nodeRefused                   // the node refuses tracking (final)
	nodeSentinel                  // a Sentinel: its connections are not the read path's
)

// node is one upstream address the fill client dialed. Its fields after
// ready are guarded by tracking.mu.
type node struct {
	addr      string
	ready     chan struct{} // closed when the tracker's first attempt is over
	readyOnce sync.Once

	state   nodeState
	id      int64    // the tracker's client ID while up
	gen     uint64   // unique per tracker connection; fill connections record it
	conn    net.Conn // the tracker's connection while up
	conns   map[*fillConn]struct{}
	pending int  // dials in progress, which keep the node
	counted bool // counted in tracking.untracked
}

func (n *node) markReady() { n.readyOnce.Do(func() { close(n.ready) }) }

// tracking owns the trackers, the registry of fill connections and the
// Invalidations channel of a Store.
type tracking struct {
	mode         TrackingMode
	deploy       Mode
	log          *zap.Logger
	tls          *tls.Config
	username     string
	password     string
	dialTimeout  time.Duration
	readTimeout  time.Duration
	writeTimeout time.Duration
	sentinels    map[string]bool // Sentinel mode: the configured sentinels

	out chan Invalidation
	// warned holds the nodes (by address) whose loss of tracking was
	// logged at Warn: until one is up again, its failed reconnects (each
	// fill dial may start one) are logged at Debug.
	warned   map[string]bool
	flushReq chan struct{} // a pending flush, coalesced
	ctx      context.Context
	cancel   context.CancelFunc
	done     <-chan struct{}
	wg       sync.WaitGroup

	// word is epoch<<2 | off<<1 | untracked, published by publish.
	word atomic.Uint64

	mu        sync.Mutex
	nodes     map[string]*node
	untracked int // nodes with fill connections and no tracking
	off       bool
	epoch     uint64
	gens      uint64
	closed    bool
}

const (
	wordUntracked = 1
	wordOff       = 2
)

func newTracking(cfg *Config, t *target) *tracking {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &tracking{
		mode:         cfg.Tracking,
		deploy:       t.mode,
		log:          cfg.Logger,
		tls:          cfg.tlsConfig(t),
		username:     t.username,
		password:     t.password,
		dialTimeout:  cfg.DialTimeout,
		readTimeout:  cfg.ReadTimeout,
		writeTimeout: cfg.WriteTimeout,
		sentinels:    make(map[string]bool),
		out:          make(chan Invalidation, invalidationBuffer),
		flushReq:     make(chan struct{}, 1),
		ctx:          ctx,
		cancel:       cancel,
		done:         ctx.Done(),
		nodes:        make(map[string]*node),
	}
	if t.mode == Sentinel {
		for _, a := range t.addrs {
			tr.sentinels[a] = true
		}
	}
	if tr.mode != TrackingOff {
		tr.wg.Add(2)
		go tr.flusher()
		go tr.watch()
	}
	return tr
}

// dialer returns the fill client's go-redis Dialer, nil without tracking
// or with TrackingPush (whose fill client reads untracked only, push.go).
func (tr *tracking) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	if tr.mode == TrackingOff || tr.mode == TrackingPush {
		return nil
	}
	return tr.dial
}

// Invalidations returns the invalidations of values the Store's Get
// returned. The consumer (cmd/sidecache: a goroutine calling L1's
// Invalidate for each key, Flush for Flush) must keep reading: the trackers
// block while it is full rather than drop one. Close closes it. With
// TrackingOff nothing is sent.
func (s *Store) Invalidations() <-chan Invalidation { return s.trk.out }

// TrackingStatus reports the state of server-assisted invalidation, one of
// the TrackingStatus constants, for INFO.
func (s *Store) TrackingStatus() string {
	switch {
	case s.push != nil: // TrackingPush, or auto where REDIRECT is refused
		return s.push.status()
	case s.trk.mode == TrackingOff:
		return TrackingStatusOff
	}
	w := s.trk.word.Load()
	switch {
	case w&wordOff != 0:
		return TrackingStatusRefused
	case w&wordUntracked != 0:
		return TrackingStatusBroken
	}
	return TrackingStatusRedirect
}

// mark samples the tracking state before a read.
func (tr *tracking) mark() uint64 { return tr.word.Load() }

// keep reports whether L1 may keep a value read since mark until it is
// invalidated (or its TTL cap). Not when a node was untracked, or the state
// changed during the read: an invalidation may be lost.
func (tr *tracking) keep(mark uint64) bool {
	if tr.mode == TrackingOff || mark&wordOff != 0 {
		return true
	}
	return mark&wordUntracked == 0 && tr.word.Load() == mark
}

// publish stores a new state word. Callers hold mu.
func (tr *tracking) publish() {
	tr.epoch++
	w := tr.epoch << 2
	if tr.off {
		w |= wordOff
	}
	if tr.untracked > 0 {
		w |= wordUntracked
	}
	tr.word.Store(w)
}

// recount updates n's share of untracked and publishes when it changes.
// Callers hold mu.
func (tr *tracking) recount(n *node) {
	untracked := n.state == nodeStarting || n.state == nodeDown ||
		n.state == nodeRefused && tr.mode == TrackingRedirect
	c := untracked && len(n.conns) > 0
	if c == n.counted {
		return
	}
	n.counted = c
	if c {
		tr.untracked++
	} else {
		tr.untracked--
	}
	tr.publish()
}

// requestFlush makes the flusher send a Flush. Requests made before the
// flusher takes one are sent as one.
func (tr *tracking) requestFlush() {
	select {
	case tr.flushReq <- struct{}{}:
	default:
	}
}

func (tr *tracking) flusher() {
	defer tr.wg.Done()
	for {
		select {
		case <-tr.done:
			return
		case <-tr.flushReq:
		}
		select {
		case tr.out <- Invalidation{Flush: true}:
		case <-tr.done:
			return
		}
	}
}

// close stops the trackers and closes the Invalidations channel. The fill
// client is closed first.
func (tr *tracking) close() {
	tr.mu.Lock()
	if tr.closed {
		tr.mu.Unlock()
		return
	}
	tr.closed = true
	tr.cancel()
	var conns []net.Conn
	for _, n := range tr.nodes {
		if n.conn != nil {
			conns = append(conns, n.conn)
		}
	}
	tr.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	tr.wg.Wait()
	close(tr.out)
}

// dialNode connects to addr, with TLS if useTLS and TLS is configured.
func (tr *tracking) dialNode(ctx context.Context, network, addr string, useTLS bool) (net.Conn, error) {
	d := net.Dialer{
		Timeout:         tr.dialTimeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 5 * time.Second, Count: 3},
	}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil || !useTLS || tr.tls == nil {
		return c, err
	}
	cfg := tr.tls.Clone()
	if cfg.ServerName == "" {
		host, _, _ := net.SplitHostPort(addr)
		cfg.ServerName = host
	}
	tc := tls.Client(c, cfg)
	hctx, cancel := context.WithTimeout(ctx, tr.dialTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// authArgs returns the AUTH command for the URL's credentials, or nil.
func (tr *tracking) authArgs() []string {
	switch {
	case tr.password == "":
		return nil
	case tr.username != "":
		return []string{"AUTH", tr.username, tr.password}
	}
	return []string{"AUTH", tr.password}
}

// appendCommand appends args as a RESP array of bulk strings.
func appendCommand(dst []byte, args ...string) []byte {
	dst = fmt.Appendf(dst, "*%d\r\n", len(args))
	for _, a := range args {
		dst = fmt.Appendf(dst, "$%d\r\n%s\r\n", len(a), a)
	}
	return dst
}

// roundTrip writes cmds in one batch and reads a reply to each.
func roundTrip(conn net.Conn, r *bufio.Reader, cmds [][]string) ([]l2store.Reply, error) {
	var buf []byte
	for _, c := range cmds {
		buf = appendCommand(buf, c...)
	}
	if _, err := conn.Write(buf); err != nil {
		return nil, err
	}
	replies := make([]l2store.Reply, len(cmds))
	for i := range cmds {
		rep, err := l2store.ReadReply(r, maxHandshakeBulk)
		if err != nil {
			return nil, err
		}
		replies[i] = rep
	}
	return replies, nil
}

// replyError returns the error a reply to cmd holds, or nil.
func replyError(cmd string, r l2store.Reply) error {
	if r.Kind == l2store.KindError {
		return &cmdError{cmd: cmd, msg: string(r.Str)}
	}
	return nil
}

// isArrayOf reports whether r is an array whose first element is word.
func isArrayOf(r l2store.Reply, word string) bool {
	return r.Kind == l2store.KindArray && len(r.Elems) > 0 &&
		r.Elems[0].Kind == l2store.KindBulk && strings.EqualFold(string(r.Elems[0].Str), word)
}

// withDeadline bounds the handshake on conn by ctx: conn's deadline is
// ctx's, and conn fails at once if ctx is cancelled. The returned function
// clears both; it reports false if ctx ended first.
func withDeadline(ctx context.Context, conn net.Conn) func() bool {
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	return func() bool {
		if !stop() {
			return false
		}
		conn.SetDeadline(time.Time{})
		return true
	}
}

// connect opens a tracker connection to n: AUTH, (Sentinel mode: ROLE, to
// tell a discovered sentinel from a data node), CLIENT ID, SUBSCRIBE.
func (tr *tracking) connect(n *node) (net.Conn, *bufio.Reader, int64, error) {
	ctx, cancel := context.WithTimeout(tr.ctx, tr.dialTimeout)
	defer cancel()
	conn, err := tr.dialNode(ctx, "tcp", n.addr, true)
	if err != nil {
		return nil, nil, 0, err
	}
	id, r, err := tr.subscribe(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, nil, 0, err
	}
	return conn, r, id, nil
}

func (tr *tracking) subscribe(ctx context.Context, conn net.Conn) (int64, *bufio.Reader, error) {
	done := withDeadline(ctx, conn)
	r := bufio.NewReader(conn)
	var cmds [][]string
	auth := tr.authArgs()
	if auth != nil {
		cmds = append(cmds, auth)
	}
	probe := tr.deploy == Sentinel
	if probe {
		cmds = append(cmds, []string{"ROLE"})
	}
	cmds = append(cmds, []string{"CLIENT", "ID"}, []string{"SUBSCRIBE", trackingChannel})
	replies, err := roundTrip(conn, r, cmds)
	if !done() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return 0, nil, err
	}
	var authErr error
	if auth != nil {
		authErr, replies = replyError("AUTH", replies[0]), replies[1:]
	}
	if probe {
		if isArrayOf(replies[0], "sentinel") {
			return 0, nil, errSentinel
		}
		replies = replies[1:]
	}
	if authErr != nil {
		return 0, nil, authErr
	}
	if err := replyError("CLIENT ID", replies[0]); err != nil {
		return 0, nil, err
	}
	if err := replyError("SUBSCRIBE", replies[1]); err != nil {
		return 0, nil, err
	}
	if replies[0].Kind != l2store.KindInt || !isArrayOf(replies[1], "subscribe") {
		return 0, nil, fmt.Errorf("%w: unexpected replies to CLIENT ID and SUBSCRIBE: %v %v", l2store.ErrProtocol, replies[0], replies[1])
	}
	return replies[0].Int, r, nil
}

// enable turns tracking on on a new fill connection, redirecting to id.
func (tr *tracking) enable(ctx context.Context, conn net.Conn, id int64) error {
	ctx, cancel := context.WithTimeout(ctx, tr.dialTimeout)
	defer cancel()
	done := withDeadline(ctx, conn)
	r := bufio.NewReader(conn)
	var cmds [][]string
	auth := tr.authArgs()
	if auth != nil {
		cmds = append(cmds, auth)
	}
	cmds = append(cmds, []string{"CLIENT", "TRACKING", "ON", "REDIRECT", fmt.Sprint(id)})
	replies, err := roundTrip(conn, r, cmds)
	if !done() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return err
	}
	if auth != nil {
		if err := replyError("AUTH", replies[0]); err != nil {
			return err
		}
		replies = replies[1:]
	}
	if err := replyError("CLIENT TRACKING", replies[0]); err != nil {
		return err
	}
	if replies[0].Kind != l2store.KindStatus || r.Buffered() > 0 {
		// go-redis reads the connection from here on: nothing may be left.
		return fmt.Errorf("%w: unexpected reply to CLIENT TRACKING: %v", l2store.ErrProtocol, replies[0])
	}
	return nil
}

// acquire returns the node of addr, starting its tracker if it has none,
// once the tracker's first attempt is over. The caller calls release.
func (tr *tracking) acquire(ctx context.Context, addr string) (*node, error) {
	tr.mu.Lock()
	if tr.closed {
		tr.mu.Unlock()
		return nil, l2store.ErrClosed
	}
	n := tr.nodes[addr]
	if n == nil {
		n = &node{addr: addr, ready: make(chan struct{}), conns: make(map[*fillConn]struct{})}
		tr.nodes[addr] = n
		tr.wg.Add(1)
		go tr.run(n)
	}
	n.pending++
	tr.mu.Unlock()
	select {
	case <-n.ready:
		return n, nil
	case <-ctx.Done():
		tr.release(n)
		return nil, ctx.Err()
	case <-tr.done:
		tr.release(n)
		return nil, l2store.ErrClosed
	}
}

func (tr *tracking) release(n *node) {
	tr.mu.Lock()
	n.pending--
	tr.mu.Unlock()
}

// dial is the fill client's Dialer: a connection to a data node with
// tracking redirected to the node's tracker (untracked, and registered so,
// while the tracker is down or the node refuses tracking).
func (tr *tracking) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if tr.sentinels[addr] {
		// go-redis's sentinel client dials with the same Dialer, in plain
		// TCP as it would by itself.
		return tr.dialNode(ctx, network, addr, false)
	}
	for range fillDialAttempts {
		n, err := tr.acquire(ctx, addr)
		if err != nil {
			return nil, err
		}
		c, err := tr.dialFill(ctx, network, n)
		tr.release(n)
		if !errors.Is(err, errTrackingChanged) {
			return c, err
		}
	}
	return nil, fmt.Errorf("%w (%s)", errTrackingChanged, addr)
}

func (tr *tracking) dialFill(ctx context.Context, network string, n *node) (net.Conn, error) {
	tr.mu.Lock()
	st, id, gen := n.state, n.id, n.gen
	tr.mu.Unlock()
	if st == nodeSentinel {
		return tr.dialNode(ctx, network, n.addr, false)
	}
	raw, err := tr.dialNode(ctx, network, n.addr, true)
	if err != nil {
		return nil, err
	}
	c := &fillConn{Conn: raw, tr: tr, n: n}
	if st == nodeUp {
		err := tr.enable(ctx, raw, id)
		var ce *cmdError
		switch {
		case err == nil:
			c.gen = gen
		case errors.As(err, &ce) && ce.cmd == "CLIENT TRACKING" && ce.refused():
			tr.refuse(n, err)
			st = nodeRefused
		case errors.As(err, &ce) && ce.cmd == "CLIENT TRACKING":
			// The server no longer knows the tracker's ID: its
			// connection is gone, which the tracker has yet to see.
			raw.Close()
			if conn := tr.setDown(n, gen, err); conn != nil {
				conn.Close()
			}
			return nil, errTrackingChanged
		default:
			raw.Close()
			return nil, err
		}
	}
	tr.mu.Lock()
	if tr.closed || n.state != st || n.gen != gen {
		tr.mu.Unlock()
		raw.Close()
		return nil, errTrackingChanged
	}
	n.conns[c] = struct{}{}
	tr.recount(n)
	tr.mu.Unlock()
	if sc := socket(raw); sc != nil {
		return sysFillConn{c, sc}, nil
	}
	return c, nil
}

// run is n's tracker.
func (tr *tracking) run(n *node) {
	defer tr.wg.Done()
	defer n.markReady()
	backoff := trackerMinBackoff
	for {
		conn, r, id, err := tr.connect(n)
		var ce *cmdError
		switch {
		case err == nil:
			gen := tr.setUp(n, conn, id)
			if gen == 0 {
				return
			}
			n.markReady()
			backoff = trackerMinBackoff
			err = tr.serve(conn, r)
			conn.Close()
			tr.setDown(n, gen, err)
		case errors.Is(err, errSentinel):
			tr.mu.Lock()
			n.state = nodeSentinel
			tr.recount(n)
			tr.mu.Unlock()
			return
		case errors.As(err, &ce) && ce.cmd != "AUTH" && ce.refused():
			tr.refuse(n, err)
			return
		default:
			tr.failed(n, err)
			n.markReady()
		}
		if tr.idle(n) {
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-tr.done:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, trackerMaxBackoff)
	}
}

// setUp records n's new tracker connection, retires the fill connections
// that redirect elsewhere, and returns the connection's generation (0 if
// the Store is closed or n refused tracking meanwhile).
func (tr *tracking) setUp(n *node, conn net.Conn, id int64) uint64 {
	tr.mu.Lock()
	if tr.closed || n.state == nodeRefused {
		tr.mu.Unlock()
		conn.Close()
		return 0
	}
	prev := n.state
	tr.gens++
	n.state, n.id, n.gen, n.conn = nodeUp, id, tr.gens, conn
	var retired []*fillConn
	for c := range n.conns {
		if c.gen != n.gen {
			// Writes fail from now on, before Gets can see the new state.
			c.dead.Store(true)
			delete(n.conns, c)
			retired = append(retired, c)
		}
	}
	tr.recount(n)
	tr.publish()
	gen := n.gen
	tr.mu.Unlock()

	for _, c := range retired {
		c.Conn.Close()
	}
	if prev == nodeDown || len(retired) > 0 {
		tr.requestFlush()
	}
	tr.mu.Lock()
	delete(tr.warned, n.addr)
	tr.mu.Unlock()
	if prev == nodeStarting {
		tr.log.Info("L2 tracking enabled: L1 drops values the upstream reports changed",
			zap.String("node", n.addr), zap.Int64("client_id", id))
	} else {
		tr.log.Info("L2 tracking restored: L1 entries made stale, values are kept again",
			zap.String("node", n.addr), zap.Int64("client_id", id), zap.Int("connections_retired", len(retired)))
	}
	return gen
}

// setDown marks n untracked if its tracker connection is still gen, and
// returns that connection for the caller to close.
func (tr *tracking) setDown(n *node, gen uint64, err error) net.Conn {
	tr.mu.Lock()
	if n.state != nodeUp || n.gen != gen {
		tr.mu.Unlock()
		return nil
	}
	conn := n.conn
	n.state, n.conn = nodeDown, nil
	tr.recount(n)
	tr.publish()
	closed := tr.closed
	tr.warnOnce(n.addr)
	tr.mu.Unlock()
	if closed {
		return conn
	}
	tr.requestFlush()
	tr.log.Warn("L2 tracking lost: L1 entries made stale; values from this node are not kept until it is restored",
		zap.String("node", n.addr), zap.Error(err))
	return conn
}

// failed records a failed tracker connection attempt.
func (tr *tracking) failed(n *node, err error) {
	tr.mu.Lock()
	first := n.state == nodeStarting
	if first {
		n.state = nodeDown
		tr.recount(n)
		tr.publish()
	}
	closed := tr.closed
	warn := tr.warnOnce(n.addr)
	tr.mu.Unlock()
	switch {
	case closed:
	case first && warn:
		tr.log.Warn("L2 tracking connection failed: values from this node are not kept until it connects",
			zap.String("node", n.addr), zap.Error(err))
	default:
		tr.log.Debug("L2 tracking reconnect failed", zap.String("node", n.addr), zap.Error(err))
	}
}

// warnOnce reports whether addr's loss of tracking is yet to be logged at
// Warn, and records that it is. tr.mu is held.
func (tr *tracking) warnOnce(addr string) bool {
	if tr.warned[addr] {
		return false
	}
	if tr.warned == nil {
		tr.warned = make(map[string]bool)
	}
	tr.warned[addr] = true
	return true
}

// refuse records that n refuses tracking, for good.
func (tr *tracking) refuse(n *node, err error) {
	tr.mu.Lock()
	if n.state == nodeRefused {
		tr.mu.Unlock()
		return
	}
	n.state = nodeRefused
	conn := n.conn
	n.conn = nil
	tracked := false
	for c := range n.conns {
		tracked = tracked || c.gen != 0
	}
	if tr.mode == TrackingAuto {
		tr.off = true
	}
	tr.recount(n)
	tr.publish()
	tr.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
	if tracked {
		tr.requestFlush()
	}
	if tr.mode == TrackingAuto {
		tr.log.Warn("L2 upstream refuses CLIENT TRACKING REDIRECT: L1 falls back to its TTL cap (--l1-ttl) for staleness",
			zap.String("node", n.addr), zap.Error(err))
	} else {
		tr.log.Error("L2 upstream refuses CLIENT TRACKING REDIRECT: L1 keeps no value from this node (tracking is redirect; auto would fall back to the TTL cap)",
			zap.String("node", n.addr), zap.Error(err))
	}
}

// idle reports whether n's tracker should stop: the Store is closed, n
// refused tracking, or n is untracked and nothing uses it (n is then
// forgotten; a later dial starts a new tracker).
func (tr *tracking) idle(n *node) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	switch {
	case tr.closed || n.state == nodeRefused || n.state == nodeSentinel:
		return true
	case n.state != nodeUp && len(n.conns) == 0 && n.pending == 0:
		if tr.nodes[n.addr] == n {
			delete(tr.nodes, n.addr)
		}
		tr.recount(n)
		return true
	}
	return false
}

// serve reads conn's invalidation messages until it fails, PINGing it
// meanwhile.
func (tr *tracking) serve(conn net.Conn, r *bufio.Reader) error {
	stop := make(chan struct{})
	defer close(stop)
	tr.wg.Add(1)
	go tr.ping(conn, stop)
	for {
		conn.SetReadDeadline(time.Now().Add(trackerPingInterval + tr.readTimeout))
		rep, err := l2store.ReadReply(r, maxInvalidationBulk)
		if err != nil {
			return err
		}
		inv, ok, err := parseMessage(rep)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		select {
		case tr.out <- inv:
		case <-tr.done:
			return l2store.ErrClosed
		}
	}
}

func (tr *tracking) ping(conn net.Conn, stop <-chan struct{}) {
	defer tr.wg.Done()
	t := time.NewTicker(trackerPingInterval)
	defer t.Stop()
	cmd := appendCommand(nil, "PING")
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		conn.SetWriteDeadline(time.Now().Add(tr.writeTimeout))
		if _, err := conn.Write(cmd); err != nil {
			conn.Close()
			return
		}
	}
}

// parseMessage interprets one reply on a tracker connection: ok is true
// for an invalidation message. Other replies (PING's, SUBSCRIBE's) are
// ignored; an error reply is an error.
func parseMessage(r l2store.Reply) (inv Invalidation, ok bool, err error) {
	if r.Kind == l2store.KindError {
		return Invalidation{}, false, &cmdError{cmd: "tracking connection", msg: string(r.Str)}
	}
	if !isArrayOf(r, "message") || len(r.Elems) != 3 || string(r.Elems[1].Str) != trackingChannel {
		return Invalidation{}, false, nil
	}
	return invalidationOf(r.Elems[2])
}

// invalidationOf reads the payload of an invalidation message, RESP2
// pub/sub or RESP3 push: the keys, or null for all of them. ok is false
// for an empty key list.
func invalidationOf(p l2store.Reply) (inv Invalidation, ok bool, err error) {
	switch p.Kind {
	case l2store.KindNull, l2store.KindNullArray:
		return Invalidation{Flush: true}, true, nil
	case l2store.KindArray, l2store.KindSet:
		keys := make([][]byte, 0, len(p.Elems))
		for _, k := range p.Elems {
			if k.Kind != l2store.KindBulk {
				return Invalidation{}, false, fmt.Errorf("%w: invalidation key %v", l2store.ErrProtocol, k)
			}
			keys = append(keys, k.Str)
		}
		return Invalidation{Keys: keys}, len(keys) > 0, nil
	}
	return Invalidation{}, false, fmt.Errorf("%w: invalidation payload %v", l2store.ErrProtocol, p)
}

// watch is the watchdog: it finds tracked fill connections the server
// closed while go-redis holds them idle, and flushes.
func (tr *tracking) watch() {
	defer tr.wg.Done()
	t := time.NewTicker(fillCheckInterval)
	defer t.Stop()
	var conns []*fillConn
	for {
		select {
		case <-tr.done:
			return
		case <-t.C:
		}
		conns = conns[:0]
		tr.mu.Lock()
		for _, n := range tr.nodes {
			for c := range n.conns {
				if c.gen != 0 {
					conns = append(conns, c)
				}
			}
		}
		tr.mu.Unlock()
		for _, c := range conns {
			if peerClosed(c.Conn) {
				tr.lost(c)
			}
		}
		clear(conns)
	}
}

// lost unregisters a fill connection the server closed, and flushes.
func (tr *tracking) lost(c *fillConn) {
	tr.mu.Lock()
	_, ok := c.n.conns[c]
	if ok {
		c.dead.Store(true)
		delete(c.n.conns, c)
		tr.recount(c.n)
	}
	tr.mu.Unlock()
	if ok {
		tr.requestFlush()
		tr.log.Debug("L2 fill connection closed by the upstream: L1 entries made stale", zap.String("node", c.n.addr))
	}
}

// unregister forgets a fill connection go-redis closed, and flushes if it
// was tracked.
func (tr *tracking) unregister(c *fillConn) {
	tr.mu.Lock()
	_, ok := c.n.conns[c]
	if ok {
		delete(c.n.conns, c)
		tr.recount(c.n)
	}
	tr.mu.Unlock()
	if ok && c.gen != 0 {
		tr.requestFlush()
	}
}

// socket returns the TCP socket of conn, under TLS if need be, or nil.
func socket(conn net.Conn) syscall.Conn {
	if tc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = tc.NetConn()
	}
	sc, _ := conn.(syscall.Conn)
	return sc
}

// peekState is what a non-blocking peek at a connection's socket finds.
type peekState uint8

const (
	peekIdle    peekState = iota // open, nothing to read
	peekData                     // bytes waiting to be read (under TLS, a close_notify too)
	peekClosed                   // end of stream, or an error
	peekUnknown                  // not a socket that can be peeked at
)

// peek looks at conn's socket without reading from it. It runs under
// RawConn.Control, not RawConn.Read: Read would wait for a read in
// progress and fail once the connection's last read deadline has passed,
// which on an idle connection it has.
func peek(conn net.Conn) peekState {
	sc := socket(conn)
	if sc == nil {
		return peekUnknown
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return peekClosed
	}
	st := peekClosed
	err = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case n > 0:
			st = peekData
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR:
			st = peekIdle
		}
	})
	if err != nil {
		return peekClosed
	}
	return st
}

// peerClosed reports whether the server closed conn (a fill connection
// go-redis holds idle).
func peerClosed(conn net.Conn) bool { return peek(conn) == peekClosed }

// fillConn is a fill connection: the dialed connection, registered with
// its node, with the tracker generation it redirects to (0: untracked).
type fillConn struct {
	net.Conn
	tr   *tracking
	n    *node
	gen  uint64
	dead atomic.Bool // retired or found closed: writes fail
	once sync.Once
}

func (c *fillConn) Write(p []byte) (int, error) {
	if c.dead.Load() {
		return 0, errRetired
	}
	return c.Conn.Write(p)
}

func (c *fillConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.tr.unregister(c) })
	return err
}

// sysFillConn is a fillConn with its TCP socket, which go-redis's pool
// peeks at before reusing the connection: a retired connection, or one the
// server closed, fails the check and is discarded without failing a
// command. Under TLS, go-redis does not look at the socket by itself
// (crypto/tls may hold records back), but an idle fill connection has
// none: its first reply came after the handshake's session tickets, and
// RESP2 with tracking redirected sends nothing unasked. At worst a record
// arriving while idle makes go-redis discard a healthy connection, which
// flushes L1.
type sysFillConn struct {
	*fillConn
	sc syscall.Conn
}

func (c sysFillConn) SyscallConn() (syscall.RawConn, error) {
	if c.dead.Load() {
		return nil, errRetired
	}
	return c.sc.SyscallConn()
}
