package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"
	"go.uber.org/zap"

	"github.com/sidecache/sidecache/l1"
	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/commands"
)

// Cache is the read path below the proxy: the L1 and, behind it, the tiers
// it reads through. It is implemented by *l1.Cache.
type Cache interface {
	// Lookup returns key's value and where it came from (l1.Result). The
	// value is owned by the cache and must not be modified. A WRONGTYPE or
	// other Redis error from below comes back as an l2store.ReplyError; a
	// read the tiers refuse as fallback.ErrShed or breaker.ErrOpen.
	Lookup(ctx context.Context, key []byte) (l1.Result, error)
	// Invalidate drops key, after a write to it was sent to the store
	// (whether or not it succeeded).
	Invalidate(key []byte)
	// Flush drops every key, after FLUSHDB or FLUSHALL.
	Flush()
	// Stats reports the L1's counters for INFO.
	Stats() l1.Stats
}

// Store runs every command that is not a read of the hot path. It is
// implemented by the L2 stores (see l2store.Store).
type Store interface {
	Do(ctx context.Context, args [][]byte) (l2store.Reply, error)
	// Commands lists the commands Do implements, nil for all.
	Commands() []string
	Stats() l2store.Stats
}

// MultiStore is implemented by stores that can run several commands in one
// round trip (a remote store pipelines them). The proxy sends a client's
// pipelined commands through it.
type MultiStore interface {
	// DoMulti runs cmds in order and returns their replies; on an error
	// the replies are nil.
	DoMulti(ctx context.Context, cmds [][][]byte) ([]l2store.Reply, error)
}

// MetaStore is implemented by stores that pass through commands missing
// from sidecache's command table, and can tell what they are.
type MetaStore interface {
	// CommandMeta describes the command args invoke: a Meta with Arity 0
	// if the upstream does not know it either (it writes nothing), nil if
	// the store cannot tell.
	CommandMeta(ctx context.Context, args [][]byte) *commands.Meta
}

// upstreamKnows reports whether a MetaStore's answer describes a command
// the upstream has.
func upstreamKnows(m *commands.Meta) bool { return m != nil && m.Arity != 0 }

// Setting is one configuration parameter reported by CONFIG GET.
type Setting struct{ Name, Value string }

