package remote

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sidecache/sidecache/internal/testcert"

	"github.com/sidecache/sidecache/l1"
	"github.com/sidecache/sidecache/l2store"
)

// The tests start Debian's redis-server (and redis-sentinel, redis-cli)
// on free loopback ports, as test/redisserver_test.go does; packages
// cannot share test helpers, so a minimal starter lives here.

const (
	trkStartTimeout = 10 * time.Second
	// trkWait bounds every wait for an event (an invalidation, a
	// reconnection). The machine is shared: generous, never asserted on.
	trkWait = 10 * time.Second
)

// trkServer is a redis-server child process.
type trkServer struct {
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
	out  *trkBuffer
}

type trkBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *trkBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *trkBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func trkBinary(tb testing.TB, name string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("SIDECACHE_ALLOW_SKIP") == "1" {
			tb.Skipf("%s not found on PATH: %v", name, err)
		}
		tb.Fatalf("%s not found on PATH (set SIDECACHE_ALLOW_SKIP=1 to skip): %v", name, err)
	}
	return path
}

func trkFreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// trkClusterPort returns a free port whose cluster bus port is free too.
func trkClusterPort() (int, error) {
	for range 100 {
		port, err := trkFreePort()
		if err != nil {
			return 0, err
		}
		if port+10000 > 65535 {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, errors.New("no free port with a free cluster bus port")
}

// trkStartRedis starts redis-server on a free port with extra arguments
// and stops it when the test ends.
func trkStartRedis(tb testing.TB, extra ...string) *trkServer {
	tb.Helper()
	return trkStart(tb, trkFreePort, func(port int) []string {
		return append([]string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--daemonize", "no", "--dir", tb.TempDir(), "--logfile", "",
		}, extra...)
	})
}

// trkStart starts redis-server with the arguments args returns for a port
// choose picks, retrying when the port was taken meanwhile.
func trkStart(tb testing.TB, choose func() (int, error), args func(port int) []string) *trkServer {
	tb.Helper()
	bin := trkBinary(tb, "redis-server")
	var last error
	for range 5 {
		port, err := choose()
		if err != nil {
			tb.Fatal(err)
		}
		srv := &trkServer{
			Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			cmd:  exec.Command(bin, args(port)...),
			done: make(chan struct{}),
			out:  &trkBuffer{},
		}
		srv.cmd.Stdout, srv.cmd.Stderr = srv.out, srv.out
		if err := srv.cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		go func() { srv.cmd.Wait(); close(srv.done) }()
		err = trkPollErr(trkStartTimeout, func() (bool, error) {
			select {
			case <-srv.done:
				return false, fmt.Errorf("redis-server exited: %s", srv.out.String())
			default:
			}
			c, err := net.DialTimeout("tcp", srv.Addr, time.Second)
			if err != nil {
				return false, nil
			}
			c.Close()
			return true, nil
		})
		if err == nil {
			tb.Cleanup(srv.stop)
			return srv
		}
		srv.stop()
		last = err
		if !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	tb.Fatalf("starting redis-server: %v", last)
	return nil
}

func (s *trkServer) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// trkPollErr calls cond until it reports true or an error, or timeout
// passes.
func trkPollErr(timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %v", timeout)
		}
		time.Sleep(delay) // polling interval, not a wait for a condition
	}
}

func trkPoll(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	if err := trkPollErr(trkWait, func() (bool, error) { return cond(), nil }); err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
}

// trkConn is a plain RESP2 connection, for writes the Store did not make.
type trkConn struct {
	tb   testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func trkDial(tb testing.TB, addr string, auth ...string) *trkConn {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, trkWait)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	tc := &trkConn{tb: tb, conn: c, r: bufio.NewReader(c)}
	if len(auth) > 0 {
		tc.ok(append([]string{"AUTH"}, auth...)...)
	}
	return tc
}

func (c *trkConn) do(args ...string) l2store.Reply {
	c.tb.Helper()
	c.conn.SetDeadline(time.Now().Add(trkWait))
	if _, err := c.conn.Write(appendCommand(nil, args...)); err != nil {
		c.tb.Fatalf("%v: %v", args, err)
	}
	r, err := l2store.ReadReply(c.r, 1<<30)
	if err != nil {
		c.tb.Fatalf("%v: %v", args, err)
	}
	return r
}

// ok runs a command that must not fail.
func (c *trkConn) ok(args ...string) l2store.Reply {
	c.tb.Helper()
	r := c.do(args...)
	if r.IsError() {
		c.tb.Fatalf("%v: %s", args, r.Str)
	}
	return r
}

// trkClient is one line of CLIENT LIST.
type trkClient map[string]string

func (c *trkConn) clients() []trkClient {
	c.tb.Helper()
	var out []trkClient
	for _, line := range strings.Split(strings.TrimSpace(string(c.ok("CLIENT", "LIST").Str)), "\n") {
		m := trkClient{}
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			m[k] = v
		}
		out = append(out, m)
	}
	return out
}

// tracked returns the clients with tracking on.
func (c *trkConn) tracked() []trkClient {
	var out []trkClient
	for _, cl := range c.clients() {
		if strings.Contains(cl["flags"], "t") {
			out = append(out, cl)
		}
	}
	return out
}

