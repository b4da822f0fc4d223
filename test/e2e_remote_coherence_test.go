package test

import (
	"testing"
	"time"
)

// Coherence of L1 across sidecars sharing one upstream: a write made
// through another sidecar, or straight on the upstream, reaches this
// sidecar's L1 through CLIENT TRACKING invalidations, not through the L1
// TTL (the tests set it to an hour).

// eventually polls cmd on c until its raw reply is want, failing the test
// after timeout.
func eventually(t testing.TB, c *RESPConn, timeout time.Duration, want string, args ...string) {
	t.Helper()
	var got []byte
	err := pollUntil(timeout, func() (bool, error) {
		got = do(t, c, args...)
		return string(got) == want, nil
	})
	if err != nil {
		t.Fatalf("%v: still %q after %v, want %q", args, got, timeout, want)
	}
}

func TestRemoteCoherence(t *testing.T) {
	r := StartRedisServer(t)
	url := "redis://" + r.Addr + "/0"
	a := StartSidecache(t, "--l2", url, "--l1-ttl", "1h")
	b := StartSidecache(t, "--l2", url, "--l1-ttl", "1h")
	ca, cb, direct := a.Dial(t), b.Dial(t), r.Dial(t)

	if got := infoFields(t, cb, "sidecache")["l2_tracking"]; got != "redirect" {
		t.Fatalf("INFO l2_tracking = %q, want redirect", got)
	}
	const wait = 5 * time.Second

	expect(t, ca, "+OK\r\n", "SET", "k", "v1")
	expect(t, cb, bulkReply("v1"), "GET", "k") // B's L1 holds v1 now
	expect(t, cb, bulkReply("v1"), "GET", "k")

	steps := []struct {
		name  string
		write func()
		want  string
	}{
		{"SET through sidecar A", func() { expect(t, ca, "+OK\r\n", "SET", "k", "v2") }, bulkReply("v2")},
		{"SET on the upstream", func() { expect(t, direct, "+OK\r\n", "SET", "k", "v3") }, bulkReply("v3")},
		{"APPEND on the upstream", func() { expect(t, direct, ":3\r\n", "APPEND", "k", "x") }, bulkReply("v3x")},
		{"DEL on the upstream", func() { expect(t, direct, ":1\r\n", "DEL", "k") }, "$-1\r\n"},
		{"SET again", func() { expect(t, direct, "+OK\r\n", "SET", "k", "v4") }, bulkReply("v4")},
		{"PEXPIRE on the upstream", func() { expect(t, direct, ":1\r\n", "PEXPIRE", "k", "1") }, "$-1\r\n"},
		{"SET before FLUSHALL", func() { expect(t, ca, "+OK\r\n", "SET", "k", "v5") }, bulkReply("v5")},
		{"FLUSHALL on the upstream", func() { expect(t, direct, "+OK\r\n", "FLUSHALL") }, "$-1\r\n"},
		{"EVAL through A", func() {
			expect(t, ca, "+OK\r\n", "EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", "1", "k", "v6")
		}, bulkReply("v6")},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.write()
			eventually(t, cb, wait, s.want, "GET", "k")
			// Read again: the new value is what L1 holds now.
			expect(t, cb, s.want, "GET", "k")
		})
	}

	// The invalidation connection drops: B flushes its L1, tracks again,
	// and later writes still reach it.
	t.Run("tracking connection killed", func(t *testing.T) {
		expect(t, cb, bulkReply("v6"), "GET", "k")
		do(t, direct, "CLIENT", "KILL", "TYPE", "pubsub")
		expect(t, direct, "+OK\r\n", "SET", "k", "v7")
		eventually(t, cb, wait, bulkReply("v7"), "GET", "k")
		// Tracking is back: wait until it is, then a new write shows.
		err := pollUntil(wait, func() (bool, error) {
			return infoFields(t, cb, "sidecache")["l2_tracking"] == "redirect", nil
		})
		if err != nil {
			t.Fatalf("tracking not restored: %v", err)
		}
		expect(t, cb, bulkReply("v7"), "GET", "k")
		expect(t, direct, "+OK\r\n", "SET", "k", "v8")
		eventually(t, cb, wait, bulkReply("v8"), "GET", "k")
	})
}

