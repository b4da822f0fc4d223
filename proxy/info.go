package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"syscall"
	"time"

	"github.com/sidecache/sidecache/l1"

	"github.com/sidecache/sidecache/l2store/commands"
)

// infoSections are INFO's sections in the order Redis prints them, with
// the tiers' section last. All are in the default set.
var infoSections = []string{"server", "clients", "memory", "persistence", "stats", "replication", "cpu", "keyspace", "sidecache"}

// runID identifies this process like Redis's run_id.
var runID = func() string {
	var b [20]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

// cmdInfo answers INFO [section ...] with Redis's sections and field names,
// plus a "sidecache" section for the tiers.
func (s *Server) cmdInfo(c *client, _ *commands.Meta, args [][]byte) {
	want := map[string]bool{}
	if len(args) == 1 {
		for _, n := range infoSections {
			want[n] = true
		}
	}
	for _, a := range args[1:] {
		switch n := strings.ToLower(cstring(a, -1)); n {
		case "all", "everything", "default":
			for _, n := range infoSections {
				want[n] = true
			}
		default:
			want[n] = true
		}
	}
	var b strings.Builder
	for _, sec := range infoSections {
		if !want[sec] {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		s.infoSection(&b, sec)
	}
	c.writeReply(verbatim([]byte(b.String())))
}

func (s *Server) infoSection(b *strings.Builder, sec string) {
	field := func(name string, v any) { fmt.Fprintf(b, "%s:%v\r\n", name, v) }
	now := s.cfg.Now()
	switch sec {
	case "server":
		b.WriteString("# Server\r\n")
		uptime := int64(now.Sub(s.started).Seconds())
		port := ""
		if a := s.Addr(); a != nil {
			if i := strings.LastIndexByte(a.String(), ':'); i >= 0 {
				port = a.String()[i+1:]
			}
		}
		var uts syscall.Utsname
		syscall.Uname(&uts)
		exe, _ := os.Executable()
		field("redis_version", RedisVersion)
		field("redis_git_sha1", "00000000")
		field("redis_git_dirty", 0)
		field("redis_mode", "standalone")
		field("os", utsString(uts.Sysname[:])+" "+utsString(uts.Release[:])+" "+utsString(uts.Machine[:]))
		field("arch_bits", 64)
		field("multiplexing_api", "epoll")
		field("process_id", os.Getpid())
		field("run_id", runID)
		field("tcp_port", port)
		field("server_time_usec", now.UnixMicro())
		field("uptime_in_seconds", uptime)
		field("uptime_in_days", uptime/86400)
		field("hz", 10)
		field("executable", exe)
		field("config_file", "")
		field("sidecache_version", s.cfg.Version)
		field("go_version", runtime.Version())
	case "clients":
		b.WriteString("# Clients\r\n")
		s.mu.Lock()
		n := len(s.clients)
		s.mu.Unlock()
		field("connected_clients", n)
		field("cluster_connections", 0)
		field("maxclients", s.maxClients.Load())
		field("blocked_clients", 0)
		field("tracking_clients", 0)
	case "memory":
		b.WriteString("# Memory\r\n")
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		rss := processRSS()
		l2 := s.store.Stats()
		used := ms.HeapAlloc + ms.StackInuse
		field("used_memory", used)
		field("used_memory_human", bytesToHuman(used))
		field("used_memory_rss", rss)
		field("used_memory_rss_human", bytesToHuman(rss))
		field("used_memory_peak", ms.HeapSys)
		field("used_memory_peak_human", bytesToHuman(ms.HeapSys))
		field("total_system_memory", totalSystemMemory())
		field("maxmemory", l2.MaxBytes)
		field("maxmemory_human", bytesToHuman(uint64(l2.MaxBytes)))
		field("maxmemory_policy", l2.Policy)
		field("mem_allocator", "go")
		field("go_heap_alloc", ms.HeapAlloc)
		field("go_heap_sys", ms.HeapSys)
		field("go_num_gc", ms.NumGC)
		field("go_gc_pause_total_ns", ms.PauseTotalNs)
		field("go_memory_limit", debugMemoryLimit())
	case "persistence":
		b.WriteString("# Persistence\r\n")
		field("loading", 0)
		field("rdb_bgsave_in_progress", 0)
		field("aof_enabled", 0)
	case "stats":
		b.WriteString("# Stats\r\n")
		st := s.statsSnapshot()
		l2 := s.store.Stats()
		field("total_connections_received", s.stats.connections.Load())
		field("total_commands_processed", st.commands)
		field("instantaneous_ops_per_sec", s.stats.ops.perSecond())
		field("rejected_connections", s.stats.rejected.Load())
		field("expired_keys", l2.Expirations)
		field("evicted_keys", l2.Evictions)
		field("keyspace_hits", st.hits())
		field("keyspace_misses", st.misses())
		field("total_error_replies", st.errors)
	case "replication":
		b.WriteString("# Replication\r\n")
		field("role", "master")
		field("connected_slaves", 0)
	case "cpu":
		b.WriteString("# CPU\r\n")
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		field("used_cpu_sys", fmt.Sprintf("%.6f", tvSeconds(ru.Stime)))
		field("used_cpu_user", fmt.Sprintf("%.6f", tvSeconds(ru.Utime)))
	case "keyspace":
		b.WriteString("# Keyspace\r\n")
		if l2 := s.store.Stats(); l2.Keys > 0 {
			field("db0", fmt.Sprintf("keys=%d,expires=%d,avg_ttl=0", l2.Keys, l2.Expires))
		}
	case "sidecache":
		b.WriteString("# Sidecache\r\n")
		var l1 l1.Stats // zero when L1 is off
		l1Enabled := 0
		if s.cache != nil {
			l1, l1Enabled = s.cache.Stats(), 1
		}
		l2 := s.store.Stats()
		field("l1_enabled", l1Enabled)
		field("l1_entries", l1.Entries)
		field("l1_bytes", l1.Bytes)
		field("l1_max_bytes", l1.MaxBytes)
		field("l1_hits", l1.Hits)
		field("l1_misses", l1.Misses)
		field("l1_evictions", l1.Evictions)
		field("l1_expirations", l1.Expirations)
		field("l1_fills_dropped", l1.FillsDropped)
		field("l2_kind", l2.Kind)
		field("l2_keys", l2.Keys)
		field("l2_expires", l2.Expires)
		field("l2_used_bytes", l2.UsedBytes)
		field("l2_max_bytes", l2.MaxBytes)
		field("l2_policy", l2.Policy)
		field("l2_evictions", l2.Evictions)
		field("l2_expirations", l2.Expirations)
		if l2.Upstream != "" {
			field("l2_upstream", l2.Upstream)
			field("l2_mode", l2.Mode)
			field("l2_tracking", l2.Tracking)
		}
		field("l1_stale_served", l1.StaleServed)
		field("l1_revalidations", l1.Revalidations)
		field("l1_refreshes", l1.RefreshesStarted)
		st := s.statsSnapshot()
		for i, name := range readOutcomeNames {
			field(name, st.reads.outcome(readOutcome(i)))
		}
		ok, failed := s.stats.cmds.totals()
		field("requests_ok", ok)
		field("requests_error", failed)
		// sidecache_requests_total and the latency histograms, as in /metrics.
		var reqs []string
		s.requestCounts(func(v uint64, command, outcome string) {
			reqs = append(reqs, fmt.Sprintf("requests_%s_%s:%d", strings.ReplaceAll(command, "|", "_"), outcome, v))
		})
		sort.Strings(reqs)
		for _, line := range reqs {
			b.WriteString(line)
			b.WriteString("\r\n")
		}
		for _, f := range s.latencyFields() {
			field(f.Name, f.Value)
		}
		if s.cfg.Info != nil {
			for _, f := range s.cfg.Info() {
				field(f.Name, f.Value)
			}
		}
		field("process_goroutines", runtime.NumGoroutine())
	}
}

type statsSnapshot struct {
	commands, errors uint64
	reads            readCounters
}

func (st *statsSnapshot) hits() uint64   { return st.reads.hits() }
func (st *statsSnapshot) misses() uint64 { return st.reads.misses() }

// statsSnapshot adds the live clients' counters to the closed ones'.
func (s *Server) statsSnapshot() *statsSnapshot {
	st := &statsSnapshot{
		commands: s.stats.commands.Load(),
		errors:   s.stats.errors.Load(),
	}
	st.reads.add(&s.stats.reads)
	for _, c := range s.snapshotClients() {
		st.commands += c.commands.Load()
		st.errors += c.errors.Load()
		st.reads.add(&c.reads)
	}
	return st
}

// resetStats zeroes the counters CONFIG RESETSTAT resets.
func (s *Server) resetStats() {
	for _, a := range []*atomic.Uint64{&s.stats.connections, &s.stats.rejected, &s.stats.commands, &s.stats.errors} {
		a.Store(0)
	}
	s.stats.reads.reset()
	s.stats.cmds.reset()
	for _, c := range s.snapshotClients() {
		c.commands.Store(0)
		c.errors.Store(0)
		c.reads.reset()
	}
}

// debugMemoryLimit returns the Go runtime's soft memory limit (GOMEMLIMIT).
func debugMemoryLimit() int64 { return debug.SetMemoryLimit(-1) }

func utsString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

func tvSeconds(tv syscall.Timeval) float64 {
	return float64(tv.Sec) + float64(tv.Usec)/1e6
}

// bytesToHuman formats n like Redis's bytesToHuman.
func bytesToHuman(n uint64) string {
	units := []string{"K", "M", "G", "T", "P"}
	if n < 1024 {
		return fmt.Sprintf("%dB", n)
	}
	d := float64(n) / 1024
	for _, u := range units {
		if d < 1024 {
			return fmt.Sprintf("%.2f%s", d, u)
		}
		d /= 1024
	}
	return fmt.Sprintf("%dB", n)
}

// processRSS returns the resident set size from /proc/self/statm, or 0.
func processRSS() uint64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, resident uint64
	fmt.Sscan(string(data), &size, &resident)
	return resident * uint64(os.Getpagesize())
}

func totalSystemMemory() uint64 {
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) != nil {
		return 0
	}
	return si.Totalram * uint64(si.Unit)
}

