package test

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"
)

func TestClusterKeySlot(t *testing.T) {
	// The check value of CRC-16/XMODEM, quoted in Redis's crc16.c, is
	// 0x31c3: the slot of "123456789" is that modulo 16384.
	if got := KeySlot("123456789"); got != 0x31c3%16384 {
		t.Errorf("KeySlot(123456789) = %d, want %d", got, 0x31c3%16384)
	}
	tests := []struct {
		key  string
		same string // a key that must hash to the same slot
		slot int    // -1: not checked
	}{
		{key: "foo", slot: 12182},
		{key: "bar", slot: 5061},
		{key: "", slot: 0},
		{key: "{user1000}.following", same: "{user1000}.followers", slot: -1},
		{key: "foo{{bar}}zap", same: "{bar", slot: -1},
		{key: "foo{bar}{zap}", same: "bar", slot: -1},
	}
	for _, tt := range tests {
		got := KeySlot(tt.key)
		if tt.slot >= 0 && got != tt.slot {
			t.Errorf("KeySlot(%q) = %d, want %d", tt.key, got, tt.slot)
		}
		if tt.same != "" && got != KeySlot(tt.same) {
			t.Errorf("KeySlot(%q) = %d, KeySlot(%q) = %d: want equal", tt.key, got, tt.same, KeySlot(tt.same))
		}
	}
	if KeySlot("foo{}{bar}") == KeySlot("bar") {
		t.Errorf("foo{}{bar}: an empty hash tag must not select a tag")
	}
	// Edge cases are checked against CLUSTER KEYSLOT in TestRedisCluster.
}

// keysOnEveryNode returns, for each master of c, a key it owns.
func keysOnEveryNode(t *testing.T, c *RedisCluster) map[string]string {
	t.Helper()
	keys := make(map[string]string)
	for i := 0; len(keys) < len(c.Addrs) && i < 1000; i++ {
		k := "key:" + strconv.Itoa(i)
		if owner := c.NodeForKey(k); keys[owner] == "" {
			keys[owner] = k
		}
	}
	if len(keys) != len(c.Addrs) {
		t.Fatalf("found keys for %d of %d masters", len(keys), len(c.Addrs))
	}
	return keys
}

func TestRedisCluster(t *testing.T) {
	start := time.Now()
	c := StartRedisCluster(t, 3)
	t.Logf("cluster of %d masters up in %v", len(c.Addrs), time.Since(start))
	if len(c.Addrs) != 3 {
		t.Fatalf("Addrs = %v, want 3", c.Addrs)
	}
	conns := make(map[string]*RESPConn)
	for _, a := range c.Addrs {
		conns[a] = DialRESP(t, a)
	}

	// KeySlot agrees with the server's.
	for _, k := range []string{"foo", "bar", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "a{b}c", "{a", "}a{", "{}", "\xff\x00"} {
		expect(t, conns[c.Addrs[0]], ":"+strconv.Itoa(KeySlot(k))+"\r\n", "CLUSTER", "KEYSLOT", k)
	}

	// Every key is served by the node NodeForKey names, and redirected
	// by the others.
	keys := keysOnEveryNode(t, c)
	for owner, k := range keys {
		slot := KeySlot(k)
		expect(t, conns[owner], "+OK\r\n", "SET", k, "v-"+k)
		expect(t, conns[owner], bulkReply("v-"+k), "GET", k)
		for _, a := range c.Addrs {
			if a != owner {
				expect(t, conns[a], fmt.Sprintf("-MOVED %d %s\r\n", slot, owner), "GET", k)
			}
		}
	}

	// MigrateSlot moves the key with its slot.
	k := keys[c.Addrs[0]]
	slot := KeySlot(k)
	from, to := c.Addrs[0], c.OtherNode(c.Addrs[0])
	if to == "" || to == from {
		t.Fatalf("OtherNode(%s) = %q", from, to)
	}
	start = time.Now()
	c.MigrateSlot(t, slot, to)
	t.Logf("slot %d migrated in %v", slot, time.Since(start))
	if got := c.NodeForKey(k); got != to {
		t.Errorf("after MigrateSlot, NodeForKey(%q) = %s, want %s", k, got, to)
	}
	expect(t, conns[to], bulkReply("v-"+k), "GET", k)
	for _, a := range c.Addrs {
		if a != to {
			expect(t, conns[a], fmt.Sprintf("-MOVED %d %s\r\n", slot, to), "GET", k)
		}
	}

	// A half-migrated slot: the moved key is answered with -ASK by the
	// source, and served by the target after ASKING only.
	from, to = c.Addrs[2], c.Addrs[0]
	tag := "{" + keys[from] + "}"
	moved, stays := tag+"moved", tag+"stays"
	slot = KeySlot(tag)
	expect(t, conns[from], "+OK\r\n", "MSET", moved, "m", stays, "s")
	m := c.StartSlotMigration(t, slot, to, moved)
	if m.From != from || m.To != to || m.Slot != slot {
		t.Errorf("migration = %+v, want slot %d from %s to %s", m, slot, from, to)
	}
	expect(t, conns[from], fmt.Sprintf("-ASK %d %s\r\n", slot, to), "GET", moved)
	expect(t, conns[from], bulkReply("s"), "GET", stays)
	expect(t, conns[to], fmt.Sprintf("-MOVED %d %s\r\n", slot, from), "GET", moved)
	expect(t, conns[to], "+OK\r\n", "ASKING")
	expect(t, conns[to], bulkReply("m"), "GET", moved)
	if got := c.NodeForKey(moved); got != from {
		t.Errorf("during the migration NodeForKey(%q) = %s, want the source %s", moved, got, from)
	}
	m.Finish(t)
	for key, v := range map[string]string{moved: "m", stays: "s"} {
		expect(t, conns[to], bulkReply(v), "GET", key)
		expect(t, conns[from], fmt.Sprintf("-MOVED %d %s\r\n", slot, to), "GET", key)
	}

	// Stop stops every node, and may be called twice.
	c.Stop()
	c.Stop()
	for _, a := range c.Addrs {
		if conn, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after Stop", a)
		}
	}
}

