package test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// pipeline sends cmds on c without waiting, then reads one reply per
// command, failing the test unless each is want.
func pipeline(t testing.TB, c *RESPConn, cmds [][][]byte, want string) {
	t.Helper()
	var buf []byte
	for _, args := range cmds {
		buf = AppendCommand(buf, args...)
	}
	c.conn.SetDeadline(time.Now().Add(c.timeout()))
	if _, err := c.conn.Write(buf); err != nil {
		t.Errorf("writing a pipeline of %d commands: %v", len(cmds), err)
		return
	}
	for i := range cmds {
		r, err := c.Receive()
		if err != nil {
			t.Errorf("reply %d of %d: %v", i, len(cmds), err)
			return
		}
		if string(r) != want {
			t.Errorf("%s: %q, want %q", cmds[i][0], shorten(string(r)), want)
			return
		}
	}
}

// TestE2EMemoryBound writes 50 MB of 128-byte values through sidecache
// started with --l2-max-bytes 8mb and --l1-max-bytes 1mb (allkeys-lru),
// reading recent keys along the way so L1 fills too. Neither tier may
// grow past its bound, and L2 must have evicted keys.
func TestE2EMemoryBound(t *testing.T) {
	const (
		l2Max     = 8 << 20
		l1Max     = 1 << 20
		valueSize = 128
		total     = 50 << 20
		keys      = total / valueSize
		writers   = 2
		batch     = 512
	)
	sc := StartSidecache(t, "--l2-policy", "allkeys-lru", "--l2-max-bytes", "8mb", "--l1-max-bytes", "1mb")
	info := sc.Dial(t)
	check := func(when string) {
		t.Helper()
		side := infoFields(t, info, "sidecache")
		for _, f := range []struct{ used, max string }{{"l2_used_bytes", "l2_max_bytes"}, {"l1_bytes", "l1_max_bytes"}} {
			used, err1 := strconv.ParseInt(side[f.used], 10, 64)
			max, err2 := strconv.ParseInt(side[f.max], 10, 64)
			if err1 != nil || err2 != nil {
				t.Fatalf("%s: INFO sidecache %s=%q %s=%q", when, f.used, side[f.used], f.max, side[f.max])
			}
			if used > max {
				t.Errorf("%s: %s = %d > %s = %d", when, f.used, used, f.max, max)
			}
		}
		if max, _ := strconv.ParseInt(side["l2_max_bytes"], 10, 64); max != l2Max {
			t.Errorf("l2_max_bytes = %d, want %d", max, l2Max)
		}
		if max, _ := strconv.ParseInt(side["l1_max_bytes"], 10, 64); max > l1Max {
			t.Errorf("l1_max_bytes = %d, want at most %d", max, l1Max)
		}
	}
	value := []byte(strings.Repeat("m", valueSize))
	var wg sync.WaitGroup
	for w := range writers {
		c := sc.Dial(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for start := w * batch; start < keys; start += writers * batch {
				cmds := make([][][]byte, 0, batch)
				for i := start; i < min(start+batch, keys); i++ {
					cmds = append(cmds, [][]byte{[]byte("SET"), []byte("mem:" + strconv.Itoa(i)), value})
				}
				pipeline(t, c, cmds, "+OK\r\n")
				// Read back the last few keys of the batch, twice: the
				// second read is an L1 hit.
				for i := max(start, min(start+batch, keys)-16); i < min(start+batch, keys); i++ {
					for range 2 {
						if r, err := c.DoStrings("GET", "mem:"+strconv.Itoa(i)); err != nil || string(r) != bulkReply(string(value)) {
							t.Errorf("GET mem:%d right after SET = %q, %v", i, shorten(string(r)), err)
							return
						}
					}
				}
				if t.Failed() {
					return
				}
			}
		}()
	}
	wg.Wait()
	check("after writing 50 MB")
	side := infoFields(t, info, "sidecache")
	stats := infoFields(t, info, "stats")
	t.Logf("INFO after %d SETs: l2_keys=%s l2_used_bytes=%s l2_evictions=%s l1_entries=%s l1_bytes=%s l1_hits=%s evicted_keys=%s used_memory_rss=%s",
		keys, side["l2_keys"], side["l2_used_bytes"], side["l2_evictions"], side["l1_entries"], side["l1_bytes"], side["l1_hits"],
		stats["evicted_keys"], infoFields(t, info, "memory")["used_memory_rss"])
	if n, _ := strconv.ParseInt(stats["evicted_keys"], 10, 64); n <= 0 {
		t.Errorf("evicted_keys = %q after writing %d bytes into 8mb", stats["evicted_keys"], total)
	}
	if n, _ := strconv.ParseInt(side["l2_keys"], 10, 64); n <= 0 || n >= keys {
		t.Errorf("l2_keys = %q, want some but not all of %d keys", side["l2_keys"], keys)
	}
	if n, _ := strconv.ParseInt(side["l1_hits"], 10, 64); n <= 0 {
		t.Errorf("l1_hits = %q: L1 served nothing", side["l1_hits"])
	}
	// The newest keys survive eviction (allkeys-lru) and read correctly.
	for i := keys - 10; i < keys; i++ {
		expect(t, info, bulkReply(string(value)), "GET", fmt.Sprintf("mem:%d", i))
	}
	check("after reading")
}
