package test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// These tests drive the tiers below L1 through the binary, one rule at a
// time, against a real redis-server (test/fault_test.go runs the faults
// under load, through toxiproxy).

// TestFailingStaleAndWrites: with the L2 gone, keys L1 held are answered
// from their stale copies; a write gets an error and drops its key, so the
// older value is never read again; once the breaker is open, commands fail
// at once with TRYAGAIN; misses are rationed by --origin-rate.
func TestFailingStaleAndWrites(t *testing.T) {
	rs := StartRedisServer(t)
	sc := StartSidecache(t, "--l2", "redis://"+rs.Addr,
		"--l1-ttl", "100ms", "--stale-for", "1h",
		"--l2-timeout", "300ms", "--breaker-min-requests", "3", "--breaker-window", "10s",
		"--breaker-open-for", "1h", "--origin-rate", "1", "--origin-queue", "0")
	c := sc.Dial(t)
	for _, k := range []string{"a", "b", "c"} {
		mustReply(t, c, "+OK\r\n", "SET", k, "v-"+k)
		mustReply(t, c, bulkReply("v-"+k), "GET", k)
	}
	// The L2 goes away; the entries' freshness (100ms) ends.
	rs.Dial(t).DoStrings("SHUTDOWN", "NOSAVE") // the reply is the connection closing
	if err := pollUntil(10*time.Second, func() (bool, error) {
		return infoInt(t, c, "sidecache", "reads_stale") > 0 || string(do(t, c, "GET", "a")) != bulkReply("v-a"), nil
	}); err != nil {
		t.Fatal(err)
	}
	// Every key L1 held is answered with its value, stale now.
	stale0 := infoInt(t, c, "sidecache", "reads_stale")
	for _, k := range []string{"a", "b", "c"} {
		mustReply(t, c, bulkReply("v-"+k), "GET", k)
	}
	mustReply(t, c, "*3\r\n"+bulkReply("v-a")+bulkReply("v-b")+bulkReply("v-c")+"", "MGET", "a", "b", "c")
	if got := infoInt(t, c, "sidecache", "reads_stale") - stale0; got != 6 {
		t.Errorf("reads_stale grew by %d for 6 stale answers", got)
	}

	// A write that cannot reach the L2 fails, and drops its key: "a" is
	// never answered with v-a again.
	if r := string(do(t, c, "SET", "a", "new")); !strings.HasPrefix(r, "-") {
		t.Fatalf("SET with the L2 down = %q, want an error", r)
	}
	for range 3 {
		if r := string(do(t, c, "GET", "a")); r == bulkReply("v-a") {
			t.Fatalf("GET a after a failed SET = the value before it (%q)", r)
		}
	}
	mustReply(t, c, bulkReply("v-b"), "GET", "b") // other keys keep their stale copies

	// The breaker opens: nothing waits, commands get TRYAGAIN.
	waitField(t, c, "breaker_state", "open")
	cause := infoFields(t, c, "sidecache")["breaker_cause"]
	if !strings.Contains(cause, "error ratio") {
		t.Errorf("breaker_cause = %q, want the error ratio", cause)
	}
	for _, cmd := range [][]string{{"SET", "x", "1"}, {"HSET", "h", "f", "v"}, {"INCR", "n"}} {
		mustReply(t, c, "-TRYAGAIN sidecache: L2 circuit breaker is open\r\n", cmd...)
	}
	mustReply(t, c, bulkReply("v-b"), "GET", "b")
	// Even a write the breaker refused drops its key: the client asked
	// for a newer value than the stale copy.
	mustReply(t, c, "-TRYAGAIN sidecache: L2 circuit breaker is open\r\n", "SET", "b", "new")
	if r := string(do(t, c, "GET", "b")); r == bulkReply("v-b") {
		t.Fatalf("GET b after a refused SET = the value before it")
	}
	mustReply(t, c, bulkReply("v-c"), "GET", "c")

	// Misses with no stale copy, 20 at once: at most --origin-rate (1/s)
	// of them are handed to clients (one now, one waiting for the next
	// slot: --origin-queue 0), the rest are shed at once.
	shed0 := infoInt(t, c, "sidecache", "reads_shed")
	const n = 20
	replies := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		conn := sc.Dial(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := conn.DoStrings("GET", fmt.Sprintf("cold%d", i))
			if err != nil {
				replies[i] = err.Error()
				return
			}
			replies[i] = string(r)
		}()
	}
	wg.Wait()
	misses, sheds := 0, 0
	for _, r := range replies {
		switch {
		case r == "$-1\r\n":
			misses++
		case strings.HasPrefix(r, "-TRYAGAIN sidecache: L2 unavailable and origin rate limit reached"):
			sheds++
		default:
			t.Fatalf("GET of a cold key while open = %q", r)
		}
	}
	if misses > 2 || sheds < n-2 {
		t.Errorf("%d concurrent cold reads while open: %d misses handed out, %d shed; want at most 2 misses at --origin-rate 1 --origin-queue 0", n, misses, sheds)
	}
	if got := infoInt(t, c, "sidecache", "reads_shed") - shed0; got != int64(sheds) {
		t.Errorf("reads_shed grew by %d for %d TRYAGAIN replies", got, sheds)
	}
}

