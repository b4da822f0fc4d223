package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sidecache/sidecache/l2store"
)

func TestKeySlot(t *testing.T) {
	tests := []struct {
		key  string
		slot int
	}{
		{"", 0},
		{"foo", 12182},       // Redis's documentation
		{"123456789", 12739}, // CRC16/XMODEM check value 0x31C3
		{"{foo}bar", 12182},
		{"x{foo}y{bar}", 12182},
	}
	for _, tt := range tests {
		if got := KeySlot([]byte(tt.key)); got != tt.slot {
			t.Errorf("KeySlot(%q) = %d, want %d", tt.key, got, tt.slot)
		}
	}
	// TestDedicatedCluster compares more keys with CLUSTER KEYSLOT.
}

// dedCtx is a context bounded like every wait of these tests.
func dedCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), trkWait)
	t.Cleanup(cancel)
	return ctx
}

func dedDo(t *testing.T, c *Conn, args ...string) string {
	t.Helper()
	b := make([][]byte, len(args))
	for i, a := range args {
		b[i] = []byte(a)
	}
	if err := c.Send(b); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	r, err := c.Receive()
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return string(r)
}

func dedRecv(t *testing.T, c *Conn) string {
	t.Helper()
	r, err := c.Receive()
	if err != nil {
		t.Fatal(err)
	}
	return string(r)
}

