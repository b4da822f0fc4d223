// Package remote is the L2 tier on a remote, Redis-compatible cache: one
// server (Redis, Valkey, Dragonfly), a Sentinel-managed master, or a Redis
// Cluster, reached with go-redis.
//
// The Store owns the connections to the upstream. It keeps one go-redis
// client per RESP protocol version for commands passed through, so that a
// reply reaches the application byte for byte as the upstream sent it in
// the application's protocol (l2store.KindRaw), and a third client, RESP2,
// for the read path: Get fetches a value and its remaining TTL in one round
// trip (GET and PTTL pipelined) so L1 never keeps it longer than the
// upstream would. In cluster mode the Store routes each command to the
// master owning its first key, and follows -MOVED and -ASK itself (go-redis
// does not look inside raw replies); cross-slot errors are the cluster's own.
package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/commands"
)

// Store is the remote L2. It implements l2store.Store.
type Store struct {
	cfg Config
	t   *target
	log *zap.Logger
	now func() time.Time

	pass [2]redis.UniversalClient // pass-through clients: RESP2, RESP3
	// One server or Sentinel: go-redis's autopipeliners over pass, which
	// send the commands of every client in one ordered stream of batches
	// (as twemproxy does): apOne waits for each command, apMany (the
	// deferred face) lets a client's pipeline go out in one batch.
	apOne, apMany [2]*redis.AutoPipeliner
	fill          redis.UniversalClient // the read path's client (RESP2)
	trk           *tracking             // invalidation of what fill read (tracking.go)
	push          *pusher               // TrackingPush: the read path (push.go)

	// Cluster mode only: the typed clients, and the node clients go-redis
	// created, by protocol and address, to follow redirections.
	cluster [2]*redis.ClusterClient
	nodesMu sync.Mutex
	nodes   [2]map[string]*redis.Client
	extra   []*redis.Client // node clients we created ourselves, closed by Close

	metas metaCache // commands missing from sidecache's table

	closeOnce sync.Once
	closed    chan struct{}
}

var _ l2store.Store = (*Store)(nil)

// New connects to cfg.URL. It pings the upstream once, so a wrong address
// or password fails at start; an upstream that is down at start is an
// error too (sidecache's operator should know at once).
func New(ctx context.Context, cfg Config) (*Store, error) {
	t, err := cfg.setDefaults()
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, t: t, log: cfg.Logger, now: time.Now, closed: make(chan struct{})}
	for i, proto := range []int{2, 3} {
		s.pass[i] = s.newClient(proto, i, nil)
	}
	s.trk = newTracking(&s.cfg, t)
	s.fill = s.newClient(2, -1, s.trk.dialer())
	if t.mode != Cluster {
		for i := range s.pass {
			c := s.pass[i].(interface {
				AutoPipeline() (*redis.AutoPipeliner, error)
				AsyncAutoPipeline() (*redis.AutoPipeliner, error)
			})
			if s.apOne[i], err = c.AutoPipeline(); err == nil {
				s.apMany[i], err = c.AsyncAutoPipeline()
			}
			if err != nil {
				s.Close()
				return nil, fmt.Errorf("remote: %w", err)
			}
		}
	}
	if err := s.pass[0].Ping(ctx).Err(); err != nil {
		s.Close()
		return nil, fmt.Errorf("%w: %s: %v", l2store.ErrUnavailable, redactURL(cfg.URL), err)
	}
	if cfg.Tracking != TrackingOff {
		// Connect the read path now: tracking starts, and is logged, with
		// the Store.
		if err := s.fill.Ping(ctx).Err(); err != nil {
			s.Close()
			return nil, fmt.Errorf("%w: %s: %v", l2store.ErrUnavailable, redactURL(cfg.URL), err)
		}
	}
	switch {
	case cfg.Tracking == TrackingPush:
		s.push = newPusher(s)
		s.push.start(ctx)
	case cfg.Tracking == TrackingAuto && s.TrackingStatus() == TrackingStatusRefused:
		// The upstream refuses REDIRECT: it may still track for the
		// connection that reads, with RESP3 pushes (Dragonfly).
		p := newPusher(s)
		p.start(ctx)
		if p.status() != TrackingStatusPush {
			p.close()
			break
		}
		s.push = p
		s.log.Info("L2 tracking: REDIRECT refused; tracking with RESP3 pushes on the reading connections")
	}
	return s, nil
}