// opsMeter samples the command count every 100ms, like Redis's
// instantaneous_ops_per_sec (an average over the last 16 samples), and
// keeps a coarse clock for per-client idle times.
type opsMeter struct {
	mu      sync.Mutex
	samples [16]float64
	next    int
	now     atomic.Int64 // Unix seconds
}

func (m *opsMeter) unixSeconds() int64 {
	if t := m.now.Load(); t != 0 {
		return t
	}
	return time.Now().Unix()
}

func (m *opsMeter) run(total func() uint64, done <-chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	last, lastAt := total(), time.Now()
	m.now.Store(lastAt.Unix())
	for {
		select {
		case <-done:
			return
		case at := <-t.C:
			n := total()
			rate := 0.0
			if n >= last { // CONFIG RESETSTAT may have zeroed the counters
				rate = float64(n-last) / at.Sub(lastAt).Seconds()
			}
			last, lastAt = n, at
			m.now.Store(at.Unix())
			m.mu.Lock()
			m.samples[m.next] = rate
			m.next = (m.next + 1) % len(m.samples)
			m.mu.Unlock()
		}
	}
}

func (m *opsMeter) perSecond() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var sum float64
	for _, v := range m.samples {
		sum += v
	}
	return int64(sum / float64(len(m.samples)))
}
