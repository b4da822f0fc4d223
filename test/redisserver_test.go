package test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
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
	return ReadRawReply(c.r, nil)
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

// errFraming is returned by ReadRawReply for bytes that are not RESP.
var errFraming = errors.New("test: not a RESP reply")

// ReadRawReply appends the raw bytes of one RESP2 or RESP3 reply read from
// r to dst: only the framing is parsed (line types, bulk lengths, aggregate
// counts), the bytes are kept exactly as received. A RESP3 attribute is
// kept together with the reply it annotates.
func ReadRawReply(r *bufio.Reader, dst []byte) ([]byte, error) {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return dst, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return dst, fmt.Errorf("%w: bad line %q", errFraming, line)
	}
	dst = append(dst, line...)
	body := line[1 : len(line)-2]
	switch line[0] {
	case '+', '-', ':', ',', '(', '_', '#':
		return dst, nil
	case '$', '=', '!':
		n, err := strconv.Atoi(string(body))
		if err != nil || n < -1 {
			return dst, fmt.Errorf("%w: bad length %q", errFraming, line)
		}
		if n < 0 {
			return dst, nil
		}
		start := len(dst)
		dst = append(dst, make([]byte, n+2)...)
		if _, err := io.ReadFull(r, dst[start:]); err != nil {
			return dst, err
		}
		if !bytes.HasSuffix(dst, []byte("\r\n")) {
			return dst, fmt.Errorf("%w: bulk string not terminated", errFraming)
		}
		return dst, nil
	case '*', '~', '>', '%', '|':
		n, err := strconv.Atoi(string(body))
		if err != nil || n < -1 {
			return dst, fmt.Errorf("%w: bad count %q", errFraming, line)
		}
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		for range n {
			if dst, err = ReadRawReply(r, dst); err != nil {
				return dst, err
			}
		}
		if line[0] == '|' {
			return ReadRawReply(r, dst)
		}
		return dst, nil
	}
	return dst, fmt.Errorf("%w: unknown type byte %q", errFraming, line[0])
}

func TestReadRawReply(t *testing.T) {
	replies := []string{
		"+OK\r\n",
		"-ERR syntax error\r\n",
		":-42\r\n",
		"$-1\r\n",
		"$0\r\n\r\n",
		"$4\r\na\r\nb\r\n",
		"*-1\r\n",
		"*0\r\n",
		"*3\r\n$1\r\na\r\n$-1\r\n:1\r\n",
		"*2\r\n*1\r\n+x\r\n*0\r\n",
		"_\r\n",
		",1.5\r\n",
		"#t\r\n",
		"(12345678901234567890\r\n",
		"=8\r\ntxt:abcd\r\n",
		"!5\r\nERR x\r\n",
		"%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n:2\r\n",
		"~2\r\n+a\r\n+b\r\n",
		">2\r\n+message\r\n$1\r\nx\r\n",
		"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
	}
	for _, want := range replies {
		// A following reply must be left unread.
		r := bufio.NewReader(strings.NewReader(want + "+NEXT\r\n"))
		got, err := ReadRawReply(r, nil)
		if err != nil || string(got) != want {
			t.Errorf("ReadRawReply(%q) = %q, %v", want, got, err)
			continue
		}
		if next, err := ReadRawReply(r, nil); err != nil || string(next) != "+NEXT\r\n" {
			t.Errorf("after %q: next reply %q, %v", want, next, err)
		}
	}
	for _, bad := range []string{"?x\r\n", "+OK\n", "$x\r\n", "$3\r\nabcde", "*2\r\n+a\r\n", "$-2\r\n"} {
		if got, err := ReadRawReply(bufio.NewReader(strings.NewReader(bad)), nil); err == nil {
			t.Errorf("ReadRawReply(%q) = %q, want an error", bad, got)
		}
	}
}

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