func trkNewStore(tb testing.TB, cfg Config) *Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), trkWait)
	defer cancel()
	s, err := New(ctx, cfg)
	if err != nil {
		tb.Fatalf("New(%s): %v", cfg.Redacted(), err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func trkGet(tb testing.TB, s *Store, key string) l2store.Item {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), trkWait)
	defer cancel()
	item, found, err := s.Get(ctx, []byte(key))
	if err != nil || !found {
		tb.Fatalf("Get(%q) = %v, %v", key, found, err)
	}
	return item
}

// trkNext returns the next invalidation match accepts, skipping others.
func trkNext(tb testing.TB, s *Store, what string, match func(Invalidation) bool) Invalidation {
	tb.Helper()
	deadline := time.NewTimer(trkWait)
	defer deadline.Stop()
	for {
		select {
		case inv, ok := <-s.Invalidations():
			if !ok {
				tb.Fatalf("%s: Invalidations closed", what)
			}
			if match(inv) {
				return inv
			}
		case <-deadline.C:
			tb.Fatalf("%s: no invalidation within %v", what, trkWait)
		}
	}
}

func hasKey(key string) func(Invalidation) bool {
	return func(inv Invalidation) bool {
		return slices.ContainsFunc(inv.Keys, func(k []byte) bool { return string(k) == key })
	}
}

func isFlush(inv Invalidation) bool { return inv.Flush }

// trkDrain discards the invalidations already sent.
func trkDrain(s *Store) {
	for {
		select {
		case <-s.Invalidations():
		default:
			return
		}
	}
}

// trkNode returns the tracking state of the node at addr.
func trkNode(s *Store, addr string) (st nodeState, id int64, conns int, ok bool) {
	s.trk.mu.Lock()
	defer s.trk.mu.Unlock()
	n := s.trk.nodes[addr]
	if n == nil {
		return 0, 0, 0, false
	}
	return n.state, n.id, len(n.conns), true
}

func trkUp(s *Store, addr string) (int64, bool) {
	st, id, _, ok := trkNode(s, addr)
	return id, ok && st == nodeUp
}

// checkRedirected fails unless every tracked client of the server
// redirects to id, and there is one at least: tracking is on on the fill
// connections after go-redis's handshake (HELLO, AUTH, SELECT).
func checkRedirected(tb testing.TB, admin *trkConn, id int64) {
	tb.Helper()
	tracked := admin.tracked()
	if len(tracked) == 0 {
		tb.Fatalf("no client has tracking on: %v", admin.clients())
	}
	for _, c := range tracked {
		if c["redir"] != strconv.FormatInt(id, 10) {
			tb.Fatalf("client %s redirects to %s, want the tracker %d", c["id"], c["redir"], id)
		}
	}
}

// TestTrackingInvalidates reads keys through Get and writes them on
// another connection: the tracker reports each write.
func TestTrackingInvalidates(t *testing.T) {
	auths := []struct {
		name  string
		args  []string // server arguments
		url   string   // user info and path of the URL
		admin []string // AUTH arguments of the test's own connection
	}{
		{name: "no password", url: ""},
		{name: "password and db", args: []string{"--requirepass", "sekret"}, url: ":sekret@%s/3", admin: []string{"sekret"}},
		{name: "ACL user", args: []string{"--requirepass", "admin", "--user", "app", "on", ">apppw", "~*", "&*", "+@all"},
			url: "app:apppw@%s/2", admin: []string{"admin"}},
	}
	writes := []struct {
		name  string
		write []string
		flush bool
	}{
		{name: "SET", write: []string{"SET", "k", "new"}},
		{name: "DEL", write: []string{"DEL", "k"}},
		{name: "EXPIRE", write: []string{"EXPIRE", "k", "100"}},
		{name: "APPEND", write: []string{"APPEND", "k", "x"}},
		{name: "FLUSHALL", write: []string{"FLUSHALL"}, flush: true},
		{name: "FLUSHDB", write: []string{"FLUSHDB"}, flush: true},
	}
	for _, a := range auths {
		t.Run(a.name, func(t *testing.T) {
			srv := trkStartRedis(t, a.args...)
			url := "redis://" + srv.Addr
			db := "0"
			if a.url != "" {
				url = "redis://" + fmt.Sprintf(a.url, srv.Addr)
				db = url[strings.LastIndexByte(url, '/')+1:]
			}
			s := trkNewStore(t, Config{URL: url})
			if got := s.TrackingStatus(); got != TrackingStatusRedirect {
				t.Fatalf("TrackingStatus = %q, want %q", got, TrackingStatusRedirect)
			}
			admin := trkDial(t, srv.Addr, a.admin...)
			admin.ok("SELECT", db)
			id, up := trkUp(s, srv.Addr)
			if !up {
				t.Fatal("no tracker up after New")
			}
			for _, w := range writes {
				t.Run(w.name, func(t *testing.T) {
					admin.ok("SET", "k", "v")
					if item := trkGet(t, s, "k"); string(item.Value) != "v" || !item.Expires.IsZero() {
						t.Fatalf("Get = %q expires %v, want \"v\" and no expiry", item.Value, item.Expires)
					}
					checkRedirected(t, admin, id)
					trkDrain(s)
					admin.ok(w.write...)
					if w.flush {
						trkNext(t, s, w.name, isFlush)
					} else {
						trkNext(t, s, w.name, hasKey("k"))
					}
				})
			}
		})
	}
}