// checkMaster fails unless master reports role master and the sentinels
// report it.
func checkMaster(t *testing.T, g *SentinelGroup, master string) {
	t.Helper()
	if got, err := g.MasterAddr(); err != nil || got != master {
		t.Errorf("MasterAddr() = %q, %v; want %s", got, err, master)
	}
	for _, s := range g.SentinelAddrs {
		if got, err := g.masterAddrFrom(s); err != nil || got != master {
			t.Errorf("sentinel %s reports master %q, %v; want %s", s, got, err, master)
		}
	}
	if role, err := serverRole(master); err != nil || role != "master" {
		t.Errorf("ROLE on %s = %q, %v; want master", master, role, err)
	}
}

func TestSentinelGroup(t *testing.T) {
	start := time.Now()
	g := StartSentinelGroup(t)
	t.Logf("sentinel group up in %v", time.Since(start))
	if g.MasterName != "mymaster" || len(g.SentinelAddrs) != 3 {
		t.Fatalf("MasterName %q, SentinelAddrs %v", g.MasterName, g.SentinelAddrs)
	}
	data := g.DataAddrs()
	if len(data) != 2 {
		t.Fatalf("DataAddrs() = %v, want master and replica", data)
	}
	master, replica := data[0], data[1]
	checkMaster(t, g, master)
	for _, s := range g.SentinelAddrs {
		if role, err := serverRole(s); err != nil || role != "sentinel" {
			t.Errorf("ROLE on %s = %q, %v; want sentinel", s, role, err)
		}
	}
	if role, err := serverRole(replica); err != nil || role != "slave" {
		t.Errorf("ROLE on %s = %q, %v; want slave", replica, role, err)
	}
	mc := DialRESP(t, master)
	expect(t, mc, "+OK\r\n", "SET", "k", "1")
	if err := pollUntil(10*time.Second, func() (bool, error) {
		v, err := redisCall(replica, "GET", "k")
		return err == nil && string(v.Str) == "1", err
	}); err != nil {
		t.Errorf("the write to the master did not reach the replica: %v", err)
	}
	expect(t, DialRESP(t, replica), "-READONLY You can't write against a read only replica.\r\n", "SET", "k", "2")

	start = time.Now()
	next := g.Failover(t)
	t.Logf("failover in %v", time.Since(start))
	if next != replica {
		t.Fatalf("Failover() = %s, want the former replica %s", next, replica)
	}
	checkMaster(t, g, next)
	expect(t, DialRESP(t, next), "+OK\r\n", "SET", "k", "2")

	// The former master becomes a replica of the new one.
	start = time.Now()
	if got := g.WaitSettled(t); got != next {
		t.Errorf("WaitSettled() = %s, want %s", got, next)
	}
	t.Logf("former master demoted and in sync in %v", time.Since(start))
	if role, err := serverRole(master); err != nil || role != "slave" {
		t.Errorf("ROLE on the former master %s = %q, %v; want slave", master, role, err)
	}
	if err := pollUntil(10*time.Second, func() (bool, error) {
		v, err := redisCall(master, "GET", "k")
		return err == nil && string(v.Str) == "2", err
	}); err != nil {
		t.Errorf("the write to the new master did not reach the former master: %v", err)
	}

	g.Stop()
	g.Stop()
	for _, a := range append(g.SentinelAddrs, data...) {
		if conn, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after Stop", a)
		}
	}
}

func TestSentinelKillMaster(t *testing.T) {
	g := StartSentinelGroup(t)
	data := g.DataAddrs()
	start := time.Now()
	killed := g.KillMaster(t)
	if killed != data[0] {
		t.Fatalf("KillMaster() = %s, want the master %s", killed, data[0])
	}
	if conn, err := net.DialTimeout("tcp", killed, time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after KillMaster", killed)
	}
	if got := g.DataAddrs(); len(got) != 1 || got[0] != data[1] {
		t.Errorf("DataAddrs() after KillMaster = %v, want [%s]", got, data[1])
	}
	next := g.WaitMasterChange(t, killed)
	t.Logf("unplanned failover in %v", time.Since(start))
	if next != data[1] {
		t.Fatalf("WaitMasterChange() = %s, want the former replica %s", next, data[1])
	}
	checkMaster(t, g, next)
	expect(t, DialRESP(t, next), "+OK\r\n", "SET", "k", "v")
}
