package test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Fault tests: sidecache with a remote L2 behind toxiproxy, under load,
// through the faults of issue 4 (point 7). Each scenario runs a healthy
// phase, breaks the L2, holds the fault while the breaker is open, removes
// it and waits for the breaker to close by itself, then checks:
//   - reads of keys L1 holds (fresh or stale) got their value, never an
//     error;
//   - while the breaker was not closed, origin loads (read-through) or
//     misses handed to clients (cache-aside) stayed within --origin-rate
//     (+10%), and the load did exceed it (something was shed);
//   - the L2 got no reads while the breaker was open beyond the half-open
//     probes, and over the whole run at most one read per client read that
//     missed L1 plus the retry budget (sidecache's l2_reads and redis's own
//     GET count);
//   - the breaker opened with a cause naming the fault, logged it, and
//     closed by itself once the fault was gone;
//   - no goroutine leaks, in sidecache or in the test process.
// Latency is recorded and logged, never asserted.

const (
	// faultHealthyFor is the load before the fault: a full breaker window.
	faultHealthyFor = 2500 * time.Millisecond
	// faultHoldFor is how long the fault stays after the breaker opened.
	faultHoldFor = 1500 * time.Millisecond
	// faultAfterFor is the load after the breaker closed again.
	faultAfterFor = 500 * time.Millisecond
	// faultRefillRate bounds the refill of the L2 from the database after
	// a fault that lost its data, in keys per second.
	faultRefillRate = 200_000
)

// faultScenario is one fault of TestFault.
type faultScenario struct {
	name        string
	readThrough bool
	args        []string
	// dataLoss: the fault loses the L2's data (heal refills it): in
	// cache-aside mode a hot key may then be answered with a miss.
	dataLoss bool
	// restarts: the server process is replaced, so its GET count restarts.
	restarts bool
	cause    *regexp.Regexp // what breaker_cause must say
	inject   func(r *faultRig)
	heal     func(r *faultRig)
}

func TestFault(t *testing.T) {
	if testing.Short() {
		t.Skip("fault scenarios run for several seconds each")
	}
	scenarios := []faultScenario{
		{
			name:        "latency",
			readThrough: true,
			// Replies 100ms late: slow (above 50ms), within the 200ms L2 timeout.
			args:   []string{"--breaker-slow-call", "50ms"},
			cause:  regexp.MustCompile(`(?i)slow`),
			inject: func(r *faultRig) { r.addToxic("latency", "latency", `{"latency":100}`) },
			heal:   func(r *faultRig) { r.removeToxic("latency") },
		},
		{
			// Cache-aside clients SET what they read from their database
			// after a miss: the writes meet the silent L2 too.
			name:   "timeout",
			cause:  regexp.MustCompile(`(?i)time.?out|timed out|deadline|error|fail`),
			inject: func(r *faultRig) { r.addToxic("timeout", "timeout", `{"timeout":0}`) },
			heal:   func(r *faultRig) { r.removeToxic("timeout") },
		},
		{
			// The same with reads only: the origin loads in place of the
			// clients (its write-backs to the L2 are sidecache's).
			name:        "timeout-read-through",
			readThrough: true,
			cause:       regexp.MustCompile(`(?i)time.?out|timed out|deadline|error|fail`),
			inject:      func(r *faultRig) { r.addToxic("timeout", "timeout", `{"timeout":0}`) },
			heal:        func(r *faultRig) { r.removeToxic("timeout") },
		},
		{
			name:        "reset",
			readThrough: true,
			cause:       regexp.MustCompile(`(?i)error|fail|reset|connection|EOF`),
			inject:      func(r *faultRig) { r.addToxic("reset", "reset_peer", `{"timeout":0}`) },
			heal:        func(r *faultRig) { r.removeToxic("reset") },
		},
		{
			name:     "kill-restart",
			dataLoss: true,
			restarts: true,
			cause:    regexp.MustCompile(`(?i)error|fail|refused|connection|EOF|unavailable`),
			inject:   func(r *faultRig) { r.killRedis() },
			heal: func(r *faultRig) {
				r.restartRedis()
				r.loadL2(0, faultKeys, faultRefillRate)
			},
		},
		{
			name:        "flush",
			readThrough: true,
			dataLoss:    true,
			cause:       regexp.MustCompile(`(?i)hit`),
			inject:      func(r *faultRig) { r.flushRedis() },
			heal:        func(r *faultRig) { r.loadL2(0, faultKeys, faultRefillRate) },
		},
	}
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) { runFaultScenario(t, s) })
	}
}

// faultTimeline is what runFaultPhases saw.
type faultTimeline struct {
	first, preFault, last infoSample // before the load, before the fault, after the load
	samples               []infoSample
	opened, healed        time.Time
	closed                time.Time
	cause                 string
}

