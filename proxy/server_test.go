package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidecache/sidecache/l1"
	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/proxy"
)

// fakeCache records what the proxy asks of L1.
type fakeCache struct {
	mu          sync.Mutex
	values      map[string]string
	err         error
	invalidated []string
	flushes     int
}

func (c *fakeCache) Lookup(_ context.Context, key []byte) (l1.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return l1.Result{}, c.err
	}
	v, ok := c.values[string(key)]
	if !ok {
		return l1.Result{Outcome: l1.Miss}, nil
	}
	return l1.Result{Value: []byte(v), Outcome: l1.Hit}, nil
}

func (c *fakeCache) Invalidate(key []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.invalidated = append(c.invalidated, string(key))
}

func (c *fakeCache) Flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushes++
}

func (c *fakeCache) Stats() l1.Stats { return l1.Stats{} }

func (c *fakeCache) takeInvalidated() ([]string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	inv, fl := c.invalidated, c.flushes
	c.invalidated, c.flushes = nil, 0
	return inv, fl
}

// storeFunc is a Store whose Do is a function, supporting every command.
type storeFunc func(ctx context.Context, args [][]byte) (l2store.Reply, error)

func (f storeFunc) Do(ctx context.Context, args [][]byte) (l2store.Reply, error) { return f(ctx, args) }
func (f storeFunc) Commands() []string                                           { return nil }
func (f storeFunc) Stats() l2store.Stats                                         { return l2store.Stats{Kind: "fake"} }

// serveFake serves cache and store on a loopback port until the test ends.
// wait blocks until Serve returns and gives its error.
func serveFake(t *testing.T, cache proxy.Cache, store proxy.Store, cfg proxy.Config) (srv *proxy.Server, addr string, wait func() error) {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	srv, err := proxy.New(cache, store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var serveErr error
	go func() {
		serveErr = srv.Serve(ln)
		close(done)
	}()
	wait = func() error {
		<-done
		return serveErr
	}
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		wait()
	})
	return srv, ln.Addr().String(), wait
}

// client is a raw RESP connection for tests.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (c *client) send(args ...string) {
	c.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.conn.Write([]byte(b.String())); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) read() string {
	c.t.Helper()
	r, err := l2store.ReadReply(c.r, 1<<30)
	if err != nil {
		c.t.Fatalf("reading reply: %v", err)
	}
	return string(r.AppendRESP(nil, 3))
}

func (c *client) do(args ...string) string {
	c.t.Helper()
	c.send(args...)
	return c.read()
}

func okStore(context.Context, [][]byte) (l2store.Reply, error) { return l2store.OK, nil }

func TestWritesInvalidateL1(t *testing.T) {
	cache := &fakeCache{}
	_, addr, _ := serveFake(t, cache, storeFunc(okStore), proxy.Config{})
	c := dial(t, addr)
	tests := []struct {
		cmd        []string
		invalidate []string
		flush      int
	}{
		{[]string{"SET", "k", "v"}, []string{"k"}, 0},
		{[]string{"set", "k", "v", "EX", "10"}, []string{"k"}, 0},
		{[]string{"DEL", "a", "b", "c"}, []string{"a", "b", "c"}, 0},
		{[]string{"MSET", "a", "1", "b", "2"}, []string{"a", "b"}, 0},
		{[]string{"RENAME", "a", "b"}, []string{"a", "b"}, 0},
		{[]string{"EXPIRE", "a", "10"}, []string{"a"}, 0},
		{[]string{"GETDEL", "a"}, []string{"a"}, 0},
		{[]string{"INCRBYFLOAT", "a", "1"}, []string{"a"}, 0},
		{[]string{"FLUSHALL"}, nil, 1},
		{[]string{"FLUSHDB", "ASYNC"}, nil, 1},
		{[]string{"STRLEN", "a"}, nil, 0},
		{[]string{"TTL", "a"}, nil, 0},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.cmd, " "), func(t *testing.T) {
			if got := c.do(tt.cmd...); got != "+OK\r\n" {
				t.Fatalf("reply %q", got)
			}
			inv, fl := cache.takeInvalidated()
			if !slices.Equal(inv, tt.invalidate) || fl != tt.flush {
				t.Errorf("invalidated %q and flushed %d times, want %q and %d", inv, fl, tt.invalidate, tt.flush)
			}
		})
	}
}

// TestWriteErrorStillInvalidates: a write whose outcome is unknown may have
// reached the store, so L1 must not keep the old value.
func TestWriteErrorStillInvalidates(t *testing.T) {
	cache := &fakeCache{}
	boom := errors.New("upstream went away")
	_, addr, _ := serveFake(t, cache, storeFunc(func(context.Context, [][]byte) (l2store.Reply, error) {
		return l2store.Reply{}, boom
	}), proxy.Config{})
	c := dial(t, addr)
	if got := c.do("SET", "k", "v"); got != "-ERR sidecache: upstream went away\r\n" {
		t.Errorf("reply %q", got)
	}
	if inv, _ := cache.takeInvalidated(); !slices.Equal(inv, []string{"k"}) {
		t.Errorf("invalidated %q, want [k]", inv)
	}
}