// TestTrackingTrackerKilled kills the tracker's connection: L1 is
// flushed, the tracker reconnects, the fill connections redirecting to
// the old ID are retired, and writes are reported again.
func TestTrackingTrackerKilled(t *testing.T) {
	srv := trkStartRedis(t)
	s := trkNewStore(t, Config{URL: "redis://" + srv.Addr})
	admin := trkDial(t, srv.Addr)
	admin.ok("SET", "k", "v")
	trkGet(t, s, "k")
	old, up := trkUp(s, srv.Addr)
	if !up {
		t.Fatal("no tracker up")
	}
	trkDrain(s)
	if r := admin.ok("CLIENT", "KILL", "ID", strconv.FormatInt(old, 10)); r.Int != 1 {
		t.Fatalf("CLIENT KILL ID %d: %v", old, r)
	}
	trkNext(t, s, "flush after the tracker's connection dropped", isFlush)
	var id int64
	trkPoll(t, "tracker reconnected", func() bool {
		id, up = trkUp(s, srv.Addr)
		return up && id != old
	})
	if got := s.TrackingStatus(); got != TrackingStatusRedirect {
		t.Fatalf("TrackingStatus = %q after reconnecting", got)
	}
	// go-redis discards the retired connections and dials new ones
	// without failing the Get.
	if item := trkGet(t, s, "k"); !item.Expires.IsZero() {
		t.Fatalf("Get after reconnecting: expires %v, want kept (zero)", item.Expires)
	}
	checkRedirected(t, admin, id)
	trkDrain(s)
	admin.ok("SET", "k", "w")
	trkNext(t, s, "SET after reconnecting", hasKey("k"))
}

// TestTrackingFillConnKilled kills the fill connections on the server's
// side while go-redis holds them idle: the server forgot their keys, so L1
// is flushed (the watchdog notices, without a command on them).
func TestTrackingFillConnKilled(t *testing.T) {
	srv := trkStartRedis(t)
	s := trkNewStore(t, Config{URL: "redis://" + srv.Addr})
	admin := trkDial(t, srv.Addr)
	admin.ok("SET", "k", "v")
	trkGet(t, s, "k")
	tracked := admin.tracked()
	if len(tracked) == 0 {
		t.Fatal("no fill connection has tracking on")
	}
	trkDrain(s)
	for _, c := range tracked {
		admin.ok("CLIENT", "KILL", "ID", c["id"])
	}
	trkNext(t, s, "flush after the fill connections were killed", isFlush)
	trkPoll(t, "killed connections unregistered", func() bool {
		_, _, n, _ := trkNode(s, srv.Addr)
		return n == 0
	})
	trkGet(t, s, "k")
	trkDrain(s)
	admin.ok("SET", "k", "w")
	trkNext(t, s, "SET on a new fill connection", hasKey("k"))
}

// TestTrackingFillConnDiscarded: a fill connection go-redis discards (a
// read timeout) flushes L1, since the server forgets what it read.
func TestTrackingFillConnDiscarded(t *testing.T) {
	srv := trkStartRedis(t)
	s := trkNewStore(t, Config{URL: "redis://" + srv.Addr, ReadTimeout: 100 * time.Millisecond})
	admin := trkDial(t, srv.Addr)
	admin.ok("SET", "k", "v")
	trkGet(t, s, "k")
	_, id, before, _ := trkNode(s, srv.Addr)
	trkDrain(s)
	// Longer than the read timeout, shorter than the tracker's (a PING
	// interval more): only the Get times out.
	admin.ok("CLIENT", "PAUSE", "300", "ALL")
	ctx, cancel := context.WithTimeout(context.Background(), trkWait)
	defer cancel()
	if _, _, err := s.Get(ctx, []byte("k")); err == nil {
		t.Fatal("Get succeeded while the server was paused beyond the read timeout")
	}
	trkNext(t, s, "flush after go-redis discarded a fill connection", isFlush)
	if _, _, after, _ := trkNode(s, srv.Addr); after >= before {
		t.Errorf("%d fill connections registered after the discard, %d before", after, before)
	}
	if now, up := trkUp(s, srv.Addr); !up || now != id {
		t.Errorf("the tracker reconnected (ID %d, then %d): the flush may be its", id, now)
	}
}

// TestPeerClosed checks the watchdog's probe on loopback connections.
func TestPeerClosed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pair := func(t *testing.T) (client, server net.Conn) {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); s.Close() })
		return c, s
	}
	for _, tc := range []struct {
		name  string
		setup func(c, s net.Conn)
		want  bool
	}{
		{"idle", func(c, s net.Conn) {}, false},
		// go-redis leaves its last read deadline on an idle connection.
		{"idle, read deadline passed", func(c, s net.Conn) { c.SetReadDeadline(time.Unix(1, 0)) }, false},
		{"unread reply", func(c, s net.Conn) {
			s.Write([]byte("+OK\r\n"))
			trkPoll(t, "reply arrived", func() bool { return trkReadable(c) })
		}, false},
		{"closed by the server", func(c, s net.Conn) {
			s.Close()
			trkPoll(t, "FIN arrived", func() bool { return trkReadable(c) })
		}, true},
		{"closed here", func(c, s net.Conn) { c.Close() }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := pair(t)
			tc.setup(c, s)
			if got := peerClosed(c); got != tc.want {
				t.Errorf("peerClosed = %v, want %v", got, tc.want)
			}
		})
	}
}

