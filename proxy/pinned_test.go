package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sidecache/sidecache/l1"
	"github.com/sidecache/sidecache/l2store/remote"
	"github.com/sidecache/sidecache/proxy"
)

// The remote store implements the proxy's optional interface.
var _ proxy.Dedicator = (*remote.Store)(nil)

// pinWait bounds every wait of these tests. The machine is shared:
// generous, and never asserted on.
const pinWait = 10 * time.Second

// pinRedis starts Debian's redis-server on a free loopback port and stops
// it when the test ends. (test/redisserver_test.go has the full starter;
// packages cannot share test helpers.)
func pinRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("SIDECACHE_ALLOW_SKIP") == "1" {
			t.Skipf("redis-server not found: %v", err)
		}
		t.Fatalf("redis-server not found (set SIDECACHE_ALLOW_SKIP=1 to skip): %v", err)
	}
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		var out bytes.Buffer
		var outMu sync.Mutex
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--daemonize", "no", "--dir", t.TempDir(), "--logfile", "")
		cmd.Stdout = writerFunc(func(p []byte) (int, error) { outMu.Lock(); defer outMu.Unlock(); return out.Write(p) })
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}
		up := pinPoll(func() bool {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			select {
			case <-exited:
				return true
			default:
			}
			return err == nil
		})
		select {
		case <-exited:
			outMu.Lock()
			log := out.String()
			outMu.Unlock()
			if strings.Contains(log, "Address already in use") {
				continue
			}
			t.Fatalf("redis-server exited: %s", log)
		default:
		}
		if !up {
			stop()
			t.Fatal("redis-server did not start")
		}
		t.Cleanup(stop)
		return addr
	}
	t.Fatal("no free port for redis-server")
	return ""
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// pinPoll calls cond until it is true or pinWait passes.
func pinPoll(cond func() bool) bool {
	deadline := time.Now().Add(pinWait)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(delay) // polling interval, not a wait for a condition
	}
}

// pinEnv is a redis-server and a sidecache proxy in front of it, with a
// real L1 (server-assisted tracking off, so that what keeps L1 coherent is
// the proxy's own invalidation).
type pinEnv struct {
	redis, proxy string
	srv          *proxy.Server
	admin        *rconn // direct to redis
}

func newPinEnv(t *testing.T) *pinEnv {
	t.Helper()
	return newPinEnvConfig(t, proxy.Config{})
}

// newPinEnvConfig is newPinEnv with the proxy configured by cfg.
func newPinEnvConfig(t *testing.T, cfg proxy.Config) *pinEnv {
	t.Helper()
	addr := pinRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), pinWait)
	defer cancel()
	st, err := remote.New(ctx, remote.Config{URL: "redis://" + addr, Tracking: remote.TrackingOff})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cache, err := l1.New(l1.GetterFunc(func(ctx context.Context, key []byte, _ bool) (l1.Item, bool, error) {
		item, found, err := st.Get(ctx, key)
		return l1.Item{Value: item.Value, Expires: item.Expires}, found, err
	}), l1.Config{MaxBytes: 1 << 20, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	srv, paddr, _ := serveFake(t, cache, st, cfg)
	return &pinEnv{redis: addr, proxy: paddr, srv: srv, admin: rdial(t, addr)}
}

// rconn is a client connection that reads replies as raw bytes.
type rconn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func rdial(t *testing.T, addr string) *rconn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, pinWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rconn{t: t, c: c, r: bufio.NewReader(c)}
}

func (c *rconn) send(args ...string) {
	c.t.Helper()
	var b []byte
	b = fmt.Appendf(b, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n%s\r\n", len(a), a)
	}
	c.c.SetWriteDeadline(time.Now().Add(pinWait))
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatalf("%q: %v", args, err)
	}
}

func (c *rconn) recv() string {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(pinWait))
	s, err := readFrame(c.r)
	if err != nil {
		c.t.Fatalf("reading a reply: %v", err)
	}
	return s
}

func (c *rconn) do(args ...string) string {
	c.t.Helper()
	c.send(args...)
	return c.recv()
}