// Config configures a Server. The zero value of each field selects the
// default given in its comment, which is Redis's where Redis has one.
type Config struct {
	// Addr is the TCP address to listen on. Default "127.0.0.1:6379".
	Addr string
	// MaxClients bounds simultaneous connections; more are refused with
	// "-ERR max number of clients reached". Default 10000.
	MaxClients int
	// ProtoMaxBulkLen bounds one argument's length. Default 512 MiB.
	ProtoMaxBulkLen int64
	// MaxMultibulkLen bounds the number of arguments of one command.
	// Default 1048576.
	MaxMultibulkLen int64
	// ClientQueryBufferLimit bounds the bytes of one pending command; a
	// client that exceeds it is disconnected. Default 1 GiB.
	ClientQueryBufferLimit int64
	// IdleTimeout closes connections idle for this long; 0 never does
	// (Redis's "timeout 0").
	IdleTimeout time.Duration
	// ClientOutputBufferLimit bounds the reply bytes a connection holds
	// for its client: a flush of more closes the connection, like
	// Redis's client-output-buffer-limit hard limit (output.go). 0: none.
	ClientOutputBufferLimit int64
	// ClientOutputTimeout closes a connection whose client takes less
	// than 64 KiB of its pending replies in this long: it has stopped
	// reading (output.go). 0: never.
	ClientOutputTimeout time.Duration
	// OverMemory, if not nil, reports whether the process is short of
	// memory; while it is, commands that may grow memory (Redis's denyoom
	// flag) are refused with Redis's -OOM error. It is called once per
	// such command and must be cheap. Default: never.
	OverMemory func() bool
	// RequirePass is the password of the default user; empty means no
	// authentication (Redis's "nopass").
	RequirePass string
	// DenyCommands are the commands refused with Redis's ACL error
	// (-NOPERM) before they reach the store, by full name: "flushall",
	// "config|set"; a command with subcommands ("config") stands for all
	// of them. See security.go. Default: none (cmd/sidecache denies
	// DefaultDenyCommands in front of a remote L2).
	DenyCommands []string
	// AllowCommands are exceptions to DenyCommands, named the same way.
	AllowCommands []string
	// TLS, if not nil, makes the listener speak TLS only, with these
	// settings (certificate, client certificate policy). Default: plain
	// TCP.
	TLS *tls.Config
	// Settings are extra parameters for CONFIG GET, such as the tiers'.
	Settings []Setting
	// Info returns extra name:value lines for INFO's sidecache section:
	// the state of the tiers the proxy does not see (breaker, fallback).
	// Names must be unique and free of ':' and CR/LF. Default: none.
	Info func() []Setting
	// Version is sidecache's version, reported by INFO.
	Version string
	// Logger receives connection errors and recovered panics. Default: none.
	Logger *zap.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// ErrConfig is wrapped by the errors New returns for an unusable Config.
var ErrConfig = errors.New("proxy: invalid config")

// Defaults of Config's zero fields: Redis's, where Redis has one.
const (
	DefaultAddr                   = "127.0.0.1:6379"
	DefaultMaxClients             = 10000
	DefaultProtoMaxBulkLen        = 512 << 20
	DefaultMaxMultibulkLen        = 1 << 20
	DefaultClientQueryBufferLimit = 1 << 30
)

// Smallest values the limits accept (Redis's own minimums).
const (
	MinProtoMaxBulkLen        = 1024
	MinClientQueryBufferLimit = 1 << 20
)

func (c *Config) setDefaults() error {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.MaxClients == 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.ProtoMaxBulkLen == 0 {
		c.ProtoMaxBulkLen = DefaultProtoMaxBulkLen
	}
	if c.MaxMultibulkLen == 0 {
		c.MaxMultibulkLen = DefaultMaxMultibulkLen
	}
	if c.ClientQueryBufferLimit == 0 {
		c.ClientQueryBufferLimit = DefaultClientQueryBufferLimit
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.MaxClients < 0:
		return fmt.Errorf("%w: MaxClients %d is negative", ErrConfig, c.MaxClients)
	case c.ProtoMaxBulkLen < MinProtoMaxBulkLen:
		return fmt.Errorf("%w: ProtoMaxBulkLen %d is below %d", ErrConfig, c.ProtoMaxBulkLen, MinProtoMaxBulkLen)
	case c.MaxMultibulkLen < 1 || c.MaxMultibulkLen > maxInt32:
		return fmt.Errorf("%w: MaxMultibulkLen %d is not in [1, %d]", ErrConfig, c.MaxMultibulkLen, maxInt32)
	case c.ClientQueryBufferLimit < MinClientQueryBufferLimit:
		return fmt.Errorf("%w: ClientQueryBufferLimit %d is below %d", ErrConfig, c.ClientQueryBufferLimit, MinClientQueryBufferLimit)
	case c.IdleTimeout < 0:
		return fmt.Errorf("%w: IdleTimeout %v is negative", ErrConfig, c.IdleTimeout)
	case c.ClientOutputBufferLimit < 0:
		return fmt.Errorf("%w: ClientOutputBufferLimit %d is negative", ErrConfig, c.ClientOutputBufferLimit)
	case c.ClientOutputTimeout < 0:
		return fmt.Errorf("%w: ClientOutputTimeout %v is negative", ErrConfig, c.ClientOutputTimeout)
	}
	return nil
}

// SetMaxClients changes Config.MaxClients while the server runs, for a
// configuration reload. Connections beyond a lowered bound stay; new ones
// are refused until fewer are connected.
func (s *Server) SetMaxClients(n int) error {
	if n < 1 {
		return fmt.Errorf("%w: MaxClients %d is below 1", ErrConfig, n)
	}
	s.maxClients.Store(int64(n))
	return nil
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("proxy: server closed")

// Server answers Redis clients. Create one with New, start it with Serve
// or ListenAndServe, stop it with Shutdown.
type Server struct {
	cfg   Config
	cache Cache // nil: L1 is off, GET and MGET go to the store
	store Store
	multi MultiStore // store's, or nil
	metas MetaStore  // store's, or nil
	ded   Dedicator  // store's, or nil
	deny  denySet    // refused commands (security.go), nil for none
	log   *zap.Logger
	lim   gateLimits
	out   outputLimits // output.go

	// supported holds the full names ("get", "client|setname") of the
	// commands this server answers; handlers the proxy's own ones.
	supported   map[string]bool
	supportedFn func(fullname string) bool
	handlers    map[*commands.Meta]handler
	// storeTakesAll: the store passes every command through, even those
	// missing from the table (Store.Commands returns nil). localParents
	// are the commands with subcommands that the proxy answers itself.
	storeTakesAll bool
	localParents  map[*commands.Meta]bool

	started time.Time
	rs      *redcon.Server
	ln      *listener

	mu      sync.Mutex
	clients map[*client]struct{}
	nextID  atomic.Int64
	closing bool
	drained chan struct{} // closed when the last client is gone after Shutdown

	stats serverStats

	maxClients atomic.Int64 // Config.MaxClients; SetMaxClients changes it
}

// serverStats are the server-wide counters of INFO stats. Per-client
// counters are added in when a client closes.
type serverStats struct {
	connections atomic.Uint64 // total_connections_received
	rejected    atomic.Uint64 // rejected_connections
	commands    atomic.Uint64 // total_commands_processed of closed clients
	reads       readCounters  // reads by outcome of closed clients
	errors      atomic.Uint64 // total_error_replies of closed clients
	ops         opsMeter

	cmds      cmdCounters                     // commands other than reads through L1 (metrics.go)
	durations atomic.Pointer[durationMetrics] // set by RegisterMetrics
}

// New returns a server answering from cache (the read path) and store
// (everything else). A nil cache turns L1 off: GET and MGET go to the
// store like any other command.
func New(cache Cache, store Store, cfg Config) (*Server, error) {
	if store == nil {
		return nil, fmt.Errorf("%w: New needs a store", ErrConfig)
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	deny, err := newDenySet(cfg.DenyCommands, cfg.AllowCommands)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		cache:   cache,
		store:   store,
		deny:    deny,
		log:     cfg.Logger,
		clients: make(map[*client]struct{}),
		drained: make(chan struct{}),
		stats:   serverStats{cmds: newCmdCounters()},
		lim: gateLimits{
			maxBulk:     cfg.ProtoMaxBulkLen,
			maxArgs:     cfg.MaxMultibulkLen,
			maxQueryBuf: cfg.ClientQueryBufferLimit,
		},
		out: outputLimits{maxPending: cfg.ClientOutputBufferLimit, timeout: cfg.ClientOutputTimeout, now: cfg.Now},
	}
	s.multi, _ = store.(MultiStore)
	s.metas, _ = store.(MetaStore)
	s.ded, _ = store.(Dedicator)
	s.handlers = s.localHandlers()
	s.supported = make(map[string]bool)
	s.localParents = make(map[*commands.Meta]bool)
	for m := range s.handlers {
		s.supportCommand(m.Name)
		if m.Parent != nil {
			s.localParents[m.Parent] = true
		}
	}
	storeCommands := store.Commands()
	if storeCommands == nil {
		s.storeTakesAll = true
		storeCommands = commands.Names()
	}
	for _, name := range storeCommands {
		s.supportCommand(name)
	}
	s.supportedFn = s.isSupported
	s.maxClients.Store(int64(cfg.MaxClients))
	return s, nil
}

// supportCommand marks a command, and the container of a subcommand, as
// answered.
func (s *Server) supportCommand(fullname string) {
	s.supported[fullname] = true
	for i := 0; i < len(fullname); i++ {
		if fullname[i] == '|' {
			s.supported[fullname[:i]] = true
		}
	}
}

func (s *Server) isSupported(fullname string) bool { return s.supported[fullname] }

// SupportedCommands lists the full names of the commands the server
// answers, sorted.
func (s *Server) SupportedCommands() []string {
	names := make([]string, 0, len(s.supported))
	for n := range s.supported {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ListenAndServe listens on Config.Addr and serves until Shutdown.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Listen opens Config.Addr; Serve the returned listener to start. It lets
// a caller learn the bound address (e.g. of port 0) before serving.
func (s *Server) Listen() (net.Listener, error) { return net.Listen("tcp", s.cfg.Addr) }

// Serve answers connections accepted on ln until Shutdown, after which it
// returns ErrServerClosed. It takes ownership of ln.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.rs != nil || s.closing {
		s.mu.Unlock()
		ln.Close()
		return errors.New("proxy: Serve called twice or after Shutdown")
	}
	s.started = s.cfg.Now()
	s.ln = newListener(ln, &s.lim, s.cfg.TLS, s.log)
	s.rs = redcon.NewServerNetwork("tcp", ln.Addr().String(), s.serveRESP, s.accept, s.closed)
	if s.cfg.IdleTimeout > 0 {
		s.rs.SetIdleClose(s.cfg.IdleTimeout)
	}
	s.mu.Unlock()

	meterDone := make(chan struct{})
	go s.stats.ops.run(s.totalCommands, meterDone)
	defer close(meterDone)

	if err := s.rs.Serve(s.ln); err != nil {
		return err
	}
	return ErrServerClosed
}

// Addr returns the address the server listens on, or nil before Serve.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown stops accepting connections, lets every connection finish the
// commands it has received (their replies are flushed), closes the
// connections, and returns when all are closed or ctx is done, in which
// case the remaining connections are closed at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return errors.New("proxy: Shutdown called twice")
	}
	s.closing = true
	ln := s.ln
	for c := range s.clients {
		c.gate.drain()
	}
	if len(s.clients) == 0 {
		close(s.drained)
	}
	s.mu.Unlock()
	if ln == nil {
		return nil
	}
	ln.shutdown()
	var err error
	select {
	case <-s.drained:
	case <-ctx.Done():
		err = ctx.Err()
		for _, c := range s.snapshotClients() {
			c.cancel() // ends blocking commands (pinned.go)
		}
	}
	ln.finish() // redcon's Serve returns and closes what is left
	return err
}

