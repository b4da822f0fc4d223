package test

// Topologies of real redis-server processes for integration tests of the
// remote L2: a Redis Cluster of masters (StartRedisCluster) and a master
// with one replica watched by three sentinels (StartSentinelGroup). The
// helpers wait for each topology to settle by polling with deadlines, can
// move a hash slot between cluster masters (to provoke MOVED and ASK
// redirections) and can fail a sentinel-monitored master over, planned or
// by killing it. Every process is stopped when the test ends, and its log
// is printed if the test failed.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/remote"
)

const (
	// clusterSlots is the number of hash slots of a Redis Cluster.
	clusterSlots = 16384

	// clusterMaxPort is the largest port a cluster node may use: its
	// cluster bus listens on port+10000, which must be a valid port, and
	// redis-cli --cluster create refuses ports above it.
	clusterMaxPort = 55535

	// topoSettleTimeout bounds each wait for a topology to settle: the
	// cluster to agree on its slot map, sentinels to discover each other,
	// a failover to complete. Generous, because the machine is shared and
	// the tests may run under -race.
	topoSettleTimeout = 45 * time.Second

	// topoCallTimeout bounds one command sent by the helpers.
	topoCallTimeout = 5 * time.Second

	// sentinelMasterName is the name the sentinels monitor the master as.
	sentinelMasterName = "mymaster"
)

// errTopology is wrapped by the errors of the topology helpers' queries.
var errTopology = errors.New("test: redis topology")

// redisCall sends one command to addr on a fresh connection and returns
// its parsed reply. An error reply is returned as an error wrapping
// l2store.ReplyError.
func redisCall(addr string, args ...string) (l2store.Reply, error) {
	c, err := net.DialTimeout("tcp", addr, topoCallTimeout)
	if err != nil {
		return l2store.Reply{}, err
	}
	defer c.Close()
	rc := &RESPConn{conn: c, r: bufio.NewReader(c), Timeout: topoCallTimeout}
	b := make([][]byte, len(args))
	for i, a := range args {
		b[i] = []byte(a)
	}
	if err := rc.Send(b...); err != nil {
		return l2store.Reply{}, err
	}
	r, err := l2store.ReadReply(rc.r, 1<<30)
	if err != nil {
		return l2store.Reply{}, fmt.Errorf("%s %s: %w", addr, strings.Join(args, " "), err)
	}
	if r.Kind == l2store.KindError {
		return r, fmt.Errorf("%s %s: %w", addr, strings.Join(args, " "), l2store.ReplyError(r.Str))
	}
	return r, nil
}

// redisCallString is redisCall for commands whose reply is a status or a
// bulk string.
func redisCallString(addr string, args ...string) (string, error) {
	r, err := redisCall(addr, args...)
	if err != nil {
		return "", err
	}
	switch r.Kind {
	case l2store.KindStatus, l2store.KindBulk, l2store.KindVerbatim:
		return string(r.Str), nil
	}
	return "", fmt.Errorf("%w: %s %s: reply of kind %v, want a string", errTopology, addr, strings.Join(args, " "), r.Kind)
}

// infoFieldsAt runs INFO section on addr and returns its fields.
func infoFieldsAt(addr, section string) (map[string]string, error) {
	text, err := redisCallString(addr, "INFO", section)
	if err != nil {
		return nil, err
	}
	fields := make(map[string]string)
	for _, line := range strings.Split(text, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
			fields[k] = v
		}
	}
	return fields, nil
}

// startProcessWithPort starts a redis-server process listening on a
// loopback port chosen by choose, retrying with another port when the
// chosen one was taken by someone else in the meantime.
func startProcessWithPort(t testing.TB, choose func() (int, error), start func(port int) (*RedisServer, error)) *RedisServer {
	t.Helper()
	const attempts = 5
	var lastErr error
	for range attempts {
		port, err := choose()
		if err != nil {
			t.Fatalf("choosing a port: %v", err)
		}
		srv, err := start(port)
		if err == nil {
			return srv
		}
		lastErr = err
		if !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	t.Fatalf("starting redis-server: %v", lastErr)
	return nil
}

// startProcess runs bin with args and returns once addr answers PING. The
// caller stops the process (RedisServer.stop).
func startProcess(bin, addr string, args []string) (*RedisServer, error) {
	srv := &RedisServer{
		Addr:   addr,
		cmd:    exec.Command(bin, args...),
		exited: make(chan struct{}),
		out:    &syncBuffer{},
	}
	srv.cmd.Stdout, srv.cmd.Stderr = srv.out, srv.out
	if err := srv.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		srv.cmd.Wait()
		close(srv.exited)
	}()
	err := pollUntil(redisStartTimeout, func() (bool, error) {
		select {
		case <-srv.exited:
			return false, fmt.Errorf("%s exited", filepath.Base(bin))
		default:
		}
		return srv.ping() == nil, nil
	})
	if err != nil {
		srv.stop()
		return nil, fmt.Errorf("%w\n%s output:\n%s", err, filepath.Base(bin), srv.out.String())
	}
	return srv, nil
}