// trkReadable reports whether c has data or an end of stream to read.
func trkReadable(c net.Conn) bool {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return false
	}
	readable := false
	rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		readable = n >= 0 && err == nil
	})
	return readable
}

// TestTrackingUntrackedNotKept: while the tracker cannot reconnect, Get
// returns values already expired, so L1 does not keep them.
func TestTrackingUntrackedNotKept(t *testing.T) {
	srv := trkStartRedis(t)
	s := trkNewStore(t, Config{URL: "redis://" + srv.Addr})
	admin := trkDial(t, srv.Addr)
	admin.ok("SET", "k", "v")
	admin.ok("SET", "t", "v", "EX", "100")
	trkGet(t, s, "k")
	trkGet(t, s, "t")
	old, _ := trkUp(s, srv.Addr)

	// New connections now need a password the URL lacks: the tracker
	// cannot reconnect, the fill connections stay authenticated.
	admin.ok("CONFIG", "SET", "requirepass", "later")
	trkDrain(s)
	admin.ok("CLIENT", "KILL", "ID", strconv.FormatInt(old, 10))
	trkNext(t, s, "flush after the tracker's connection dropped", isFlush)
	trkPoll(t, "status broken", func() bool { return s.TrackingStatus() == TrackingStatusBroken })

	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s.now = func() time.Time { return start }
	for _, key := range []string{"k", "t"} {
		if item := trkGet(t, s, key); !item.Expires.Equal(start) {
			t.Errorf("Get(%q) while untracked: expires %v, want the read's start %v", key, item.Expires, start)
		}
	}

	trkDrain(s)
	admin.ok("CONFIG", "SET", "requirepass", "")
	trkPoll(t, "status redirect", func() bool { return s.TrackingStatus() == TrackingStatusRedirect })
	trkNext(t, s, "flush on reconnecting", isFlush)
	if item := trkGet(t, s, "k"); !item.Expires.IsZero() {
		t.Errorf("Get(k) tracked again: expires %v, want zero", item.Expires)
	}
	if item := trkGet(t, s, "t"); !item.Expires.After(start) || item.Expires.After(start.Add(100*time.Second)) {
		t.Errorf("Get(t) tracked again: expires %v, want within 100s after %v", item.Expires, start)
	}
	trkDrain(s)
	admin.ok("SET", "k", "w")
	trkNext(t, s, "SET after restoring", hasKey("k"))
}

// TestTrackingOff: no tracking, no invalidations, Get returns the real
// expiry.
func TestTrackingOff(t *testing.T) {
	srv := trkStartRedis(t)
	s := trkNewStore(t, Config{URL: "redis://" + srv.Addr, Tracking: TrackingOff})
	admin := trkDial(t, srv.Addr)
	admin.ok("SET", "k", "v", "EX", "100")
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s.now = func() time.Time { return start }
	item := trkGet(t, s, "k")
	if !item.Expires.After(start.Add(90*time.Second)) || item.Expires.After(start.Add(100*time.Second)) {
		t.Errorf("Get: expires %v, want about 100s after %v", item.Expires, start)
	}
	admin.ok("SET", "k", "w")
	for _, c := range admin.clients() {
		if strings.Contains(c["flags"], "t") || c["sub"] != "0" {
			t.Errorf("client with tracking or a subscription: %v", c)
		}
	}
	if got := s.TrackingStatus(); got != TrackingStatusOff {
		t.Errorf("TrackingStatus = %q, want %q", got, TrackingStatusOff)
	}
	select {
	case inv := <-s.Invalidations():
		t.Errorf("invalidation with tracking off: %+v", inv)
	default:
	}
	s.Close()
	if _, ok := <-s.Invalidations(); ok {
		t.Error("Invalidations not closed by Close")
	}
}

