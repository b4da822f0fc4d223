package test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sidecache/sidecache/l2store"
)

// The limits tests check sidecache's process behaviour: client limits,
// idle connections, authentication, memory policies, its command line,
// and graceful shutdown.

// TestE2EMaxClients: with --maxclients 3, a fourth connection gets
// "-ERR max number of clients reached" and is closed, like Redis's, and
// INFO stats counts it in rejected_connections.
func TestE2EMaxClients(t *testing.T) {
	srv := StartRedisServer(t, "--maxclients", "3")
	sc := StartSidecache(t, "--maxclients", "3")
	var first *RESPConn
	for i := range 3 {
		c := sc.Dial(t)
		expect(t, c, "+PONG\r\n", "PING")
		if i == 0 {
			first = c
		}
		rc := srv.Dial(t)
		expect(t, rc, "+PONG\r\n", "PING")
	}
	in := []byte("*1\r\n$4\r\nPING\r\n")
	want := exchange(t, srv.Addr, in)
	if string(want.data) != "-ERR max number of clients reached\r\n" || !want.closed {
		t.Fatalf("redis-server: fourth connection got %s", want.text())
	}
	got := exchange(t, sc.Addr, in)
	if string(got.data) != string(want.data) || !got.closed {
		t.Errorf("sidecache: fourth connection got %s, want %s", got.text(), want.text())
	}
	stats := infoFields(t, first, "stats")
	if stats["rejected_connections"] != "1" {
		t.Errorf("rejected_connections = %q, want 1", stats["rejected_connections"])
	}
	if n := infoInt(t, first, "clients", "connected_clients"); n != 3 {
		t.Errorf("connected_clients = %d, want 3", n)
	}
	// Closing a client makes room for another (once the server has seen
	// the close).
	first.conn.Close()
	err := pollUntil(10*time.Second, func() (bool, error) {
		r := exchange(t, sc.Addr, []byte("*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nQUIT\r\n"))
		return string(r.data) == "+PONG\r\n+OK\r\n", nil
	})
	if err != nil {
		t.Errorf("no connection accepted after a client left: %v", err)
	}
}

// TestE2EIdleTimeout: with --idle-timeout 1s an idle connection is closed
// without a reply, as Redis's "timeout 1" does.
func TestE2EIdleTimeout(t *testing.T) {
	srv := StartRedisServer(t, "--timeout", "1")
	sc := StartSidecache(t, "--idle-timeout", "1s")
	for _, target := range []struct{ name, addr string }{{"redis-server", srv.Addr}, {"sidecache", sc.Addr}} {
		c := DialRESP(t, target.addr)
		expect(t, c, "+PONG\r\n", "PING")
		// Wait for the close: at most 10s, much more than the timeout
		// (Redis checks idle clients about once a second).
		c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		data, err := io.ReadAll(c.conn)
		if err != nil || len(data) != 0 {
			t.Errorf("%s: idle connection: read %q, %v; want it closed without a reply", target.name, data, err)
		}
	}
}