// kill sends SIGKILL to the server and waits for it to exit.
func (s *RedisServer) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Kill()
	<-s.exited
}

// alive reports whether the server process has not exited.
func (s *RedisServer) alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// processGroup owns the processes of a topology: it stops them all and,
// if the test failed, prints their logs.
type processGroup struct {
	mu    sync.Mutex
	procs []*RedisServer
	names []string
}

func (g *processGroup) add(name string, s *RedisServer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.procs = append(g.procs, s)
	g.names = append(g.names, name)
}

// stop stops every process, in parallel. It may be called more than once.
func (g *processGroup) stop() {
	g.mu.Lock()
	procs := append([]*RedisServer(nil), g.procs...)
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(p.stop)
	}
	wg.Wait()
}

// cleanup is registered with t.Cleanup before the first process starts:
// it stops the processes and, if the test failed, logs their output.
func (g *processGroup) cleanup(t testing.TB) func() {
	return func() {
		g.stop()
		if !t.Failed() {
			return
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		for i, p := range g.procs {
			t.Logf("--- output of %s (%s) ---\n%s", g.names[i], p.Addr, p.out.String())
		}
	}
}

// RedisCluster is a Redis Cluster of masters without replicas, each a
// redis-server child process on a loopback port, started by
// StartRedisCluster and stopped when the test ends.
type RedisCluster struct {
	Addrs []string // host:port of each master, in start order

	procs processGroup
	ids   map[string]string // node ID by address

	mu    sync.Mutex
	slots [clusterSlots]string // owner address by slot, as of the last wait for agreement
}

// StartRedisCluster starts masters redis-server processes in cluster mode
// (at least 3, as redis-cli --cluster create requires), creates the
// cluster with redis-cli, and returns once every node reports
// cluster_state:ok and all nodes agree on the owner of every slot.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("StartRedisCluster: %d masters, redis-cli --cluster create needs at least 3", masters)
	}
	bin := requireBinary(t, "redis-server")
	cli := requireBinary(t, "redis-cli")
	c := &RedisCluster{ids: make(map[string]string)}
	t.Cleanup(c.procs.cleanup(t))
	dir := t.TempDir()
	for i := range masters {
		srv := startProcessWithPort(t, clusterPort, func(port int) (*RedisServer, error) {
			return startRedisServer(t, bin, port, []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", port)),
			})
		})
		c.procs.add(fmt.Sprintf("cluster node %d", i), srv)
		c.Addrs = append(c.Addrs, srv.Addr)
		id, err := redisCallString(srv.Addr, "CLUSTER", "MYID")
		if err != nil {
			t.Fatalf("StartRedisCluster: %v", err)
		}
		c.ids[srv.Addr] = id
	}

	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), topoSettleTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := c.waitAgreement(func(s *[clusterSlots]string) error { return nil }); err != nil {
		t.Fatalf("StartRedisCluster: %v\nredis-cli output:\n%s", err, out)
	}
	return c
}