// trkFake is a RESP server that answers what go-redis and the tracker
// send, with some replies replaced.
func trkFake(tb testing.TB, replies map[string]string) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	nextID := 0
	tb.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	answer := func(args []string, subscribed *bool) string {
		name := strings.ToUpper(args[0])
		if len(args) > 1 && name == "CLIENT" {
			name += " " + strings.ToUpper(args[1])
		}
		if name == "CLIENT TRACKING" && slices.ContainsFunc(args, func(a string) bool { return strings.EqualFold(a, "REDIRECT") }) {
			if r, ok := replies["CLIENT TRACKING REDIRECT"]; ok {
				return r // an upstream that tracks but offers no REDIRECT (Dragonfly)
			}
		}
		if r, ok := replies[name]; ok {
			return r
		}
		switch name {
		case "HELLO":
			return "-ERR unknown command 'HELLO'\r\n"
		case "PING":
			if *subscribed {
				return "*2\r\n$4\r\npong\r\n$0\r\n\r\n"
			}
			return "+PONG\r\n"
		case "CLIENT ID":
			mu.Lock()
			nextID++
			id := nextID
			mu.Unlock()
			return fmt.Sprintf(":%d\r\n", id)
		case "SUBSCRIBE":
			*subscribed = true
			return fmt.Sprintf("*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n", len(args[1]), args[1])
		case "GET":
			return "$3\r\nbar\r\n"
		case "PTTL":
			return ":5000\r\n"
		}
		return "+OK\r\n"
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				subscribed := false
				for {
					req, err := l2store.ReadReply(r, 1<<20)
					if err != nil {
						return
					}
					var args []string
					for _, e := range req.Elems {
						args = append(args, string(e.Str))
					}
					if len(args) == 0 {
						return
					}
					if _, err := io.WriteString(c, answer(args, &subscribed)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// TestTrackingRefused: an upstream that refuses tracking makes auto mode
// fall back to the TTL cap (Get returns the real expiry) and redirect mode
// keep nothing.
func TestTrackingRefused(t *testing.T) {
	refuseTracking := map[string]string{"CLIENT TRACKING": "-ERR syntax error\r\n"}
	refuseID := map[string]string{"CLIENT ID": "-ERR unknown subcommand 'ID'. Try CLIENT HELP.\r\n"}
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		mode    TrackingMode
		replies map[string]string
		status  string
		expires time.Time
	}{
		{"auto, CLIENT TRACKING refused", TrackingAuto, refuseTracking, TrackingStatusRefused, start.Add(5 * time.Second)},
		{"auto, CLIENT ID refused", TrackingAuto, refuseID, TrackingStatusRefused, start.Add(5 * time.Second)},
		{"redirect, CLIENT TRACKING refused", TrackingRedirect, refuseTracking, TrackingStatusBroken, start},
		{"redirect, CLIENT ID refused", TrackingRedirect, refuseID, TrackingStatusBroken, start},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := trkFake(t, tc.replies)
			s := trkNewStore(t, Config{URL: "redis://" + addr, Tracking: tc.mode})
			if got := s.TrackingStatus(); got != tc.status {
				t.Errorf("TrackingStatus = %q, want %q", got, tc.status)
			}
			s.now = func() time.Time { return start }
			if item := trkGet(t, s, "foo"); string(item.Value) != "bar" || !item.Expires.Equal(tc.expires) {
				t.Errorf("Get = %q expires %v, want \"bar\" expiring %v", item.Value, item.Expires, tc.expires)
			}
			if st, _, _, _ := trkNode(s, addr); st != nodeRefused {
				t.Errorf("node state %d, want refused", st)
			}
		})
	}
}

// TestTrackingSentinel: the fill client's Dialer is called for the
// sentinels and for the master; only the master is tracked.
func TestTrackingSentinel(t *testing.T) {
	master := trkStartRedis(t)
	mhost, mport, _ := net.SplitHostPort(master.Addr)
	var sentinels []string
	for range 2 {
		dir := t.TempDir()
		srv := trkStart(t, trkFreePort, func(port int) []string {
			conf := filepath.Join(dir, "sentinel.conf")
			text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndaemonize no\nlogfile \"\"\ndir %q\nsentinel monitor mymaster %s %s 1\n",
				port, dir, mhost, mport)
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{conf, "--sentinel"}
		})
		sentinels = append(sentinels, srv.Addr)
		c := trkDial(t, srv.Addr)
		trkPoll(t, "sentinel knows the master", func() bool {
			r := c.do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
			return r.Kind == l2store.KindArray
		})
	}
	s := trkNewStore(t, Config{URL: "redis+sentinel://" + sentinels[0] + "/mymaster"})
	if _, up := trkUp(s, master.Addr); !up {
		t.Fatalf("master %s not tracked", master.Addr)
	}
	if _, _, _, ok := trkNode(s, sentinels[0]); ok {
		t.Errorf("the configured sentinel %s has a tracker", sentinels[0])
	}
	admin := trkDial(t, master.Addr)
	admin.ok("SET", "k", "v")
	trkGet(t, s, "k")
	trkDrain(s)
	admin.ok("SET", "k", "w")
	trkNext(t, s, "SET on the master", hasKey("k"))

	// A sentinel go-redis discovered (not in the URL) is recognized by
	// its ROLE and left untracked.
	ctx, cancel := context.WithTimeout(context.Background(), trkWait)
	defer cancel()
	c, err := s.trk.dial(ctx, "tcp", sentinels[1])
	if err != nil {
		t.Fatalf("dialing the other sentinel: %v", err)
	}
	defer c.Close()
	if _, ok := c.(*fillConn); ok {
		t.Error("a sentinel connection was registered as a fill connection")
	}
	if st, _, n, _ := trkNode(s, sentinels[1]); st != nodeSentinel || n != 0 {
		t.Errorf("other sentinel: state %d with %d connections, want sentinel with none", st, n)
	}
	if got := s.TrackingStatus(); got != TrackingStatusRedirect {
		t.Errorf("TrackingStatus = %q", got)
	}
}

