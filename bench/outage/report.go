package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// goalP99 is the goal for reads served from L1 during the outage.
const goalP99 = time.Millisecond

// Phases of the scenario, by when a read started.
const (
	phaseBefore = "before"
	phaseOutage = "outage"
	phaseAfter  = "after"
)

var phases = []string{phaseBefore, phaseOutage, phaseAfter}

// phaseOf returns the phase of a moment of the load: before -kill-at,
// the outage until -restore-at, after from then on.
func phaseOf(at time.Duration, cfg *config) string {
	switch {
	case at < cfg.killAt:
		return phaseBefore
	case at < cfg.restoreAt:
		return phaseOutage
	}
	return phaseAfter
}

// stats sums the samples of one second or one phase.
type stats struct {
	reads, errs, hotErrs, tryAgain, wrong, nils int
	fills, fillErrs                             int
	hotReads                                    int             // reads on hot keys
	lat                                         []time.Duration // every read
	hotLat                                      []time.Duration // hot-key reads answered with the value
	fillLat                                     []time.Duration // cache-aside fills (SETs after a nil)
}

func (s *stats) add(x sample) {
	if x.fill {
		s.fills++
		s.fillLat = append(s.fillLat, x.lat)
		if x.out.isError() {
			s.fillErrs++
		}
		return
	}
	s.reads++
	s.lat = append(s.lat, x.lat)
	if x.hot {
		s.hotReads++
	}
	switch {
	case x.out == outNil:
		s.nils++
	case x.out == outValue && x.hot:
		s.hotLat = append(s.hotLat, x.lat)
	case x.out.isError():
		s.errs++
		if x.hot {
			s.hotErrs++
		}
		switch x.out {
		case outTryAgain:
			s.tryAgain++
		case outWrong:
			s.wrong++
		}
	}
}

// sortLat sorts the latencies, for quantile.
func (s *stats) sortLat() {
	slices.Sort(s.lat)
	slices.Sort(s.hotLat)
	slices.Sort(s.fillLat)
}

// quantile returns the q-quantile of sorted by the nearest-rank method,
// and false for an empty slice.
func quantile(sorted []time.Duration, q float64) (time.Duration, bool) {
	if len(sorted) == 0 {
		return 0, false
	}
	i := int(float64(len(sorted))*q+0.999999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)], true
}

// ms formats the q-quantile of sorted in milliseconds, "-" when empty.
func ms(sorted []time.Duration, q float64) string {
	d, ok := quantile(sorted, q)
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond))
}

// perSecond sums the samples into one stats per second of the load (by
// start), and per phase.
func perSecond(samples []sample, seconds int, cfg *config) ([]stats, map[string]*stats) {
	secs := make([]stats, seconds)
	byPhase := map[string]*stats{}
	for _, p := range phases {
		byPhase[p] = &stats{}
	}
	for _, x := range samples {
		if k := int(x.start / time.Second); k >= 0 && k < seconds {
			secs[k].add(x)
		}
		if x.start >= 0 {
			byPhase[phaseOf(x.start, cfg)].add(x)
		}
	}
	for i := range secs {
		secs[i].sortLat()
	}
	for _, p := range byPhase {
		p.sortLat()
	}
	return secs, byPhase
}

// counter returns an INFO field as a number.
func counter(f map[string]string, name string) (int64, bool) {
	v, ok := f[name]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	return n, err == nil
}

// delta returns counter name at b minus at a, as text ("-" if either
// snapshot lacks it).
func delta(a, b snapshot, name string) string {
	x, ok1 := counter(a.fields, name)
	y, ok2 := counter(b.fields, name)
	if !ok1 || !ok2 {
		return "-"
	}
	return strconv.FormatInt(y-x, 10)
}

// report prints the tables of one run.
type report struct {
	cfg    *config
	args   []string // sidecache's command line
	run    *runResult
	warm   warmResult
	g0, g1 int64
	setup  []string
}

// origin returns the origin fallbacks between two snapshots: the HTTP
// origin's loads in read-through mode, reads_miss (misses handed to the
// clients to load) in cache-aside mode.
func (r *report) origin(a, b snapshot) string {
	if r.cfg.mode == modeReadThrough {
		return strconv.FormatInt(b.originLoads-a.originLoads, 10)
	}
	return delta(a, b, "reads_miss")
}