// runFaultPhases runs the load through a healthy phase, the fault (inject),
// its removal (heal) and the breaker closing again, and returns what it saw.
func runFaultPhases(t *testing.T, r *faultRig, load func() *loadGen, inject, heal func()) (*loadGen, faultTimeline) {
	t.Helper()
	var tl faultTimeline
	tl.first = infoSample{at: time.Now(), f: r.info()}
	smp := startSampler(t, r.sc.Addr, r.redis.Addr)
	g := load()
	summarized := false
	defer func() {
		if !summarized {
			g.Stop()
			t.Logf("load (the run stopped early): %s", g.summary())
		}
	}()
	f := r.waitInfo(10*time.Second, "healthy load", func(f map[string]string) bool {
		return time.Since(g.started) >= faultHealthyFor
	})
	if f["breaker_state"] != "closed" || r.infoInt(f, "breaker_opens") != 0 {
		t.Fatalf("the breaker opened before any fault: state %s, cause %q; load: %s",
			f["breaker_state"], f["breaker_cause"], g.summary())
	}
	if r.infoInt(f, "l2_reads") == r.infoInt(tl.first.f, "l2_reads") {
		t.Fatalf("the healthy load made no L2 reads")
	}
	tl.preFault = infoSample{at: time.Now(), f: f}
	inject()
	f = r.waitInfo(10*time.Second, "breaker to open after the fault", func(f map[string]string) bool {
		return r.infoInt(f, "breaker_opens") > 0
	})
	tl.opened, tl.cause = time.Now(), f["breaker_cause"]
	r.waitInfo(10*time.Second, "fault held", func(map[string]string) bool { return time.Since(tl.opened) >= faultHoldFor })
	heal()
	tl.healed = time.Now()
	r.waitInfo(20*time.Second, "breaker to close by itself after the fault was removed", func(f map[string]string) bool {
		return f["breaker_state"] == "closed" && r.infoInt(f, "breaker_closes") > 0
	})
	tl.closed = time.Now()
	r.waitInfo(10*time.Second, "load after recovery", func(map[string]string) bool { return time.Since(tl.closed) >= faultAfterFor })
	g.Stop()
	tl.samples = smp.Stop()
	tl.last = infoSample{at: time.Now(), f: r.info()}
	if errs := smp.errors(); len(errs) > 0 {
		t.Errorf("INFO sidecache failed %d times during the run; first: %v", len(errs), errs[0])
	}
	t.Logf("timeline from the load's start: fault +%v, opened +%v (cause %q), healed +%v, closed +%v; breaker_opens %s, breaker_closes %s",
		tl.preFault.at.Sub(g.started).Round(time.Millisecond), tl.opened.Sub(g.started).Round(time.Millisecond), tl.cause,
		tl.healed.Sub(g.started).Round(time.Millisecond), tl.closed.Sub(g.started).Round(time.Millisecond),
		tl.last.f["breaker_opens"], tl.last.f["breaker_closes"])
	t.Logf("load: %s", g.summary())
	summarized = true
	return g, tl
}

// checkBreakerCause checks that the breaker's cause names the fault and
// that sidecache logged it.
func checkBreakerCause(t *testing.T, r *faultRig, cause string, want *regexp.Regexp) {
	t.Helper()
	if !want.MatchString(cause) {
		t.Errorf("breaker_cause after the fault = %q, want it to match %v", cause, want)
	}
	if cause == "" {
		return
	}
	for _, line := range strings.Split(r.sc.Stderr(), "\n") {
		var entry struct {
			Msg   string `json:"msg"`
			Cause string `json:"cause"`
		}
		if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "breaker opened" && entry.Cause == cause {
			return
		}
	}
	t.Errorf("no \"breaker opened\" line with cause %q in sidecache's log", cause)
}

// checkFailing checks the failing stretches: the rate limit on what passed
// to the origin or the database, that the load exceeded it, and no L2 reads
// while open.
func checkFailing(t *testing.T, r *faultRig, tl faultTimeline, workers int) {
	t.Helper()
	runs := failingRuns(tl.samples)
	if len(runs) == 0 {
		t.Fatalf("no INFO sample saw the breaker open")
	}
	var n int
	var d time.Duration
	if r.origin != nil {
		n, d = checkPacing(t, runs, "origin loads", r.origin.times(), "origin_loads")
		key, loads := r.origin.maxPerKey()
		t.Logf("origin: %d loads in all, at most %d of one key (%s)", len(r.origin.times()), loads, key)
	} else {
		n, d = checkPacing(t, runs, "database reads after a miss", r.db.times(), "reads_miss")
	}
	var shed int64
	for _, run := range runs {
		shed += run.to.int("reads_shed") - run.from.int("reads_shed")
	}
	t.Logf("while failing (%d stretches, %v): %d origin loads or database reads, %d reads shed", len(runs), d.Round(time.Millisecond), n, shed)
	if shed == 0 {
		t.Errorf("no read was shed while the breaker was not closed: the load never exceeded --origin-rate, so the rate check proved nothing")
	}
	checkNoL2WhileOpen(t, runs, workers)
}