// newClient returns a go-redis client for the target speaking proto. idx
// is the pass-through slot whose cluster nodes to record, or -1.
func (s *Store) newClient(proto, idx int, dialer func(ctx context.Context, network, addr string) (net.Conn, error)) redis.UniversalClient {
	o := s.cfg.clientOptions(s.t, proto)
	o.Dialer = dialer
	if dialer != nil {
		// The tracking dialer's connections live until they fail: the
		// server forgets the keys a connection read when it closes, which
		// flushes L1 (tracking.go).
		o.ConnMaxIdleTime = -1
		// The read path's deadline (the breaker's L2 timeout) bounds the
		// wait for a reply, not only the ReadTimeout.
		o.ContextTimeoutEnabled = true
	}
	// One dial attempt per connection, not go-redis's 5 with backoff: a
	// refused connection must fail the call at once, so that the breaker
	// sees the outage and clients get stale answers instead of waiting.
	const dialAttempts = 1
	switch s.t.mode {
	case Sentinel:
		fo := o.Failover()
		fo.DialerRetries = dialAttempts
		return redis.NewFailoverClient(fo)
	case Cluster:
		co := o.Cluster()
		co.DialerRetries = dialAttempts
		if idx >= 0 {
			co.NewClient = func(no *redis.Options) *redis.Client {
				c := redis.NewClient(no)
				s.nodesMu.Lock()
				if s.nodes[idx] == nil {
					s.nodes[idx] = make(map[string]*redis.Client)
				}
				s.nodes[idx][no.Addr] = c
				s.nodesMu.Unlock()
				return c
			}
		}
		cc := redis.NewClusterClient(co)
		if idx >= 0 {
			s.cluster[idx] = cc
		}
		return cc
	default:
		so := o.Simple()
		so.DialerRetries = dialAttempts
		return redis.NewClient(so)
	}
}

// Mode reports the kind of upstream.
func (s *Store) Mode() Mode { return s.t.mode }

// Get reads key's value and remaining TTL in one round trip.
func (s *Store) Get(ctx context.Context, key []byte) (l2store.Item, bool, error) {
	if s.push != nil {
		return s.push.get(ctx, key)
	}
	k := string(key)
	var get *redis.StringCmd
	var pttl *redis.DurationCmd
	start := s.now()
	mark := s.trk.mark()
	_, err := s.fill.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, k)
		pttl = p.PTTL(ctx, k)
		return nil
	})
	switch {
	case errors.Is(get.Err(), redis.Nil):
		return l2store.Item{}, false, nil
	case get.Err() != nil:
		return l2store.Item{}, false, s.replyError(get.Err())
	case err != nil:
		return l2store.Item{}, false, s.replyError(err)
	}
	item := l2store.Item{Value: []byte(get.Val())}
	switch ttl := pttl.Val(); {
	case ttl == -1: // no expiry
	case ttl < 0: // gone between GET and PTTL: serve it, never keep it
		item.Expires = start
	default:
		// PTTL is in milliseconds; go-redis returns it as a Duration.
		item.Expires = start.Add(ttl)
	}
	if !s.trk.keep(mark) {
		// An invalidation of it may be lost: serve it, never keep it.
		item.Expires = start
	}
	return item, true, nil
}

// replyError turns a go-redis error into the l2store error convention: a
// Redis error reply becomes an l2store.ReplyError, anything else means the
// upstream could not answer.
func (s *Store) replyError(err error) error {
	var re redis.Error
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &re):
		return l2store.ReplyError(re.Error())
	case errors.Is(err, redis.ErrClosed):
		return l2store.ErrClosed
	}
	return fmt.Errorf("%w: %v", l2store.ErrUnavailable, err)
}

// protoIndex maps the protocol in ctx to the pass-through client index.
func protoIndex(ctx context.Context) int {
	if l2store.Proto(ctx) >= 3 {
		return 1
	}
	return 0
}

// Do passes one command through and returns the upstream's reply as is.
func (s *Store) Do(ctx context.Context, args [][]byte) (l2store.Reply, error) {
	i := protoIndex(ctx)
	if s.t.mode == Cluster {
		return s.doCluster(ctx, i, args)
	}
	cmd := redis.NewRawCmd(ctx, toAny(args)...)
	_ = s.apOne[i].Process(ctx, cmd)
	raw, err := cmd.Result()
	if err != nil {
		return l2store.Reply{}, s.replyError(err)
	}
	return l2store.Raw(raw), nil
}

// DoMulti passes cmds through in order, in one round trip where the
// deployment allows (one server, Sentinel), and returns their replies. On
// an error the upstream could not answer, the replies are nil.
func (s *Store) DoMulti(ctx context.Context, cmds [][][]byte) ([]l2store.Reply, error) {
	replies := make([]l2store.Reply, len(cmds))
	i := protoIndex(ctx)
	if s.t.mode == Cluster || len(cmds) == 1 {
		for j, args := range cmds {
			r, err := s.Do(ctx, args)
			if err != nil {
				return nil, err
			}
			replies[j] = r
		}
		return replies, nil
	}
	raws := make([]*redis.RawCmd, len(cmds))
	for j, args := range cmds {
		raws[j] = redis.NewRawCmd(ctx, toAny(args)...)
		_ = s.apMany[i].Process(ctx, raws[j])
	}
	for j, c := range raws {
		raw, err := c.Result()
		if err != nil {
			return nil, s.replyError(err)
		}
		replies[j] = l2store.Raw(raw)
	}
	return replies, nil
}

