package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidecache/sidecache/internal/testcert"
	"github.com/sidecache/sidecache/l1"
	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/remote"
	"github.com/sidecache/sidecache/proxy"
)

// recordStore is a store that records the commands it runs.
type recordStore struct {
	mu   sync.Mutex
	cmds []string
}

func (s *recordStore) Do(_ context.Context, args [][]byte) (l2store.Reply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmds = append(s.cmds, strings.ToLower(string(args[0])))
	return l2store.OK, nil
}
func (s *recordStore) Commands() []string   { return nil }
func (s *recordStore) Stats() l2store.Stats { return l2store.Stats{Kind: "fake"} }

func (s *recordStore) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cmds
	s.cmds = nil
	return c
}

func noperm(name string) string {
	return "-NOPERM this user has no permissions to run the '" + name + "' command\r\n"
}

// TestDenyCommands: a denied command gets Redis's ACL error after the
// unknown-command, arity and NOAUTH checks, never reaches the store and
// drops nothing from L1; a container name denies its subcommands, and
// AllowCommands takes exceptions out.
func TestDenyCommands(t *testing.T) {
	cache := &fakeCache{values: map[string]string{}}
	st := &recordStore{}
	_, addr, _ := serveFake(t, cache, st, proxy.Config{
		RequirePass:   "pw",
		DenyCommands:  []string{"FLUSHALL", "flushdb", "config|set", "cluster", "ping", "debug"},
		AllowCommands: []string{"cluster|info"},
	})
	c := dial(t, addr)
	if got := c.do("FLUSHALL"); got != "-NOAUTH Authentication required.\r\n" {
		t.Fatalf("FLUSHALL before AUTH = %q, want NOAUTH first", got)
	}
	if got := c.do("AUTH", "pw"); got != "+OK\r\n" {
		t.Fatalf("AUTH = %q", got)
	}
	tests := []struct {
		args  []string
		want  string
		store bool // reaches the store
	}{
		{[]string{"FLUSHALL"}, noperm("flushall"), false},
		{[]string{"flushall", "async"}, noperm("flushall"), false},
		{[]string{"FlushDB"}, noperm("flushdb"), false},
		{[]string{"CONFIG", "SET", "maxmemory", "1"}, noperm("config|set"), false},
		{[]string{"CONFIG", "SET"}, "-ERR wrong number of arguments for 'config|set' command\r\n", false},
		{[]string{"CONFIG", "NOSUCH"}, "-ERR unknown subcommand 'NOSUCH'. Try CONFIG HELP.\r\n", false},
		{[]string{"CLUSTER", "RESET"}, noperm("cluster|reset"), false},
		{[]string{"CLUSTER", "INFO"}, "+OK\r\n", true},
		{[]string{"PING"}, noperm("ping"), false},
		{[]string{"DEBUG", "SLEEP", "0"}, noperm("debug"), false},
		{[]string{"SET", "k", "v"}, "+OK\r\n", true},
		{[]string{"SWAPDB", "0", "1"}, "+OK\r\n", true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			if got := c.do(tt.args...); got != tt.want {
				t.Errorf("reply %q, want %q", got, tt.want)
			}
			ran := st.take()
			if tt.store != (len(ran) == 1) {
				t.Errorf("store ran %q, want it to run the command: %v", ran, tt.store)
			}
			inv, flushes := cache.takeInvalidated()
			if !tt.store && (len(inv) > 0 || flushes > 0) {
				t.Errorf("a refused command dropped %q and flushed L1 %d times", inv, flushes)
			}
		})
	}
}