// readFrame reads one RESP2 or RESP3 reply, returning its bytes.
func readFrame(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if len(line) < 3 {
		return "", fmt.Errorf("bad line %q", line)
	}
	n, _ := strconv.Atoi(line[1 : len(line)-2])
	switch line[0] {
	case '$', '=', '!':
		if n < 0 {
			return line, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return line + string(buf), nil
	case '*', '~', '>', '%', '|':
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		if line[0] == '|' {
			n++
		}
		out := line
		for range max(n, 0) {
			s, err := readFrame(r)
			if err != nil {
				return "", err
			}
			out += s
		}
		return out, nil
	}
	return line, nil
}

// flush empties redis, and L1 with it, and waits until the connections
// of the test before are gone.
func (e *pinEnv) flush(t *testing.T) {
	t.Helper()
	c := rdial(t, e.proxy)
	defer c.c.Close()
	if got := c.do("FLUSHALL"); got != "+OK\r\n" {
		t.Fatalf("FLUSHALL: %q", got)
	}
	if !pinPoll(func() bool { return e.blocked(t) == 0 && !strings.Contains(e.admin.do("PUBSUB", "NUMPAT"), ":1") }) {
		t.Fatalf("the clients of the test before are still there")
	}
}

// blocked returns redis's count of blocked clients.
func (e *pinEnv) blocked(t *testing.T) int {
	info := e.admin.do("INFO", "clients")
	i := strings.Index(info, "blocked_clients:")
	if i < 0 {
		t.Fatalf("INFO clients: %q", info)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(info[i+len("blocked_clients:"):], "\r\n", 2)[0]))
	return n
}

func (e *pinEnv) waitBlocked(t *testing.T, n int) {
	t.Helper()
	if !pinPoll(func() bool { return e.blocked(t) == n }) {
		t.Fatalf("redis never had %d blocked clients (has %d)", n, e.blocked(t))
	}
}

// session runs a scenario against one target, recording every reply.
type session struct {
	t      *testing.T
	env    *pinEnv
	target string
	log    []string
	conns  []*rconn
}

// sconn is a connection of a session: its replies go to the transcript.
type sconn struct {
	*rconn
	s    *session
	name string
}

// conn opens a connection to the target (redis, or sidecache).
func (s *session) conn(name string) *sconn { return s.dial(name, s.target) }

// direct opens a connection to redis, whatever the target.
func (s *session) direct(name string) *sconn { return s.dial(name, s.env.redis) }

func (s *session) dial(name, addr string) *sconn {
	c := rdial(s.t, addr)
	s.conns = append(s.conns, c)
	return &sconn{rconn: c, s: s, name: name}
}

func (c *sconn) do(args ...string) string {
	c.t.Helper()
	c.send(args...)
	return c.recv(strings.Join(args, " "))
}

func (c *sconn) recv(what string) string {
	c.t.Helper()
	r := c.rconn.recv()
	c.s.log = append(c.s.log, fmt.Sprintf("%s %s -> %q", c.name, what, r))
	return r
}

// ignore runs a command whose reply differs by design (HELLO: the
// server's version and connection ID).
func (c *sconn) ignore(args ...string) {
	c.t.Helper()
	c.send(args...)
	c.rconn.recv()
}

// differential runs scenario against redis directly and through
// sidecache, and compares the transcripts byte for byte.
func differential(t *testing.T, env *pinEnv, scenario func(s *session)) {
	t.Helper()
	var logs [2][]string
	for i, target := range []string{env.redis, env.proxy} {
		env.flush(t)
		s := &session{t: t, env: env, target: target}
		scenario(s)
		for _, c := range s.conns {
			c.c.Close()
		}
		logs[i] = s.log
	}
	if len(logs[0]) != len(logs[1]) {
		t.Fatalf("redis:\n%s\nsidecache:\n%s", strings.Join(logs[0], "\n"), strings.Join(logs[1], "\n"))
	}
	for i := range logs[0] {
		if logs[0][i] != logs[1][i] {
			t.Errorf("step %d:\nredis:     %s\nsidecache: %s", i, logs[0][i], logs[1][i])
		}
	}
}

