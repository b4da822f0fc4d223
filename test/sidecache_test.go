package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The end-to-end tests (e2e_*_test.go) run the sidecache binary as a child
// process, the way a pod runs it, and talk to it over loopback TCP.
//
// The binary is built once per test run, into a temporary directory that
// TestMain removes. When the test binary has the race detector on (go test
// -race), sidecache is built with -race too, so every end-to-end test also
// checks the product for data races: a race makes it exit with status 66
// and print "WARNING: DATA RACE", which Stop reports.

// TestMain removes the directory the sidecache binary was built in.
func TestMain(m *testing.M) {
	code := m.Run()
	if sidecacheBuild.dir != "" {
		os.RemoveAll(sidecacheBuild.dir)
	}
	os.Exit(code)
}

// sidecacheBuild holds the result of building the binary once.
var sidecacheBuild struct {
	once sync.Once
	dir  string // temporary directory holding the binary
	bin  string // path of the binary
	err  error
}

// sidecacheStartTimeout bounds how long StartSidecache waits for the
// "listening" log line.
const sidecacheStartTimeout = 20 * time.Second

// sidecacheStopTimeout bounds how long Stop waits for the process to exit
// after SIGTERM: above the default --shutdown-timeout of 10s.
const sidecacheStopTimeout = 20 * time.Second

// SidecacheBinary returns the path of the sidecache binary, building it on
// first use: `go build -o $tmp/sidecache ./cmd/sidecache` in the module
// root (the parent of this package's directory). The environment variable
// SIDECACHE_TEST_BINARY names a prebuilt binary to test instead.
func SidecacheBinary(t testing.TB) string {
	t.Helper()
	b := &sidecacheBuild
	b.once.Do(func() {
		if bin := os.Getenv("SIDECACHE_TEST_BINARY"); bin != "" {
			b.bin, b.err = filepath.Abs(bin)
			return
		}
		root, err := filepath.Abs("..")
		if err != nil {
			b.err = err
			return
		}
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
			b.err = fmt.Errorf("module root not found beside the test directory: %w", err)
			return
		}
		b.dir, b.err = os.MkdirTemp("", "sidecache-e2e-")
		if b.err != nil {
			return
		}
		bin := filepath.Join(b.dir, "sidecache")
		args := []string{"build", "-o", bin}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/sidecache")
		cmd := exec.Command(goTool(), args...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		b.bin = bin
	})
	if b.err != nil {
		t.Fatalf("building sidecache: %v", b.err)
	}
	return b.bin
}

// goTool returns the go command of the toolchain running the tests.
func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); runtime.GOROOT() != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}

// Sidecache is a running sidecache process started by StartSidecache.
type Sidecache struct {
	Addr string // host:port it listens on

	cmd      *exec.Cmd
	stderr   *syncBuffer   // everything the process wrote to stderr
	exited   chan struct{} // closed when the process has exited
	waitErr  error         // cmd.Wait's result, set before exited is closed
	stopped  sync.Once
	signaled atomic.Bool // SIGTERM or SIGINT already sent
	code     int         // exit status, once exited
}

// StartSidecache starts the sidecache binary listening on a free loopback
// port (and its admin listener on another), with JSON logs, and args
// appended to its command line (a later flag wins, so args may override
// --listen). It returns once the process has logged the address it
// listens on. When the test ends, the process gets SIGTERM and the test
// fails unless it exits with status 0 and without a data race report.
func StartSidecache(t testing.TB, args ...string) *Sidecache {
	t.Helper()
	return StartSidecacheEnv(t, nil, args...)
}

// StartSidecacheEnv is StartSidecache with extra environment variables
// ("NAME=value"). SIDECACHE_* variables of the test's own environment are
// not passed on.
func StartSidecacheEnv(t testing.TB, env []string, args ...string) *Sidecache {
	t.Helper()
	return startSidecacheBin(t, SidecacheBinary(t), env, args...)
}

// startSidecacheBin is StartSidecacheEnv with the binary bin.
func startSidecacheBin(t testing.TB, bin string, env []string, args ...string) *Sidecache {
	t.Helper()
	full := append([]string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "json"}, args...)
	cmd := exec.Command(bin, full...)
	cmd.Env = append(sidecacheEnv(), env...)
	s := &Sidecache{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{})}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		t.Fatalf("starting sidecache: %v", err)
	}
	pw.Close()
	addrc := make(chan string, 1)
	logDone := make(chan struct{})
	go func() {
		// Copy stderr line by line, spotting the "listening" line.
		defer close(logDone)
		defer pr.Close()
		r := bufio.NewReader(pr)
		for {
			line, err := r.ReadBytes('\n')
			s.stderr.Write(line)
			if addr, ok := listeningAddr(line); ok {
				select {
				case addrc <- addr:
				default:
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		err := cmd.Wait()
		<-logDone
		s.waitErr = err
		s.code = cmd.ProcessState.ExitCode()
		close(s.exited)
	}()
	t.Cleanup(func() { s.stopAndCheck(t) })
	select {
	case s.Addr = <-addrc:
	case <-s.exited:
		t.Fatalf("sidecache %s exited before listening (%v); stderr:\n%s", strings.Join(args, " "), s.waitErr, s.stderr.String())
	case <-time.After(sidecacheStartTimeout):
		t.Fatalf("sidecache did not log its address within %v; stderr:\n%s", sidecacheStartTimeout, s.stderr.String())
	}
	return s
}

// sidecacheEnv returns the test's environment without SIDECACHE_*
// variables, which would change the flags' defaults.
func sidecacheEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefixSidecache) {
			env = append(env, kv)
		}
	}
	return env
}