// TestDenyCommandsConfig: New rejects names that are not Redis commands,
// and every name of the default list is one.
func TestDenyCommandsConfig(t *testing.T) {
	if err := proxy.CheckCommandNames(proxy.DefaultDenyCommandNames()); err != nil {
		t.Fatalf("default deny-list: %v", err)
	}
	for _, d := range proxy.DefaultDenyCommands() {
		if d.Why == "" || d.Name != strings.ToLower(d.Name) {
			t.Errorf("default deny-list entry %+v: want a lower-case name and a reason", d)
		}
	}
	tests := []struct {
		name        string
		deny, allow []string
		ok          bool
	}{
		{"default", proxy.DefaultDenyCommandNames(), nil, true},
		{"subcommand", []string{"config|set"}, []string{"config|set"}, true},
		{"unknown", []string{"flushal"}, nil, false},
		{"space for bar", []string{"config set"}, nil, false},
		{"unknown allowed", nil, []string{"nosuch"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := proxy.New(nil, storeFunc(okStore), proxy.Config{DenyCommands: tt.deny, AllowCommands: tt.allow})
			if (err == nil) != tt.ok {
				t.Fatalf("New: %v, want ok %v", err, tt.ok)
			}
			if err != nil && (!errors.Is(err, proxy.ErrConfig) || !errors.Is(err, proxy.ErrUnknownCommand)) {
				t.Errorf("New: %v, want ErrConfig and ErrUnknownCommand", err)
			}
		})
	}
}

// denyEnv is a redis-server and a proxy in front of it that denies the
// default list.
type denyEnv struct {
	proxy string
	admin *rconn // direct to redis
}

func newDenyEnv(t *testing.T) *denyEnv {
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
	_, paddr, _ := serveFake(t, cache, st, proxy.Config{DenyCommands: proxy.DefaultDenyCommandNames()})
	return &denyEnv{proxy: paddr, admin: rdial(t, addr)}
}

// aclDeny makes redis deny the default list to the default user, as the
// proxy does.
func aclDeny(t *testing.T, c *rconn) {
	t.Helper()
	args := []string{"ACL", "SETUSER", "default"}
	for _, n := range proxy.DefaultDenyCommandNames() {
		args = append(args, "-"+n)
	}
	if got := c.do(args...); got != "+OK\r\n" {
		t.Fatalf("ACL SETUSER: %q", got)
	}
}

// TestDenyCommandsUpstream compares, byte for byte, the proxy's replies
// with those of a redis-server whose default user an ACL denies the same
// commands: alone, in pipelines, in transactions (EXECABORT), while
// WATCHing and subscribed. (DEBUG is left out: redis refuses it for its
// enable-debug-command before its ACL.) The proxy's upstream never runs them: its keys
// survive and its command statistics do not count them.
func TestDenyCommandsUpstream(t *testing.T) {
	env := newDenyEnv(t)
	ref := pinRedis(t)
	aclDeny(t, rdial(t, ref))
	scenarios := []struct {
		name string
		cmds [][]string
		pipe bool
	}{
		{"alone", [][]string{
			{"SET", "k", "v"}, {"GET", "k"}, {"FLUSHALL"}, {"FLUSHDB", "ASYNC"}, {"GET", "k"},
			{"CONFIG", "SET", "maxmemory", "1"}, {"CONFIG", "SET"}, {"SWAPDB", "0", "1"},
			{"SHUTDOWN"}, {"SCRIPT", "FLUSH"}, {"FUNCTION", "FLUSH"},
			{"MODULE", "LIST"}, {"CLUSTER", "RESET"}, {"CLIENT", "PAUSE", "1000"},
			{"REPLICAOF", "NO", "ONE"}, {"BGSAVE"}, {"ACL", "SETUSER", "x"}, {"GET", "k"},
		}, false},
		{"pipeline", [][]string{
			{"SET", "p", "1"}, {"FLUSHALL"}, {"GET", "p"}, {"INCR", "p"}, {"FLUSHDB"}, {"GET", "p"}, {"DEL", "p"},
		}, true},
		{"MULTI", [][]string{
			{"SET", "m", "1"}, {"MULTI"}, {"SET", "m", "2"}, {"FLUSHALL"}, {"INCR", "m"}, {"EXEC"}, {"GET", "m"},
			{"MULTI"}, {"CONFIG", "SET", "maxmemory", "1"}, {"DISCARD"}, {"GET", "m"},
		}, false},
		{"MULTI pipelined", [][]string{
			{"MULTI"}, {"SET", "m", "3"}, {"FLUSHDB"}, {"EXEC"}, {"GET", "m"},
		}, true},
		{"WATCH", [][]string{
			{"WATCH", "w"}, {"FLUSHALL"}, {"SET", "w", "1"}, {"MULTI"}, {"SET", "w", "2"}, {"EXEC"}, {"GET", "w"},
		}, false},
		{"subscribed RESP3", [][]string{
			{"HELLO", "3"}, {"SUBSCRIBE", "ch"}, {"FLUSHALL"}, {"SET", "s", "1"}, {"GET", "s"}, {"UNSUBSCRIBE", "ch"}, {"FLUSHDB"},
		}, false},
		{"subscribed RESP2", [][]string{
			{"SUBSCRIBE", "ch"}, {"FLUSHALL"}, {"PING"}, {"UNSUBSCRIBE", "ch"}, {"FLUSHALL"}, {"GET", "k"},
		}, false},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			var logs [2][]string
			for i, target := range []string{ref, env.proxy} {
				c := rdial(t, target)
				if sc.pipe {
					for _, cmd := range sc.cmds {
						c.send(cmd...)
					}
					for _, cmd := range sc.cmds {
						logs[i] = append(logs[i], strings.Join(cmd, " ")+" -> "+c.recv())
					}
				} else {
					for _, cmd := range sc.cmds {
						if cmd[0] == "HELLO" {
							c.do(cmd...) // the ids differ
							continue
						}
						logs[i] = append(logs[i], strings.Join(cmd, " ")+" -> "+c.do(cmd...))
					}
				}
				c.c.Close()
			}
			if !slices.Equal(logs[0], logs[1]) {
				t.Errorf("redis with an ACL:\n%s\nsidecache:\n%s", strings.Join(logs[0], "\n"), strings.Join(logs[1], "\n"))
			}
		})
	}
	stats := env.admin.do("INFO", "commandstats")
	for _, name := range []string{"flushall", "flushdb", "config|set", "swapdb", "debug", "shutdown", "script|flush", "function|flush", "cluster|reset", "client|pause", "replicaof", "bgsave", "acl|setuser"} {
		if strings.Contains(stats, "cmdstat_"+name+":") {
			t.Errorf("the upstream ran %s:\n%s", name, stats)
		}
	}
	if got := env.admin.do("GET", "k"); got != "$1\r\nv\r\n" {
		t.Errorf("GET k on the upstream = %q: wiped", got)
	}
}

