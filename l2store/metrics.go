package l2store

import "github.com/prometheus/client_golang/prometheus"

// StatsReader is what the L2's metrics read: any Store.
type StatsReader interface{ Stats() Stats }

// RegisterMetrics registers on reg the metrics of the L2 st, read from
// st.Stats() at each scrape (the store's own path pays nothing):
//
//	sidecache_l2_bytes               gauge    Stats.UsedBytes
//	sidecache_l2_max_bytes           gauge    Stats.MaxBytes (0: unbounded or unknown)
//	sidecache_l2_entries             gauge    Stats.Keys
//	sidecache_l2_evictions_total     counter  Stats.Evictions
//	sidecache_l2_expirations_total   counter  Stats.Expirations
//
// A remote store reports what its Stats has: zeros, as the figures are
// the upstream's (read them from the upstream's own exporter).
func RegisterMetrics(reg prometheus.Registerer, st StatsReader) error {
	return reg.Register(newCollector(st))
}

type collector struct {
	st                                         StatsReader
	bytes, maxBytes, entries, evicted, expired *prometheus.Desc
}

func newCollector(st StatsReader) *collector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &collector{
		st:       st,
		bytes:    d("sidecache_l2_bytes", "Memory held by the embedded L2, entries and indexes (0 for a remote L2)."),
		maxBytes: d("sidecache_l2_max_bytes", "Memory bound of the embedded L2 (--l2-max-bytes; 0 for a remote L2)."),
		entries:  d("sidecache_l2_entries", "Keys the embedded L2 holds, including expired ones not yet reclaimed (0 for a remote L2)."),
		evicted:  d("sidecache_l2_evictions_total", "Keys the embedded L2 evicted to make room."),
		expired:  d("sidecache_l2_expirations_total", "Keys the embedded L2 removed because their TTL passed."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bytes
	ch <- c.maxBytes
	ch <- c.entries
	ch <- c.evicted
	ch <- c.expired
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.st.Stats()
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(s.UsedBytes))
	ch <- prometheus.MustNewConstMetric(c.maxBytes, prometheus.GaugeValue, float64(s.MaxBytes))
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(s.Keys))
	ch <- prometheus.MustNewConstMetric(c.evicted, prometheus.CounterValue, float64(s.Evictions))
	ch <- prometheus.MustNewConstMetric(c.expired, prometheus.CounterValue, float64(s.Expirations))
}