func runFaultScenario(t *testing.T, s faultScenario) {
	checkTestGoroutines(t)
	r := startFaultRig(t, rigOptions{ReadThrough: s.readThrough, Args: s.args})
	goroutines := r.infoInt(r.info(), "process_goroutines")
	redisGets := r.redisGetCalls()
	cfg := loadConfig{
		Workers:    faultWorkers,
		HotPct:     50,
		CacheAside: !s.readThrough,
		// In read-through mode a key the L2 lost is loaded from the
		// origin: hot keys still get their value.
		StrictHot: !s.dataLoss || s.readThrough,
	}
	g, tl := runFaultPhases(t, r, func() *loadGen { return startLoad(t, r.sc, r.db, cfg) },
		func() { s.inject(r) }, func() { s.heal(r) })

	g.check(t)
	checkReadsCounted(t, tl.first, tl.last, g)
	checkBreakerCause(t, r, tl.cause, s.cause)
	checkFailing(t, r, tl, cfg.Workers)
	if s.restarts {
		// The new server counted only its own GETs: compare with the reads
		// since before the fault.
		checkRetryBudget(t, tl.preFault, tl.last, r.redisGetCalls())
		checkRetryBudget(t, tl.first, tl.last, -1)
	} else {
		checkRetryBudget(t, tl.first, tl.last, r.redisGetCalls()-redisGets)
	}
	if st := tl.last.f["breaker_state"]; st != "closed" {
		t.Errorf("breaker_state after the load = %s (cause %q), want closed", st, tl.last.f["breaker_cause"])
	}
	r.checkSidecacheGoroutines(goroutines)
}

// TestIncidentHitRateCollapse replays the incident: cache-aside clients at
// full speed, retrying three times on an error reply, read keys the L2
// answers 98% of the time (hot ones L1 holds, cold ones only the L2 has,
// and 1% new ones nobody has); the L2 restarts empty under that load.
// Sidecache must keep answering keys L1 held (stale or fresh), refuse the
// rest with TRYAGAIN beyond --origin-rate so that the database sees at most
// that many reads per second while the breaker is not closed, not let the
// clients' retries multiply the L2's or the database's load, open the
// breaker on the hit rate and close it once the L2 is refilled (from the
// test's database, at a bounded rate), and leak nothing.
func TestIncidentHitRateCollapse(t *testing.T) {
	if testing.Short() {
		t.Skip("the incident replay runs for several seconds")
	}
	checkTestGoroutines(t)
	r := startFaultRig(t, rigOptions{})
	goroutines := r.infoInt(r.info(), "process_goroutines")
	cfg := loadConfig{
		Workers:    faultWorkers,
		HotPct:     50,
		NewPct:     1, // of the reads that reach the L2, 49 of 50 (98%) hit
		CacheAside: true,
		Retries:    3,
	}
	var dbBefore int
	var killed time.Time
	g, tl := runFaultPhases(t, r, func() *loadGen { return startLoad(t, r.sc, r.db, cfg) },
		func() {
			dbBefore, killed = len(r.db.times()), time.Now()
			r.killRedis()
			r.restartRedis()
		},
		func() { r.loadL2(0, faultKeys, faultRefillRate) })

	g.check(t)
	checkReadsCounted(t, tl.first, tl.last, g)
	// Killed, the L2 first fails (an opening for errors, if the breaker
	// sees the failures before the restart), then answers empty: the
	// breaker must see the hit rate collapse.
	checkBreakerCause(t, r, tl.cause, regexp.MustCompile(`(?i)hit|error ratio`))
	if n := tl.last.int("breaker_opens_hit_rate"); n == 0 {
		t.Errorf("breaker_opens_hit_rate = 0: the breaker never opened for the hit-rate collapse (causes: %q)", tl.cause)
	}
	checkFailing(t, r, tl, cfg.Workers)

	// The database must see at most --origin-rate reads a second from the
	// restart on, the time the breaker takes to see the hit rate fall
	// included: that takes --breaker-min-requests misses (the last ones
	// judged alone), plus the reads in flight on each worker.
	runs := failingRuns(tl.samples)
	db := r.db.times()
	detect := countIn(db, killed, runs[0].from.at)
	top := checkPerSecond(t, "database reads after a miss, from the L2's restart on", db, killed, tl.last.at, faultMinRequests+cfg.Workers)
	t.Logf("database reads: %d before the restart (%.0f/s), %d between the restart and the first open sample (%v), at most %d in one second after the restart, %d in all",
		dbBefore, float64(dbBefore)/killed.Sub(g.started).Seconds(), detect, runs[0].from.at.Sub(killed).Round(time.Millisecond), top, len(db))

	// Retries: sidecache sees every attempt as a read, so its L2 reads are
	// held to one per attempt that missed L1 plus the budget, and the new
	// server's own GET count to the same bound.
	checkRetryBudget(t, tl.preFault, tl.last, r.redisGetCalls())
	checkRetryBudget(t, tl.first, tl.last, -1)
	if n := g.count(classCold, outTryAgain) + g.count(classNew, outTryAgain); n == 0 {
		t.Errorf("no TRYAGAIN for keys L1 did not hold: the origin rate limit was never reached")
	} else {
		t.Logf("TRYAGAIN replies for keys L1 did not hold: %d", n)
	}
	if st := tl.last.f["breaker_state"]; st != "closed" {
		t.Errorf("breaker_state after the load = %s (cause %q), want closed", st, tl.last.f["breaker_cause"])
	}
	r.checkSidecacheGoroutines(goroutines)
}
