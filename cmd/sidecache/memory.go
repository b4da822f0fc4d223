package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sidecache/sidecache/proxy"
)

// Memory safety.
//
// The process's memory limit is the Go runtime's soft limit (GOMEMLIMIT):
// --memory-limit if given, else the GOMEMLIMIT environment variable, else
// cgroupRatio of the container's cgroup memory limit (read with
// automemlimit), else none. At start, the tiers' budgets plus a headroom
// for everything else must fit in it (checkBudgets); while running, a
// guard refuses writes with Redis's -OOM error when live memory nears it
// (memoryGuard); and each connection's replies are bounded
// (--client-output-buffer-limit, --client-output-timeout; proxy/output.go).

// cgroupRatio is the share of the cgroup's memory limit given to the Go
// runtime: the rest is for what the runtime does not count (the binary's
// text, thread stacks of cgo-free Go are counted; the kernel's socket
// buffers, which cgroup v2 charges to the container, are not).
const cgroupRatio = 0.9

// Headroom: the memory the process needs besides the L1 and embedded L2
// budgets. Measured on linux/amd64 with Go 1.26 (see README "Memory"):
// the process idles at 11 MiB RSS with empty tiers; each connection costs
// 8.5 KiB idle and 27.5 KiB once it has run commands (a 16 KiB request
// buffer, redcon's 4 KiB reader, its goroutine's stack). The base adds
// room for garbage between collections and for replies in flight.
const (
	headroomBase      = 64 << 20
	headroomPerClient = 32 << 10
)

// headroom is the memory reserved besides the budgets, for maxClients
// connections.
func headroom(maxClients int) int64 {
	return headroomBase + int64(maxClients)*headroomPerClient
}

// oomFraction: writes are refused while live memory is above this share
// of the limit. Above it the collector, held to the limit, has less than
// 5% of it for garbage and runs almost without pause.
const oomFraction = 0.95

// guardInterval is how often the guard reads the runtime's memory figures.
const guardInterval = 100 * time.Millisecond

// errMemoryBudget is wrapped by setup's refusal of budgets that do not fit
// the memory limit: a configuration error (exit status 2).
var errMemoryBudget = errors.New("memory budgets exceed the memory limit")

// memoryConfig configures the process memory limit, checks the tiers'
// budgets against it, and bounds client output buffers.
type memoryConfig struct {
	Limit               int64         // --memory-limit; 0: GOMEMLIMIT, the cgroup, or none
	ClientOutputLimit   int64         // --client-output-buffer-limit; 0 none
	ClientOutputTimeout time.Duration // --client-output-timeout; 0 never

	// Set by setup.
	limit  int64  // the limit in force, 0 none
	source string // where it came from
	need   int64  // budgets plus headroom
	guard  *memoryGuard
}

// Defaults of the client output bounds.
const (
	defaultClientOutputLimit   = 64 << 20
	defaultClientOutputTimeout = 30 * time.Second
)

func (c *memoryConfig) flags(fs *flag.FlagSet) {
	sizeVar(fs, &c.Limit, "memory-limit", 0, "the process's memory limit (Go's GOMEMLIMIT); 0: the GOMEMLIMIT variable, else 90% of the container's cgroup memory limit, else none. The L1 and embedded L2 budgets plus a headroom must fit in it")
	sizeVar(fs, &c.ClientOutputLimit, "client-output-buffer-limit", defaultClientOutputLimit, "close a client whose pending replies exceed this many bytes (Redis's client-output-buffer-limit normal hard limit); 0 none")
	fs.DurationVar(&c.ClientOutputTimeout, "client-output-timeout", defaultClientOutputTimeout, "close a client that takes less than 64 KiB of its pending replies in this long (it stopped reading); 0 never")
}

