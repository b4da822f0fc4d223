// Package redisrun starts a throwaway redis-server and talks RESP to it,
// for the table generator and the differential tests of package commands.
//
// The server listens only on a unix socket in a directory the caller owns,
// persists nothing, and is killed by Stop. A Conn sends commands in
// pipelined batches and returns each reply both parsed and as the exact
// bytes the server sent.
package redisrun

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sidecache/sidecache/l2store"
)

// ErrNoServer is returned by Start when the redis-server binary is missing.
var ErrNoServer = errors.New("redisrun: redis-server not found")

// Server is a running redis-server.
type Server struct {
	// Sock is the path of the server's unix socket.
	Sock string
	cmd  *exec.Cmd
}

// Start runs bin (a redis-server; looked up in PATH if it has no slash)
// with its socket, log and working files in dir, and waits up to ten
// seconds for it to accept connections.
func Start(bin, dir string) (*Server, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoServer, err)
	}
	s := &Server{Sock: filepath.Join(dir, "redis.sock")}
	s.cmd = exec.Command(path,
		"--port", "0", "--unixsocket", s.Sock, "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("redisrun: starting %s: %w", path, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", s.Sock)
		if err == nil {
			c.Close()
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("redisrun: %s did not listen on %s: %w", path, s.Sock, err)
		}
		time.Sleep(10 * time.Millisecond) // poll until the deadline
	}
}

// Stop kills the server and waits for it to exit.
func (s *Server) Stop() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// Conn is a connection to a Redis server.
type Conn struct {
	conn net.Conn
	rec  recorder
	r    *bufio.Reader
	used int // bytes of rec.buf already returned
}

// Dial connects to addr: a unix socket path if it contains '/', else
// host:port.
func Dial(addr string) (*Conn, error) {
	network := "tcp"
	if strings.Contains(addr, "/") {
		network = "unix"
	}
	conn, err := net.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	c := &Conn{conn: conn}
	c.rec.r = conn
	c.r = bufio.NewReaderSize(&c.rec, 1<<16)
	return c, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.conn.Close() }

// Reply is one reply: the bytes the server sent and their parse.
type Reply struct {
	Raw   []byte
	Reply l2store.Reply
}

// Args turns strings into a command's arguments.
func Args(s ...string) [][]byte {
	args := make([][]byte, len(s))
	for i, a := range s {
		args[i] = []byte(a)
	}
	return args
}

// Do sends one command and returns its reply. An error reply is a Reply,
// not an error.
func (c *Conn) Do(args ...string) (Reply, error) {
	r, err := c.Pipeline([][][]byte{Args(args...)})
	if err != nil {
		return Reply{}, err
	}
	return r[0], nil
}

// Pipeline sends the commands in batches and returns their replies in
// order.
func (c *Conn) Pipeline(cmds [][][]byte) ([]Reply, error) {
	const batch = 256
	out := make([]Reply, 0, len(cmds))
	for len(cmds) > 0 {
		n := min(batch, len(cmds))
		var buf []byte
		for _, args := range cmds[:n] {
			buf = append(buf, '*')
			buf = strconv.AppendInt(buf, int64(len(args)), 10)
			buf = append(buf, '\r', '\n')
			for _, a := range args {
				buf = append(buf, '$')
				buf = strconv.AppendInt(buf, int64(len(a)), 10)
				buf = append(buf, '\r', '\n')
				buf = append(buf, a...)
				buf = append(buf, '\r', '\n')
			}
		}
		if err := c.conn.SetDeadline(time.Now().Add(time.Minute)); err != nil {
			return nil, err
		}
		if _, err := c.conn.Write(buf); err != nil {
			return nil, err
		}
		for range n {
			r, err := l2store.ReadReply(c.r, 1<<30)
			if err != nil {
				return nil, err
			}
			end := len(c.rec.buf) - c.r.Buffered()
			raw := append([]byte(nil), c.rec.buf[c.used:end]...)
			c.used = end
			out = append(out, Reply{Raw: raw, Reply: r})
		}
		// Forget what has been returned.
		c.rec.buf = append(c.rec.buf[:0], c.rec.buf[c.used:]...)
		c.used = 0
		cmds = cmds[n:]
	}
	return out, nil
}

// recorder keeps a copy of everything read through it.
type recorder struct {
	r   io.Reader
	buf []byte
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	return n, err
}