// TestTrackingCluster: each cluster node the fill client dials gets its
// own tracker.
func TestTrackingCluster(t *testing.T) {
	nodes, admins, owner := trkCluster(t)
	keys := map[string]string{}
	for i := 0; len(keys) < len(nodes) && i < 1000; i++ {
		k := fmt.Sprintf("key%d", i)
		if o := owner(k); keys[o] == "" {
			keys[o] = k
		}
	}
	s := trkNewStore(t, Config{URL: "redis+cluster://" + nodes[0]})
	for _, n := range nodes {
		k := keys[n]
		if k == "" {
			t.Fatalf("no key on %s", n)
		}
		admins[n].ok("SET", k, "v")
		trkGet(t, s, k)
		if _, up := trkUp(s, n); !up {
			t.Errorf("node %s not tracked after reading %s from it", n, k)
		}
	}
	for _, n := range nodes {
		trkDrain(s)
		admins[n].ok("SET", keys[n], "w")
		trkNext(t, s, "SET on "+n, hasKey(keys[n]))
	}
	if got := s.TrackingStatus(); got != TrackingStatusRedirect {
		t.Errorf("TrackingStatus = %q", got)
	}
}

// TestTrackingClose: Close stops the trackers and closes Invalidations;
// dials after Close fail.
func TestTrackingClose(t *testing.T) {
	srv := trkStartRedis(t)
	s := trkNewStore(t, Config{URL: "redis://" + srv.Addr})
	admin := trkDial(t, srv.Addr)
	admin.ok("SET", "k", "v")
	trkGet(t, s, "k")
	s.Close()
	for range s.Invalidations() {
	}
	trkPoll(t, "tracker and fill connections closed", func() bool {
		return len(admin.clients()) == 1
	})
	if _, err := s.trk.dial(context.Background(), "tcp", srv.Addr); !errors.Is(err, l2store.ErrClosed) {
		t.Errorf("dial after Close: %v, want ErrClosed", err)
	}
}

func TestParseMessage(t *testing.T) {
	msg := func(payload l2store.Reply) l2store.Reply {
		return l2store.Array(l2store.BulkString("message"), l2store.BulkString(trackingChannel), payload)
	}
	for _, tc := range []struct {
		name string
		in   l2store.Reply
		want Invalidation
		ok   bool
		err  bool
	}{
		{"keys", msg(l2store.Array(l2store.BulkString("a"), l2store.BulkString("b"))), Invalidation{Keys: [][]byte{[]byte("a"), []byte("b")}}, true, false},
		{"null bulk (FLUSHALL, RESP2)", msg(l2store.Null), Invalidation{Flush: true}, true, false},
		{"null array", msg(l2store.NullArray), Invalidation{Flush: true}, true, false},
		{"no keys", msg(l2store.Array()), Invalidation{}, false, false},
		{"subscribe confirmation", l2store.Array(l2store.BulkString("subscribe"), l2store.BulkString(trackingChannel), l2store.Int(1)), Invalidation{}, false, false},
		{"pong", l2store.Array(l2store.BulkString("pong"), l2store.BulkString("")), Invalidation{}, false, false},
		{"other channel", l2store.Array(l2store.BulkString("message"), l2store.BulkString("news"), l2store.BulkString("x")), Invalidation{}, false, false},
		{"error reply", l2store.Error("ERR oops"), Invalidation{}, false, true},
		{"bad key", msg(l2store.Array(l2store.Int(1))), Invalidation{}, false, true},
		{"bad payload", msg(l2store.Int(1)), Invalidation{}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := parseMessage(tc.in)
			if ok != tc.ok || (err != nil) != tc.err || got.Flush != tc.want.Flush || !slices.EqualFunc(got.Keys, tc.want.Keys, bytes.Equal) {
				t.Errorf("parseMessage(%v) = %+v, %v, %v; want %+v, %v, error %v", tc.in, got, ok, err, tc.want, tc.ok, tc.err)
			}
		})
	}
}

func TestCmdErrorRefused(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want bool
	}{
		{"ERR syntax error", true},
		{"ERR unknown subcommand 'TRACKING'. Try CLIENT HELP.", true},
		{"ERR unknown command 'CLIENT', with args beginning with: ", true},
		{"NOPERM this user has no permissions to run the 'client|tracking' command", true},
		{"ERR The client ID you want redirect to does not exist", false},
		{"ERR max number of clients reached", false},
		{"LOADING Redis is loading the dataset in memory", false},
		{"NOAUTH Authentication required.", false},
	} {
		if got := (&cmdError{cmd: "CLIENT TRACKING", msg: tc.msg}).refused(); got != tc.want {
			t.Errorf("refused(%q) = %v, want %v", tc.msg, got, tc.want)
		}
	}
}

