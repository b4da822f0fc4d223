package test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The consistency tests check what a client of sidecache must be able to
// rely on although L1 answers reads: it reads its own writes, reads never
// go back in time, and an expired key is never served, even when the key
// was hot in L1. INFO sidecache l1_hits proves that L1 was serving a key
// before the write.

// TestE2EReadYourWrites runs several clients at once, each on its own
// connection. Each writes keys of its own and must read back exactly its
// latest write, several times (the later reads are L1 hits); all increment
// shared counters and must never read a counter below what their own INCR
// returned or below what they read before (monotonic reads).
func TestE2EReadYourWrites(t *testing.T) {
	sc := StartSidecache(t)
	const (
		clients  = 4
		rounds   = 300
		ownKeys  = 4
		counters = 3
	)
	var wg sync.WaitGroup
	for g := range clients {
		c := sc.Dial(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := make([]int64, counters)
			for i := range rounds {
				key := fmt.Sprintf("own:%d:%d", g, i%ownKeys)
				val := fmt.Sprintf("%d-%d-%s", g, i, strings.Repeat("v", i%40))
				if r, err := c.DoStrings("SET", key, val); err != nil || string(r) != "+OK\r\n" {
					t.Errorf("client %d: SET %s = %q, %v", g, key, r, err)
					return
				}
				for range 3 {
					if r, err := c.DoStrings("GET", key); err != nil || string(r) != bulkReply(val) {
						t.Errorf("client %d round %d: GET %s = %q, %v; want its own write %q", g, i, key, r, err, val)
						return
					}
				}
				j := i % counters
				ctr := "ctr:" + strconv.Itoa(j)
				r, err := c.DoStrings("INCR", ctr)
				n, perr := rawInt(r)
				if err != nil || perr != nil {
					t.Errorf("client %d: INCR %s = %q, %v", g, ctr, r, err)
					return
				}
				if n <= seen[j] {
					t.Errorf("client %d: INCR %s = %d after reading %d", g, ctr, n, seen[j])
					return
				}
				seen[j] = n
				for range 2 {
					r, err := c.DoStrings("GET", ctr)
					if err != nil {
						t.Errorf("client %d: GET %s: %v", g, ctr, err)
						return
					}
					m, perr := strconv.ParseInt(bulkBody(r), 10, 64)
					if perr != nil || m < seen[j] {
						t.Errorf("client %d round %d: GET %s = %q after INCR/GET gave %d: a stale read", g, i, ctr, r, seen[j])
						return
					}
					seen[j] = m
				}
			}
		}()
	}
	wg.Wait()
	c := sc.Dial(t)
	side := infoFields(t, c, "sidecache")
	t.Logf("l1_hits=%s l1_misses=%s l1_fills_dropped=%s", side["l1_hits"], side["l1_misses"], side["l1_fills_dropped"])
	if hits, _ := strconv.Atoi(side["l1_hits"]); hits < clients*rounds/2 {
		t.Errorf("l1_hits = %d: L1 did not serve the repeated reads (want at least %d)", hits, clients*rounds/2)
	}
	// The counters add up.
	var total int64
	for j := range counters {
		total += mustInt(t, c, "GET", "ctr:"+strconv.Itoa(j))
	}
	if total != clients*rounds {
		t.Errorf("the counters sum to %d, want %d", total, clients*rounds)
	}
}

// bulkBody returns the body of a raw bulk string reply, or "" for
// anything else.
func bulkBody(raw []byte) string {
	s := string(raw)
	if !strings.HasPrefix(s, "$") || !strings.HasSuffix(s, "\r\n") {
		return ""
	}
	_, body, ok := strings.Cut(s[:len(s)-2], "\r\n")
	if !ok {
		return ""
	}
	return body
}

// mustInt runs a command whose reply is an integer, or a bulk string
// holding one.
func mustInt(t testing.TB, c *RESPConn, args ...string) int64 {
	t.Helper()
	r := do(t, c, args...)
	if n, err := rawInt(r); err == nil {
		return n
	}
	n, err := strconv.ParseInt(bulkBody(r), 10, 64)
	if err != nil {
		t.Fatalf("%s = %q: not an integer", strings.Join(args, " "), r)
	}
	return n
}