// TestFillWaitCoalescing: concurrent misses on one key are coalesced; the
// first client gets the miss, the others wait for its SET and get that
// value.
func TestFillWaitCoalescing(t *testing.T) {
	rs := StartRedisServer(t)
	sc := StartSidecache(t, "--l2", "redis://"+rs.Addr, "--fill-wait", "20s")
	const n = 6
	conns := make([]*RESPConn, n)
	for i := range conns {
		conns[i] = sc.Dial(t)
	}
	first := sc.Dial(t)
	mustReply(t, first, "$-1\r\n", "GET", "hot") // the miss: this client reads its database
	var wg sync.WaitGroup
	replies := make([]string, n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := c.DoStrings("GET", "hot")
			if err != nil {
				replies[i] = err.Error()
				return
			}
			replies[i] = string(r)
		}()
	}
	// All of them wait for the first client's SET.
	if err := pollUntil(10*time.Second, func() (bool, error) {
		return infoInt(t, first, "sidecache", "fill_coalesced") >= n, nil
	}); err != nil {
		t.Fatalf("waiting for %d coalesced reads: %v (INFO: %v)", n, err, infoFields(t, first, "sidecache"))
	}
	mustReply(t, first, "+OK\r\n", "SET", "hot", "from-db")
	wg.Wait()
	for i, r := range replies {
		if r != bulkReply("from-db") {
			t.Errorf("waiting client %d got %q, want the SET's value", i, r)
		}
	}
	if got := infoInt(t, first, "sidecache", "reads_miss"); got != 1 {
		t.Errorf("reads_miss = %d: %d concurrent misses handed out instead of one", got, got)
	}
}

