package test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestE2EOOMUnderMemoryPressure: when the process's live memory nears its
// limit, writes get Redis's -OOM error instead of the process growing
// until it is killed; reads go on, and writes succeed again once the
// memory is freed. The pressure: clients that asked for a big value and
// stopped reading, so its replies stay in sidecache's buffers.
func TestE2EOOMUnderMemoryPressure(t *testing.T) {
	rs := StartRedisServer(t)
	big := bytes.Repeat([]byte("x"), 28<<20)
	if r, err := rs.Dial(t).Do([]byte("SET"), []byte("big"), big); err != nil || string(r) != "+OK\r\n" {
		t.Fatalf("SET big on redis: %q, %v", r, err)
	}
	sc := StartSidecache(t, "--l2", "redis://"+rs.Addr, "--memory-limit", "96mb", "--l1-max-bytes", "1mb",
		"--maxclients", "16", "--client-output-buffer-limit", "0", "--client-output-timeout", "0",
		"--l2-timeout", "20s") // a 28 MiB GET on a busy machine may take longer than the default 500ms
	c := sc.Dial(t)
	mustReply(t, c, "+OK\r\n", "SET", "k", "v")

	// Four clients ask for the 28 MiB value and never read: about 112 MiB
	// of replies sit in sidecache (less what the sockets take), above 95%
	// of the 96 MiB limit.
	var stalled []*RESPConn
	for range 4 {
		s := sc.Dial(t)
		if err := s.Send([]byte("GET"), []byte("big")); err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, s)
	}
	const oom = "-OOM command not allowed when used memory > 'maxmemory'.\r\n"
	last := "v" // the value of the last SET that succeeded
	if err := pollUntil(30*time.Second, func() (bool, error) {
		switch r := string(do(t, c, "SET", "k", "v2")); r {
		case oom:
			return true, nil
		case "+OK\r\n":
			last = "v2" // before the pressure was seen
			return false, nil
		default:
			return false, fmt.Errorf("SET = %q", r)
		}
	}); err != nil {
		t.Fatalf("writes never got -OOM under memory pressure: %v (used_memory %s)\n%s", err, infoFields(t, c, "memory")["used_memory"], tail(sc.Stderr(), 2000))
	}
	mustReply(t, c, bulkReply(last), "GET", "k") // reads go on; the refused SET changed nothing

	// The stalled clients go away: the memory is freed and writes work.
	for _, s := range stalled {
		s.conn.Close()
	}
	if err := pollUntil(30*time.Second, func() (bool, error) {
		return string(do(t, c, "SET", "k", "v3")) == "+OK\r\n", nil
	}); err != nil {
		t.Fatalf("writes still refused after the memory was freed: %v", err)
	}
	mustReply(t, c, bulkReply("v3"), "GET", "k")
	if !strings.Contains(sc.Stderr(), "refusing writes with -OOM") {
		t.Errorf("nothing logged about refusing writes:\n%s", tail(sc.Stderr(), 2000))
	}
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
