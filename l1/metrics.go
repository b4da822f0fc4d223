package l1

import "github.com/prometheus/client_golang/prometheus"

// RegisterMetrics registers c's metrics on reg. They are read from Stats
// at each scrape, so lookups pay nothing for them:
//
//	sidecache_l1_bytes                gauge    Stats.Bytes
//	sidecache_l1_max_bytes            gauge    Stats.MaxBytes
//	sidecache_l1_entries              gauge    Stats.Entries (fresh or stale)
//	sidecache_l1_evictions_total      counter  Stats.Evictions
//	sidecache_l1_expirations_total    counter  Stats.Expirations
//	sidecache_l1_stale_served_total   counter  Stats.StaleServed
//
// Each is INFO sidecache's l1_* field of the same name.
func (c *Cache) RegisterMetrics(reg prometheus.Registerer) error {
	return reg.Register(newCollector(c))
}

type collector struct {
	c                                                 *Cache
	bytes, maxBytes, entries, evicted, expired, stale *prometheus.Desc
}

func newCollector(c *Cache) *collector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &collector{
		c:        c,
		bytes:    d("sidecache_l1_bytes", "Bytes charged for the entries L1 holds: keys, values and per-entry overhead."),
		maxBytes: d("sidecache_l1_max_bytes", "Memory bound of L1 (--l1-max-bytes)."),
		entries:  d("sidecache_l1_entries", "Entries L1 holds, fresh or stale."),
		evicted:  d("sidecache_l1_evictions_total", "Entries L1 removed to stay within its byte budget."),
		expired:  d("sidecache_l1_expirations_total", "Entries L1 removed or replaced after they expired and their stale window ran out."),
		stale:    d("sidecache_l1_stale_served_total", "Reads L1 answered with a stale copy because the tiers below failed (stale-if-error)."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.bytes, c.maxBytes, c.entries, c.evicted, c.expired, c.stale} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.c.Stats()
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(s.Bytes))
	ch <- prometheus.MustNewConstMetric(c.maxBytes, prometheus.GaugeValue, float64(s.MaxBytes))
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(s.Entries))
	ch <- prometheus.MustNewConstMetric(c.evicted, prometheus.CounterValue, float64(s.Evictions))
	ch <- prometheus.MustNewConstMetric(c.expired, prometheus.CounterValue, float64(s.Expirations))
	ch <- prometheus.MustNewConstMetric(c.stale, prometheus.CounterValue, float64(s.StaleServed))
}
