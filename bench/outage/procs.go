package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// startTimeout bounds how long a server may take to answer PING.
const startTimeout = 10 * time.Second

// proc is a child process with its stdout and stderr in a log file.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{} // closed once the process has exited and been waited for
}

// startProc starts bin in a process group of its own (so a Ctrl-C on the
// terminal reaches this program, which stops the children in order) that
// also gets SIGKILL if this program dies first. The child does not inherit
// SIDECACHE_* variables: sidecache would read them as flags, and the
// report names every flag it runs with.
func startProc(name, logPath, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = childEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	return p, nil
}

// childEnv returns env without the SIDECACHE_ variables.
func childEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "SIDECACHE_") {
			out = append(out, kv)
		}
	}
	return out
}

// alive reports whether the process has not exited yet.
func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop sends SIGTERM, waits up to grace, then kills.
func (p *proc) stop(grace time.Duration) {
	if !p.alive() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.kill()
	}
}

// tail returns the last n lines of the log.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// pollUntil calls cond every 20 ms until it returns true or an error,
// p exits, ctx ends or timeout passes.
func pollUntil(ctx context.Context, p *proc, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if p != nil && !p.alive() {
			return fmt.Errorf("%s exited: %s", p.name, p.tail(5))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not ready after %v: %s", p.name, timeout, p.tail(5))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ping reports whether addr answers PING with PONG.
func ping(addr string) bool {
	c, err := dialRESP(addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.close()
	r, err := c.do(time.Now().Add(time.Second), "PING")
	return err == nil && string(r.Str) == "PONG"
}

// redisServer is the L2: a redis-server without persistence, which can be
// killed and started again, empty, on the same port.
type redisServer struct {
	bin    string
	dir    string
	port   int
	starts int
	p      *proc
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

// startRedis starts a redis-server on a free loopback port, trying
// another port (up to five) if the one chosen was taken meanwhile.
func startRedis(ctx context.Context, bin, dir string) (*redisServer, error) {
	var err error
	for range 5 {
		r := &redisServer{bin: bin, dir: dir}
		if r.port, err = freePort(); err != nil {
			return nil, err
		}
		if err = r.start(ctx); err == nil || ctx.Err() != nil {
			return r, err
		}
	}
	return nil, err
}

func (r *redisServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// start starts the server on r.port and waits until it answers PING.
func (r *redisServer) start(ctx context.Context) error {
	r.starts++
	logPath := filepath.Join(r.dir, fmt.Sprintf("redis-server-%d-%d.log", r.port, r.starts))
	p, err := startProc("redis-server", logPath, r.bin,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(r.port),
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", r.dir)
	if err != nil {
		return err
	}
	r.p = p
	err = pollUntil(ctx, p, startTimeout, func() (bool, error) { return ping(r.addr()), nil })
	if err != nil {
		p.kill()
	}
	return err
}

// buildSidecache runs go build ./cmd/sidecache in the module of the
// current directory and returns the binary's path in dir.
func buildSidecache(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the sidecache module: run from the repository or pass -sidecache-bin")
	}
	bin := filepath.Join(dir, "sidecache")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/sidecache")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/sidecache: %w: %s", err, bytes.TrimSpace(out))
	}
	return bin, nil
}

// missingFlags returns the flags among args (words starting with "--")
// that bin's --help does not list.
func missingFlags(ctx context.Context, bin string, args []string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--help")
	cmd.Env = childEnv(os.Environ())
	out, _ := cmd.CombinedOutput() // --help may exit non-zero
	if len(out) == 0 {
		return nil, fmt.Errorf("%s --help printed nothing", bin)
	}
	var missing []string
	for _, a := range args {
		name, _, _ := strings.Cut(a, "=")
		if strings.HasPrefix(name, "--") && !bytes.Contains(out, []byte(name+" ")) {
			missing = append(missing, name)
		}
	}
	return missing, nil
}

// startSidecache starts sidecache with args (which must make it listen
// on 127.0.0.1:0 and log JSON), reads the address it bound from its
// "listening" log line and waits until it answers PING.
func startSidecache(ctx context.Context, bin, dir string, args []string) (*proc, string, error) {
	p, err := startProc("sidecache", filepath.Join(dir, "sidecache.log"), bin, args...)
	if err != nil {
		return nil, "", err
	}
	var addr string
	err = pollUntil(ctx, p, startTimeout, func() (bool, error) {
		b, _ := os.ReadFile(p.log)
		addr = listeningAddr(b)
		return addr != "", nil
	})
	if err == nil {
		err = pollUntil(ctx, p, startTimeout, func() (bool, error) { return ping(addr), nil })
	}
	if err != nil {
		p.kill()
		return nil, "", err
	}
	return p, addr, nil
}

// listeningAddr returns the addr field of the first JSON log line whose
// msg is "listening", or "".
func listeningAddr(log []byte) string {
	for _, line := range bytes.Split(log, []byte("\n")) {
		var e struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(line, &e) == nil && e.Msg == "listening" && e.Addr != "" {
			return e.Addr
		}
	}
	return ""
}
