package test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// End-to-end tests of sidecache in front of a Redis Cluster and a
// Sentinel-managed master: routing, redirections and failover are
// invisible to the application.

func TestRemoteClusterRouting(t *testing.T) {
	cl := StartRedisCluster(t, 3)
	sc := StartSidecache(t, "--l2", "redis+cluster://"+strings.Join(cl.Addrs, ","))
	c := sc.Dial(t)

	// Keys spread over all three masters; reads come back through L1.
	nodes := map[string]bool{}
	for i := range 30 {
		k := fmt.Sprintf("key:%d", i)
		nodes[cl.NodeForKey(k)] = true
		expect(t, c, "+OK\r\n", "SET", k, "v"+strconv.Itoa(i))
		expect(t, c, ":1\r\n", "HSET", "h:"+k, "f", "x")
	}
	if len(nodes) != 3 {
		t.Fatalf("keys landed on %d masters, want 3", len(nodes))
	}
	for i := range 30 {
		k := fmt.Sprintf("key:%d", i)
		expect(t, c, bulkReply("v"+strconv.Itoa(i)), "GET", k)
		expect(t, c, bulkReply("x"), "HGET", "h:"+k, "f")
		// Each key is really on the node the cluster says.
		if v, err := redisCallString(cl.NodeForKey(k), "GET", k); err != nil || v != "v"+strconv.Itoa(i) {
			t.Errorf("GET %s on its node: %q, %v", k, v, err)
		}
	}

	// Multi-key commands: the same slot works, different slots get the
	// cluster's own error.
	expect(t, c, "+OK\r\n", "MSET", "{u}a", "1", "{u}b", "2")
	expect(t, c, "*2\r\n$1\r\n1\r\n$1\r\n2\r\n", "MGET", "{u}a", "{u}b")
	expect(t, c, "-CROSSSLOT Keys in request don't hash to the same slot\r\n", "MSET", "a", "1", "b", "2")
	expect(t, c, "-CROSSSLOT Keys in request don't hash to the same slot\r\n", "SUNION", "a", "b")

	// A slot moves: sidecache follows -MOVED, the client never sees it,
	// and L1 was invalidated by the writes in between.
	k := "key:7"
	from := cl.NodeForKey(k)
	to := cl.OtherNode(from)
	cl.MigrateSlot(t, KeySlot(k), to)
	expect(t, c, bulkReply("v7"), "GET", k)
	expect(t, c, "+OK\r\n", "SET", k, "moved")
	expect(t, c, bulkReply("moved"), "GET", k)
	expect(t, c, ":1\r\n", "HSET", "h:"+k, "g", "y")
	if v, err := redisCallString(to, "GET", k); err != nil || v != "moved" {
		t.Errorf("after the move, GET on the new owner: %q, %v", v, err)
	}

	// A slot half-migrated: a key already moved is answered through -ASK.
	a, b := "{mig}one", "{mig}two"
	expect(t, c, "+OK\r\n", "SET", a, "1")
	expect(t, c, "+OK\r\n", "SET", b, "2")
	src := cl.NodeForKey(a)
	m := cl.StartSlotMigration(t, KeySlot(a), cl.OtherNode(src), a)
	if r, _ := redisCall(src, "GET", a); !r.IsError() || !strings.HasPrefix(string(r.Str), "ASK ") {
		t.Fatalf("source node answers %v for a migrated key, want -ASK", r)
	}
	expect(t, c, ":2\r\n", "INCR", a) // through ASK to the target
	expect(t, c, ":3\r\n", "INCR", b) // still on the source
	expect(t, c, bulkReply("2"), "GET", a)
	m.Finish(t)
	expect(t, c, bulkReply("2"), "GET", a)
	expect(t, c, ":4\r\n", "INCR", b)
}

func TestRemoteSentinelFailover(t *testing.T) {
	g := StartSentinelGroup(t)
	sc := StartSidecache(t, "--l2", "redis+sentinel://"+strings.Join(g.SentinelAddrs, ",")+"/"+g.MasterName,
		"--l2-dial-timeout", "1s", "--l2-read-timeout", "1s")
	c := sc.Dial(t)
	expect(t, c, "+OK\r\n", "SET", "k", "0")
	expect(t, c, bulkReply("0"), "GET", "k")

	// Traffic during a failover: each INCR either succeeds or fails with
	// an error; none is lost or applied twice, and after the failover the
	// value is the number of successes.
	old, err := g.MasterAddr()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() { done <- g.Failover(t) }()
	var ok, failed int
	var newMaster string
	deadline := time.Now().Add(30 * time.Second)
	for newMaster == "" || ok < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("failover did not finish: %d INCR ok, %d failed", ok, failed)
		}
		r := parseReply(t, do(t, c, "INCR", "k"))
		if r.IsError() {
			failed++
			time.Sleep(10 * time.Millisecond) // an application's retry pause, not a wait for a condition
		} else {
			ok++
		}
		select {
		case newMaster = <-done:
		default:
		}
	}
	if newMaster == old {
		t.Fatalf("master did not change from %s", old)
	}
	t.Logf("during the failover: %d INCR ok, %d failed", ok, failed)
	// The replica may have missed the writes acknowledged by the old
	// master in its last moments (Redis replication is asynchronous), so
	// the count is bounded, not exact.
	r := parseReply(t, do(t, c, "GET", "k"))
	n, _ := strconv.Atoi(string(r.Str))
	if n < 1 || n > ok {
		t.Errorf("after the failover k = %d, want 1..%d", n, ok)
	}
	expect(t, c, "+OK\r\n", "SET", "after", "yes")
	if v, err := redisCallString(newMaster, "GET", "after"); err != nil || v != "yes" {
		t.Errorf("write after the failover is not on the new master %s: %q, %v", newMaster, v, err)
	}
	expect(t, c, bulkReply("yes"), "GET", "after")
}