// TestDedicated: the connection is set up for the URL's password and
// database, in either protocol, and replies come byte for byte, pushes
// included.
func TestDedicated(t *testing.T) {
	srv := trkStartRedis(t, "--requirepass", "s3cret")
	admin := trkDial(t, srv.Addr, "s3cret")
	s := trkNewStore(t, Config{URL: "redis://:s3cret@" + srv.Addr + "/3", Tracking: TrackingOff})
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprint("RESP", proto), func(t *testing.T) {
			c, err := s.Dedicated(dedCtx(t), proto, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.Proto() != proto {
				t.Errorf("Proto() = %d", c.Proto())
			}
			info := dedDo(t, c, "CLIENT", "INFO")
			if !strings.Contains(info, " db=3 ") || !strings.Contains(info, fmt.Sprintf(" resp=%d\n", proto)) {
				t.Errorf("CLIENT INFO = %q, want db=3 resp=%d", info, proto)
			}
			if got := dedDo(t, c, "SET", "k", "v"); got != "+OK\r\n" {
				t.Errorf("SET = %q", got)
			}
			admin.ok("SELECT", "3")
			if got := admin.ok("GET", "k"); string(got.Str) != "v" {
				t.Errorf("GET k in db 3 = %q", got.Str)
			}
			hdr, nul := "*", "$-1\r\n"
			if proto == 3 {
				hdr, nul = ">", "_\r\n"
			}
			if got := dedDo(t, c, "GET", "missing"); got != nul {
				t.Errorf("GET missing = %q, want %q", got, nul)
			}
			if got, want := dedDo(t, c, "SUBSCRIBE", "ch"), hdr+"3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"; got != want {
				t.Errorf("SUBSCRIBE = %q, want %q", got, want)
			}
			admin.ok("PUBLISH", "ch", "hello")
			if got, want := dedRecv(t, c), hdr+"3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n"; got != want {
				t.Errorf("message = %q, want %q", got, want)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		bad := trkNewStore(t, Config{URL: "redis://:s3cret@" + srv.Addr, Tracking: TrackingOff})
		bad.t.password = "wrong-pw"
		for _, proto := range []int{2, 3} {
			_, err := bad.Dedicated(dedCtx(t), proto, nil)
			if !errors.Is(err, l2store.ErrUnavailable) || !strings.Contains(err.Error(), "WRONGPASS") || strings.Contains(err.Error(), "wrong-pw") {
				t.Errorf("RESP%d: Dedicated = %v, want ErrUnavailable with WRONGPASS and no password", proto, err)
			}
		}
	})
}

// clientID returns the upstream's ID of c.
func clientID(t *testing.T, c *Conn) string {
	t.Helper()
	r := dedDo(t, c, "CLIENT", "ID")
	if !strings.HasPrefix(r, ":") {
		t.Fatalf("CLIENT ID = %q", r)
	}
	return strings.TrimSpace(r[1:])
}

// TestDedicatedPool: a released connection is reused, unless the upstream
// closed it; a broken one is not kept; the pool is bounded and closed with
// the store.
func TestDedicatedPool(t *testing.T) {
	srv := trkStartRedis(t)
	admin := trkDial(t, srv.Addr)
	s := trkNewStore(t, Config{URL: "redis://" + srv.Addr, Tracking: TrackingOff})
	ctx := dedCtx(t)

	c, err := s.Dedicated(ctx, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := clientID(t, c)
	c.Release()
	c, err = s.Dedicated(ctx, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := clientID(t, c); got != id {
		t.Errorf("after Release, Dedicated gave client %s, want the released %s", got, id)
	}
	if c3, err := s.Dedicated(ctx, 3, nil); err != nil {
		t.Fatal(err)
	} else if got := clientID(t, c3); got == id {
		t.Errorf("a RESP3 connection reused the RESP2 one")
	} else {
		c3.Close()
	}
	c.Release()

	// The upstream kills the idle connection: the next one is new.
	admin.ok("CLIENT", "KILL", "ID", id)
	trkPoll(t, "a new connection", func() bool {
		c, err := s.Dedicated(ctx, 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Send([][]byte{[]byte("CLIENT"), []byte("ID")}); err != nil {
			return false // the dead one, taken before its end reached us
		}
		r, err := c.Receive()
		if err != nil {
			return false
		}
		if strings.TrimSpace(string(r[1:])) == id {
			t.Fatalf("got the killed connection %s back", id)
		}
		return true
	})

	// A connection with an unread reply is not kept.
	c, err = s.Dedicated(ctx, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Send([][]byte{[]byte("PING")})
	trkPoll(t, "the reply buffered", func() bool {
		return c.nc.SetReadDeadline(time.Now().Add(time.Millisecond)) == nil && peekable(c)
	})
	c.Release()
	if n := idleCount(s); n != 0 {
		t.Errorf("%d idle connections after releasing one with a pending reply", n)
	}

	// At most maxIdleDedicated are kept.
	var conns []*Conn
	for range maxIdleDedicated + 2 {
		c, err := s.Dedicated(ctx, 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
	if n := idleCount(s); n != maxIdleDedicated {
		t.Errorf("%d idle connections, want %d", n, maxIdleDedicated)
	}
	s.Close()
	if n := idleCount(s); n != 0 {
		t.Errorf("%d idle connections after Close", n)
	}
	if _, err := s.Dedicated(ctx, 2, nil); !errors.Is(err, l2store.ErrClosed) {
		t.Errorf("Dedicated after Close = %v, want ErrClosed", err)
	}
}

// peekable reports whether a reply is buffered or arrives within c's read
// deadline.
func peekable(c *Conn) bool {
	_, err := c.br.Peek(1)
	c.nc.SetReadDeadline(time.Time{})
	return err == nil
}

func idleCount(s *Store) int {
	p := s.dedicatedPool()
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.idle {
		n += len(l)
	}
	return n
}

// TestDedicatedBlocking: a blocked Receive waits without a timeout, and
// Close from another goroutine ends it; a read timeout ends it too.
func TestDedicatedBlocking(t *testing.T) {
	srv := trkStartRedis(t)
	admin := trkDial(t, srv.Addr)
	s := trkNewStore(t, Config{URL: "redis://" + srv.Addr, Tracking: TrackingOff, ReadTimeout: 100 * time.Millisecond})
	blocked := func() bool {
		return strings.Contains(string(admin.ok("INFO", "clients").Str), "blocked_clients:1\r\n")
	}

	c, err := s.Dedicated(dedCtx(t), 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadTimeout(0)
	c.Send([][]byte{[]byte("BLPOP"), []byte("q"), []byte("0")})
	got := make(chan error, 1)
	go func() {
		_, err := c.Receive()
		got <- err
	}()
	trkPoll(t, "BLPOP blocked", blocked)
	c.Close()
	select {
	case err := <-got:
		if !errors.Is(err, l2store.ErrClosed) {
			t.Errorf("Receive after Close = %v, want ErrClosed", err)
		}
	case <-time.After(trkWait):
		t.Fatal("Receive still blocked after Close")
	}

	c, err = s.Dedicated(dedCtx(t), 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The Config's ReadTimeout bounds a Receive by default.
	c.Send([][]byte{[]byte("BLPOP"), []byte("q"), []byte("0")})
	if _, err := c.Receive(); !errors.Is(err, l2store.ErrUnavailable) {
		t.Errorf("Receive past the read timeout = %v, want ErrUnavailable", err)
	}
	c.Release() // broken: closed, not kept
	if n := idleCount(s); n != 0 {
		t.Errorf("a broken connection was kept")
	}
}

func TestTransaction(t *testing.T) {
	srv := trkStartRedis(t)
	s := trkNewStore(t, Config{URL: "redis://" + srv.Addr, Tracking: TrackingOff})
	args := func(a ...string) [][]byte {
		b := make([][]byte, len(a))
		for i := range a {
			b[i] = []byte(a[i])
		}
		return b
	}
	tests := []struct {
		name  string
		proto int
		cmds  [][][]byte
		want  string
	}{
		{"RESP2", 2, [][][]byte{args("SET", "k", "1"), args("INCR", "k"), args("GET", "nope")}, "*3\r\n+OK\r\n:2\r\n$-1\r\n"},
		{"RESP3", 3, [][][]byte{args("SET", "k", "1"), args("INCR", "k"), args("GET", "nope")}, "*3\r\n+OK\r\n:2\r\n_\r\n"},
		{"empty", 2, nil, "*0\r\n"},
		{"queue-time error", 2, [][][]byte{args("SET", "k"), args("INCR", "k")}, "-EXECABORT Transaction discarded because of previous errors.\r\n"},
		{"run-time error", 2, [][][]byte{args("SET", "k", "a"), args("INCR", "k")}, "*2\r\n+OK\r\n-ERR value is not an integer or out of range\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Transaction(dedCtx(t), tt.proto, tt.cmds)
			if err != nil || string(got) != tt.want {
				t.Errorf("Transaction = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestDedicatedCluster: a dedicated connection reaches the key's master,
// follows -MOVED when the slot has moved, and a transaction's keys must
// share a slot.
func TestDedicatedCluster(t *testing.T) {
	nodes, admins, clusterOwner := trkCluster(t)
	ids := map[string]string{}
	for _, n := range nodes {
		ids[n] = string(admins[n].ok("CLUSTER", "MYID").Str)
	}
	owner := func(key string) string {
		if slot := admins[nodes[0]].ok("CLUSTER", "KEYSLOT", key).Int; int(slot) != KeySlot([]byte(key)) {
			t.Fatalf("KeySlot(%q) = %d, CLUSTER KEYSLOT says %d", key, KeySlot([]byte(key)), slot)
		}
		return clusterOwner(key)
	}
	s := trkNewStore(t, Config{URL: "redis+cluster://" + nodes[0], Tracking: TrackingOff})
	// s2 keeps its own slot map, which the -MOVED that s meets leaves stale.
	s2 := trkNewStore(t, Config{URL: "redis+cluster://" + nodes[0], Tracking: TrackingOff})
	ctx := dedCtx(t)
	if c, err := s2.Dedicated(ctx, 2, nil); err != nil {
		t.Fatal(err)
	} else {
		c.Close()
	}

	for _, key := range []string{"{}foo", "foo{}", "{foo", "a{b}c{d}", "{{a}}", "}{a}"} {
		owner(key) // compares KeySlot with CLUSTER KEYSLOT
	}
	for i := range 20 {
		key := fmt.Sprintf("key:%d", i)
		c, err := s.Dedicated(ctx, 2, []byte(key))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.Addr(), owner(key); got != want {
			t.Errorf("Dedicated(%q) reached %s, want its master %s", key, got, want)
		}
		c.Release()
	}

	args := func(a ...string) [][]byte {
		b := make([][]byte, len(a))
		for i := range a {
			b[i] = []byte(a[i])
		}
		return b
	}
	got, err := s.Transaction(ctx, 2, [][][]byte{args("SET", "a", "1"), args("SET", "b", "2")})
	if err != nil || string(got) != crossSlotReply {
		t.Errorf("cross-slot Transaction = %q, %v; want %q", got, err, crossSlotReply)
	}
	got, err = s.Transaction(ctx, 2, [][][]byte{args("SET", "{t}a", "1"), args("INCR", "{t}a"), args("PING")})
	if err != nil || string(got) != "*3\r\n+OK\r\n:2\r\n+PONG\r\n" {
		t.Errorf("Transaction on one slot = %q, %v", got, err)
	}

	// Move two empty slots to another node behind the store's back: a
	// transaction and a blocking-style command follow the -MOVED.
	move := func(key string) (from, to string) {
		from = owner(key)
		to = nodes[0]
		if to == from {
			to = nodes[1]
		}
		slot := strconv.Itoa(KeySlot([]byte(key)))
		for _, n := range []string{to, from} {
			admins[n].ok("CLUSTER", "SETSLOT", slot, "NODE", ids[to])
		}
		for _, n := range nodes {
			trkPoll(t, "slot moved on "+n, func() bool {
				return movedTo(admins[n], key, to)
			})
		}
		return from, to
	}
	_, to1 := move("tx:{m1}")
	_, to2 := move("list:{m2}")
	got, err = s.Transaction(ctx, 2, [][][]byte{args("RPUSH", "tx:{m1}", "a"), args("LLEN", "tx:{m1}")})
	if err != nil || string(got) != "*2\r\n:1\r\n:1\r\n" {
		t.Errorf("Transaction on a moved slot = %q, %v", got, err)
	}
	if n := admins[to1].ok("LLEN", "tx:{m1}").Int; n != 1 {
		t.Errorf("LLEN on the new owner = %d", n)
	}
	c, err := s2.Dedicated(ctx, 2, []byte("list:{m2}"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Logf("before Do: connected to %s (slot moved to %s)", c.Addr(), to2)
	reply, err := c.Do(args("RPUSH", "list:{m2}", "x"))
	if err != nil || string(reply) != ":1\r\n" {
		t.Errorf("Do on a moved slot = %q, %v", reply, err)
	}
	if c.Addr() != to2 {
		t.Errorf("after Do, the connection is to %s, want the new owner %s", c.Addr(), to2)
	}
}

// movedTo reports whether node admin redirects key to addr (or owns it, if
// it is addr).
func movedTo(admin *trkConn, key, addr string) bool {
	r := admin.do("TYPE", key)
	if r.Kind == l2store.KindStatus {
		return admin.conn.RemoteAddr().String() == addr
	}
	return r.Kind == l2store.KindError && strings.HasSuffix(string(r.Str), " "+addr)
}

// TestDedicatedSentinel: in Sentinel mode a dedicated connection reaches
// the master the sentinels name.
func TestDedicatedSentinel(t *testing.T) {
	master := trkStartRedis(t)
	mhost, mport, _ := net.SplitHostPort(master.Addr)
	dir := t.TempDir()
	sentinel := trkStart(t, trkFreePort, func(port int) []string {
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndaemonize no\nlogfile \"\"\ndir %q\nsentinel monitor mymaster %s %s 1\n",
			port, dir, mhost, mport)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{conf, "--sentinel"}
	})
	sc := trkDial(t, sentinel.Addr)
	trkPoll(t, "sentinel knows the master", func() bool {
		return sc.do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster").Kind == l2store.KindArray
	})
	s := trkNewStore(t, Config{URL: "redis+sentinel://" + sentinel.Addr + "/mymaster/2", Tracking: TrackingOff})
	for _, proto := range []int{2, 3} {
		c, err := s.Dedicated(dedCtx(t), proto, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.Addr() != master.Addr {
			t.Errorf("RESP%d: connected to %s, want the master %s", proto, c.Addr(), master.Addr)
		}
		if info := dedDo(t, c, "CLIENT", "INFO"); !strings.Contains(info, " db=2 ") {
			t.Errorf("RESP%d: CLIENT INFO = %q, want db=2", proto, info)
		}
		c.Release()
	}
}
