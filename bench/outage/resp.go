package main

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/sidecache/sidecache/l2store"
)

// maxBulk bounds a bulk reply the client accepts (INFO is the largest).
const maxBulk = 64 << 20

// respConn is a RESP2 client connection with one request in flight at a
// time, or a pipeline written at once and read back in order.
type respConn struct {
	c   net.Conn
	r   *bufio.Reader
	buf []byte
}

func dialRESP(addr string, timeout time.Duration) (*respConn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	return &respConn{c: c, r: bufio.NewReaderSize(c, 16<<10)}, nil
}

func (c *respConn) close() { c.c.Close() }

// appendCommand appends args as a RESP array of bulk strings.
func appendCommand(b []byte, args ...string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	return b
}

// do sends one command and reads its reply; the whole exchange must end by
// deadline. An error reply is a Reply of KindError, not an error.
func (c *respConn) do(deadline time.Time, args ...string) (l2store.Reply, error) {
	c.c.SetDeadline(deadline)
	c.buf = appendCommand(c.buf[:0], args...)
	if _, err := c.c.Write(c.buf); err != nil {
		return l2store.Reply{}, err
	}
	return l2store.ReadReply(c.r, maxBulk)
}

// pipeline sends every command at once and returns the replies in order.
func (c *respConn) pipeline(deadline time.Time, cmds [][]string) ([]l2store.Reply, error) {
	c.c.SetDeadline(deadline)
	c.buf = c.buf[:0]
	for _, a := range cmds {
		c.buf = appendCommand(c.buf, a...)
	}
	if _, err := c.c.Write(c.buf); err != nil {
		return nil, err
	}
	out := make([]l2store.Reply, len(cmds))
	for i := range out {
		r, err := l2store.ReadReply(c.r, maxBulk)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

// info runs INFO section and returns its name:value fields.
func (c *respConn) info(deadline time.Time, section string) (map[string]string, error) {
	r, err := c.do(deadline, "INFO", section)
	if err != nil {
		return nil, err
	}
	switch r.Kind {
	case l2store.KindBulk, l2store.KindVerbatim:
		return parseInfo(strings.TrimPrefix(string(r.Str), "txt:")), nil
	case l2store.KindError:
		return nil, fmt.Errorf("INFO %s: %s", section, r.Str)
	}
	return nil, fmt.Errorf("INFO %s: unexpected reply kind %d", section, r.Kind)
}

// parseInfo returns the name:value lines of an INFO text; section
// headers ("# Name") and blank lines are skipped.
func parseInfo(text string) map[string]string {
	m := map[string]string{}
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = v
		}
	}
	return m
}