// TestTLSListener: with Config.TLS the listener speaks TLS only, and asks
// for client certificates as configured.
func TestTLSListener(t *testing.T) {
	certFile, keyFile, cert := testcert.Write(t, t.TempDir())
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	tests := []struct {
		name       string
		auth       tls.ClientAuthType
		clientCert bool
		ok         bool
	}{
		{"no client auth", tls.NoClientCert, false, true},
		{"required, given", tls.RequireAndVerifyClientCert, true, true},
		{"required, missing", tls.RequireAndVerifyClientCert, false, false},
		{"optional, missing", tls.VerifyClientCertIfGiven, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, addr, _ := serveFake(t, nil, storeFunc(okStore), proxy.Config{TLS: &tls.Config{
				Certificates: []tls.Certificate{pair}, ClientAuth: tt.auth, ClientCAs: pool,
			}})
			cc := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
			if tt.clientCert {
				cc.Certificates = []tls.Certificate{pair}
			}
			got, err := tlsPing(addr, cc)
			if tt.ok && (err != nil || got != "+PONG\r\n") {
				t.Errorf("PING over TLS = %q, %v; want PONG", got, err)
			}
			if !tt.ok && err == nil {
				t.Errorf("PING over TLS without a client certificate = %q, want an error", got)
			}
			// Plain RESP is not answered.
			plain := dial(t, addr)
			plain.conn.SetDeadline(time.Now().Add(pinWait))
			plain.send("PING")
			if line, err := plain.r.ReadString('\n'); err == nil && strings.Contains(line, "PONG") {
				t.Errorf("plain PING answered %q", line)
			}
		})
	}
}

// tlsPing sends PING over TLS and returns the reply line.
func tlsPing(addr string, cc *tls.Config) (string, error) {
	d := &net.Dialer{Timeout: pinWait}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cc)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(pinWait))
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(conn).ReadString('\n')
}