func TestPinnedTransactions(t *testing.T) {
	env := newPinEnv(t)
	tests := []struct {
		name     string
		scenario func(s *session)
	}{
		{"MULTI EXEC", func(s *session) {
			c := s.conn("c")
			for _, cmd := range [][]string{{"MULTI"}, {"SET", "k", "1"}, {"INCR", "k"}, {"GET", "k"}, {"PING"}, {"EXEC"}, {"GET", "k"}} {
				c.do(cmd...)
			}
		}},
		{"WATCH conflict", func(s *session) {
			c1, c2, reader := s.conn("c1"), s.direct("c2"), s.conn("reader")
			c2.do("SET", "k", "0")
			reader.do("GET", "k") // through sidecache: fills L1
			c1.do("WATCH", "k")
			c1.do("GET", "k")
			c2.do("SET", "k", "changed")
			c1.do("MULTI")
			c1.do("SET", "k", "mine")
			c1.do("EXEC") // aborted: null
			c1.do("GET", "k")
			c1.do("WATCH", "k")
			c1.do("MULTI")
			c1.do("SET", "k", "mine")
			c1.do("EXEC")
			reader.do("GET", "k") // L1 dropped k after EXEC
			c1.do("GET", "k")
		}},
		{"WATCH RESP3", func(s *session) {
			c1, c2 := s.conn("c1"), s.direct("c2")
			c1.ignore("HELLO", "3")
			c1.do("WATCH", "k", "j")
			c2.do("SET", "j", "x")
			c1.do("MULTI")
			c1.do("SET", "k", "1")
			c1.do("EXEC")
			c1.do("GET", "k")
		}},
		{"UNWATCH", func(s *session) {
			c1, c2 := s.conn("c1"), s.direct("c2")
			c1.do("WATCH", "k")
			c1.do("UNWATCH")
			c2.do("SET", "k", "x")
			c1.do("MULTI")
			c1.do("SET", "k", "y")
			c1.do("EXEC")
			c1.do("GET", "k")
		}},
		{"DISCARD", func(s *session) {
			c := s.conn("c")
			c.do("MULTI")
			c.do("SET", "k", "1")
			c.do("DISCARD")
			c.do("GET", "k")
			c.do("EXEC")
			c.do("DISCARD")
		}},
		{"EXECABORT", func(s *session) {
			c := s.conn("c")
			c.do("MULTI")
			c.do("SET", "k")
			c.do("NOSUCHCOMMAND", "x")
			c.do("SET", "k", "1")
			c.do("EXEC")
			c.do("GET", "k")
		}},
		{"errors inside MULTI", func(s *session) {
			c := s.conn("c")
			c.do("MULTI")
			c.do("MULTI")
			c.do("WATCH", "k")
			c.do("SET", "k", "a")
			c.do("INCR", "k")
			c.do("BLPOP", "q", "0") // does not block inside MULTI
			c.do("EXEC")
		}},
		{"EXEC with arguments", func(s *session) {
			c := s.conn("c")
			c.do("MULTI")
			c.do("SET", "k", "1")
			c.do("EXEC", "x")
			c.do("GET", "k")
			c.do("EXEC")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { differential(t, env, tt.scenario) })
	}
}

func TestPinnedPubSub(t *testing.T) {
	env := newPinEnv(t)
	tests := []struct {
		name     string
		scenario func(s *session)
	}{
		{"RESP2", func(s *session) {
			sub, pub, dir := s.conn("sub"), s.conn("pub"), s.direct("dir")
			sub.send("SUBSCRIBE", "ch1", "ch2")
			sub.recv("subscribe ch1")
			sub.recv("subscribe ch2")
			dir.do("PUBLISH", "ch1", "hello")
			sub.recv("message")
			pub.do("PUBLISH", "ch2", "world")
			sub.recv("message")
			sub.do("PING")
			sub.do("PING", "x")
			sub.do("GET", "k")
			sub.do("ECHO", "x")
			sub.do("CLIENT", "ID")
			sub.do("PSUBSCRIBE", "p*")
			dir.do("PUBLISH", "pa", "m")
			sub.recv("pmessage")
			sub.send("UNSUBSCRIBE", "ch1", "ch2")
			sub.recv("unsubscribe ch1")
			sub.recv("unsubscribe ch2")
			sub.do("PUNSUBSCRIBE")
			sub.do("PING")
			sub.do("ECHO", "x")
			sub.do("SET", "k", "v")
			sub.do("GET", "k")
			sub.do("QUIT")
			dir.do("PUBLISH", "ch1", "gone")
		}},
		{"RESP3", func(s *session) {
			sub, dir, reader := s.conn("sub"), s.direct("dir"), s.conn("reader")
			dir.do("SET", "k", "old")
			reader.do("GET", "k") // through sidecache: fills L1
			sub.ignore("HELLO", "3")
			sub.do("SUBSCRIBE", "ch")
			dir.do("PUBLISH", "ch", "x")
			sub.recv("message")
			sub.do("GET", "k")
			sub.do("SET", "k", "new")
			reader.do("GET", "k") // L1 dropped k
			sub.do("PING")
			sub.do("ECHO", "hi")
			sub.do("UNSUBSCRIBE", "ch")
			sub.do("PING")
		}},
		{"SSUBSCRIBE", func(s *session) {
			sub, dir := s.conn("sub"), s.direct("dir")
			sub.do("SSUBSCRIBE", "sch")
			dir.do("SPUBLISH", "sch", "m")
			sub.recv("smessage")
			sub.do("SUNSUBSCRIBE", "sch")
			sub.do("PING")
		}},
		{"UNSUBSCRIBE when not subscribed", func(s *session) {
			c := s.conn("c")
			c.send("UNSUBSCRIBE", "a", "b")
			c.recv("unsubscribe a")
			c.recv("unsubscribe b")
			c.do("PUNSUBSCRIBE")
			c.do("GET", "k")
		}},
		{"RESET", func(s *session) {
			sub, dir := s.conn("sub"), s.direct("dir")
			sub.do("SUBSCRIBE", "ch")
			sub.do("MULTI") // refused in RESP2 subscribed mode
			sub.do("RESET")
			sub.do("PING")
			dir.do("PUBLISH", "ch", "nobody")
			sub.do("SET", "k", "v")
			sub.do("GET", "k")
		}},
		{"pipelined", func(s *session) {
			sub, dir := s.conn("sub"), s.direct("dir")
			sub.do("SET", "k", "v")
			sub.send("GET", "k")
			sub.send("SUBSCRIBE", "ch")
			sub.send("PING")
			sub.recv("GET")
			sub.recv("SUBSCRIBE")
			sub.recv("PING")
			dir.do("PUBLISH", "ch", "m")
			sub.recv("message")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { differential(t, env, tt.scenario) })
	}
}

func TestPinnedBlocking(t *testing.T) {
	env := newPinEnv(t)
	tests := []struct {
		name     string
		scenario func(s *session)
	}{
		{"BLPOP unblocked", func(s *session) {
			c1, c2, c3 := s.conn("c1"), s.conn("c2"), s.conn("c3")
			c3.do("SET", "k", "v")
			c1.send("BLPOP", "q", "0")
			s.env.waitBlocked(s.t, 1)
			for range 3 {
				c3.do("GET", "k") // others are not held up
			}
			c2.do("RPUSH", "q", "a")
			c1.recv("BLPOP")
			c1.do("LLEN", "q")
		}},
		{"BLPOP timeout", func(s *session) {
			c := s.conn("c")
			c.do("BLPOP", "q", "0.01")
			c.ignore("HELLO", "3")
			c.do("BLPOP", "q", "0.01")
		}},
		{"BRPOPLPUSH BLMOVE BZPOPMIN", func(s *session) {
			c1, c2 := s.conn("c1"), s.conn("c2")
			c1.send("BRPOPLPUSH", "src", "dst", "0")
			s.env.waitBlocked(s.t, 1)
			c2.do("RPUSH", "src", "x")
			c1.recv("BRPOPLPUSH")
			c1.send("BLMOVE", "dst", "src", "LEFT", "RIGHT", "0")
			c1.recv("BLMOVE")
			c1.send("BZPOPMIN", "z", "0")
			s.env.waitBlocked(s.t, 1)
			c2.do("ZADD", "z", "1", "m")
			c1.recv("BZPOPMIN")
			c1.do("BLMPOP", "0.01", "2", "a", "b", "LEFT")
		}},
		{"XREAD BLOCK", func(s *session) {
			c1, c2 := s.conn("c1"), s.conn("c2")
			c1.send("XREAD", "BLOCK", "0", "STREAMS", "s", "$")
			s.env.waitBlocked(s.t, 1)
			c2.do("XADD", "s", "1-1", "f", "v")
			c1.recv("XREAD")
			c1.do("XREAD", "COUNT", "1", "STREAMS", "s", "0") // not blocking
			c1.do("XGROUP", "CREATE", "s", "g", "$")
			c1.send("XREADGROUP", "GROUP", "g", "block", "BLOCK", "0", "STREAMS", "s", ">")
			s.env.waitBlocked(s.t, 1)
			c2.do("XADD", "s", "2-1", "f", "w")
			c1.recv("XREADGROUP")
		}},
		{"WAIT", func(s *session) {
			c := s.conn("c")
			c.do("SET", "k", "v")
			c.do("WAIT", "0", "0")
		}},
		{"blocking while WATCHing", func(s *session) {
			c1, c2 := s.conn("c1"), s.conn("c2")
			c1.do("WATCH", "k")
			c1.send("BLPOP", "q", "0")
			s.env.waitBlocked(s.t, 1)
			c2.do("RPUSH", "q", "a")
			c1.recv("BLPOP")
			c2.do("SET", "k", "x")
			c1.do("MULTI")
			c1.do("GET", "k")
			c1.do("EXEC")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { differential(t, env, tt.scenario) })
	}
}

// settle waits for the goroutine count to come back to at most base.
func settle(t *testing.T, base int, what string) {
	t.Helper()
	if !pinPoll(func() bool { return runtime.NumGoroutine() <= base }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("%s: %d goroutines, want at most %d\n%s", what, runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
	}
}

// TestPinnedClientGone: a client that hangs up while blocked, subscribed
// or in a transaction leaves no blocked upstream client, no upstream
// connection and no goroutine behind.
func TestPinnedClientGone(t *testing.T) {
	env := newPinEnv(t)
	connected := func() int {
		info := env.admin.do("INFO", "clients")
		i := strings.Index(info, "connected_clients:")
		n, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(info[i+len("connected_clients:"):], "\r\n", 2)[0]))
		return n
	}
	// Warm up: the pools and goroutines that stay.
	c := rdial(t, env.proxy)
	c.do("BLPOP", "q", "0.01")
	c.do("GET", "k")
	baseConns := connected() + 1 // one idle dedicated connection may stay pooled

	tests := []struct {
		name  string
		start func(c *rconn)
	}{
		{"blocked", func(c *rconn) {
			c.send("BLPOP", "q", "0")
			env.waitBlocked(t, 1)
		}},
		{"blocked, then sent more", func(c *rconn) {
			c.send("BLPOP", "q", "0")
			env.waitBlocked(t, 1)
			c.send("PING")
		}},
		{"killed while blocked", func(c *rconn) {
			id := strings.TrimSpace(c.do("CLIENT", "ID")[1:])
			c.send("BLPOP", "q", "0")
			env.waitBlocked(t, 1)
			killer := rdial(t, env.proxy)
			if got := killer.do("CLIENT", "KILL", "ID", id); got != ":1\r\n" {
				t.Errorf("CLIENT KILL = %q", got)
			}
			killer.c.Close()
		}},
		{"killed while subscribed", func(c *rconn) {
			id := strings.TrimSpace(c.do("CLIENT", "ID")[1:])
			c.do("SUBSCRIBE", "ch")
			killer := rdial(t, env.proxy)
			if got := killer.do("CLIENT", "KILL", "ID", id); got != ":1\r\n" {
				t.Errorf("CLIENT KILL = %q", got)
			}
			killer.c.Close()
		}},
		{"subscribed", func(c *rconn) { c.do("SUBSCRIBE", "ch") }},
		{"MONITOR", func(c *rconn) { c.do("MONITOR") }},
		{"in MULTI", func(c *rconn) { c.do("MULTI"); c.do("SET", "k", "v") }},
		{"WATCH", func(c *rconn) { c.do("WATCH", "k") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := runtime.NumGoroutine()
			c := rdial(t, env.proxy)
			tt.start(c)
			c.c.Close()
			if tt.name == "blocked, then sent more" {
				// Not watched once it sent more: the push ends the block.
				rdial(t, env.redis).do("RPUSH", "q", "x")
			}
			if !pinPoll(func() bool { return env.blocked(t) == 0 && connected() <= baseConns }) {
				t.Errorf("redis still has %d blocked and %d connected clients", env.blocked(t), connected())
			}
			settle(t, base, "after the client left")
		})
	}
}

// TestPinnedShutdown: Shutdown closes subscribers, and blocked clients once
// its deadline passes, leaving nothing behind.
func TestPinnedShutdown(t *testing.T) {
	env := newPinEnv(t)
	warm := rdial(t, env.proxy) // the pools and goroutines that stay
	warm.do("BLPOP", "q", "0.01")
	warm.do("GET", "k")
	warm.c.Close()
	base := runtime.NumGoroutine()
	sub := rdial(t, env.proxy)
	sub.do("SUBSCRIBE", "ch")
	blocked := rdial(t, env.proxy)
	blocked.send("BLPOP", "q", "0")
	env.waitBlocked(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := env.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want the deadline (BLPOP 0 never ends)", err)
	}
	for _, c := range []*rconn{sub, blocked} {
		// The blocked command may get an error reply before the
		// connection closes; nothing else may come.
		c.c.SetReadDeadline(time.Now().Add(pinWait))
		f, err := readFrame(c.r)
		if err == nil && len(f) > 0 && f[0] == '-' {
			f, err = readFrame(c.r)
		}
		if err == nil {
			t.Errorf("a client was not disconnected: it got %q", f)
		}
	}
	if !pinPoll(func() bool { return env.blocked(t) == 0 }) {
		t.Errorf("redis still has a blocked client")
	}
	settle(t, base, "after Shutdown")
}

// TestPinnedProxyAnswers: the commands the proxy answers itself on a
// pinned or subscribed connection, and those it refuses.
func TestPinnedProxyAnswers(t *testing.T) {
	env := newPinEnv(t)
	tests := []struct {
		name  string
		steps [][2]string // command (space-separated), reply
	}{
		{"refused in MULTI", [][2]string{
			{"MULTI", "+OK\r\n"},
			{"SET k v", "+QUEUED\r\n"},
			{"SELECT 0", "-ERR Command not allowed inside a transaction\r\n"},
			{"CLIENT SETNAME x", "-ERR Command not allowed inside a transaction\r\n"},
			{"SUBSCRIBE ch", "-ERR Command not allowed inside a transaction\r\n"},
			{"EXEC", "-EXECABORT Transaction discarded because of previous errors.\r\n"},
			{"GET k", "$-1\r\n"},
			{"EXEC", "-ERR EXEC without MULTI\r\n"},
		}},
		{"answered while WATCHing", [][2]string{
			{"WATCH k", "+OK\r\n"},
			{"CLIENT SETNAME pinned", "+OK\r\n"},
			{"CLIENT GETNAME", "$6\r\npinned\r\n"},
			{"SELECT 0", "+OK\r\n"},
			{"SELECT 1", "-ERR DB index is out of range\r\n"},
			{"MULTI", "+OK\r\n"},
			{"SET k v", "+QUEUED\r\n"},
			{"EXEC", "*1\r\n+OK\r\n"},
		}},
		{"HELLO while WATCHing", [][2]string{
			{"WATCH k", "+OK\r\n"},
			{"HELLO 3", ""},
			{"GET nope", "_\r\n"},
			{"MULTI", "+OK\r\n"},
			{"GET nope", "+QUEUED\r\n"},
			{"EXEC", "*1\r\n_\r\n"},
			{"HELLO 2", ""},
			{"GET nope", "$-1\r\n"},
		}},
		{"connection state", [][2]string{
			{"CLIENT TRACKING ON", "-ERR sidecache does not support CLIENT TRACKING: its L1 is the client-side cache\r\n"},
			{"CLIENT TRACKING off", "+OK\r\n"},
			{"CLIENT CACHING yes", "-ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled\r\n"},
			{"CLIENT GETREDIR", ":-1\r\n"},
			{"CLIENT TRACKINGINFO", "*6\r\n$5\r\nflags\r\n*1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n"},
			{"CLIENT REPLY ON", "+OK\r\n"},
			{"CLIENT REPLY OFF", "-ERR sidecache does not support CLIENT REPLY OFF or SKIP\r\n"},
			{"CLIENT REPLY maybe", "-ERR syntax error\r\n"},
			{"CLIENT NO-EVICT on", "+OK\r\n"},
			{"CLIENT UNBLOCK 1", "-ERR sidecache does not support CLIENT UNBLOCK\r\n"},
			{"READONLY", "-ERR This instance has cluster support disabled\r\n"},
			{"ASKING", "-ERR This instance has cluster support disabled\r\n"},
			{"PSYNC ? -1", "-ERR sidecache does not support replication (SYNC, PSYNC)\r\n"},
			{"PING", "+PONG\r\n"},
		}},
		{"subscribed", [][2]string{
			{"SUBSCRIBE ch", "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"},
			{"CLIENT TRACKING ON", "-ERR Can't execute 'client|tracking': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"},
			{"HELLO 3", "-ERR Can't execute 'hello': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"},
			{"UNSUBSCRIBE", "*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n"},
			{"CLIENT SETNAME sub", "+OK\r\n"},
			{"CLIENT GETNAME", "$3\r\nsub\r\n"},
			{"HELLO 3", ""},
			{"SUBSCRIBE ch", ">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"},
			{"GET nope", "_\r\n"},
			{"HELLO 2", ""},
			{"GET nope", "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"},
			{"PING", "*2\r\n$4\r\npong\r\n$0\r\n\r\n"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env.flush(t)
			c := rdial(t, env.proxy)
			for _, st := range tt.steps {
				got := c.do(strings.Fields(st[0])...)
				if st[1] != "" && got != st[1] {
					t.Errorf("%s: %q, want %q", st[0], got, st[1])
				}
			}
		})
	}
}

func TestPinnedMonitor(t *testing.T) {
	env := newPinEnv(t)
	mon := rdial(t, env.proxy)
	if got := mon.do("MONITOR"); got != "+OK\r\n" {
		t.Fatalf("MONITOR = %q", got)
	}
	rdial(t, env.redis).do("SET", "k", "direct")
	if got := mon.recv(); !strings.HasPrefix(got, "+") || !strings.HasSuffix(got, `"SET" "k" "direct"`+"\r\n") {
		t.Errorf("monitor line %q", got)
	}
	if got := mon.do("QUIT"); got != "+OK\r\n" {
		t.Errorf("QUIT = %q", got)
	}
	mon.c.SetReadDeadline(time.Now().Add(pinWait))
	if _, err := readFrame(mon.r); err == nil {
		t.Errorf("the connection stayed open after QUIT")
	}
}

// pinCluster starts a Redis Cluster of three masters and returns their
// addresses.
func pinCluster(t *testing.T) []string {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Skipf("redis-cli not found: %v", err)
	}
	bin, _ := exec.LookPath("redis-server")
	dir := t.TempDir()
	var nodes []string
	for len(nodes) < 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port+10000 > 65535 {
			continue
		}
		if bus, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+10000)); err != nil {
			continue
		} else {
			bus.Close()
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--daemonize", "no", "--dir", dir, "--logfile", "",
			"--cluster-enabled", "yes", "--cluster-config-file", fmt.Sprintf("nodes-%d.conf", port))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		})
		if !pinPoll(func() bool {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		}) {
			t.Fatalf("cluster node %s did not start", addr)
		}
		nodes = append(nodes, addr)
	}
	args := append(append([]string{"--cluster", "create"}, nodes...), "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
	}
	for _, n := range nodes {
		c := rdial(t, n)
		if !pinPoll(func() bool { return strings.Contains(c.do("CLUSTER", "INFO"), "cluster_state:ok") }) {
			t.Fatalf("cluster not ok on %s", n)
		}
		c.c.Close()
	}
	return nodes
}