// measureInvalidation runs n rounds on two Stores ("sidecars") A and B of
// one server: B reads the key, A writes it, and the time until B's
// Invalidations delivers it is measured from before A's SET was sent
// (fromSend) and from A's SET's reply (afterAck, 0 if it came first).
func measureInvalidation(tb testing.TB, n int) (fromSend, afterAck []time.Duration) {
	srv := trkStartRedis(tb)
	a := trkNewStore(tb, Config{URL: "redis://" + srv.Addr})
	b := trkNewStore(tb, Config{URL: "redis://" + srv.Addr})
	ctx := context.Background()
	key := []byte("stale")
	if _, err := a.Do(ctx, [][]byte{[]byte("SET"), key, []byte("0")}); err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		trkGet(tb, b, string(key))
		t0 := time.Now()
		if _, err := a.Do(ctx, [][]byte{[]byte("SET"), key, strconv.AppendInt(nil, int64(i+1), 10)}); err != nil {
			tb.Fatal(err)
		}
		t1 := time.Now()
		trkNext(tb, b, "SET by the other Store", hasKey(string(key)))
		t2 := time.Now()
		fromSend = append(fromSend, t2.Sub(t0))
		afterAck = append(afterAck, max(0, t2.Sub(t1)))
	}
	slices.Sort(fromSend)
	slices.Sort(afterAck)
	return fromSend, afterAck
}

func percentile(d []time.Duration, p float64) time.Duration {
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// TestInvalidationLatency measures the staleness window between two
// sidecars: how long after a write the other one's L1 learns of it.
func TestInvalidationLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement; skipped with -short")
	}
	fromSend, afterAck := measureInvalidation(t, 2000)
	t.Logf("invalidation latency over %d writes, from the SET's send: p50 %v p99 %v max %v; after its reply: p50 %v p99 %v max %v",
		len(fromSend), percentile(fromSend, 0.5), percentile(fromSend, 0.99), fromSend[len(fromSend)-1],
		percentile(afterAck, 0.5), percentile(afterAck, 0.99), afterAck[len(afterAck)-1])
}