func TestErrorReplies(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"oom", fmt.Errorf("kv: %w", l2store.ErrOOM), "-OOM command not allowed when used memory > 'maxmemory'.\r\n"},
		{"redis error", l2store.ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value"), "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"},
		{"other", errors.New("x\r\ny"), "-ERR sidecache: x  y\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := &fakeCache{err: tt.err}
			_, addr, _ := serveFake(t, cache, storeFunc(func(context.Context, [][]byte) (l2store.Reply, error) {
				return l2store.Reply{}, tt.err
			}), proxy.Config{})
			c := dial(t, addr)
			if got := c.do("SET", "k", "v"); got != tt.want {
				t.Errorf("SET: %q, want %q", got, tt.want)
			}
			if got := c.do("GET", "k"); got != tt.want {
				t.Errorf("GET: %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMGetWrongTypeIsNil(t *testing.T) {
	cache := &fakeCache{values: map[string]string{"a": "1"}}
	_, addr, _ := serveFake(t, cache, storeFunc(okStore), proxy.Config{})
	c := dial(t, addr)
	if got := c.do("MGET", "a", "b"); got != "*2\r\n$1\r\n1\r\n_\r\n" {
		t.Errorf("MGET: %q", got)
	}
	cache.err = l2store.ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value")
	if got := c.do("MGET", "a"); got != "*1\r\n_\r\n" {
		t.Errorf("MGET of a wrong type: %q, want a nil element", got)
	}
}

func TestPanicInHandlerIsRecovered(t *testing.T) {
	_, addr, _ := serveFake(t, &fakeCache{}, storeFunc(func(_ context.Context, args [][]byte) (l2store.Reply, error) {
		if string(args[1]) == "boom" {
			panic("handler bug")
		}
		return l2store.OK, nil
	}), proxy.Config{})
	c := dial(t, addr)
	if got := c.do("SET", "boom", "v"); got != "-ERR internal error\r\n" {
		t.Errorf("reply %q", got)
	}
	if _, err := c.r.ReadByte(); err == nil {
		t.Error("the connection stayed open after a panic")
	}
	if got := dial(t, addr).do("SET", "k", "v"); got != "+OK\r\n" {
		t.Errorf("after the panic: %q", got)
	}
}

func TestMaxClients(t *testing.T) {
	_, addr, _ := serveFake(t, &fakeCache{}, storeFunc(okStore), proxy.Config{MaxClients: 2})
	a, b := dial(t, addr), dial(t, addr)
	a.do("PING")
	b.do("PING")
	c := dial(t, addr)
	if got := c.read(); got != "-ERR max number of clients reached\r\n" {
		t.Errorf("third client: %q", got)
	}
	a.conn.Close()
	// The slot frees once the server notices; poll.
	deadline := time.Now().Add(10 * time.Second)
	for {
		d := dial(t, addr)
		if got := d.do("PING"); got == "+PONG\r\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a slot never freed after a client left")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestShutdownFinishesInFlight: a command running when Shutdown starts
// completes and its reply reaches the client; then the connection closes,
// Shutdown returns and Serve returns ErrServerClosed.
func TestShutdownFinishesInFlight(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	srv, addr, wait := serveFake(t, &fakeCache{}, storeFunc(func(_ context.Context, args [][]byte) (l2store.Reply, error) {
		if string(args[1]) == "slow" {
			close(started)
			<-release
		}
		return l2store.OK, nil
	}), proxy.Config{})
	idle := dial(t, addr)
	idle.do("PING")
	c := dial(t, addr)
	c.send("SET", "slow", "v")
	<-started
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	// New connections are refused once shutdown starts.
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections during shutdown")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	if got := c.read(); got != "+OK\r\n" {
		t.Errorf("in-flight reply %q", got)
	}
	if _, err := c.r.ReadByte(); err == nil {
		t.Error("connection still open after shutdown")
	}
	if _, err := idle.r.ReadByte(); err == nil {
		t.Error("idle connection still open after shutdown")
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := wait(); !errors.Is(err, proxy.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
}

func TestRequirePass(t *testing.T) {
	_, addr, _ := serveFake(t, &fakeCache{}, storeFunc(okStore), proxy.Config{RequirePass: "s3cret"})
	c := dial(t, addr)
	steps := []struct{ cmd, want string }{
		{"SET k v", "-NOAUTH Authentication required.\r\n"},
		// The fake store passes every command through (Commands() is
		// nil), so a command missing from the table may be the upstream's:
		// authentication comes first.
		{"NOSUCH", "-NOAUTH Authentication required.\r\n"},
		{"GET", "-ERR wrong number of arguments for 'get' command\r\n"},
		{"HELLO 3", "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n"},
		{"AUTH wrong", "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
		{"AUTH bob s3cret", "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
		{"AUTH s3cret", "+OK\r\n"},
		{"SET k v", "+OK\r\n"},
		{"RESET", "+RESET\r\n"},
		{"SET k v", "-NOAUTH Authentication required.\r\n"},
		{"AUTH default s3cret", "+OK\r\n"},
		{"SET k v", "+OK\r\n"},
	}
	for _, s := range steps {
		if got := c.do(strings.Fields(s.cmd)...); got != s.want {
			t.Errorf("%s: %q, want %q", s.cmd, got, s.want)
		}
	}
	d := dial(t, addr)
	if got := d.do("HELLO", "3", "AUTH", "default", "s3cret"); !strings.HasPrefix(got, "%7\r\n") {
		t.Errorf("HELLO 3 AUTH: %q", got)
	}
	if got := d.do("GET", "nope"); got != "_\r\n" {
		t.Errorf("GET after HELLO 3: %q", got)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []proxy.Config{
		{MaxClients: -1},
		{ProtoMaxBulkLen: 10},
		{MaxMultibulkLen: -5},
		{ClientQueryBufferLimit: 10},
		{IdleTimeout: -time.Second},
	} {
		if _, err := proxy.New(&fakeCache{}, storeFunc(okStore), cfg); err == nil {
			t.Errorf("New(%+v) accepted a bad config", cfg)
		}
	}
	if _, err := proxy.New(&fakeCache{}, nil, proxy.Config{}); err == nil {
		t.Error("New accepted a nil store")
	}
}