// TestPinnedCluster compares sidecache over a Redis Cluster with a
// connection to the node that owns the keys: a transaction without WATCH
// is queued by the proxy with Redis's queue-time checks, and its keys must
// share a slot; the rest runs on the keys' node.
func TestPinnedCluster(t *testing.T) {
	nodes := pinCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), pinWait)
	defer cancel()
	st, err := remote.New(ctx, remote.Config{URL: "redis+cluster://" + nodes[0], Tracking: remote.TrackingOff})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	_, paddr, _ := serveFake(t, nil, st, proxy.Config{})

	admin := rdial(t, nodes[0])
	owner := func(key string) string {
		for _, n := range nodes {
			c := rdial(t, n)
			if got := c.do("TYPE", key); !strings.HasPrefix(got, "-MOVED") {
				c.c.Close()
				return n
			}
			c.c.Close()
		}
		t.Fatalf("no owner for %q", key)
		return ""
	}
	// Two keys in different slots of one node.
	var a, b string
	for i := 0; b == "" && i < 10000; i++ {
		k := fmt.Sprintf("k%d", i)
		switch {
		case a == "":
			a = k
		case owner(k) == owner(a) && admin.do("CLUSTER", "KEYSLOT", k) != admin.do("CLUSTER", "KEYSLOT", a):
			b = k
		}
	}
	node := owner(a)
	tests := []struct {
		name  string
		steps [][]string
	}{
		{"one slot", [][]string{{"MULTI"}, {"SET", "{" + a + "}1", "1"}, {"INCR", "{" + a + "}1"}, {"GET", "{" + a + "}2"}, {"PING"}, {"EXEC"}}},
		{"CROSSSLOT", [][]string{{"MULTI"}, {"SET", a, "1"}, {"SET", b, "2"}, {"EXEC"}, {"GET", a}}},
		{"EXECABORT", [][]string{{"MULTI"}, {"SET", a}, {"NOSUCHCOMMAND"}, {"SET", a, "1"}, {"EXEC"}, {"GET", a}}},
		{"refused", [][]string{{"MULTI"}, {"MULTI"}, {"WATCH", a}, {"SET", a, "x"}, {"EXEC"}}},
		{"no-multi", [][]string{{"MULTI"}, {"SET", a, "x"}, {"SAVE"}, {"EXEC"}}},
		{"DISCARD", [][]string{{"MULTI"}, {"SET", a, "1"}, {"DISCARD"}, {"GET", a}, {"EXEC"}}},
		{"EXEC with arguments", [][]string{{"MULTI"}, {"SET", a, "1"}, {"EXEC", "x"}, {"GET", a}}},
		{"empty", [][]string{{"MULTI"}, {"EXEC"}}},
		{"WATCH", [][]string{{"WATCH", a}, {"MULTI"}, {"SET", a, "1"}, {"GET", a}, {"EXEC"}}},
		{"BLPOP", [][]string{{"BLPOP", a, "0.01"}, {"RPUSH", a, "x"}, {"BLPOP", a, "0"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs [2][]string
			for i, addr := range []string{node, paddr} {
				rdial(t, node).do("FLUSHALL")
				c := rdial(t, addr)
				for _, cmd := range tt.steps {
					logs[i] = append(logs[i], fmt.Sprintf("%q -> %q", cmd, c.do(cmd...)))
				}
				c.c.Close()
			}
			for i := range logs[0] {
				if logs[0][i] != logs[1][i] {
					t.Errorf("step %d:\nredis:     %s\nsidecache: %s", i, logs[0][i], logs[1][i])
				}
			}
		})
	}
}