// BenchmarkInvalidationLatency reports the same as
// TestInvalidationLatency, over b.N writes.
func BenchmarkInvalidationLatency(b *testing.B) {
	fromSend, afterAck := measureInvalidation(b, b.N)
	b.ReportMetric(float64(percentile(fromSend, 0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(percentile(fromSend, 0.99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(percentile(afterAck, 0.99).Microseconds()), "p99-after-ack-µs")
}

// TestTrackingL1Consistency runs a real L1 over the Store, fed by
// Invalidations, while another client writes and the tracker's and the
// fill connections are killed now and then. L1's TTL cap is an hour: once
// the writes stop, L1 must come to agree with the server, which it would
// not if an invalidation were lost.
func TestTrackingL1Consistency(t *testing.T) {
	srv := trkStartRedis(t)
	s := trkNewStore(t, Config{URL: "redis://" + srv.Addr})
	cache, err := l1.New(l1.GetterFunc(func(ctx context.Context, key []byte, _ bool) (l1.Item, bool, error) {
		item, found, err := s.Get(ctx, key)
		return l1.Item{Value: item.Value, Expires: item.Expires}, found, err
	}), l1.Config{TTL: time.Hour, MaxBytes: 1 << 20, Shards: 4})
	if err != nil {
		t.Fatal(err)
	}
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for inv := range s.Invalidations() {
			if inv.Flush {
				cache.Flush()
			}
			for _, k := range inv.Keys {
				cache.Invalidate(k)
			}
		}
	}()
	t.Cleanup(func() { s.Close(); <-consumed })

	const nkeys = 16
	key := func(i int) string { return "c" + strconv.Itoa(i) }
	writer := trkDial(t, srv.Addr)
	admin := trkDial(t, srv.Addr)
	for i := range nkeys {
		writer.ok("SET", key(i), "0")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var readErrs, reads sync.Map
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, errs := 0, 0
			for i := r; ctx.Err() == nil; i++ {
				if _, _, err := cache.Get(ctx, []byte(key(i%nkeys))); err != nil {
					errs++
				}
				n++
			}
			reads.Store(r, n)
			readErrs.Store(r, errs)
		}()
	}
	chaos := time.Now().Add(2 * time.Second)
	kills := 0
	for i := 0; time.Now().Before(chaos); i++ {
		writer.ok("SET", key(i%nkeys), strconv.Itoa(i+1))
		if i%200 == 199 {
			kills++
			if id, up := trkUp(s, srv.Addr); up && kills%2 == 0 {
				admin.do("CLIENT", "KILL", "ID", strconv.FormatInt(id, 10))
			} else {
				for _, c := range admin.tracked() {
					admin.do("CLIENT", "KILL", "ID", c["id"])
				}
			}
		}
	}
	cancel()
	wg.Wait()
	total, errs := 0, 0
	reads.Range(func(_, v any) bool { total += v.(int); return true })
	readErrs.Range(func(_, v any) bool { errs += v.(int); return true })
	t.Logf("%d reads through L1 (%d failed while connections were killed), %d kills, L1 %+v", total, errs, kills, cache.Stats())

	// Last, the tracker reconnects; then each key is read into L1 and
	// written once more.
	old, _ := trkUp(s, srv.Addr)
	admin.do("CLIENT", "KILL", "ID", strconv.FormatInt(old, 10))
	trkPoll(t, "tracker reconnected", func() bool {
		// A tracker whose node has no fill connection left (the loop may
		// have killed them all) rests until a read dials one.
		s.Get(context.Background(), []byte(key(0)))
		id, up := trkUp(s, srv.Addr)
		return up && id != old
	})
	want := make([]string, nkeys)
	for i := range nkeys {
		cache.Get(context.Background(), []byte(key(i)))
		want[i] = "last" + strconv.Itoa(i)
		writer.ok("SET", key(i), want[i])
	}
	converge := func(what string) {
		t.Helper()
		var stale []string
		err := trkPollErr(trkWait, func() (bool, error) {
			stale = stale[:0]
			for i := range nkeys {
				v, _, err := cache.Get(context.Background(), []byte(key(i)))
				if err != nil || string(v) != want[i] {
					stale = append(stale, fmt.Sprintf("%s=%q (want %q, err %v)", key(i), v, want[i], err))
				}
			}
			return len(stale) == 0, nil
		})
		if err != nil {
			t.Fatalf("L1 still stale %s: %v", what, stale)
		}
	}
	converge("after the writes stopped")

	// The server closes the fill connections L1's values came through
	// while go-redis holds them idle (L1 hits need no L2 read), then the
	// keys are written.
	for _, c := range admin.tracked() {
		admin.do("CLIENT", "KILL", "ID", c["id"])
	}
	for i := range nkeys {
		want[i] = "after-kill" + strconv.Itoa(i)
		writer.ok("SET", key(i), want[i])
	}
	converge("after the fill connections were killed")
}

// trkCert writes a self-signed certificate for 127.0.0.1 and its key to
// dir, and returns the client TLS configuration that trusts it.
func trkCert(t *testing.T, dir string) (certFile, keyFile string, cfg *tls.Config) {
	certFile, keyFile, cert := testcert.Write(t, dir)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// TestTrackingTLS: the tracker and the fill connections speak TLS to a
// rediss:// upstream.
func TestTrackingTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, cfg := trkCert(t, dir)
	srv := trkStart(t, trkFreePort, func(port int) []string {
		return []string{
			"--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--daemonize", "no", "--dir", dir, "--logfile", "",
			"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", certFile, "--tls-auth-clients", "no",
		}
	})
	s := trkNewStore(t, Config{URL: "rediss://" + srv.Addr, TLS: cfg})
	tc, err := tls.Dial("tcp", srv.Addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	admin := &trkConn{tb: t, conn: tc, r: bufio.NewReader(tc)}
	admin.ok("SET", "k", "v")
	trkGet(t, s, "k")
	id, up := trkUp(s, srv.Addr)
	if !up {
		t.Fatal("no tracker up")
	}
	checkRedirected(t, admin, id)
	trkDrain(s)
	admin.ok("SET", "k", "w")
	trkNext(t, s, "SET over TLS", hasKey("k"))

	// go-redis checks the TLS connections' sockets before reuse: idle
	// ones are kept (the same clients serve more Gets)...
	before := admin.tracked()
	for range 20 {
		trkGet(t, s, "k")
	}
	if after := admin.tracked(); !slices.EqualFunc(before, after, func(a, b trkClient) bool { return a["id"] == b["id"] }) {
		t.Errorf("fill connections changed over idle reuse: %v, then %v", before, after)
	}
	// ... and retired ones are discarded without failing a Get.
	admin.ok("CLIENT", "KILL", "ID", strconv.FormatInt(id, 10))
	trkPoll(t, "tracker reconnected", func() bool {
		n, up := trkUp(s, srv.Addr)
		return up && n != id
	})
	trkGet(t, s, "k")
	id, _ = trkUp(s, srv.Addr)
	checkRedirected(t, admin, id)
	trkDrain(s)
	admin.ok("SET", "k", "x")
	trkNext(t, s, "SET over TLS after reconnecting", hasKey("k"))
}

// trkCluster starts a 3-master Redis Cluster and waits until every node
// says cluster_state:ok. It returns the nodes, an admin connection to each,
// and a function giving the node that owns a key.
func trkCluster(t *testing.T) (nodes []string, admins map[string]*trkConn, owner func(key string) string) {
	t.Helper()
	cli := trkBinary(t, "redis-cli")
	dir := t.TempDir()
	for range 3 {
		srv := trkStart(t, trkClusterPort, func(port int) []string {
			return []string{
				"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
				"--daemonize", "no", "--dir", dir, "--logfile", "",
				"--cluster-enabled", "yes", "--cluster-config-file", fmt.Sprintf("nodes-%d.conf", port),
			}
		})
		nodes = append(nodes, srv.Addr)
	}
	args := append(append([]string{"--cluster", "create"}, nodes...), "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
	}
	admins = map[string]*trkConn{}
	for _, n := range nodes {
		admins[n] = trkDial(t, n)
		trkPoll(t, "cluster_state:ok on "+n, func() bool {
			return strings.Contains(string(admins[n].ok("CLUSTER", "INFO").Str), "cluster_state:ok")
		})
	}
	owner = func(key string) string {
		slot := admins[nodes[0]].ok("CLUSTER", "KEYSLOT", key).Int
		for _, r := range admins[nodes[0]].ok("CLUSTER", "SLOTS").Elems {
			if r.Elems[0].Int <= slot && slot <= r.Elems[1].Int {
				m := r.Elems[2].Elems
				return net.JoinHostPort(string(m[0].Str), strconv.FormatInt(m[1].Int, 10))
			}
		}
		t.Fatalf("no owner for slot %d", slot)
		return ""
	}
	return nodes, admins, owner
}
