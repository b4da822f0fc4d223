package proxy

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sidecache/sidecache/l2store/commands"
)

// The proxy's metrics. Counters are kept as plain atomics on the request
// path and read at scrape time by a collector; INFO reads the same
// counters, so the two always agree. The request-duration histogram is
// only fed once RegisterMetrics has run.
//
//	sidecache_requests_total{command,outcome}   counter
//	sidecache_request_duration_seconds{tier}    histogram (tiers l1 and store here; l2 and origin via DurationObserver)
//	sidecache_connections                       gauge    INFO connected_clients
//	sidecache_connections_total                 counter  INFO total_connections_received
//	sidecache_connections_rejected_total        counter  INFO rejected_connections
//
// Requests: each key of a GET or MGET read through L1 counts once with
// command "get" or "mget" and the read's outcome (l1_hit, l2_hit, stale,
// miss, origin, shed, error: INFO's reads_* fields, which add up both
// commands). Every other command counts once with outcome "ok" or
// "error" (an error reply, or a rejection such as NOAUTH or a wrong
// arity; INFO's requests_ok and requests_error add up all commands).
// command is the command's full lower-case name in the command table
// ("set", "client|setname"); commands missing from the table are
// "other". Commands a client sends after SUBSCRIBE or MONITOR are relayed
// to the upstream unseen and not counted.

// Tiers of sidecache_request_duration_seconds.
const (
	TierL1     = "l1"     // a GET or MGET key answered from L1, fresh or stale (the whole lookup)
	TierL2     = "l2"     // the L2 read of an L1 miss, through the breaker (fed by the fallback)
	TierOrigin = "origin" // a read-through origin load (fed by the fallback)
	TierStore  = "store"  // a command passed to the L2 (a pipelined batch counts once)
)

// DurationBuckets are the buckets of sidecache_request_duration_seconds,
// in seconds: from an L1 hit (tens of µs) to an L2 timeout.
var DurationBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

// cmdCount counts one command's executions: [0] ok, [1] error.
type cmdCount [2]atomic.Uint64

// cmdCounters counts commands other than reads through L1, by command.
// byMeta is filled by newCmdCounters and only read afterwards.
type cmdCounters struct {
	byMeta map[*commands.Meta]*cmdCount
	other  *cmdCount // commands missing from the table
}

func newCmdCounters() cmdCounters {
	names := commands.Names()
	cc := cmdCounters{byMeta: make(map[*commands.Meta]*cmdCount, len(names)), other: new(cmdCount)}
	for _, n := range names {
		if m := commands.LookupFullName([]byte(n)); m != nil {
			cc.byMeta[m] = new(cmdCount)
		}
	}
	return cc
}

// count counts one execution of m (nil: a command missing from the table).
func (cc *cmdCounters) count(m *commands.Meta, failed bool) {
	n := cc.byMeta[m]
	if n == nil {
		n = cc.other
	}
	if failed {
		n[1].Add(1)
	} else {
		n[0].Add(1)
	}
}

// totals returns the ok and error counts of every command.
func (cc *cmdCounters) totals() (ok, failed uint64) {
	for _, n := range cc.byMeta {
		ok += n[0].Load()
		failed += n[1].Load()
	}
	return ok + cc.other[0].Load(), failed + cc.other[1].Load()
}

func (cc *cmdCounters) reset() {
	for _, n := range cc.byMeta {
		n[0].Store(0)
		n[1].Store(0)
	}
	cc.other[0].Store(0)
	cc.other[1].Store(0)
}

// countLocal counts a command the proxy answered itself, which wrote an
// error reply if c's error count moved from errs. Reads through L1 count
// themselves, by outcome.
func (s *Server) countLocal(c *client, m *commands.Meta, errs uint64) {
	if s.cache != nil && (m == mGet || m == mMGet) {
		return
	}
	s.stats.cmds.count(m, c.errors.Load() != errs)
}

// durationMetrics are the proxy's request-duration histograms.
type durationMetrics struct {
	vec       *prometheus.HistogramVec
	l1, store prometheus.Observer
}

