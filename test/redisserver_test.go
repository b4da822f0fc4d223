package test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidecache/sidecache/l2store"
)

// RedisServer is a redis-server child process listening on a free
// loopback port, started by StartRedisServer and stopped by the test's
// cleanup.
type RedisServer struct {
	Addr string // host:port

	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	out    *syncBuffer   // the server's stdout and stderr
}

// redisStartTimeout bounds how long StartRedisServer waits for a server to
// answer PING.
const redisStartTimeout = 10 * time.Second

// requireBinary returns the path of an executable on PATH. If it is
// missing the test fails, or is skipped when the environment variable
// SIDECACHE_ALLOW_SKIP is 1 (CI installs the binaries, so there it must
// not be skipped silently).
func requireBinary(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("SIDECACHE_ALLOW_SKIP") == "1" {
			t.Skipf("%s not found on PATH: %v", name, err)
		}
		t.Fatalf("%s not found on PATH (set SIDECACHE_ALLOW_SKIP=1 to skip): %v", name, err)
	}
	return path
}

// StartRedisServer starts Debian's redis-server on a free loopback TCP
// port, without persistence, with extra configuration args (e.g.
// "--maxmemory", "10mb") appended to its command line. It returns once the
// server answers PING, and stops it when the test ends. A port taken by
// someone else between choosing and binding it is retried with another.
func StartRedisServer(t testing.TB, extra ...string) *RedisServer {
	t.Helper()
	bin := requireBinary(t, "redis-server")
	const attempts = 5
	var lastErr error
	for range attempts {
		port, err := freePort()
		if err != nil {
			t.Fatalf("choosing a port: %v", err)
		}
		srv, err := startRedisServer(t, bin, port, extra)
		if err == nil {
			return srv
		}
		lastErr = err
		if !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	t.Fatalf("starting redis-server: %v", lastErr)
	return nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startRedisServer(t testing.TB, bin string, port int, extra []string) (*RedisServer, error) {
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--dir", t.TempDir(),
		"--logfile", "",
	}
	args = append(args, extra...)
	srv := &RedisServer{
		Addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		cmd:    exec.Command(bin, args...),
		exited: make(chan struct{}),
		out:    &syncBuffer{},
	}
	srv.cmd.Stdout, srv.cmd.Stderr = srv.out, srv.out
	if err := srv.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		srv.cmd.Wait()
		close(srv.exited)
	}()
	err := pollUntil(redisStartTimeout, func() (bool, error) {
		select {
		case <-srv.exited:
			return false, fmt.Errorf("redis-server exited: %s", srv.out.String())
		default:
		}
		return srv.ping() == nil, nil
	})
	if err != nil {
		srv.stop()
		return nil, fmt.Errorf("%w\nredis-server output:\n%s", err, srv.out.String())
	}
	t.Cleanup(srv.stop)
	return srv, nil
}

// ping sends one PING on a fresh connection. A server started with
// --requirepass answers NOAUTH, which also shows it is up.
func (s *RedisServer) ping() error {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	rc := &RESPConn{conn: c, r: bufio.NewReader(c), Timeout: time.Second}
	reply, err := rc.Do([]byte("PING"))
	if err != nil {
		return err
	}
	if string(reply) != "+PONG\r\n" && string(reply) != "-NOAUTH Authentication required.\r\n" {
		return fmt.Errorf("PING: %q", reply)
	}
	return nil
}

// stop terminates the server: SIGTERM, then SIGKILL if it has not exited
// within a few seconds.
func (s *RedisServer) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// Dial opens a raw RESP connection to the server, closed when the test
// ends.
func (s *RedisServer) Dial(t testing.TB) *RESPConn { return DialRESP(t, s.Addr) }

// pollUntil calls cond every few milliseconds until it returns true or an
// error, or until timeout has passed.
func pollUntil(timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("condition not met within %v", timeout)
		}
		<-tick.C
	}
}

// syncBuffer is a bytes.Buffer safe for a writing process and a reading
// test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// RESPConn is a minimal RESP client for tests: it sends a command as a
// RESP array of bulk strings and returns the raw bytes of exactly one
// reply, so that replies can be compared byte for byte.
type RESPConn struct {
	// Timeout bounds each Do (write and read). Default 10s.
	Timeout time.Duration

	conn net.Conn
	r    *bufio.Reader
}

// DialRESP connects to addr; the connection is closed when the test ends.
func DialRESP(t testing.TB, addr string) *RESPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &RESPConn{conn: c, r: bufio.NewReaderSize(c, 64<<10), Timeout: 10 * time.Second}
}

// Do sends args and returns the raw bytes of the reply.
func (c *RESPConn) Do(args ...[]byte) ([]byte, error) {
	if err := c.Send(args...); err != nil {
		return nil, err
	}
	return c.Receive()
}

// DoStrings is Do with string arguments.
func (c *RESPConn) DoStrings(args ...string) ([]byte, error) {
	b := make([][]byte, len(args))
	for i, a := range args {
		b[i] = []byte(a)
	}
	return c.Do(b...)
}

// Send writes one command without reading its reply (for pipelining).
func (c *RESPConn) Send(args ...[]byte) error {
	c.conn.SetDeadline(time.Now().Add(c.timeout()))
	_, err := c.conn.Write(AppendCommand(nil, args...))
	return err
}

// Receive reads the raw bytes of one reply.
func (c *RESPConn) Receive() ([]byte, error) {
	c.conn.SetDeadline(time.Now().Add(c.timeout()))
	return l2store.ReadRaw(c.r, nil, maxTestReply)
}

func (c *RESPConn) timeout() time.Duration {
	if c.Timeout <= 0 {
		return 10 * time.Second
	}
	return c.Timeout
}

// AppendCommand appends args encoded as a RESP array of bulk strings.
func AppendCommand(dst []byte, args ...[]byte) []byte {
	dst = fmt.Appendf(dst, "*%d\r\n", len(args))
	for _, a := range args {
		dst = fmt.Appendf(dst, "$%d\r\n", len(a))
		dst = append(dst, a...)
		dst = append(dst, '\r', '\n')
	}
	return dst
}

// maxTestReply bounds one reply the tests read.
const maxTestReply = 1 << 30

// TestStartRedisServerPortClash checks that a port taken by someone else is
// reported in the form StartRedisServer retries on.
func TestStartRedisServerPortClash(t *testing.T) {
	bin := requireBinary(t, "redis-server")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv, err := startRedisServer(t, bin, l.Addr().(*net.TCPAddr).Port, nil)
	if err == nil {
		srv.stop()
		t.Fatal("redis-server started on a port in use")
	}
	if !strings.Contains(err.Error(), "Address already in use") {
		t.Errorf("error does not say the address is in use: %v", err)
	}
}

func TestStartRedisServer(t *testing.T) {
	srv := StartRedisServer(t, "--maxmemory", "10mb")
	c := srv.Dial(t)
	got, err := c.DoStrings("CONFIG", "GET", "maxmemory")
	if err != nil || string(got) != "*2\r\n$9\r\nmaxmemory\r\n$8\r\n10485760\r\n" {
		t.Errorf("CONFIG GET maxmemory = %q, %v", got, err)
	}
	// Pipelining: two commands sent before their replies are read.
	if err := c.Send([]byte("SET"), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := c.Send([]byte("GET"), []byte("k")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"+OK\r\n", "$1\r\nv\r\n"} {
		if got, err := c.Receive(); err != nil || string(got) != want {
			t.Errorf("reply %q, %v; want %q", got, err, want)
		}
	}
}