func (c *memoryConfig) validate() error {
	switch {
	case c.Limit < 0:
		return fmt.Errorf("--memory-limit %d: must not be negative", c.Limit)
	case c.ClientOutputLimit < 0:
		return fmt.Errorf("--client-output-buffer-limit %d: must not be negative", c.ClientOutputLimit)
	case c.ClientOutputTimeout < 0:
		return fmt.Errorf("--client-output-timeout %v: must not be negative", c.ClientOutputTimeout)
	}
	return nil
}

// setup runs before the tiers are built: it sets the Go memory limit,
// refuses budgets that do not fit, and arms the -OOM guard. The limit and
// its source are logged with "sidecache starting" (MarshalLogObject).
func (c *memoryConfig) setup(cfg *config, log *zap.Logger) error {
	lim := resolveMemoryLimit(c.Limit, os.LookupEnv, memlimit.FromCgroup)
	if lim.set {
		debug.SetMemoryLimit(lim.bytes)
	}
	c.limit, c.source = lim.bytes, lim.source
	c.need = budgets(cfg).total()
	if err := budgets(cfg).check(lim); err != nil {
		return err
	}
	if lim.bytes > 0 {
		c.guard = newMemoryGuard(uint64(oomFraction*float64(lim.bytes)), readLiveMemory, time.Now, log)
	}
	return nil
}

// MarshalLogObject writes the limit in force, its source, what the budgets
// and headroom need, and the -OOM threshold, for the "sidecache starting"
// line. (setup logs nothing itself: a refused start prints one line.)
func (c *memoryConfig) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddInt64("limit_bytes", c.limit)
	enc.AddString("limit_source", c.source)
	enc.AddInt64("budgets_and_headroom_bytes", c.need)
	if c.guard != nil {
		enc.AddUint64("oom_above_live_bytes", c.guard.threshold)
	}
	enc.AddInt64("client_output_buffer_limit", c.ClientOutputLimit)
	enc.AddDuration("client_output_timeout", c.ClientOutputTimeout)
	return nil
}

// apply sets the proxy's per-connection memory bounds and the -OOM guard.
func (c *memoryConfig) apply(pc *proxy.Config) error {
	pc.ClientOutputBufferLimit = c.ClientOutputLimit
	pc.ClientOutputTimeout = c.ClientOutputTimeout
	if c.guard != nil {
		pc.OverMemory = c.guard.over
	}
	return nil
}

// memoryLimit is the limit in force and where it came from.
type memoryLimit struct {
	bytes  int64  // 0: none
	source string // for the log and the refusal
	set    bool   // setup must set it (the runtime has GOMEMLIMIT already)
}

// resolveMemoryLimit picks the limit: the flag, else GOMEMLIMIT (which the
// runtime has applied), else cgroupRatio of the cgroup's limit.
func resolveMemoryLimit(flagLimit int64, lookupEnv func(string) (string, bool), cgroup func() (uint64, error)) memoryLimit {
	if flagLimit > 0 {
		return memoryLimit{bytes: flagLimit, source: "--memory-limit", set: true}
	}
	if v, ok := lookupEnv("GOMEMLIMIT"); ok {
		n := debug.SetMemoryLimit(-1)
		if n <= 0 || n == math.MaxInt64 {
			return memoryLimit{source: "GOMEMLIMIT=" + v}
		}
		return memoryLimit{bytes: n, source: "GOMEMLIMIT=" + v}
	}
	cg, err := cgroup()
	if err != nil || cg == 0 || cg >= math.MaxInt64/2 {
		reason := "no GOMEMLIMIT and no cgroup memory limit"
		if err != nil && !errors.Is(err, memlimit.ErrNoLimit) {
			reason += " (" + err.Error() + ")"
		}
		return memoryLimit{source: reason}
	}
	return memoryLimit{
		bytes:  int64(cgroupRatio * float64(cg)),
		source: fmt.Sprintf("cgroup memory limit %s x %v", formatBytes(int64(cg)), cgroupRatio),
		set:    true,
	}
}