// startTimer returns the start of a timed call, or the zero Time if
// durations are not observed.
func (s *Server) startTimer() time.Time {
	if s.stats.durations.Load() == nil {
		return time.Time{}
	}
	return s.cfg.Now()
}

// observeStore records the duration of a call to the store that started
// at start (startTimer).
func (s *Server) observeStore(start time.Time) {
	if start.IsZero() {
		return
	}
	s.stats.durations.Load().store.Observe(s.cfg.Now().Sub(start).Seconds())
}

// observeRead records the duration of a read through L1 that started at
// start, if L1 answered it.
func (s *Server) observeRead(start time.Time, o readOutcome) {
	if start.IsZero() || (o != readL1Hit && o != readStale) {
		return
	}
	s.stats.durations.Load().l1.Observe(s.cfg.Now().Sub(start).Seconds())
}

// RegisterMetrics registers the server's metrics on reg (see the list
// above) and starts timing requests. Call it before Serve. Registries
// given to several calls share the same metrics.
func (s *Server) RegisterMetrics(reg prometheus.Registerer) error {
	d := s.stats.durations.Load()
	if d == nil {
		vec := prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sidecache_request_duration_seconds",
			Help:    "Duration of requests by the tier that answered: l1 (a read answered from L1, fresh or stale), l2 (the L2 read of an L1 miss), origin (an origin load), store (a command passed to the L2).",
			Buckets: DurationBuckets,
		}, []string{"tier"})
		d = &durationMetrics{vec: vec, l1: vec.WithLabelValues(TierL1), store: vec.WithLabelValues(TierStore)}
	}
	if err := reg.Register(d.vec); err != nil {
		return err
	}
	if err := reg.Register(newCollector(s)); err != nil {
		reg.Unregister(d.vec)
		return err
	}
	s.stats.durations.Store(d)
	return nil
}

// DurationObserver returns the request-duration histogram of tier
// (TierL2, TierOrigin), for the tiers below the proxy to feed, or nil
// before RegisterMetrics.
func (s *Server) DurationObserver(tier string) prometheus.Observer {
	d := s.stats.durations.Load()
	if d == nil {
		return nil
	}
	return d.vec.WithLabelValues(tier)
}

// Ready reports whether the server is serving and not shutting down.
func (s *Server) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rs != nil && !s.closing
}

// collector reads the server's counters at scrape time.
type collector struct {
	s                                    *Server
	requests, conns, connsTotal, rejects *prometheus.Desc
}

// outcomeLabels are the outcome label values of readOutcome.
var outcomeLabels = [numReadOutcomes]string{"l1_hit", "l2_hit", "stale", "miss", "origin", "shed", "error"}

func newCollector(s *Server) *collector {
	return &collector{
		s: s,
		requests: prometheus.NewDesc("sidecache_requests_total",
			"Requests by command and outcome: each key of a GET or MGET read through L1 by where its answer came from (l1_hit, l2_hit, stale, miss, origin, shed, error), any other command ok or error.",
			[]string{"command", "outcome"}, nil),
		conns:      prometheus.NewDesc("sidecache_connections", "Client connections open now.", nil, nil),
		connsTotal: prometheus.NewDesc("sidecache_connections_total", "Client connections accepted (including those then rejected).", nil, nil),
		rejects:    prometheus.NewDesc("sidecache_connections_rejected_total", "Client connections refused because --maxclients were connected.", nil, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.requests
	ch <- c.conns
	ch <- c.connsTotal
	ch <- c.rejects
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	s.requestCounts(func(v uint64, command, outcome string) {
		ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(v), command, outcome)
	})
	s.mu.Lock()
	open := len(s.clients)
	s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(open))
	ch <- prometheus.MustNewConstMetric(c.connsTotal, prometheus.CounterValue, float64(s.stats.connections.Load()))
	ch <- prometheus.MustNewConstMetric(c.rejects, prometheus.CounterValue, float64(s.stats.rejected.Load()))
}