// TestReadThroughOrigin: with --origin-url, a miss is loaded from the HTTP
// origin once however many clients ask, written to the L2 with the
// origin's max-age, and 404 reads as nil.
func TestReadThroughOrigin(t *testing.T) {
	var mu sync.Mutex
	loads := map[string]int{}
	release := make(chan struct{})
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.URL.Path, "/items/")
		mu.Lock()
		loads[key]++
		mu.Unlock()
		if key == "slow" {
			<-release
		}
		if strings.HasPrefix(key, "missing") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "max-age=300")
		fmt.Fprintf(w, "db:%s", key)
	}))
	defer origin.Close()
	rs := StartRedisServer(t)
	sc := StartSidecache(t, "--l2", "redis://"+rs.Addr, "--origin-url", origin.URL+"/items/{key}")
	c := sc.Dial(t)

	mustReply(t, c, bulkReply("db:user:1"), "GET", "user:1")
	direct := rs.Dial(t)
	// Written to the L2 after the reply.
	if err := pollUntil(10*time.Second, func() (bool, error) {
		return string(do(t, direct, "GET", "user:1")) == bulkReply("db:user:1"), nil
	}); err != nil {
		t.Fatalf("the origin's value never reached the L2: %v", err)
	}
	if ttl := infoIntReply(t, direct, "PTTL", "user:1"); ttl <= 0 || ttl > 300_000 {
		t.Errorf("PTTL of the loaded key = %d ms, want the origin's max-age (300 s)", ttl)
	}
	mustReply(t, c, "$-1\r\n", "GET", "missing:1")
	mustReply(t, direct, "$-1\r\n", "GET", "missing:1")

	// Concurrent misses on one key: one origin load.
	const n = 5
	var wg sync.WaitGroup
	var bad atomic.Int32
	for range n {
		conn := sc.Dial(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, err := conn.DoStrings("GET", "slow"); err != nil || string(r) != bulkReply("db:slow") {
				bad.Add(1)
			}
		}()
	}
	if err := pollUntil(10*time.Second, func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return loads["slow"] > 0, nil
	}); err != nil {
		t.Fatal(err)
	}
	close(release)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if bad.Load() != 0 || loads["slow"] != 1 || loads["user:1"] != 1 {
		t.Errorf("%d clients got a wrong reply; origin loads: %v, want one per key", bad.Load(), loads)
	}
	if got := infoInt(t, c, "sidecache", "reads_origin"); got < 2 {
		t.Errorf("reads_origin = %d, want the origin loads counted", got)
	}
}

// TestStaleWhileRevalidate: a read shortly after freshness ends is
// answered at once from the stale copy while one background read
// refreshes it.
func TestStaleWhileRevalidate(t *testing.T) {
	rs := StartRedisServer(t)
	sc := StartSidecache(t, "--l2", "redis://"+rs.Addr, "--l2-tracking", "off",
		"--l1-ttl", "200ms", "--stale-for", "1h", "--stale-while-revalidate", "30m")
	c := sc.Dial(t)
	mustReply(t, c, "+OK\r\n", "SET", "k", "v1")
	mustReply(t, c, bulkReply("v1"), "GET", "k")
	// Changed behind sidecache's back (tracking is off): L1 still has v1.
	mustReply(t, rs.Dial(t), "+OK\r\n", "SET", "k", "v2")
	// Once the entry is stale, reads answer v1 until the refresh lands,
	// then v2; at least one was answered by revalidation.
	if err := pollUntil(10*time.Second, func() (bool, error) {
		r := string(do(t, c, "GET", "k"))
		if r != bulkReply("v1") && r != bulkReply("v2") {
			return false, fmt.Errorf("GET k = %q", r)
		}
		return r == bulkReply("v2"), nil
	}); err != nil {
		t.Fatal(err)
	}
	f := infoFields(t, c, "sidecache")
	if f["l1_revalidations"] == "0" || f["l1_refreshes"] == "0" {
		t.Errorf("l1_revalidations = %s, l1_refreshes = %s: v2 arrived without a revalidation", f["l1_revalidations"], f["l1_refreshes"])
	}
}

// mustReply runs a command and checks its raw reply.
func mustReply(t testing.TB, c *RESPConn, want string, args ...string) {
	t.Helper()
	if got := string(do(t, c, args...)); got != want {
		t.Fatalf("%q = %q, want %q", args, got, want)
	}
}

// infoIntReply runs a command whose reply is an integer.
func infoIntReply(t testing.TB, c *RESPConn, args ...string) int64 {
	t.Helper()
	var n int64
	r := string(do(t, c, args...))
	if _, err := fmt.Sscanf(r, ":%d\r\n", &n); err != nil {
		t.Fatalf("%q = %q, want an integer", args, r)
	}
	return n
}

// waitField polls INFO sidecache until field has value want.
func waitField(t testing.TB, c *RESPConn, field, want string) {
	t.Helper()
	if err := pollUntil(20*time.Second, func() (bool, error) {
		return infoFields(t, c, "sidecache")[field] == want, nil
	}); err != nil {
		t.Fatalf("INFO sidecache %s never became %q: %v (INFO: %v)", field, want, err, infoFields(t, c, "sidecache"))
	}
}