// doCluster routes a command to the master of its first key (keyless
// commands to the master of slot 0), following -MOVED and -ASK.
func (s *Store) doCluster(ctx context.Context, i int, args [][]byte) (l2store.Reply, error) {
	cc := s.cluster[i]
	var key string
	if m := commands.Find(args); m != nil {
		var buf [1][]byte
		if ks := m.Keys(buf[:0], args); len(ks) > 0 {
			key = string(ks[0])
		}
	} else if len(args) > 1 {
		key = string(args[1]) // a command we do not know (a module's): its first argument, as go-redis does
	}
	node, err := cc.MasterForKey(ctx, key)
	if err != nil {
		return l2store.Reply{}, s.replyError(err)
	}
	asking := false
	for redirects := 0; ; redirects++ {
		var raw []byte
		if asking {
			pipe := node.Pipeline()
			pipe.Do(ctx, "asking")
			cmd := redis.NewRawCmd(ctx, toAny(args)...)
			_ = pipe.Process(ctx, cmd)
			_, err = pipe.Exec(ctx)
			raw = cmd.Val()
			if err != nil && raw == nil {
				return l2store.Reply{}, s.replyError(err)
			}
		} else {
			raw, err = node.DoRaw(ctx, toAny(args)...).Result()
			if err != nil {
				return l2store.Reply{}, s.replyError(err)
			}
		}
		moved, ask, addr := redirection(raw)
		if (!moved && !ask) || redirects >= maxRedirects {
			return l2store.Raw(raw), nil
		}
		if moved {
			cc.ReloadState(ctx)
		}
		node, asking = s.nodeClient(i, addr), ask
	}
}

// maxRedirects bounds the -MOVED and -ASK hops of one command (go-redis's
// default MaxRedirects).
const maxRedirects = 3

// redirection parses a "-MOVED slot addr" or "-ASK slot addr" reply.
func redirection(raw []byte) (moved, ask bool, addr string) {
	if len(raw) < 6 || raw[0] != '-' {
		return false, false, ""
	}
	line := strings.TrimSuffix(string(raw[1:]), "\r\n")
	f := strings.Fields(line)
	if len(f) != 3 {
		return false, false, ""
	}
	if _, err := strconv.Atoi(f[1]); err != nil {
		return false, false, ""
	}
	switch f[0] {
	case "MOVED":
		return true, false, f[2]
	case "ASK":
		return false, true, f[2]
	}
	return false, false, ""
}

// nodeClient returns the client of the cluster node at addr, creating one
// if go-redis has none yet.
func (s *Store) nodeClient(i int, addr string) *redis.Client {
	s.nodesMu.Lock()
	defer s.nodesMu.Unlock()
	if c := s.nodes[i][addr]; c != nil {
		return c
	}
	o := s.cfg.clientOptions(s.t, []int{2, 3}[i]).Simple()
	o.Addr = addr
	c := redis.NewClient(o)
	if s.nodes[i] == nil {
		s.nodes[i] = make(map[string]*redis.Client)
	}
	s.nodes[i][addr] = c
	s.extra = append(s.extra, c)
	return c
}

// toAny converts arguments for go-redis, which sends []byte as is.
func toAny(args [][]byte) []any {
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = a
	}
	return out
}

// Commands returns nil: every command passes through.
func (s *Store) Commands() []string { return nil }

// Stats reports the upstream and the state of tracking; the upstream's own
// counters are in its INFO.
func (s *Store) Stats() l2store.Stats {
	return l2store.Stats{Kind: "remote", Upstream: redactURL(s.cfg.URL), Mode: string(s.t.mode), Tracking: s.TrackingStatus()}
}

// Close closes every connection.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		for i := range s.pass {
			for _, ap := range []*redis.AutoPipeliner{s.apOne[i], s.apMany[i]} {
				if ap != nil {
					ap.Close()
				}
			}
		}
		for _, c := range s.pass {
			if c != nil {
				c.Close()
			}
		}
		if s.fill != nil {
			s.fill.Close()
		}
		if s.push != nil {
			s.push.close() // before trk, which closes Invalidations
		}
		if s.trk != nil {
			s.trk.close()
		}
		s.nodesMu.Lock()
		for _, c := range s.extra {
			c.Close()
		}
		s.nodesMu.Unlock()
	})
	return nil
}