// requestCounts calls emit with the count of each (command, outcome) of
// sidecache_requests_total, which INFO sidecache also shows
// (requests_<command>_<outcome>). GET and MGET always report all their
// read outcomes; other commands only counts above zero.
func (s *Server) requestCounts(emit func(v uint64, command, outcome string)) {
	readMetas := [numReadCmds]*commands.Meta{readGet: mGet, readMGet: mMGet}
	if s.cache != nil {
		// GET and MGET: their reads by outcome; a GET refused before it
		// read (NOAUTH, a wrong arity) adds to outcome "error", one run
		// in a transaction (not read through L1) to "ok".
		st := s.statsSnapshot()
		for cmd, m := range readMetas {
			n := s.stats.cmds.byMeta[m]
			for o := range st.reads[cmd] {
				v := st.reads[cmd][o].Load()
				if readOutcome(o) == readError {
					v += n[1].Load()
				}
				emit(v, readCmdNames[cmd], outcomeLabels[o])
			}
			if v := n[0].Load(); v > 0 {
				emit(v, readCmdNames[cmd], "ok")
			}
		}
	}
	emitCmd := func(name string, n *cmdCount) {
		if v := n[0].Load(); v > 0 {
			emit(v, name, "ok")
		}
		if v := n[1].Load(); v > 0 {
			emit(v, name, "error")
		}
	}
	for m, n := range s.stats.cmds.byMeta {
		if s.cache == nil || (m != mGet && m != mMGet) {
			emitCmd(m.Name, n)
		}
	}
	emitCmd("other", s.stats.cmds.other)
}

// latencyFields returns, for each tier with a histogram that has
// observed something, its count, sum and estimated p50 and p99 in
// microseconds (interpolated within buckets, as PromQL's
// histogram_quantile does), for INFO sidecache. None before
// RegisterMetrics.
func (s *Server) latencyFields() []Setting {
	d := s.stats.durations.Load()
	if d == nil {
		return nil
	}
	var out []Setting
	for _, tier := range []string{TierL1, TierL2, TierOrigin, TierStore} {
		h, ok := d.vec.WithLabelValues(tier).(prometheus.Metric)
		if !ok {
			continue
		}
		var m dto.Metric
		if h.Write(&m) != nil || m.Histogram == nil || m.Histogram.GetSampleCount() == 0 {
			continue
		}
		hist := m.Histogram
		usec := func(sec float64) string { return strconv.FormatFloat(sec*1e6, 'f', 1, 64) }
		out = append(out,
			Setting{"latency_" + tier + "_count", strconv.FormatUint(hist.GetSampleCount(), 10)},
			Setting{"latency_" + tier + "_sum_usec", usec(hist.GetSampleSum())},
			Setting{"latency_" + tier + "_p50_usec", usec(bucketQuantile(0.5, hist))},
			Setting{"latency_" + tier + "_p99_usec", usec(bucketQuantile(0.99, hist))},
		)
	}
	return out
}

// bucketQuantile estimates the q-quantile of a histogram by linear
// interpolation within its buckets; past the last bucket, its bound.
func bucketQuantile(q float64, h *dto.Histogram) float64 {
	rank := q * float64(h.GetSampleCount())
	lower, below := 0.0, 0.0
	for _, b := range h.GetBucket() {
		n := float64(b.GetCumulativeCount())
		if n >= rank {
			in := n - below
			if in == 0 {
				return b.GetUpperBound()
			}
			return lower + (b.GetUpperBound()-lower)*(rank-below)/in
		}
		lower, below = b.GetUpperBound(), n
	}
	return lower
}

// countRejected counts a command refused before it ran: m as classify
// found it, nil for an unknown command or one with a wrong arity.
func (s *Server) countRejected(m *commands.Meta, args [][]byte) {
	if m == nil {
		m = commands.Find(args)
	}
	s.stats.cmds.count(m, true)
}

// countPinned counts a command run on a pinned connection (in a
// transaction, after WATCH), which wrote an error reply if c's error
// count moved from errs.
func (s *Server) countPinned(args [][]byte, c *client, errs uint64) {
	s.stats.cmds.count(commands.Find(args), c.errors.Load() != errs)
}