// makeHot reads key n times, requiring reply want each time, and fails
// unless L1 answered all but the first read (INFO sidecache l1_hits).
func makeHot(t testing.TB, c *RESPConn, key, want string, n int) {
	t.Helper()
	before := infoInt(t, c, "sidecache", "l1_hits")
	for range n {
		expect(t, c, want, "GET", key)
	}
	if d := infoInt(t, c, "sidecache", "l1_hits") - before; d < int64(n-1) {
		t.Fatalf("reading %s %d times made %d L1 hits, want at least %d: the key is not hot in L1", key, n, d, n-1)
	}
}

// TestE2EExpiredNeverServed sets keys with PX 100 to 300 and reads them
// until they expire: once PTTL says a key is gone (-2), GET must return
// nil, also for keys that sat in L1 (they were read several times before
// expiring).
func TestE2EExpiredNeverServed(t *testing.T) {
	sc := StartSidecache(t)
	c := sc.Dial(t)
	const keys = 200
	live := make(map[string]string, keys)
	before := infoInt(t, c, "sidecache", "l1_hits")
	for i := range keys {
		k, v := fmt.Sprintf("px:%d", i), fmt.Sprintf("value-%d", i)
		expect(t, c, "+OK\r\n", "SET", k, v, "PX", strconv.Itoa(100+i))
		live[k] = v
		if i%2 == 0 { // half the keys are hot: read right away, 3 times
			for range 3 {
				if r := do(t, c, "GET", k); string(r) != bulkReply(v) && string(r) != "$-1\r\n" {
					t.Fatalf("GET %s = %q", k, r)
				}
			}
		}
	}
	if hits := infoInt(t, c, "sidecache", "l1_hits") - before; hits == 0 {
		t.Fatal("no L1 hits while reading the keys: L1 is not serving them")
	}
	gone := 0
	err := pollUntil(10*time.Second, func() (bool, error) {
		for k, v := range live {
			pttl := mustInt(t, c, "PTTL", k)
			r := do(t, c, "GET", k)
			switch {
			case pttl == -2 && string(r) != "$-1\r\n":
				return false, fmt.Errorf("GET %s = %q after PTTL returned -2", k, r)
			case pttl == -2:
				delete(live, k)
				gone++
			case string(r) != bulkReply(v) && string(r) != "$-1\r\n":
				return false, fmt.Errorf("GET %s = %q, want %q or nil", k, r, v)
			}
		}
		return len(live) == 0, nil
	})
	if err != nil {
		t.Fatalf("%v (%d keys expired, %d left)", err, gone, len(live))
	}
}

// visStep is one command and its expected raw reply ("" accepts any).
type visStep struct {
	args []string
	want string
}

func st(want string, args ...string) visStep { return visStep{args: args, want: want} }

const (
	respOK  = "+OK\r\n"
	respNil = "$-1\r\n"
)

