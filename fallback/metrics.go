package fallback

import (
	"context"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats is a snapshot of a Shield's counters. Counters only grow; Flights
// is a current value.
type Stats struct {
	Admitted  uint64 // pacing slots taken while failing: each one miss handed out or one origin load
	Shed      uint64 // Gets answered ErrShed: refused admission, or waiting on a refused leader
	QueueFull uint64 // admissions refused because Queue callers were already waiting
	Abandoned uint64 // callers whose ctx ended while waiting for a pacing slot (the slot is spent)

	StaleErrors uint64 // failing with a stale copy in L1: answered with an error at once
	Misses      uint64 // misses (found == false, nil error) handed to clients by the fallback

	Coalesced        uint64 // Gets that waited on another caller's flight (a fill or a load)
	Filled           uint64 // waiters that got the value of the re-read after Written
	FillWaitTimeouts uint64 // waiters whose FillWait ran out (or whose leader left) before a write

	OriginLoads  uint64 // origin loads started
	OriginMisses uint64 // loads that found no such key
	OriginErrors uint64 // loads that failed

	StoreWrites  uint64 // origin loads written to Config.Store
	StoreErrors  uint64 // of StoreWrites: the write failed
	StoreSkipped uint64 // found loads not written: no Store, not to be kept, or a write to the key raced

	Flights int64 // flights open now
}

// metrics holds the counters behind Stats.
type metrics struct {
	admitted, shed, queueFull, abandoned  atomic.Uint64
	staleErrors, misses                   atomic.Uint64
	coalesced, filled, fillWaitTimeouts   atomic.Uint64
	originLoads, originMisses, originErrs atomic.Uint64
	storeWrites, storeErrs, storeSkipped  atomic.Uint64

	durations atomic.Pointer[durations] // set by ObserveDurations; nil: not timed
}

func (m *metrics) snapshot() Stats {
	return Stats{
		Admitted:         m.admitted.Load(),
		Shed:             m.shed.Load(),
		QueueFull:        m.queueFull.Load(),
		Abandoned:        m.abandoned.Load(),
		StaleErrors:      m.staleErrors.Load(),
		Misses:           m.misses.Load(),
		Coalesced:        m.coalesced.Load(),
		Filled:           m.filled.Load(),
		FillWaitTimeouts: m.fillWaitTimeouts.Load(),
		OriginLoads:      m.originLoads.Load(),
		OriginMisses:     m.originMisses.Load(),
		OriginErrors:     m.originErrs.Load(),
		StoreWrites:      m.storeWrites.Load(),
		StoreErrors:      m.storeErrs.Load(),
		StoreSkipped:     m.storeSkipped.Load(),
	}
}

// Observer receives durations in seconds. A prometheus.Histogram is one.
type Observer interface{ Observe(seconds float64) }

// durations are the Observers of ObserveDurations.
type durations struct{ next, origin Observer }

// ObserveDurations has the Shield time its calls below it from now on:
// each call of the next tier (the L2 read of an L1 miss, through the
// breaker; the shared re-read after a client's SET) to next, each origin
// load to origin. Either may be nil. The times come from Config.Clock.
func (s *Shield) ObserveDurations(next, origin Observer) {
	s.m.durations.Store(&durations{next: next, origin: origin})
}

// getNext calls the next tier, timing it if asked to.
func (s *Shield) getNext(ctx context.Context, key []byte) (Item, bool, error) {
	d := s.m.durations.Load()
	if d == nil || d.next == nil {
		return s.next.Get(ctx, key)
	}
	start := s.clock.Now()
	item, found, err := s.next.Get(ctx, key)
	d.next.Observe(s.clock.Now().Sub(start).Seconds())
	return item, found, err
}

// loadOrigin loads key from the origin, timing it if asked to.
func (s *Shield) loadOrigin(ctx context.Context, key []byte) (Item, bool, error) {
	d := s.m.durations.Load()
	if d == nil || d.origin == nil {
		return s.origin.Load(ctx, key)
	}
	start := s.clock.Now()
	item, found, err := s.origin.Load(ctx, key)
	d.origin.Observe(s.clock.Now().Sub(start).Seconds())
	return item, found, err
}

// RegisterMetrics registers s's counters on reg, read from Stats at each
// scrape:
//
//	sidecache_origin_admitted_total  Stats.Admitted: pacing slots taken while failing (a miss handed out or an origin load)
//	sidecache_origin_shed_total      Stats.Shed: reads refused (-TRYAGAIN) by the origin shield
//	sidecache_origin_loads_total     Stats.OriginLoads: read-through origin loads started
//	sidecache_origin_errors_total    Stats.OriginErrors: origin loads that failed
//
// INFO sidecache reports them as origin_admitted, origin_shed,
// origin_loads and origin_errors.
func (s *Shield) RegisterMetrics(reg prometheus.Registerer) error {
	return reg.Register(newCollector(s))
}

type collector struct {
	s                                *Shield
	admitted, shed, loads, originErr *prometheus.Desc
}

func newCollector(s *Shield) *collector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &collector{
		s:         s,
		admitted:  d("sidecache_origin_admitted_total", "Pacing slots the origin shield granted while the L2 failed: misses handed to clients, or origin loads."),
		shed:      d("sidecache_origin_shed_total", "Reads the origin shield refused while the L2 failed (answered -TRYAGAIN): no stale copy and the origin rate reached."),
		loads:     d("sidecache_origin_loads_total", "Read-through origin loads started."),
		originErr: d("sidecache_origin_errors_total", "Read-through origin loads that failed."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.admitted
	ch <- c.shed
	ch <- c.loads
	ch <- c.originErr
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	ch <- prometheus.MustNewConstMetric(c.admitted, prometheus.CounterValue, float64(st.Admitted))
	ch <- prometheus.MustNewConstMetric(c.shed, prometheus.CounterValue, float64(st.Shed))
	ch <- prometheus.MustNewConstMetric(c.loads, prometheus.CounterValue, float64(st.OriginLoads))
	ch <- prometheus.MustNewConstMetric(c.originErr, prometheus.CounterValue, float64(st.OriginErrors))
}
