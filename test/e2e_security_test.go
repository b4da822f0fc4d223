package test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sidecache/sidecache/internal/testcert"
	"github.com/sidecache/sidecache/proxy"
)

// loopbackAddr returns 127.0.0.1 with the port of addr, which may be a
// wildcard address ("[::]:1234").
func loopbackAddr(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// TestSecurityDefaultListen: without --listen, sidecache listens on
// loopback only.
func TestSecurityDefaultListen(t *testing.T) {
	stdout, _, code := RunSidecache(t, nil, 20*time.Second, "--help")
	if code != 0 || !strings.Contains(stdout, `--listen (SIDECACHE_LISTEN, default "127.0.0.1:6379")`) {
		t.Errorf("--help: exit %d, want the loopback default of --listen in:\n%s", code, stdout)
	}
}

// TestSecurityProtectedMode: a non-loopback --listen without --requirepass
// stops sidecache at start with one line and status 2, unless
// --protected-mode no; with a password, or on loopback, it starts.
func TestSecurityProtectedMode(t *testing.T) {
	refused := []struct {
		name string
		env  []string
		args []string
	}{
		{"0.0.0.0", nil, []string{"--listen", "0.0.0.0:0"}},
		{"all interfaces", nil, []string{"--listen", ":0"}},
		{"IPv6 any", nil, []string{"--listen", "[::]:0"}},
		{"a host name", nil, []string{"--listen", "example.com:0"}},
		{"environment", []string{"SIDECACHE_LISTEN=0.0.0.0:0"}, nil},
		{"protected-mode yes", nil, []string{"--listen", "0.0.0.0:0", "--protected-mode", "yes"}},
	}
	for _, tt := range refused {
		t.Run("refused/"+tt.name, func(t *testing.T) {
			_, stderr, code := RunSidecache(t, tt.env, 20*time.Second, tt.args...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "sidecache: protected mode: --listen ") ||
				!strings.Contains(lines[0], "--requirepass") || !strings.Contains(lines[0], "--protected-mode no") {
				t.Errorf("exit %d, stderr %q: want 2 and one line about protected mode", code, stderr)
			}
		})
	}
	started := []struct {
		name string
		env  []string
		args []string
		pass string
	}{
		{"requirepass", nil, []string{"--listen", "0.0.0.0:0", "--requirepass", "pw"}, "pw"},
		{"protected-mode no", nil, []string{"--listen", "0.0.0.0:0", "--protected-mode", "no"}, ""},
		{"SIDECACHE_PROTECTED_MODE=no", []string{"SIDECACHE_PROTECTED_MODE=no"}, []string{"--listen", "0.0.0.0:0"}, ""},
		{"localhost", nil, []string{"--listen", "localhost:0"}, ""},
	}
	for _, tt := range started {
		t.Run("started/"+tt.name, func(t *testing.T) {
			sc := StartSidecacheEnv(t, tt.env, tt.args...)
			c := DialRESP(t, loopbackAddr(t, sc.Addr))
			if tt.pass != "" {
				expect(t, c, "-NOAUTH Authentication required.\r\n", "PING")
				expect(t, c, "+OK\r\n", "AUTH", tt.pass)
			}
			expect(t, c, "+PONG\r\n", "PING")
		})
	}
	t.Run("bad value", func(t *testing.T) {
		_, stderr, code := RunSidecache(t, nil, 20*time.Second, "--protected-mode", "maybe")
		if code != 2 || !strings.Contains(stderr, "protected-mode") {
			t.Errorf("exit %d, stderr %q: want 2 and the flag's name", code, stderr)
		}
	})
}

// denyACL makes redis-server's default user deny what sidecache denies by
// default, as an ACL.
func denyACL(t *testing.T, r *RedisServer) {
	t.Helper()
	args := []string{"ACL", "SETUSER", "default"}
	for _, n := range proxy.DefaultDenyCommandNames() {
		args = append(args, "-"+n)
	}
	expect(t, r.Dial(t), "+OK\r\n", args...)
}

// TestSecurityDenyCommands: in front of a remote L2, sidecache refuses the
// default deny-list exactly as redis-server refuses an ACL's denied
// commands (compared byte for byte, alone, pipelined and in MULTI), and
// its upstream never runs them; --allow-commands and --deny-commands
// change the list; with the embedded L2 the default does not apply.
func TestSecurityDenyCommands(t *testing.T) {
	up := StartRedisServer(t)
	ref := StartRedisServer(t)
	denyACL(t, ref)
	sc := StartSidecache(t, "--l2", "redis://"+up.Addr)
	script := [][]string{
		{"SET", "k", "v"}, {"GET", "k"}, {"FLUSHALL"}, {"FLUSHDB"}, {"GET", "k"},
		{"CONFIG", "SET", "maxmemory", "1"}, {"CONFIG", "REWRITE"}, {"SWAPDB", "0", "1"}, {"SHUTDOWN", "NOSAVE"},
		{"SAVE"}, {"BGREWRITEAOF"}, {"SLAVEOF", "NO", "ONE"}, {"FAILOVER"}, {"SCRIPT", "KILL"}, {"FUNCTION", "KILL"},
		{"FUNCTION", "RESTORE", "x"}, {"ACL", "DELUSER", "x"}, {"ACL", "LOAD"}, {"CLUSTER", "MEET", "127.0.0.1", "1"},
		{"MONITOR"},
		{"MULTI"}, {"SET", "k", "2"}, {"FLUSHALL"}, {"EXEC"}, {"GET", "k"},
		{"FLUSHALL", "x", "y"}, {"NOSUCH"},
	}
	t.Run("sequential", func(t *testing.T) {
		want, got := ref.Dial(t), sc.Dial(t)
		for _, cmd := range script {
			w, g := do(t, want, cmd...), do(t, got, cmd...)
			if string(w) != string(g) {
				t.Errorf("%s:\n  redis with an ACL: %q\n  sidecache:         %q", strings.Join(cmd, " "), w, g)
			}
		}
	})
	t.Run("pipelined", func(t *testing.T) {
		var in []byte
		for _, cmd := range script {
			if cmd[0] != "MONITOR" {
				in = append(in, AppendCommand(nil, bytesArgs(cmd)...)...)
			}
		}
		in = append(in, quitCmd...)
		want, got := exchange(t, ref.Addr, in), exchange(t, sc.Addr, in)
		if string(want.data) != string(got.data) {
			t.Errorf("redis with an ACL: %s\nsidecache:         %s", want.text(), got.text())
		}
	})
	stats := string(parseReply(t, do(t, up.Dial(t), "INFO", "commandstats")).Str)
	for _, name := range []string{"flushall", "flushdb", "config|set", "config|rewrite", "swapdb", "shutdown", "save", "bgrewriteaof", "slaveof", "failover", "script|kill", "function|kill", "function|restore", "acl|deluser", "acl|load", "cluster|meet", "monitor"} {
		if strings.Contains(stats, "cmdstat_"+name+":") {
			t.Errorf("the upstream ran %s", name)
		}
	}
	if v, err := redisCallString(up.Addr, "GET", "k"); err != nil || v != "v" {
		t.Errorf("GET k on the upstream = %q, %v: want v, never flushed", v, err)
	}

	t.Run("CONFIG GET", func(t *testing.T) {
		c := sc.Dial(t)
		list := strings.Join(proxy.DefaultDenyCommandNames(), ",")
		expect(t, c, "*2\r\n$23\r\nsidecache-deny-commands\r\n"+bulkReply(list), "CONFIG", "GET", "sidecache-deny-commands")
		expect(t, c, "*2\r\n$14\r\nprotected-mode\r\n$3\r\nyes\r\n", "CONFIG", "GET", "protected-mode")
	})
	t.Run("go-redis", func(t *testing.T) {
		rdb := newGoRedis(t, sc.Addr, redis.Options{})
		err := rdb.FlushAll(context.Background()).Err()
		if err == nil || err.Error() != "NOPERM this user has no permissions to run the 'flushall' command" {
			t.Errorf("FlushAll: %v, want NOPERM", err)
		}
	})

	lists := []struct {
		name string
		args []string
		ok   []string // commands that run
		deny []string // commands refused
	}{
		{"allow-commands", []string{"--l2", "redis://" + up.Addr, "--allow-commands", "FLUSHDB, script"}, []string{"FLUSHDB", "SCRIPT FLUSH"}, []string{"FLUSHALL", "CONFIG SET maxmemory 0"}},
		{"deny-commands empty", []string{"--l2", "redis://" + up.Addr, "--deny-commands", ""}, []string{"FLUSHALL", "FUNCTION FLUSH"}, nil},
		{"deny-commands a container", []string{"--l2", "redis://" + up.Addr, "--deny-commands", "config,del"}, []string{"FLUSHALL"}, []string{"CONFIG GET maxmemory", "DEL x"}},
		{"embedded default", nil, []string{"FLUSHALL", "FLUSHDB"}, nil},
		{"embedded deny-commands", []string{"--deny-commands", "flushall,flushdb"}, nil, []string{"FLUSHALL", "FLUSHDB"}},
		{"environment", []string{"--l2", "redis://" + up.Addr}, nil, []string{"GET k"}},
	}
	for _, tt := range lists {
		t.Run(tt.name, func(t *testing.T) {
			var env []string
			if tt.name == "environment" {
				env = []string{"SIDECACHE_DENY_COMMANDS=get"}
			}
			c := StartSidecacheEnv(t, env, tt.args...).Dial(t)
			for _, cmd := range tt.ok {
				if r := do(t, c, strings.Fields(cmd)...); string(r) != "+OK\r\n" {
					t.Errorf("%s = %q, want OK", cmd, r)
				}
			}
			for _, cmd := range tt.deny {
				if r := string(do(t, c, strings.Fields(cmd)...)); !strings.HasPrefix(r, "-NOPERM this user has no permissions to run the '") {
					t.Errorf("%s = %q, want NOPERM", cmd, r)
				}
			}
		})
	}
	t.Run("unknown name", func(t *testing.T) {
		_, stderr, code := RunSidecache(t, nil, 20*time.Second, "--deny-commands", "flushal")
		if code != 2 || !strings.Contains(stderr, "--deny-commands") || !strings.Contains(stderr, "flushal") {
			t.Errorf("exit %d, stderr %q: want 2 and the flag and name", code, stderr)
		}
	})
}

func bytesArgs(args []string) [][]byte {
	b := make([][]byte, len(args))
	for i, a := range args {
		b[i] = []byte(a)
	}
	return b
}

// TestSecurityTLS: with --tls-cert-file and --tls-key-file the RESP
// listener speaks TLS only; --tls-auth-clients decides on client
// certificates (yes by default, like Redis); go-redis and redis-cli --tls
// connect.
func TestSecurityTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key, x509Cert := testcert.Write(t, dir)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(x509Cert)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	goRedis := func(t *testing.T, addr string, withCert bool) error {
		tc := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
		if withCert {
			tc.Certificates = []tls.Certificate{pair}
		}
		rdb := newGoRedis(t, addr, redis.Options{TLSConfig: tc, MaxRetries: -1})
		if err := rdb.Set(ctx, "tk", "over tls", 0).Err(); err != nil {
			return err
		}
		v, err := rdb.Get(ctx, "tk").Result()
		if err == nil && v != "over tls" {
			t.Errorf("GET tk = %q", v)
		}
		return err
	}
	cli := func(t *testing.T, addr string, withCert bool) (string, error) {
		bin, err := exec.LookPath("redis-cli")
		if err != nil {
			t.Skip("no redis-cli")
		}
		if out, _ := exec.Command(bin, "--help").CombinedOutput(); !strings.Contains(string(out), "--tls") {
			t.Skip("redis-cli was built without TLS")
		}
		host, port, _ := net.SplitHostPort(addr)
		args := []string{"--tls", "--cacert", cert, "-h", host, "-p", port}
		if withCert {
			args = append(args, "--cert", cert, "--key", key)
		}
		cmd := exec.CommandContext(ctx, bin, append(args, "PING")...)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	t.Run("client certificates required", func(t *testing.T) {
		sc := StartSidecache(t, "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert)
		if err := goRedis(t, sc.Addr, true); err != nil {
			t.Errorf("go-redis with a client certificate: %v", err)
		}
		if err := goRedis(t, sc.Addr, false); err == nil {
			t.Errorf("go-redis without a client certificate: connected")
		}
		plain := DialRESP(t, sc.Addr)
		plain.Timeout = 5 * time.Second
		if r, err := plain.DoStrings("PING"); err == nil {
			t.Errorf("plain PING = %q, want no RESP answer", r)
		}
		if out, err := cli(t, sc.Addr, true); err != nil || out != "PONG" {
			t.Errorf("redis-cli --tls with a client certificate: %q, %v", out, err)
		}
		if out, _ := cli(t, sc.Addr, false); out == "PONG" {
			t.Errorf("redis-cli --tls without a client certificate: %q", out)
		}
	})
	t.Run("tls-auth-clients no", func(t *testing.T) {
		sc := StartSidecache(t, "--tls-cert-file", cert, "--tls-key-file", key, "--tls-auth-clients", "no", "--requirepass", "pw")
		tc := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
		rdb := newGoRedis(t, sc.Addr, redis.Options{TLSConfig: tc, Password: "pw"})
		if err := rdb.Ping(ctx).Err(); err != nil {
			t.Errorf("go-redis over TLS with AUTH: %v", err)
		}
	})
	t.Run("tls-auth-clients optional", func(t *testing.T) {
		sc := StartSidecache(t, "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert, "--tls-auth-clients", "optional")
		for _, withCert := range []bool{true, false} {
			if err := goRedis(t, sc.Addr, withCert); err != nil {
				t.Errorf("go-redis (client certificate %v): %v", withCert, err)
			}
		}
	})

	secret := "SECRET-KEY-MATERIAL-7f3a"
	badKey := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(badKey, []byte("-----BEGIN EC PRIVATE KEY-----\n"+secret+"\n-----END EC PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name, flag string
		args       []string
	}{
		{"cert without key", "--tls-key-file", []string{"--tls-cert-file", cert}},
		{"auth yes without CA", "--tls-ca-cert-file", []string{"--tls-cert-file", cert, "--tls-key-file", key}},
		{"bad auth value", "--tls-auth-clients", []string{"--tls-cert-file", cert, "--tls-key-file", key, "--tls-auth-clients", "maybe"}},
		{"bad key", "--tls-key-file", []string{"--tls-cert-file", cert, "--tls-key-file", badKey, "--tls-auth-clients", "no"}},
		{"CA file without certificates", "--tls-ca-cert-file", []string{"--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", key}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := RunSidecache(t, nil, 20*time.Second, append([]string{"--listen", "127.0.0.1:0"}, tt.args...)...)
			if code != 2 || !strings.Contains(stderr, tt.flag) {
				t.Errorf("exit %d, stderr %q: want 2 and %s", code, stderr, tt.flag)
			}
			if strings.Contains(stderr, secret) {
				t.Errorf("stderr shows the key's contents: %q", stderr)
			}
		})
	}
}

// TestSecuritySecretsNotLogged: neither --requirepass nor the L2 URL's
// password appears in sidecache's log, at start, on errors (--log-level
// debug, the L2 gone, failed AUTHs), or in a start failure.
func TestSecuritySecretsNotLogged(t *testing.T) {
	const clientPass, l2Pass = "client-S3CRET-91b2", "l2-S3CRET-c4d5"
	up := StartRedisServer(t, "--requirepass", l2Pass)
	sc := StartSidecache(t, "--requirepass", clientPass, "--l2", "redis://:"+l2Pass+"@"+up.Addr,
		"--log-level", "debug", "--breaker-min-requests", "1")
	c := sc.Dial(t)
	expect(t, c, "-WRONGPASS invalid username-password pair or user is disabled.\r\n", "AUTH", "not-"+clientPass)
	expect(t, c, "+OK\r\n", "AUTH", clientPass)
	expect(t, c, "+OK\r\n", "SET", "k", "v")
	expect(t, c, "+OK\r\n", "CONFIG", "RESETSTAT")
	up.stop()
	// Reads and writes fail now; the tiers log it.
	err := pollUntil(20*time.Second, func() (bool, error) {
		do(t, c, "SET", "k2", "v")
		do(t, c, "GET", "missing")
		out := sc.Stderr()
		return strings.Contains(out, `"level":"warn"`) || strings.Contains(out, `"level":"error"`) || strings.Contains(out, "breaker"), nil
	})
	if err != nil {
		t.Fatalf("no warning or error logged with the L2 gone: %v\n%s", err, sc.Stderr())
	}
	if _, err := sc.Stop(); err != nil {
		t.Fatal(err)
	}
	out := sc.Stderr()
	if !strings.Contains(out, `"msg":"sidecache starting"`) || !strings.Contains(out, `"requirepass":true`) {
		t.Errorf("no start line saying a password is set:\n%s", out)
	}
	for _, s := range []string{clientPass, l2Pass} {
		if strings.Contains(out, s) {
			t.Errorf("the log contains a password %q:\n%s", s, out)
		}
	}

	t.Run("start failures", func(t *testing.T) {
		live := StartRedisServer(t, "--requirepass", l2Pass)
		const wrong = "wrong-S3CRET-e6f7"
		for _, tt := range []struct {
			name string
			code int
			args []string
		}{
			{"wrong L2 password", 1, []string{"--l2", "redis://:" + wrong + "@" + live.Addr}},
			{"bad L2 URL", 1, []string{"--l2", "redis://:" + wrong + "@127.0.0.1:notaport"}},
			{"L2 down", 1, []string{"--l2", "redis://:" + wrong + "@" + up.Addr, "--l2-dial-timeout", "1s"}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, stderr, code := RunSidecache(t, nil, 30*time.Second, append([]string{"--listen", "127.0.0.1:0", "--log-level", "debug", "--requirepass", clientPass}, tt.args...)...)
				if code != tt.code || stderr == "" {
					t.Errorf("exit %d, want %d, with an error; stderr %q", code, tt.code, stderr)
				}
				for _, s := range []string{wrong, clientPass} {
					if strings.Contains(stderr, s) {
						t.Errorf("stderr contains a password %q: %s", s, stderr)
					}
				}
			})
		}
	})
}