// firstNotClosed returns the first second k in [from, to) whose snapshot
// (taken as it began) shows the breaker in a state other than closed.
func (r *report) firstNotClosed(from, to int) (int, bool) {
	for k := from; k < to; k++ {
		if st, ok := r.snap(k).fields["breaker_state"]; ok && st != "closed" {
			return k, true
		}
	}
	return 0, false
}

// snap returns the snapshot at second k, or an empty one.
func (r *report) snap(k int) snapshot {
	if k < 0 || k >= len(r.run.snaps) {
		return snapshot{}
	}
	return r.run.snaps[k]
}

func (r *report) write(w io.Writer) {
	cfg := r.cfg
	seconds := int(cfg.duration / time.Second)
	kill, restore := int(cfg.killAt/time.Second), int(cfg.restoreAt/time.Second)
	secs, byPhase := perSecond(r.run.samples, seconds, cfg)

	fmt.Fprintf(w, "## sidecache bench/outage, %s\n\n", time.Now().UTC().Format("2006-01-02T15:04Z"))
	for _, l := range r.setup {
		fmt.Fprintf(w, "- %s\n", l)
	}
	pace := fmt.Sprintf("paced to %d reads/s in all", cfg.rate)
	if cfg.rate == 0 {
		pace = "closed loop"
	}
	fmt.Fprintf(w, "- load: %d connections, one GET in flight on each, %s, for %d s; %.0f%% of reads on %d hot keys (written and read through sidecache before, so in L1), the rest on %d cold keys read in turn (written into the redis-server only); %d-byte values\n",
		cfg.conns, pace, seconds, 100*cfg.hotShare, cfg.hotKeys, cfg.coldKeys, cfg.valueSize)
	if cfg.mode == modeCacheAside {
		fmt.Fprintf(w, "- mode: cache-aside: a client that gets nil SETs the value through sidecache; TRYAGAIN is not filled\n")
	} else {
		fmt.Fprintf(w, "- mode: read-through: sidecache loads misses from an HTTP origin (200 with Cache-Control max-age=%d)\n", int(cfg.originMaxAge/time.Second))
	}
	fmt.Fprintf(w, "- outage: redis-server SIGKILLed at %.3f s, started again (empty, same port) at %.3f s, answering PING at %.3f s\n",
		r.run.killed.Seconds(), r.run.restarted.Seconds(), r.run.ready.Seconds())
	fmt.Fprintf(w, "- sidecache %s\n", strings.Join(r.args, " "))
	fmt.Fprintln(w)

	fmt.Fprintln(w, "| s | phase | rps | err hot | err all | TRYAGAIN | nil | stale | origin | shed | p99 ms | p99 hot ms | fill p99 ms | breaker |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for k := range seconds {
		a, b := r.snap(k), r.snap(k+1)
		st := &secs[k]
		state := b.fields["breaker_state"]
		if state == "" {
			state = "-"
		}
		if o := delta(a, b, "breaker_opens"); o != "-" && o != "0" {
			state += " (opened " + o + "x)"
		}
		fmt.Fprintf(w, "| %d | %s | %d | %d | %d | %d | %d | %s | %s | %s | %s | %s | %s | %s |\n",
			k, phaseOf(time.Duration(k)*time.Second, cfg), st.reads, st.hotErrs, st.errs, st.tryAgain, st.nils,
			delta(a, b, "reads_stale"), r.origin(a, b), delta(a, b, "reads_shed"),
			ms(st.lat, 0.99), ms(st.hotLat, 0.99), ms(st.fillLat, 0.99), state)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "rps: reads started in that second; err: error replies (TRYAGAIN included), wrong values and timeouts or lost connections;")
	fmt.Fprintln(w, "stale, shed: INFO sidecache reads_stale, reads_shed during the second; origin: "+r.originNote()+";")
	fmt.Fprintln(w, "p99: of every read; p99 hot: of hot-key reads answered with the value (from L1: the hot keys were put there); fill p99: of the cache-aside SETs")
	fmt.Fprintln(w, "after a nil (not reads; a connection sends no read meanwhile); breaker: breaker_state at the end of the second.")
	fmt.Fprintln(w)

	// One row per phase.
	bounds := map[string][2]int{phaseBefore: {0, kill}, phaseOutage: {kill, restore}, phaseAfter: {restore, seconds}}
	fmt.Fprintln(w, "| phase | seconds | reads/s | err hot | err all | TRYAGAIN | wrong | nil | fills (failed) | fill p99 ms | fill max ms | stale | origin | shed | p50 ms | p99 ms | p99 hot ms | p99.9 hot ms | max hot ms |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, p := range phases {
		st, bd := byPhase[p], bounds[p]
		a, b := r.snap(bd[0]), r.snap(bd[1])
		fmt.Fprintf(w, "| %s | %d-%d | %.0f | %d | %d | %d | %d | %d | %d (%d) | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			p, bd[0], bd[1], float64(st.reads)/float64(bd[1]-bd[0]), st.hotErrs, st.errs, st.tryAgain, st.wrong, st.nils,
			st.fills, st.fillErrs, ms(st.fillLat, 0.99), ms(st.fillLat, 1), delta(a, b, "reads_stale"), r.origin(a, b), delta(a, b, "reads_shed"),
			ms(st.lat, 0.5), ms(st.lat, 0.99), ms(st.hotLat, 0.99), ms(st.hotLat, 0.999), ms(st.hotLat, 1))
	}
	fmt.Fprintln(w)

	// The goals.
	out := byPhase[phaseOutage]
	var hotErrsRun int
	for _, p := range byPhase {
		hotErrsRun += p.hotErrs
	}
	fmt.Fprintf(w, "Goals, over the outage (%d s to %d s):\n\n", kill, restore)
	if p99, ok := quantile(out.hotLat, 0.99); ok {
		fmt.Fprintf(w, "- p99 of hot-key reads served (from L1) during the outage: %.3f ms over %d reads < 1 ms: %s.\n",
			float64(p99)/float64(time.Millisecond), len(out.hotLat), metIf(p99 < goalP99))
	} else {
		fmt.Fprintln(w, "- p99 of hot-key reads served (from L1) during the outage: none was served: NOT met.")
	}
	fmt.Fprintf(w, "- errors on hot keys during the outage: %d of %d hot-key reads (goal 0): %s. Over the whole run: %d.\n",
		out.hotErrs, out.hotReads, metIf(out.hotErrs == 0 && out.hotReads > 0), hotErrsRun)
	if k, ok := r.firstNotClosed(kill, restore); ok {
		var early, late []time.Duration
		for i := kill; i < restore; i++ {
			if i < k {
				early = append(early, secs[i].hotLat...)
			} else {
				late = append(late, secs[i].hotLat...)
			}
		}
		slices.Sort(early)
		slices.Sort(late)
		fmt.Fprintf(w, "- for reference: the breaker had left closed by second %d; hot-key reads served from then to the restart: p99 %s ms over %d reads; before then (seconds %d to %d): p99 %s ms, max %s ms over %d reads.\n",
			k, ms(late, 0.99), len(late), kill, k-1, ms(early, 0.99), ms(early, 1), len(early))
	}
	fmt.Fprintln(w)

	// Checks that the run measured what it claims.
	fmt.Fprintln(w, "Checks:")
	fmt.Fprintln(w)
	if r.warm.hotL1Hits >= 0 {
		fmt.Fprintf(w, "- warm-up: %d of %d hot keys were L1 hits on the second read pass.\n", r.warm.hotL1Hits, cfg.hotKeys)
	} else {
		fmt.Fprintln(w, "- warm-up: INFO sidecache has no l1_hits: not checked that L1 held the hot keys.")
	}
	fmt.Fprintf(w, "- stale answers during the outage (reads_stale): %s; hot-key reads served then: %d (0 stale answers would mean the outage never reached L1's stale path).\n",
		delta(r.snap(kill), r.snap(restore), "reads_stale"), len(out.hotLat))
	last := r.snap(seconds)
	fmt.Fprintf(w, "- breaker over the run: opened %s, closed %s, rejected %s; state at the end %s; last cause %q.\n",
		delta(r.snap(0), last, "breaker_opens"), delta(r.snap(0), last, "breaker_closes"), delta(r.snap(0), last, "breaker_rejected"),
		orDash(last.fields["breaker_state"]), last.fields["breaker_cause"])
	var wrong int
	for _, p := range byPhase {
		wrong += p.wrong
	}
	fmt.Fprintf(w, "- wrong values (a reply that was not the key's value, nil or an error): %d.\n", wrong)
	fmt.Fprintf(w, "- sidecache process_goroutines: %s after the warm-up, %s after the load (client connections closed).\n", num(r.g0), num(r.g1))
	fmt.Fprintln(w)

	// INFO counters per phase.
	fmt.Fprintln(w, "INFO sidecache counters, change per phase:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| counter | before | outage | after | run |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, name := range infoCounters {
		row := "| " + name
		for _, p := range phases {
			row += " | " + delta(r.snap(bounds[p][0]), r.snap(bounds[p][1]), name)
		}
		fmt.Fprintf(w, "%s | %s |\n", row, delta(r.snap(0), last, name))
	}
}