// clusterPort returns a free loopback port whose cluster bus port
// (port+10000) was free too a moment ago.
func clusterPort() (int, error) {
	for range 100 {
		port, err := freePort()
		if err != nil {
			return 0, err
		}
		if port > clusterMaxPort {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("%w: no free port below %d with a free bus port", errTopology, clusterMaxPort)
}

// Stop stops every node. It may be called more than once; the test's
// cleanup calls it too.
func (c *RedisCluster) Stop() { c.procs.stop() }

// NodeID returns the cluster node ID of the master at addr.
func (c *RedisCluster) NodeID(addr string) string { return c.ids[addr] }

// NodeForKey returns the address of the master owning key's slot, as all
// nodes agreed after the cluster started or the last slot migration made
// by these helpers.
func (c *RedisCluster) NodeForKey(key string) string { return c.NodeForSlot(KeySlot(key)) }

// NodeForSlot returns the address of the master owning slot (see
// NodeForKey).
func (c *RedisCluster) NodeForSlot(slot int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slots[slot]
}

// OtherNode returns the address of a master other than addr.
func (c *RedisCluster) OtherNode(addr string) string {
	for _, a := range c.Addrs {
		if a != addr {
			return a
		}
	}
	return ""
}

// SlotMap asks the node at addr for its view of the slot owners (CLUSTER
// SLOTS); slots no node serves are "".
func SlotMap(addr string) ([clusterSlots]string, error) {
	var m [clusterSlots]string
	r, err := redisCall(addr, "CLUSTER", "SLOTS")
	if err != nil {
		return m, err
	}
	if r.Kind != l2store.KindArray {
		return m, fmt.Errorf("%w: CLUSTER SLOTS on %s: reply of kind %v", errTopology, addr, r.Kind)
	}
	for _, e := range r.Elems {
		// [start, end, [ip, port, id, ...], replicas...]
		if e.Kind != l2store.KindArray || len(e.Elems) < 3 ||
			e.Elems[0].Kind != l2store.KindInt || e.Elems[1].Kind != l2store.KindInt ||
			e.Elems[2].Kind != l2store.KindArray || len(e.Elems[2].Elems) < 2 ||
			e.Elems[2].Elems[1].Kind != l2store.KindInt {
			return m, fmt.Errorf("%w: CLUSTER SLOTS on %s: unexpected entry %v", errTopology, addr, e)
		}
		start, end := int(e.Elems[0].Int), int(e.Elems[1].Int)
		if start < 0 || end >= clusterSlots || start > end {
			return m, fmt.Errorf("%w: CLUSTER SLOTS on %s: bad range %d-%d", errTopology, addr, start, end)
		}
		owner := net.JoinHostPort(string(e.Elems[2].Elems[0].Str), strconv.FormatInt(e.Elems[2].Elems[1].Int, 10))
		for s := start; s <= end; s++ {
			m[s] = owner
		}
	}
	return m, nil
}

// waitAgreement waits until every node reports cluster_state:ok and the
// same owner, one of the cluster's masters, for every slot, and check
// accepts that slot map; then it records the map for NodeForKey.
func (c *RedisCluster) waitAgreement(check func(*[clusterSlots]string) error) error {
	masters := make(map[string]bool, len(c.Addrs))
	for _, a := range c.Addrs {
		masters[a] = true
	}
	var agreed [clusterSlots]string
	var last error
	err := pollUntil(topoSettleTimeout, func() (bool, error) {
		for i, addr := range c.Addrs {
			info, err := redisCallString(addr, "CLUSTER", "INFO")
			if err != nil {
				last = err
				return false, nil
			}
			if !strings.Contains(info, "cluster_state:ok\r\n") {
				last = fmt.Errorf("%w: %s: CLUSTER INFO:\n%s", errTopology, addr, info)
				return false, nil
			}
			m, err := SlotMap(addr)
			if err != nil {
				last = err
				return false, nil
			}
			if i == 0 {
				for s, owner := range m {
					if !masters[owner] {
						last = fmt.Errorf("%w: %s says slot %d is served by %q, not a master of the cluster", errTopology, addr, s, owner)
						return false, nil
					}
				}
				agreed = m
				continue
			}
			if m != agreed {
				for s := range m {
					if m[s] != agreed[s] {
						last = fmt.Errorf("%w: %s says slot %d is served by %q, %s says %q", errTopology, addr, s, m[s], c.Addrs[0], agreed[s])
						break
					}
				}
				return false, nil
			}
		}
		if err := check(&agreed); err != nil {
			last = err
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the cluster nodes to agree: %w; last: %v", err, last)
	}
	c.mu.Lock()
	c.slots = agreed
	c.mu.Unlock()
	return nil
}

// SlotMigration is a slot being moved between two masters, started by
// StartSlotMigration: the source is MIGRATING the slot and the target
// IMPORTING it, so the source answers -ASK for the slot's keys it no
// longer holds, and the target serves them only after ASKING.
type SlotMigration struct {
	Slot     int
	From, To string // source and target addresses

	c *RedisCluster
}

// MigrateSlot moves slot, with its keys, from its owner to the master at
// toAddr, and returns once every node agrees on the new owner, so that
// the former owner answers -MOVED for the slot.
func (c *RedisCluster) MigrateSlot(t testing.TB, slot int, toAddr string) {
	t.Helper()
	c.StartSlotMigration(t, slot, toAddr).Finish(t)
}

// StartSlotMigration sets slot MIGRATING on its owner and IMPORTING on the
// master at toAddr, then moves keys (which must hash to slot) to toAddr
// with MIGRATE, leaving the slot's other keys on its owner. Finish
// completes the migration.
func (c *RedisCluster) StartSlotMigration(t testing.TB, slot int, toAddr string, keys ...string) *SlotMigration {
	t.Helper()
	if slot < 0 || slot >= clusterSlots {
		t.Fatalf("StartSlotMigration: slot %d out of range", slot)
	}
	from := c.NodeForSlot(slot)
	if c.ids[toAddr] == "" {
		t.Fatalf("StartSlotMigration: %s is not a master of the cluster %v", toAddr, c.Addrs)
	}
	if from == toAddr {
		t.Fatalf("StartSlotMigration: slot %d is already served by %s", slot, toAddr)
	}
	for _, k := range keys {
		if s := KeySlot(k); s != slot {
			t.Fatalf("StartSlotMigration: key %q hashes to slot %d, not %d", k, s, slot)
		}
	}
	s := strconv.Itoa(slot)
	if _, err := redisCall(toAddr, "CLUSTER", "SETSLOT", s, "IMPORTING", c.ids[from]); err != nil {
		t.Fatalf("StartSlotMigration: %v", err)
	}
	if _, err := redisCall(from, "CLUSTER", "SETSLOT", s, "MIGRATING", c.ids[toAddr]); err != nil {
		t.Fatalf("StartSlotMigration: %v", err)
	}
	m := &SlotMigration{Slot: slot, From: from, To: toAddr, c: c}
	if err := m.migrateKeys(keys); err != nil {
		t.Fatalf("StartSlotMigration: %v", err)
	}
	return m
}

// migrateKeys moves keys from the source to the target with one MIGRATE.
func (m *SlotMigration) migrateKeys(keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	host, port, err := net.SplitHostPort(m.To)
	if err != nil {
		return err
	}
	args := append([]string{"MIGRATE", host, port, "", "0", strconv.Itoa(int(topoCallTimeout / time.Millisecond)), "KEYS"}, keys...)
	r, err := redisCallString(m.From, args...)
	if err != nil {
		return err
	}
	if r != "OK" && r != "NOKEY" {
		return fmt.Errorf("%w: MIGRATE: %q", errTopology, r)
	}
	return nil
}

// Finish moves the slot's remaining keys to the target, assigns the slot
// to it on every node (target first, then source, then the others, as
// redis-cli --cluster reshard does), and returns once every node agrees.
func (m *SlotMigration) Finish(t testing.TB) {
	t.Helper()
	s := strconv.Itoa(m.Slot)
	for {
		r, err := redisCall(m.From, "CLUSTER", "GETKEYSINSLOT", s, "100")
		if err != nil {
			t.Fatalf("SlotMigration.Finish: %v", err)
		}
		if len(r.Elems) == 0 {
			break
		}
		keys := make([]string, len(r.Elems))
		for i, e := range r.Elems {
			keys[i] = string(e.Str)
		}
		if err := m.migrateKeys(keys); err != nil {
			t.Fatalf("SlotMigration.Finish: %v", err)
		}
	}
	order := []string{m.To, m.From}
	for _, a := range m.c.Addrs {
		if a != m.To && a != m.From {
			order = append(order, a)
		}
	}
	for _, a := range order {
		if _, err := redisCall(a, "CLUSTER", "SETSLOT", s, "NODE", m.c.ids[m.To]); err != nil {
			t.Fatalf("SlotMigration.Finish: %v", err)
		}
	}
	err := m.c.waitAgreement(func(slots *[clusterSlots]string) error {
		if slots[m.Slot] != m.To {
			return fmt.Errorf("%w: slot %d still served by %s", errTopology, m.Slot, slots[m.Slot])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("SlotMigration.Finish: %v", err)
	}
}

// KeySlot returns the hash slot of key as Redis Cluster computes it
// (remote.KeySlot: CRC16 of the key or its hash tag, modulo 16384).
func KeySlot(key string) int { return remote.KeySlot([]byte(key)) }

// SentinelGroup is a master, one replica and three sentinels monitoring
// them, each a redis-server child process on a loopback port, started by
// StartSentinelGroup and stopped when the test ends.
type SentinelGroup struct {
	MasterName    string   // the name the sentinels monitor the master as
	SentinelAddrs []string // host:port of each sentinel

	procs processGroup
	data  []*RedisServer // the first master and the first replica
}

// Sentinel timing for tests: a master is subjectively down after
// sentinelDownAfter without a valid reply; a failover that stalls is
// given up, and may be retried by another sentinel, after
// sentinelFailoverTimeout. Sentinels send INFO to the servers every
// sentinelInfoPeriod and publish hello messages every
// sentinelPublishPeriod (set with SENTINEL DEBUG).
const (
	sentinelDownAfter       = 1000 * time.Millisecond
	sentinelFailoverTimeout = 5000 * time.Millisecond
	sentinelInfoPeriod      = 1000 * time.Millisecond
	sentinelPublishPeriod   = 500 * time.Millisecond
)

// StartSentinelGroup starts a master, a replica of it and three sentinels
// monitoring the master with quorum 2, and returns once the replica is in
// sync and every sentinel reports the master and knows the replica and
// the two other sentinels.
func StartSentinelGroup(t testing.TB) *SentinelGroup {
	t.Helper()
	bin := requireBinary(t, "redis-server")
	g := &SentinelGroup{MasterName: sentinelMasterName}
	t.Cleanup(g.procs.cleanup(t))

	// A full resynchronization starts at once, not after the default
	// 5 s, on either server (the replica becomes master on failover).
	noDelay := []string{"--repl-diskless-sync-delay", "0"}
	master := startProcessWithPort(t, freePort, func(port int) (*RedisServer, error) {
		return startRedisServer(t, bin, port, noDelay)
	})
	g.procs.add("master", master)
	mhost, mport, _ := net.SplitHostPort(master.Addr)
	replica := startProcessWithPort(t, freePort, func(port int) (*RedisServer, error) {
		return startRedisServer(t, bin, port, append([]string{"--replicaof", mhost, mport}, noDelay...))
	})
	g.procs.add("replica", replica)
	g.data = []*RedisServer{master, replica}
	if err := pollUntil(topoSettleTimeout, func() (bool, error) {
		return replicaInSync(replica.Addr, master.Addr), nil
	}); err != nil {
		t.Fatalf("StartSentinelGroup: replica %s not in sync with %s: %v", replica.Addr, master.Addr, err)
	}

	for i := range 3 {
		dir := t.TempDir()
		srv := startProcessWithPort(t, freePort, func(port int) (*RedisServer, error) {
			conf := filepath.Join(dir, "sentinel.conf")
			text := fmt.Sprintf(`port %[1]d
bind 127.0.0.1
daemonize no
logfile ""
dir %[2]q
sentinel resolve-hostnames no
sentinel monitor %[3]s %[4]s %[5]s 2
sentinel down-after-milliseconds %[3]s %[6]d
sentinel failover-timeout %[3]s %[7]d
sentinel parallel-syncs %[3]s 1
`, port, dir, g.MasterName, mhost, mport,
				sentinelDownAfter.Milliseconds(), sentinelFailoverTimeout.Milliseconds())
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				return nil, err
			}
			srv, err := startProcess(bin, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), []string{conf, "--sentinel"})
			if err != nil {
				return nil, err
			}
			// INFO every second (default 10 s) and hello messages every
			// half second (default 2 s): sentinels learn of replicas,
			// roles and each other within seconds, so that the group
			// settles quickly, also after a failover.
			_, err = redisCall(srv.Addr, "SENTINEL", "DEBUG",
				"info-period", strconv.FormatInt(sentinelInfoPeriod.Milliseconds(), 10),
				"publish-period", strconv.FormatInt(sentinelPublishPeriod.Milliseconds(), 10))
			if err != nil {
				srv.stop()
				return nil, err
			}
			return srv, nil
		})
		g.procs.add(fmt.Sprintf("sentinel %d", i), srv)
		g.SentinelAddrs = append(g.SentinelAddrs, srv.Addr)
	}

	if err := g.waitSettled(master.Addr, replica.Addr); err != nil {
		t.Fatalf("StartSentinelGroup: %v", err)
	}
	return g
}

// replicaInSync reports whether the server at addr is a replica of master
// with its replication link up.
func replicaInSync(addr, master string) bool {
	info, err := infoFieldsAt(addr, "replication")
	if err != nil {
		return false
	}
	host, port, _ := net.SplitHostPort(master)
	return info["role"] == "slave" && info["master_host"] == host && info["master_port"] == port &&
		info["master_link_status"] == "up"
}

// serverRole returns the first element of ROLE on addr: "master",
// "slave" or "sentinel".
func serverRole(addr string) (string, error) {
	r, err := redisCall(addr, "ROLE")
	if err != nil {
		return "", err
	}
	if r.Kind != l2store.KindArray || len(r.Elems) == 0 {
		return "", fmt.Errorf("%w: ROLE on %s: unexpected reply %v", errTopology, addr, r)
	}
	return string(r.Elems[0].Str), nil
}

// waitSettled waits until the master at master reports role master, the
// replica at replica (if not "") is in sync with it, and every sentinel
// reports master as the master, lists the replica as a healthy replica
// and knows the other sentinels.
func (g *SentinelGroup) waitSettled(master, replica string) error {
	var last error
	err := pollUntil(topoSettleTimeout, func() (bool, error) {
		last = g.settled(master, replica)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for master %s, replica %q and the sentinels to settle: %w; last: %v", master, replica, err, last)
	}
	return nil
}

func (g *SentinelGroup) settled(master, replica string) error {
	if role, err := serverRole(master); err != nil || role != "master" {
		return fmt.Errorf("%w: %s has role %q (%v), want master", errTopology, master, role, err)
	}
	if replica != "" && !replicaInSync(replica, master) {
		return fmt.Errorf("%w: %s not in sync with %s", errTopology, replica, master)
	}
	for _, s := range g.SentinelAddrs {
		if got, err := g.masterAddrFrom(s); err != nil || got != master {
			return fmt.Errorf("%w: sentinel %s reports master %q (%v), want %s", errTopology, s, got, err, master)
		}
		if replica != "" {
			found, err := g.knowsReplica(s, replica)
			if err != nil {
				return err
			}
			if !found {
				return fmt.Errorf("%w: sentinel %s does not list %s as a healthy replica", errTopology, s, replica)
			}
		}
		r, err := redisCall(s, "SENTINEL", "SENTINELS", g.MasterName)
		if err != nil {
			return err
		}
		if len(r.Elems) != len(g.SentinelAddrs)-1 {
			return fmt.Errorf("%w: sentinel %s knows %d other sentinels, want %d", errTopology, s, len(r.Elems), len(g.SentinelAddrs)-1)
		}
	}
	return nil
}

// knowsReplica reports whether the sentinel at sentinel lists addr as a
// replica that is neither down nor disconnected.
func (g *SentinelGroup) knowsReplica(sentinel, addr string) (bool, error) {
	r, err := redisCall(sentinel, "SENTINEL", "REPLICAS", g.MasterName)
	if err != nil {
		return false, err
	}
	for _, e := range r.Elems {
		f := replyFields(e)
		if f["name"] == addr && f["flags"] == "slave" && f["master-link-status"] == "ok" {
			return true, nil
		}
	}
	return false, nil
}

// replyFields turns a flat array (or RESP3 map) of alternating field
// names and values into a map.
func replyFields(r l2store.Reply) map[string]string {
	f := make(map[string]string, len(r.Elems)/2)
	for i := 0; i+1 < len(r.Elems); i += 2 {
		f[string(r.Elems[i].Str)] = string(r.Elems[i+1].Str)
	}
	return f
}

// masterAddrFrom asks the sentinel at addr for the master's address.
func (g *SentinelGroup) masterAddrFrom(addr string) (string, error) {
	r, err := redisCall(addr, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", g.MasterName)
	if err != nil {
		return "", err
	}
	if r.Kind != l2store.KindArray || len(r.Elems) != 2 {
		return "", fmt.Errorf("%w: SENTINEL GET-MASTER-ADDR-BY-NAME on %s: unexpected reply %v", errTopology, addr, r)
	}
	return net.JoinHostPort(string(r.Elems[0].Str), string(r.Elems[1].Str)), nil
}

// MasterAddr asks a sentinel (the first that answers) for the master's
// address (SENTINEL GET-MASTER-ADDR-BY-NAME).
func (g *SentinelGroup) MasterAddr() (string, error) {
	var errs []error
	for _, s := range g.SentinelAddrs {
		addr, err := g.masterAddrFrom(s)
		if err == nil {
			return addr, nil
		}
		errs = append(errs, err)
	}
	return "", errors.Join(errs...)
}

// DataAddrs returns the addresses of the data servers (not sentinels)
// still running: at first the master, then the replica.
func (g *SentinelGroup) DataAddrs() []string {
	var addrs []string
	for _, s := range g.data {
		if s.alive() {
			addrs = append(addrs, s.Addr)
		}
	}
	return addrs
}

// dataServer returns the data server at addr, or nil.
func (g *SentinelGroup) dataServer(addr string) *RedisServer {
	for _, s := range g.data {
		if s.Addr == addr {
			return s
		}
	}
	return nil
}

// otherDataServer returns the data server other than the one at addr.
func (g *SentinelGroup) otherDataServer(addr string) *RedisServer {
	for _, s := range g.data {
		if s.Addr != addr {
			return s
		}
	}
	return nil
}

// Failover asks a sentinel for a failover (SENTINEL FAILOVER) and returns
// the new master's address once every sentinel reports the former replica
// as master and it reports role master. The former master, demoted by
// the sentinels, becomes a replica of the new one later: WaitSettled
// waits for that.
func (g *SentinelGroup) Failover(t testing.TB) string {
	t.Helper()
	old, err := g.MasterAddr()
	if err != nil {
		t.Fatalf("Failover: %v", err)
	}
	// A sentinel refuses while it has no replica it considers good (for
	// example just after a previous failover); retry until one accepts.
	var last error
	err = pollUntil(topoSettleTimeout, func() (bool, error) {
		_, last = redisCall(g.SentinelAddrs[0], "SENTINEL", "FAILOVER", g.MasterName)
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("Failover: SENTINEL FAILOVER: %v; last: %v", err, last)
	}
	return g.WaitMasterChange(t, old)
}

// KillMaster kills the current master with SIGKILL, leaving the sentinels
// to detect it and fail over, and returns its address. WaitMasterChange
// waits for the failover.
func (g *SentinelGroup) KillMaster(t testing.TB) string {
	t.Helper()
	old, err := g.MasterAddr()
	if err != nil {
		t.Fatalf("KillMaster: %v", err)
	}
	srv := g.dataServer(old)
	if srv == nil {
		t.Fatalf("KillMaster: master %s is not a server of the group", old)
	}
	srv.kill()
	return old
}

// WaitMasterChange waits until every sentinel reports the data server
// other than old as master and it reports role master, and returns its
// address.
func (g *SentinelGroup) WaitMasterChange(t testing.TB, old string) string {
	t.Helper()
	next := g.otherDataServer(old)
	if next == nil {
		t.Fatalf("waiting for the failover: %s is not a data server of the group", old)
	}
	if err := g.waitSettled(next.Addr, ""); err != nil {
		t.Fatalf("waiting for the failover from %s: %v", old, err)
	}
	return next.Addr
}

// WaitSettled waits until the group is whole again after a failover:
// every sentinel reports the same master, which has role master, and the
// other data server, if still running, is its replica, in sync, and known
// to every sentinel as a healthy replica. It returns the master's
// address.
func (g *SentinelGroup) WaitSettled(t testing.TB) string {
	t.Helper()
	master, err := g.MasterAddr()
	if err != nil {
		t.Fatalf("WaitSettled: %v", err)
	}
	replica := ""
	if s := g.otherDataServer(master); s != nil && s.alive() {
		replica = s.Addr
	}
	if err := g.waitSettled(master, replica); err != nil {
		t.Fatalf("WaitSettled: %v", err)
	}
	return master
}

// Stop stops every process of the group. It may be called more than
// once; the test's cleanup calls it too.
func (g *SentinelGroup) Stop() { g.procs.stop() }