// TestE2EWritesVisibleWhenHot makes keys hot in L1, changes them with a
// write command, and requires the next GET on the same connection to see
// the write.
func TestE2EWritesVisibleWhenHot(t *testing.T) {
	sc := StartSidecache(t)
	c := sc.Dial(t)
	past := strconv.FormatInt(time.Now().Unix()-100, 10)
	tests := []struct {
		name  string
		setup []visStep
		hot   map[string]string // key: value to make hot (SET first unless it exists), or respNil: read a missing key
		op    []visStep
		gone  string        // if set, poll until PTTL of this key is -2 before check
		hold  time.Duration // if set, repeat check until this long after setup
		check []visStep
	}{
		{name: "DEL", hot: map[string]string{"k": "v"}, op: []visStep{st(":1\r\n", "DEL", "k")}, check: []visStep{st(respNil, "GET", "k")}},
		{name: "UNLINK", hot: map[string]string{"k": "v"}, op: []visStep{st(":1\r\n", "UNLINK", "k")}, check: []visStep{st(respNil, "GET", "k")}},
		{name: "GETDEL", hot: map[string]string{"k": "v"}, op: []visStep{st(bulkReply("v"), "GETDEL", "k")}, check: []visStep{st(respNil, "GET", "k")}},
		{name: "EXPIRE 0", hot: map[string]string{"k": "v"}, op: []visStep{st(":1\r\n", "EXPIRE", "k", "0")}, check: []visStep{st(respNil, "GET", "k")}},
		{name: "EXPIREAT past", hot: map[string]string{"k": "v"}, op: []visStep{st(":1\r\n", "EXPIREAT", "k", past)}, check: []visStep{st(respNil, "GET", "k")}},
		{name: "PEXPIRE", hot: map[string]string{"k": "v"}, op: []visStep{st(":1\r\n", "PEXPIRE", "k", "150")}, gone: "k", check: []visStep{st(respNil, "GET", "k")}},
		{name: "GETEX PX", hot: map[string]string{"k": "v"}, op: []visStep{st(bulkReply("v"), "GETEX", "k", "PX", "150")}, gone: "k", check: []visStep{st(respNil, "GET", "k")}},
		{name: "SET PX over hot key", hot: map[string]string{"k": "v"}, op: []visStep{st(respOK, "SET", "k", "w", "PX", "150")}, gone: "k", check: []visStep{st(respNil, "GET", "k")}},
		// The key would expire 1s after the SET (time enough to make it
		// hot on a slow machine); it is read until well after that.
		{name: "PERSIST", setup: []visStep{st(respOK, "SET", "k", "v", "PX", "1000")}, hot: map[string]string{"k": "v"},
			op: []visStep{st(":1\r\n", "PERSIST", "k")}, hold: 1300 * time.Millisecond, check: []visStep{st(bulkReply("v"), "GET", "k"), st(":-1\r\n", "PTTL", "k")}},
		{name: "GETEX PERSIST", setup: []visStep{st(respOK, "SET", "k", "v", "PX", "1000")}, hot: map[string]string{"k": "v"},
			op: []visStep{st(bulkReply("v"), "GETEX", "k", "PERSIST")}, hold: 1300 * time.Millisecond, check: []visStep{st(bulkReply("v"), "GET", "k")}},
		{name: "SET", hot: map[string]string{"k": "v"}, op: []visStep{st(respOK, "SET", "k", "w")}, check: []visStep{st(bulkReply("w"), "GET", "k")}},
		{name: "SET XX GET", hot: map[string]string{"k": "v"}, op: []visStep{st(bulkReply("v"), "SET", "k", "w", "XX", "GET")}, check: []visStep{st(bulkReply("w"), "GET", "k")}},
		{name: "SET NX on existing", hot: map[string]string{"k": "v"}, op: []visStep{st(respNil, "SET", "k", "w", "NX")}, check: []visStep{st(bulkReply("v"), "GET", "k")}},
		{name: "GETSET", hot: map[string]string{"k": "v"}, op: []visStep{st(bulkReply("v"), "GETSET", "k", "w")}, check: []visStep{st(bulkReply("w"), "GET", "k")}},
		{name: "SETEX", hot: map[string]string{"k": "v"}, op: []visStep{st(respOK, "SETEX", "k", "100", "w")}, check: []visStep{st(bulkReply("w"), "GET", "k")}},
		{name: "PSETEX", hot: map[string]string{"k": "v"}, op: []visStep{st(respOK, "PSETEX", "k", "100000", "w")}, check: []visStep{st(bulkReply("w"), "GET", "k")}},
		{name: "MSET", hot: map[string]string{"k": "v", "k2": "v2"}, op: []visStep{st(respOK, "MSET", "k", "a", "k2", "b")},
			check: []visStep{st(bulkReply("a"), "GET", "k"), st(bulkReply("b"), "GET", "k2"), st("*2\r\n$1\r\na\r\n$1\r\nb\r\n", "MGET", "k", "k2")}},
		{name: "MSETNX", setup: []visStep{st(respOK, "SET", "k", "v")}, hot: map[string]string{"k": "v", "k3": respNil},
			op:    []visStep{st(":0\r\n", "MSETNX", "k", "a", "k3", "b"), st(":1\r\n", "MSETNX", "k3", "b", "k4", "c")},
			check: []visStep{st(bulkReply("v"), "GET", "k"), st(bulkReply("b"), "GET", "k3"), st(bulkReply("c"), "GET", "k4")}},
		{name: "SETNX on missing", hot: map[string]string{"k3": respNil}, op: []visStep{st(":1\r\n", "SETNX", "k3", "w")}, check: []visStep{st(bulkReply("w"), "GET", "k3")}},
		{name: "APPEND", hot: map[string]string{"k": "v"}, op: []visStep{st(":2\r\n", "APPEND", "k", "x")}, check: []visStep{st(bulkReply("vx"), "GET", "k")}},
		{name: "SETRANGE", setup: []visStep{st(respOK, "SET", "k", "hello")}, hot: map[string]string{"k": "hello"},
			op: []visStep{st(":5\r\n", "SETRANGE", "k", "0", "J")}, check: []visStep{st(bulkReply("Jello"), "GET", "k")}},
		{name: "INCR", setup: []visStep{st(respOK, "SET", "n", "10")}, hot: map[string]string{"n": "10"},
			op: []visStep{st(":11\r\n", "INCR", "n")}, check: []visStep{st(bulkReply("11"), "GET", "n")}},
		{name: "DECRBY", setup: []visStep{st(respOK, "SET", "n", "10")}, hot: map[string]string{"n": "10"},
			op: []visStep{st(":-5\r\n", "DECRBY", "n", "15")}, check: []visStep{st(bulkReply("-5"), "GET", "n")}},
		{name: "INCRBYFLOAT", setup: []visStep{st(respOK, "SET", "n", "10")}, hot: map[string]string{"n": "10"},
			op: []visStep{st(bulkReply("10.5"), "INCRBYFLOAT", "n", "0.5")}, check: []visStep{st(bulkReply("10.5"), "GET", "n")}},
		{name: "RENAME", setup: []visStep{st(respOK, "SET", "k2", "old")}, hot: map[string]string{"k": "v", "k2": "old"},
			op: []visStep{st(respOK, "RENAME", "k", "k2")}, check: []visStep{st(respNil, "GET", "k"), st(bulkReply("v"), "GET", "k2")}},
		{name: "RENAMENX", hot: map[string]string{"k": "v", "k3": respNil},
			op: []visStep{st(":1\r\n", "RENAMENX", "k", "k3")}, check: []visStep{st(respNil, "GET", "k"), st(bulkReply("v"), "GET", "k3")}},
		{name: "FLUSHALL", hot: map[string]string{"k": "v", "k2": "v2"}, op: []visStep{st(respOK, "FLUSHALL")},
			check: []visStep{st(respNil, "GET", "k"), st(respNil, "GET", "k2"), st("*2\r\n$-1\r\n$-1\r\n", "MGET", "k", "k2")}},
		{name: "FLUSHDB ASYNC", hot: map[string]string{"k": "v"}, op: []visStep{st(respOK, "FLUSHDB", "ASYNC")}, check: []visStep{st(respNil, "GET", "k")}},
	}
	run := func(t *testing.T, steps []visStep) {
		t.Helper()
		for _, s := range steps {
			if s.want == "" {
				do(t, c, s.args...)
			} else {
				expect(t, c, s.want, s.args...)
			}
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expect(t, c, respOK, "FLUSHALL")
			start := time.Now()
			run(t, tt.setup)
			for k, v := range tt.hot {
				if v == respNil {
					// Misses are not cached; the key is read only so that
					// the write below follows reads of it.
					for range 5 {
						expect(t, c, respNil, "GET", k)
					}
					continue
				}
				if mustInt(t, c, "EXISTS", k) == 0 {
					expect(t, c, respOK, "SET", k, v)
				}
				makeHot(t, c, k, bulkReply(v), 20)
			}
			run(t, tt.op)
			if tt.gone != "" {
				err := pollUntil(10*time.Second, func() (bool, error) {
					return mustInt(t, c, "PTTL", tt.gone) == -2, nil
				})
				if err != nil {
					t.Fatalf("%s did not expire: %v", tt.gone, err)
				}
			}
			run(t, tt.check)
			if tt.hold > 0 {
				err := pollUntil(10*time.Second, func() (bool, error) {
					run(t, tt.check)
					return time.Since(start) > tt.hold || t.Failed(), nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