// accept registers a new connection, or refuses it when MaxClients are
// connected, as Redis does.
func (s *Server) accept(conn redcon.Conn) bool {
	g, _ := conn.NetConn().(*gate)
	if g == nil {
		return false
	}
	s.stats.connections.Add(1)
	c := newClient(s, conn, g)
	if s.out.on() {
		// Before others can see g (Shutdown, CLIENT KILL); after
		// newClient has read the socket's fd.
		g.Conn = newOutputConn(g.Conn, &s.out) // replies' bounds (output.go)
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return false
	}
	if len(s.clients) >= int(s.maxClients.Load()) {
		s.mu.Unlock()
		s.stats.rejected.Add(1)
		conn.WriteError("ERR max number of clients reached")
		return false
	}
	s.clients[c] = struct{}{}
	s.mu.Unlock()
	conn.SetContext(c)
	return true
}

// closed unregisters a connection and folds its counters into the totals.
func (s *Server) closed(conn redcon.Conn, err error) {
	c, _ := conn.Context().(*client)
	if c == nil {
		return
	}
	if s.releasePin(c) {
		return // detached: its pump calls closed when it ends (pinned.go)
	}
	switch {
	case errors.Is(err, errQueryBufferLimit):
		s.log.Warn("closing client that reached max query buffer length", zap.String("addr", c.addr))
	case isOutputLimit(err) || outputFailure(c.gate) != nil:
		s.log.Warn("closing client that reached max output buffer", zap.String("addr", c.addr), zap.NamedError("reason", outputFailure(c.gate)))
	case errors.Is(err, errProtocol):
		s.log.Debug("protocol error", zap.String("addr", c.addr))
	}
	c.cancel()
	s.stats.commands.Add(c.commands.Load())
	s.stats.reads.add(&c.reads)
	s.stats.errors.Add(c.errors.Load())
	s.mu.Lock()
	delete(s.clients, c)
	if s.closing && len(s.clients) == 0 {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
	s.mu.Unlock()
}

// snapshotClients returns the connected clients, ordered by id.
func (s *Server) snapshotClients() []*client {
	s.mu.Lock()
	cs := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	sort.Slice(cs, func(i, j int) bool { return cs[i].id < cs[j].id })
	return cs
}

// totalCommands returns total_commands_processed.
func (s *Server) totalCommands() uint64 {
	n := s.stats.commands.Load()
	for _, c := range s.snapshotClients() {
		n += c.commands.Load()
	}
	return n
}

// listener wraps the server's listener: it puts a gate in front of every
// connection, backs off on accept errors, and at Shutdown keeps redcon from
// closing the connections before they have drained (redcon closes them all
// as soon as Accept fails).
type listener struct {
	net.Listener
	lim        *gateLimits
	tls        *tls.Config // nil: plain TCP
	log        *zap.Logger
	stopping   chan struct{} // closed by shutdown
	finished   chan struct{} // closed by finish
	finishOnce sync.Once
}

func newListener(ln net.Listener, lim *gateLimits, tlsConfig *tls.Config, log *zap.Logger) *listener {
	return &listener{Listener: ln, lim: lim, tls: tlsConfig, log: log, stopping: make(chan struct{}), finished: make(chan struct{})}
}

func (l *listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if l.tls != nil {
				// The handshake runs on the connection's first read, in
				// its own goroutine.
				c = tls.Server(c, l.tls)
			}
			return newGate(c, l.lim), nil
		}
		select {
		case <-l.stopping:
			<-l.finished
			return nil, net.ErrClosed
		default:
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		// Like net/http: back off on EMFILE and other accept errors.
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		l.log.Warn("accept error", zap.Error(err), zap.Duration("retry_in", delay))
		time.Sleep(delay)
	}
}

// shutdown stops accepting connections.
func (l *listener) shutdown() {
	close(l.stopping)
	l.Listener.Close()
}

// finish lets Accept fail, which ends redcon's Serve.
func (l *listener) finish() { l.finishOnce.Do(func() { close(l.finished) }) }