// TestE2EBadFlags: a bad flag or environment variable prints one line on
// stderr and exits with status 2, without starting.
func TestE2EBadFlags(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		args []string
		want string // a substring of the line
	}{
		{name: "unknown flag", args: []string{"--bogus"}, want: "bogus"},
		{name: "bad size", args: []string{"--l1-max-bytes", "abc"}, want: "abc"},
		{name: "negative size", args: []string{"--l2-max-bytes", "-1"}, want: "l2-max-bytes"},
		{name: "bad duration", args: []string{"--l1-ttl", "soon"}, want: "soon"},
		{name: "zero l1 ttl", args: []string{"--l1-ttl", "0"}, want: "l1-ttl"},
		{name: "bad policy", args: []string{"--l2-policy", "volatile-lru"}, want: "volatile-lru"},
		{name: "bad log format", args: []string{"--log-format", "xml"}, want: "xml"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, want: "loud"},
		{name: "zero maxclients", args: []string{"--maxclients", "0"}, want: "maxclients"},
		{name: "positional argument", args: []string{"extra"}, want: "extra"},
		{name: "bad env size", env: []string{"SIDECACHE_L1_MAX_BYTES=abc"}, want: "SIDECACHE_L1_MAX_BYTES"},
		{name: "bad env duration", env: []string{"SIDECACHE_IDLE_TIMEOUT=never"}, want: "SIDECACHE_IDLE_TIMEOUT"},
		{name: "bad env policy", env: []string{"SIDECACHE_L2_POLICY=lfu"}, want: "lfu"},
		// Values the flag parser accepts but the tiers reject: still bad
		// flags, reported the same way.
		{name: "negative idle timeout", args: []string{"--idle-timeout", "-1s"}, want: "idle"},
		{name: "tiny proto-max-bulk-len", args: []string{"--proto-max-bulk-len", "100"}, want: "100"},
		{name: "tiny client-query-buffer-limit", args: []string{"--client-query-buffer-limit", "1000"}, want: "1000"},
		{name: "huge max-multibulk-len", args: []string{"--max-multibulk-len", "99999999999"}, want: "99999999999"},
		{name: "tiny l2-max-bytes", args: []string{"--l2-max-bytes", "1"}, want: "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--listen", "127.0.0.1:0"}, tt.args...)
			stdout, stderr, code := RunSidecache(t, tt.env, 20*time.Second, args...)
			if code != 2 {
				t.Errorf("exit status %d, want 2", code)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if !strings.HasPrefix(stderr, "sidecache: ") || strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
				t.Errorf("stderr %q, want one line starting with \"sidecache: \"", stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q does not mention %q", stderr, tt.want)
			}
		})
	}
}