func TestRemoteTrackingOff(t *testing.T) {
	r := StartRedisServer(t)
	sc := StartSidecache(t, "--l2", "redis://"+r.Addr, "--l2-tracking", "off", "--l1-ttl", "300ms")
	c, direct := sc.Dial(t), r.Dial(t)
	if got := infoFields(t, c, "sidecache")["l2_tracking"]; got != "off" {
		t.Fatalf("INFO l2_tracking = %q, want off", got)
	}
	expect(t, direct, "+OK\r\n", "SET", "k", "old")
	expect(t, c, bulkReply("old"), "GET", "k")
	expect(t, direct, "+OK\r\n", "SET", "k", "new")
	// Without tracking, L1 serves the old value until its TTL cap, then
	// the new one.
	eventually(t, c, 5*time.Second, bulkReply("new"), "GET", "k")
	// A write through sidecache itself is seen at once.
	expect(t, c, "+OK\r\n", "SET", "k", "mine")
	expect(t, c, bulkReply("mine"), "GET", "k")
}

// TestRemoteCoherencePush: with --l2-tracking push (the mode for upstreams
// without REDIRECT, such as Dragonfly) writes elsewhere reach L1 through
// RESP3 invalidation pushes on the reading connection.
func TestRemoteCoherencePush(t *testing.T) {
	r := StartRedisServer(t)
	url := "redis://" + r.Addr + "/0"
	a := StartSidecache(t, "--l2", url, "--l1-ttl", "1h", "--l2-tracking", "push")
	b := StartSidecache(t, "--l2", url, "--l1-ttl", "1h", "--l2-tracking", "push")
	ca, cb, direct := a.Dial(t), b.Dial(t), r.Dial(t)
	if got := infoFields(t, cb, "sidecache")["l2_tracking"]; got != "push" {
		t.Fatalf("INFO l2_tracking = %q, want push", got)
	}
	expect(t, ca, "+OK\r\n", "SET", "k", "v1")
	expect(t, cb, bulkReply("v1"), "GET", "k")
	expect(t, ca, "+OK\r\n", "SET", "k", "v2")
	eventually(t, cb, 5*time.Second, bulkReply("v2"), "GET", "k")
	expect(t, direct, ":1\r\n", "DEL", "k")
	eventually(t, cb, 5*time.Second, "$-1\r\n", "GET", "k")
	expect(t, direct, "+OK\r\n", "SET", "k", "v3")
	expect(t, cb, bulkReply("v3"), "GET", "k")
	// The push connection is killed: L1 is flushed, and reads track again.
	do(t, direct, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
	expect(t, direct, "+OK\r\n", "SET", "k", "v4")
	eventually(t, cb, 5*time.Second, bulkReply("v4"), "GET", "k")
	expect(t, direct, "+OK\r\n", "SET", "k", "v5")
	eventually(t, cb, 5*time.Second, bulkReply("v5"), "GET", "k")
}

// TestRemoteUnknownCommandKeys: a command missing from sidecache's table
// (here SET renamed MYSET on the upstream, standing for a module's
// command) passes through, and being a write, per the upstream's COMMAND
// INFO, drops its key from L1 before the reply. A command neither knows
// leaves L1 alone. Tracking is off and the L1 TTL long, so only the
// proxy's own invalidation can refresh L1.
func TestRemoteUnknownCommandKeys(t *testing.T) {
	r := StartRedisServer(t, "--rename-command", "SET", "MYSET")
	sc := StartSidecache(t, "--l2", "redis://"+r.Addr, "--l2-tracking", "off", "--l1-ttl", "1h")
	c := sc.Dial(t)
	expect(t, c, "-ERR unknown command 'SET', with args beginning with: 'k' 'v1' \r\n", "SET", "k", "v1")
	expect(t, c, "+OK\r\n", "MYSET", "k", "v1")
	expect(t, c, bulkReply("v1"), "GET", "k")
	expect(t, c, "+OK\r\n", "MYSET", "k", "v2")
	expect(t, c, bulkReply("v2"), "GET", "k")

	entries := infoInt(t, c, "sidecache", "l1_entries")
	if entries == 0 {
		t.Fatal("L1 holds nothing after GET")
	}
	expect(t, c, "-ERR unknown command 'NOSUCH', with args beginning with: 'k' \r\n", "NOSUCH", "k")
	if got := infoInt(t, c, "sidecache", "l1_entries"); got != entries {
		t.Errorf("l1_entries %d after an unknown command, want %d (no flush)", got, entries)
	}
}