// TestPinnedGoRedis: go-redis's transactions, pub/sub and blocking pops
// work through sidecache, in both protocols.
func TestPinnedGoRedis(t *testing.T) {
	env := newPinEnv(t)
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprint("RESP", proto), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), pinWait)
			defer cancel()
			rdb := redis.NewClient(&redis.Options{Addr: env.proxy, Protocol: proto, DisableIdentity: true})
			defer rdb.Close()

			// Optimistic locking: increment with WATCH, racing a direct writer.
			incr := func(key string) error {
				return rdb.Watch(ctx, func(tx *redis.Tx) error {
					n, err := tx.Get(ctx, key).Int()
					if err != nil && !errors.Is(err, redis.Nil) {
						return err
					}
					_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
						p.Set(ctx, key, n+1, 0)
						return nil
					})
					return err
				}, key)
			}
			rdb.Del(ctx, "counter")
			if err := incr("counter"); err != nil {
				t.Fatalf("WATCH/MULTI/EXEC: %v", err)
			}
			err := rdb.Watch(ctx, func(tx *redis.Tx) error {
				tx.Get(ctx, "counter")
				rdial(t, env.redis).do("SET", "counter", "100") // a write the transaction did not see
				_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
					p.Set(ctx, "counter", 0, 0)
					return nil
				})
				return err
			}, "counter")
			if !errors.Is(err, redis.TxFailedErr) {
				t.Errorf("conflicting transaction: %v, want TxFailedErr", err)
			}
			if got, err := rdb.Get(ctx, "counter").Result(); err != nil || got != "100" {
				t.Errorf("GET counter = %q, %v; want 100", got, err)
			}

			sub := rdb.Subscribe(ctx, "news")
			defer sub.Close()
			if _, err := sub.Receive(ctx); err != nil {
				t.Fatalf("SUBSCRIBE: %v", err)
			}
			if err := rdb.Publish(ctx, "news", "hello").Err(); err != nil {
				t.Fatal(err)
			}
			msg, err := sub.ReceiveMessage(ctx)
			if err != nil || msg.Channel != "news" || msg.Payload != "hello" {
				t.Errorf("message = %v, %v", msg, err)
			}
			if err := sub.Ping(ctx); err != nil {
				t.Errorf("PING while subscribed: %v", err)
			}

			got := make(chan []string, 1)
			go func() {
				v, _ := rdb.BLPop(ctx, 0, "jobs").Result()
				got <- v
			}()
			env.waitBlocked(t, 1)
			rdb.RPush(ctx, "jobs", "j1")
			select {
			case v := <-got:
				if len(v) != 2 || v[1] != "j1" {
					t.Errorf("BLPOP = %q", v)
				}
			case <-ctx.Done():
				t.Fatal("BLPOP never returned")
			}
		})
	}
}
