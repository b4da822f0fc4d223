package breaker

import "github.com/prometheus/client_golang/prometheus"

// RegisterMetrics registers b's metrics on reg. They are read from Stats
// at each scrape, so calls pay nothing for them:
//
//	sidecache_breaker_state                       gauge    0 closed, 1 open, 2 half-open
//	sidecache_breaker_transitions_total{to,reason} counter state changes
//	sidecache_l2_hit_ratio                        gauge    Stats.HitRate (the rolling window's)
//	sidecache_l2_hit_ratio_baseline               gauge    Stats.Baseline
//
// The transitions are, by label: to="open" with reason "errors", "slow" or
// "hit-rate" (Stats.Opens: each opening, and each time an opening for the
// hit rate is requalified as one for errors or latency because the calls
// let through fail); to="half-open", reason="open-for-elapsed"
// (Stats.Transitions.HalfOpen); to="closed", reason="probes-ok"
// (Stats.Transitions.Closed). INFO sidecache reports the same counts as
// breaker_opens_errors, breaker_opens_slow, breaker_opens_hit_rate,
// breaker_half_opens and breaker_closes.
func (b *Breaker) RegisterMetrics(reg prometheus.Registerer) error {
	return reg.Register(newCollector(b))
}

// Values of sidecache_breaker_state.
const (
	metricClosed   = 0
	metricOpen     = 1
	metricHalfOpen = 2
)

// stateValue maps Stats.State to sidecache_breaker_state.
func stateValue(state string) float64 {
	switch state {
	case "open":
		return metricOpen
	case "half-open":
		return metricHalfOpen
	}
	return metricClosed
}

type collector struct {
	b                                     *Breaker
	state, transitions, ratio, baselineDs *prometheus.Desc
}

func newCollector(b *Breaker) *collector {
	return &collector{
		b:     b,
		state: prometheus.NewDesc("sidecache_breaker_state", "State of the L2 circuit breaker: 0 closed, 1 open, 2 half-open.", nil, nil),
		transitions: prometheus.NewDesc("sidecache_breaker_transitions_total",
			"State changes of the L2 circuit breaker, by the state entered and why (open: errors, slow or hit-rate).", []string{"to", "reason"}, nil),
		ratio:      prometheus.NewDesc("sidecache_l2_hit_ratio", "L2 hit rate of L1 misses over the breaker's rolling window (closed state; 0 without reads).", nil, nil),
		baselineDs: prometheus.NewDesc("sidecache_l2_hit_ratio_baseline", "Baseline L2 hit rate the breaker compares the window's with (--breaker-baseline horizon).", nil, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.state
	ch <- c.transitions
	ch <- c.ratio
	ch <- c.baselineDs
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.b.Stats()
	ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, stateValue(s.State))
	for _, t := range []struct {
		to, reason string
		n          uint64
	}{
		{"open", ReasonErrors.String(), s.Opens.Errors},
		{"open", ReasonSlow.String(), s.Opens.Slow},
		{"open", ReasonHitRate.String(), s.Opens.HitRate},
		{"half-open", "open-for-elapsed", s.Transitions.HalfOpen},
		{"closed", "probes-ok", s.Transitions.Closed},
	} {
		ch <- prometheus.MustNewConstMetric(c.transitions, prometheus.CounterValue, float64(t.n), t.to, t.reason)
	}
	ch <- prometheus.MustNewConstMetric(c.ratio, prometheus.GaugeValue, s.HitRate)
	ch <- prometheus.MustNewConstMetric(c.baselineDs, prometheus.GaugeValue, s.Baseline)
}