// TestE2EHelpAndVersion: -help prints the flags on stdout and exits 0;
// --version prints the version.
func TestE2EHelpAndVersion(t *testing.T) {
	stdout, stderr, code := RunSidecache(t, nil, 20*time.Second, "-help")
	if code != 0 || stderr != "" {
		t.Errorf("-help: exit %d, stderr %q", code, stderr)
	}
	for _, flag := range []string{"--listen", "--l1-max-bytes", "--l1-ttl", "--l2-max-bytes", "--l2-policy", "--maxclients",
		"--proto-max-bulk-len", "--max-multibulk-len", "--client-query-buffer-limit", "--idle-timeout", "--requirepass",
		"--log-format", "--log-level", "--shutdown-timeout", "--version", "SIDECACHE_L1_MAX_BYTES"} {
		if !strings.Contains(stdout, flag) {
			t.Errorf("-help does not mention %s:\n%s", flag, stdout)
		}
	}
	stdout, stderr, code = RunSidecache(t, nil, 20*time.Second, "--version")
	if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "sidecache ") || strings.Count(stdout, "\n") != 1 {
		t.Errorf("--version: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestE2EPortInUse: a taken port is reported in one line, exit status 1.
func TestE2EPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	for _, format := range []string{"console", "json"} {
		t.Run(format, func(t *testing.T) {
			_, stderr, code := RunSidecache(t, nil, 20*time.Second, "--listen", addr, "--log-format", format)
			if code != 1 {
				t.Errorf("exit status %d, want 1", code)
			}
			want := "sidecache: cannot listen on " + addr + ": address already in use\n"
			if stderr != want {
				t.Errorf("stderr %q, want %q", stderr, want)
			}
		})
	}
}

// TestE2EEnvironment: SIDECACHE_* variables set the flags' values, and a
// flag on the command line wins.
func TestE2EEnvironment(t *testing.T) {
	sc := StartSidecacheEnv(t, []string{"SIDECACHE_L1_MAX_BYTES=3mb", "SIDECACHE_L2_MAX_BYTES=20mb", "SIDECACHE_MAXCLIENTS=7"},
		"--maxclients", "9")
	c := sc.Dial(t)
	side := infoFields(t, c, "sidecache")
	if side["l2_max_bytes"] != strconv.Itoa(20<<20) {
		t.Errorf("l2_max_bytes = %q, want %d from SIDECACHE_L2_MAX_BYTES", side["l2_max_bytes"], 20<<20)
	}
	if l1, _ := strconv.ParseInt(side["l1_max_bytes"], 10, 64); l1 <= 0 || l1 > 3<<20 || l1 < 2<<20 {
		t.Errorf("l1_max_bytes = %q, want about 3mb from SIDECACHE_L1_MAX_BYTES", side["l1_max_bytes"])
	}
	if n := infoInt(t, c, "clients", "maxclients"); n != 9 {
		t.Errorf("maxclients = %d, want 9 (the flag wins over SIDECACHE_MAXCLIENTS)", n)
	}
}

// TestE2ERequirePass compares authentication with redis-server's, both
// started with the same requirepass: commands before AUTH get NOAUTH
// (unknown commands and wrong arity are reported first), AUTH and
// HELLO AUTH work, RESET forgets the authentication.
func TestE2ERequirePass(t *testing.T) {
	srv := StartRedisServer(t, "--requirepass", "s3cret")
	sc := StartSidecache(t, "--requirepass", "s3cret")
	scripts := LoadScripts(t, "testdata/e2e/auth.redis")
	for _, s := range scripts {
		t.Run(s.Name, func(t *testing.T) {
			CompareScript(t, s, maskedDo(t, srv.Dial(t)), maskedDo(t, sc.Dial(t)))
		})
	}
	// The pre-AUTH protocol limits.
	cases := []struct{ name, in string }{
		{"unauthenticated multibulk length", "*11\r\n"},
		// Redis parses a command only after running the one before it,
		// so a command pipelined after AUTH has the authenticated limits.
		{"pipelined after AUTH: multibulk length 11", "*3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$6\r\ns3cret\r\n*11\r\n$4\r\nMSET\r\n" + strings.Repeat("$2\r\nmk\r\n", 10) + "DEL mk\r\n" + quitCmd},
		{"pipelined after AUTH: bulk length 20000", "*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n*3\r\n$3\r\nSET\r\n$2\r\nbk\r\n$20000\r\n" + strings.Repeat("b", 20000) + "\r\nSTRLEN bk\r\nDEL bk\r\n" + quitCmd},
		{"pipelined after HELLO AUTH", "HELLO 2 AUTH default s3cret\r\n*13\r\n$4\r\nMSET\r\n" + strings.Repeat("$2\r\nhk\r\n", 12) + "DEL hk\r\n" + quitCmd},
		{"multibulk length 10", "*10\r\n" + strings.Repeat("$1\r\nx\r\n", 10) + quitCmd},
		{"unauthenticated bulk length", "*2\r\n$4\r\nAUTH\r\n$16385\r\n"},
		{"bulk length 16384", "*2\r\n$4\r\nAUTH\r\n$16384\r\n" + strings.Repeat("p", 16384) + "\r\n" + quitCmd},
		{"inline before auth", "GET ik\r\nAUTH s3cret\r\nSET ik v\r\nGET ik\r\nDEL ik\r\n" + quitCmd},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := exchange(t, srv.Addr, []byte(tc.in))
			got := exchange(t, sc.Addr, []byte(tc.in))
			if !want.closed {
				t.Fatalf("redis-server did not close: %s", want.text())
			}
			// Mask the connection id of HELLO replies.
			want.data = helloID.ReplaceAllLiteral(want.data, []byte("$2\r\nid\r\n:<id>\r\n"))
			got.data = helloID.ReplaceAllLiteral(got.data, []byte("$2\r\nid\r\n:<id>\r\n"))
			if string(got.data) != string(want.data) || got.closed != want.closed {
				t.Errorf("input %q\n  redis-server: %s\n  sidecache:    %s", shorten(tc.in), want.text(), got.text())
			}
		})
	}
}

// TestE2ENoEviction: with --l2-policy noeviction and a small
// --l2-max-bytes, SETs eventually fail with Redis's OOM error; the keys
// written before stay readable, reads and deletes still work, and a
// delete makes room again.
func TestE2ENoEviction(t *testing.T) {
	sc := StartSidecache(t, "--l2-policy", "noeviction", "--l2-max-bytes", "1mb")
	c := sc.Dial(t)
	value := strings.Repeat("n", 1000)
	const oom = "-OOM command not allowed when used memory > 'maxmemory'.\r\n"
	written := 0
	for i := range 5000 { // 5 MB: far beyond 1mb
		r := do(t, c, "SET", "key:"+strconv.Itoa(i), value)
		if string(r) == oom {
			break
		}
		if string(r) != "+OK\r\n" {
			t.Fatalf("SET key:%d = %q", i, r)
		}
		written++
	}
	if written == 0 || written == 5000 {
		t.Fatalf("%d SETs succeeded before OOM, want some but not all", written)
	}
	t.Logf("%d 1000-byte values fit in --l2-max-bytes 1mb", written)
	// Another value of the same size does not fit either; reads and
	// deletes still work.
	expect(t, c, oom, "SET", "another", value)
	expect(t, c, oom, "SET", "key:"+strconv.Itoa(written), value)
	for i := range written {
		expect(t, c, bulkReply(value), "GET", "key:"+strconv.Itoa(i))
	}
	if n := infoInt(t, c, "stats", "evicted_keys"); n != 0 {
		t.Errorf("evicted_keys = %d with noeviction", n)
	}
	if n := mustInt(t, c, "DBSIZE"); n != int64(written) {
		t.Errorf("DBSIZE = %d, want %d", n, written)
	}
	for i := range min(100, written) {
		expect(t, c, ":1\r\n", "DEL", "key:"+strconv.Itoa(i))
	}
	expect(t, c, "+OK\r\n", "SET", "after-del", value)
	expect(t, c, bulkReply(value), "GET", "after-del")
}