// infoCounters are the INFO sidecache counters of issue 4 the report
// shows per phase.
var infoCounters = []string{
	"reads_l1_hit", "reads_l2_hit", "reads_stale", "reads_miss", "reads_origin", "reads_shed", "reads_error",
	"l1_stale_served", "l1_revalidations", "l1_refreshes",
	"breaker_opens", "breaker_closes", "breaker_rejected",
	"l2_calls", "l2_retries", "l2_failures", "l2_timeouts", "l2_slow",
	"origin_admitted", "origin_shed", "origin_loads", "origin_errors", "fill_coalesced", "fill_wait_timeouts",
}

// writeInfoTSV writes one line per second of the load: the second, its
// phase, the change of each of infoCounters during it (empty if unknown),
// and breaker_state, process_goroutines and breaker_cause at its end.
func writeInfoTSV(w io.Writer, cfg *config, snaps []snapshot) error {
	at := func(k int) snapshot {
		if k < len(snaps) {
			return snaps[k]
		}
		return snapshot{}
	}
	head := append([]string{"second", "phase"}, infoCounters...)
	head = append(head, "breaker_state", "process_goroutines", "breaker_cause")
	var b strings.Builder
	b.WriteString(strings.Join(head, "\t") + "\n")
	for k := range int(cfg.duration / time.Second) {
		a, z := at(k), at(k+1)
		row := []string{strconv.Itoa(k), phaseOf(time.Duration(k)*time.Second, cfg)}
		for _, name := range infoCounters {
			d := delta(a, z, name)
			if d == "-" {
				d = ""
			}
			row = append(row, d)
		}
		row = append(row, z.fields["breaker_state"], z.fields["process_goroutines"], strings.ReplaceAll(z.fields["breaker_cause"], "\t", " "))
		b.WriteString(strings.Join(row, "\t") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *report) originNote() string {
	if r.cfg.mode == modeReadThrough {
		return "loads the HTTP origin served"
	}
	return "INFO reads_miss (misses handed to the clients to load from their database)"
}

func metIf(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func num(n int64) string {
	if n < 0 {
		return "-"
	}
	return strconv.FormatInt(n, 10)
}

// loadAvg returns the 1, 5 and 15 minute load averages, or "unknown".
func loadAvg() string {
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			return strings.Join(f[:3], " ")
		}
	}
	return "unknown"
}

// describeSetup returns the list items naming the tree, the versions and
// the machine; loadBefore is the load average before the run.
func describeSetup(redisServer, loadBefore string) []string {
	rev := "no commit"
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		rev = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain").Output(); err == nil && len(st) > 0 {
			rev += " + uncommitted changes"
		}
	}
	redis := "redis-server ?"
	if out, err := exec.Command(redisServer, "--version").Output(); err == nil {
		if f := strings.Fields(string(out)); len(f) >= 3 {
			redis = strings.Join(f[:3], " ")
		}
	}
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return []string{
		fmt.Sprintf("tree: %s; %s; %s", rev, redis, runtime.Version()),
		fmt.Sprintf("machine: %d CPUs (%s), load average %s before the run, %s after it", runtime.NumCPU(), model, loadBefore, loadAvg()),
	}
}