const envPrefixSidecache = "SIDECACHE_"

// listeningAddr returns the address of a JSON log line
// {"level":"info",...,"msg":"listening","addr":"127.0.0.1:NNNN"}.
func listeningAddr(line []byte) (string, bool) {
	var entry struct {
		Level string `json:"level"`
		Msg   string `json:"msg"`
		Addr  string `json:"addr"`
	}
	if json.Unmarshal(bytes.TrimSpace(line), &entry) != nil {
		return "", false
	}
	if entry.Msg != "listening" || entry.Addr == "" {
		return "", false
	}
	return entry.Addr, true
}

// Dial opens a raw RESP connection to the process, closed when the test
// ends (before the process is stopped).
func (s *Sidecache) Dial(t testing.TB) *RESPConn { return DialRESP(t, s.Addr) }

// Stderr returns what the process has written to stderr so far.
func (s *Sidecache) Stderr() string { return s.stderr.String() }

// Signal sends sig to the process. After a SIGTERM or SIGINT, Stop waits
// for the process to exit instead of signalling again (a second signal
// may kill it at once).
func (s *Sidecache) Signal(sig os.Signal) error {
	if sig == syscall.SIGTERM || sig == os.Interrupt {
		s.signaled.Store(true)
	}
	return s.cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the process to exit and returns its exit
// status; ok is false if it is still running.
func (s *Sidecache) Wait(timeout time.Duration) (code int, ok bool) {
	select {
	case <-s.exited:
		return s.code, true
	case <-time.After(timeout):
		return 0, false
	}
}

// Stop sends SIGTERM (unless Signal sent one) and waits for the process
// to exit (killing it after sidecacheStopTimeout). It returns the exit status, or an error if the
// process had to be killed. Calling it again returns the same result.
func (s *Sidecache) Stop() (int, error) {
	var err error
	s.stopped.Do(func() {
		select {
		case <-s.exited:
			return
		default:
		}
		if !s.signaled.Load() {
			s.cmd.Process.Signal(syscall.SIGTERM)
		}
		if _, ok := s.Wait(sidecacheStopTimeout); !ok {
			s.cmd.Process.Kill()
			<-s.exited
			err = fmt.Errorf("sidecache did not exit within %v of SIGTERM; killed", sidecacheStopTimeout)
		}
	})
	if err != nil {
		return -1, err
	}
	<-s.exited
	return s.code, nil
}

// stopAndCheck stops the process and fails the test unless it exited with
// status 0 and reported no data race or panic.
func (s *Sidecache) stopAndCheck(t testing.TB) {
	code, err := s.Stop()
	out := s.stderr.String()
	switch {
	case err != nil:
		t.Errorf("%v; stderr:\n%s", err, out)
	case code != 0:
		t.Errorf("sidecache exited with status %d after SIGTERM; stderr:\n%s", code, out)
	case strings.Contains(out, "WARNING: DATA RACE"):
		t.Errorf("sidecache reported a data race; stderr:\n%s", out)
	case strings.Contains(out, "panic"):
		t.Errorf("sidecache logged a panic; stderr:\n%s", out)
	}
}

// RunSidecache runs the binary to completion with args and extra
// environment variables, for tests of its command line. It returns stdout,
// stderr and the exit status, failing the test if the process runs longer
// than timeout.
func RunSidecache(t testing.TB, env []string, timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(SidecacheBinary(t), args...)
	cmd.Env = append(sidecacheEnv(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("running sidecache %s: %v", strings.Join(args, " "), err)
		}
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("sidecache %s still running after %v; stderr:\n%s", strings.Join(args, " "), timeout, errOut.String())
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// TestStartSidecache checks the launcher itself: the process answers on
// the logged address and INFO shows the flags it was given.
func TestStartSidecache(t *testing.T) {
	sc := StartSidecache(t, "--l1-max-bytes", "2mb")
	c := sc.Dial(t)
	if got, err := c.DoStrings("PING"); err != nil || string(got) != "+PONG\r\n" {
		t.Fatalf("PING = %q, %v", got, err)
	}
	info := infoFields(t, c, "sidecache")
	if info["l1_max_bytes"] == "" || info["l1_max_bytes"] == "67108864" {
		t.Errorf("l1_max_bytes = %q, want the 2mb given on the command line", info["l1_max_bytes"])
	}
	if code, err := sc.Stop(); err != nil || code != 0 {
		t.Errorf("Stop = %d, %v; stderr:\n%s", code, err, sc.Stderr())
	}
	if !strings.Contains(sc.Stderr(), `"msg":"stopped"`) {
		t.Errorf("no \"stopped\" log line after SIGTERM; stderr:\n%s", sc.Stderr())
	}
}

func TestListeningAddr(t *testing.T) {
	tests := []struct {
		line string
		addr string
		ok   bool
	}{
		{`{"level":"info","ts":"x","msg":"listening","addr":"127.0.0.1:4242"}` + "\n", "127.0.0.1:4242", true},
		{`{"level":"info","msg":"sidecache starting","listen":"127.0.0.1:0"}`, "", false},
		{`{"level":"info","msg":"listening"}`, "", false},
		{`listening addr=127.0.0.1:1`, "", false},
	}
	for _, tt := range tests {
		addr, ok := listeningAddr([]byte(tt.line))
		if addr != tt.addr || ok != tt.ok {
			t.Errorf("listeningAddr(%q) = %q, %v; want %q, %v", tt.line, addr, ok, tt.addr, tt.ok)
		}
	}
}