// TestE2EShutdownWithPipeline sends SIGTERM while a client is writing a
// long pipeline: the process must exit 0 within its shutdown timeout, and
// the client must receive whole replies only (none cut mid-frame), each
// the right one, in order, and then an orderly end of stream (EOF). A
// reset instead means the server closed the socket with unread input,
// which makes the kernel drop replies it had not sent yet.
func TestE2EShutdownWithPipeline(t *testing.T) {
	tests := []struct {
		name     string
		key      string // SET by the first command, read by all the others
		value    string
		cmds     int
		signalAt int // send SIGTERM after this many replies
	}{
		{"small replies", "k", strings.Repeat("p", 100), 200000, 1000},
		{"8 KiB replies", "k", strings.Repeat("q", 8<<10), 100000, 100},
		// Long keys: few commands fit in the server's input buffer, so it
		// has unread input when it has answered them; big replies: they
		// are still in flight when it closes.
		{"256 KiB replies", strings.Repeat("k", 4000), strings.Repeat("B", 256<<10), 2000, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := StartSidecache(t, "--shutdown-timeout", "5s")
			conn, err := net.DialTimeout("tcp", sc.Addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(60 * time.Second))
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				w := bufio.NewWriterSize(conn, 64<<10)
				w.Write(AppendCommand(nil, []byte("SET"), []byte(tt.key), []byte(tt.value)))
				get := AppendCommand(nil, []byte("GET"), []byte(tt.key))
				for range tt.cmds - 1 {
					w.Write(get)
				}
				w.Flush() // fails once the server has closed the connection
			}()
			r := bufio.NewReaderSize(conn, 64<<10)
			replies := 0
			var readErr error
			for {
				reply, err := l2store.ReadRaw(r, nil, maxTestReply)
				if err != nil {
					if len(reply) > 0 {
						t.Errorf("reply %d cut mid-frame (%v)", replies, err)
					}
					readErr = err
					break
				}
				want := "+OK\r\n"
				if replies > 0 {
					want = bulkReply(tt.value)
				}
				if string(reply) != want {
					t.Fatalf("reply %d = %q, want %q", replies, shorten(string(reply)), shorten(want))
				}
				replies++
				if replies == tt.signalAt {
					if err := sc.Signal(syscall.SIGTERM); err != nil {
						t.Fatal(err)
					}
				}
			}
			conn.Close()
			wg.Wait()
			if replies < tt.signalAt {
				t.Fatalf("the connection ended after %d replies, before SIGTERM: %v", replies, readErr)
			}
			t.Logf("received %d whole replies of %d commands; the connection ended with %v", replies, tt.cmds, readErr)
			switch {
			case errors.Is(readErr, io.EOF):
			case errors.Is(readErr, syscall.ECONNRESET):
				t.Errorf("the connection was reset after %d replies: the server closed it with unread input, so replies it had written but not yet sent were dropped", replies)
			default:
				t.Errorf("the connection ended with %v, want EOF", readErr)
			}
			code, ok := sc.Wait(20 * time.Second)
			if !ok {
				t.Fatalf("sidecache still running 20s after SIGTERM (--shutdown-timeout 5s); stderr:\n%s", sc.Stderr())
			}
			if code != 0 {
				t.Errorf("sidecache exited %d after SIGTERM; stderr:\n%s", code, sc.Stderr())
			}
		})
	}
}