// budgetSum is what the configuration needs from the memory limit.
type budgetSum struct {
	l1, l2     int64 // budgets; l2 is 0 for a remote L2
	maxClients int
}

func budgets(cfg *config) budgetSum {
	b := budgetSum{l1: cfg.L1MaxBytes, maxClients: cfg.MaxClients}
	if cfg.L2 == "" {
		b.l2 = cfg.L2MaxBytes
	}
	return b
}

func (b budgetSum) total() int64 { return b.l1 + b.l2 + headroom(b.maxClients) }

// check refuses budgets that do not fit the limit, naming every term.
func (b budgetSum) check(lim memoryLimit) error {
	if lim.bytes == 0 || b.total() <= lim.bytes {
		return nil
	}
	l2 := ""
	if b.l2 > 0 {
		l2 = fmt.Sprintf(" + --l2-max-bytes %s", formatBytes(b.l2))
	}
	return fmt.Errorf("%w: --l1-max-bytes %s%s + headroom %s (%s + %d --maxclients x %s) = %s > memory limit %s (%s); lower the budgets or --maxclients, or raise the limit",
		errMemoryBudget, formatBytes(b.l1), l2, formatBytes(headroom(b.maxClients)),
		formatBytes(headroomBase), b.maxClients, formatBytes(headroomPerClient),
		formatBytes(b.total()), formatBytes(lim.bytes), lim.source)
}

// formatBytes writes n in Redis's binary units: whole gb or mb, else mb
// to one decimal, else kb or bytes, e.g. 1gb, 64mb, 376.5mb, 32kb.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "gb"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "mb"
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + "mb"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "kb"
	}
	return strconv.FormatInt(n, 10) + "b"
}

// memoryGuard tells the proxy when to refuse writes: when live memory is
// above a threshold. It reads the runtime's figures at most every
// guardInterval, on the caller's goroutine (no goroutine of its own), and
// logs when it starts and stops refusing.
type memoryGuard struct {
	threshold uint64
	read      func() uint64
	now       func() time.Time
	log       *zap.Logger

	next    atomic.Int64 // UnixNano of the next reading
	refused atomic.Bool
	mu      sync.Mutex // one reader at a time
}

func newMemoryGuard(threshold uint64, read func() uint64, now func() time.Time, log *zap.Logger) *memoryGuard {
	return &memoryGuard{threshold: threshold, read: read, now: now, log: log}
}

// over reports whether writes are refused.
func (g *memoryGuard) over() bool {
	now := g.now().UnixNano()
	if now < g.next.Load() || !g.mu.TryLock() {
		return g.refused.Load()
	}
	g.next.Store(now + int64(guardInterval))
	live := g.read()
	over := live > g.threshold
	was := g.refused.Swap(over)
	g.mu.Unlock()
	switch {
	case over && !was:
		g.log.Warn("memory nearly exhausted: refusing writes with -OOM", zap.Uint64("live_bytes", live), zap.Uint64("threshold_bytes", g.threshold))
	case !over && was:
		g.log.Info("memory below the threshold again: accepting writes", zap.Uint64("live_bytes", live), zap.Uint64("threshold_bytes", g.threshold))
	}
	return over
}

// liveMetrics are the runtime figures readLiveMemory combines.
var liveMetrics = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
}

// readLiveMemory returns the memory the process needs: the heap's live
// objects at the last collection, plus what the runtime maps besides the
// heap's objects and free pages (stacks, metadata, fragmentation). Unlike
// the heap's size, it does not count garbage, which the collector reclaims
// when the heap nears the limit.
func readLiveMemory() uint64 {
	s := make([]metrics.Sample, len(liveMetrics))
	for i, name := range liveMetrics {
		s[i].Name = name
	}
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	live, total, objects, free, released := v(0), v(1), v(2), v(3), v(4)
	other := total - min(total, objects+free+released)
	return live + other
}
