package l2store_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidecache/sidecache/l2store"
)

type statsFunc func() l2store.Stats

func (f statsFunc) Stats() l2store.Stats { return f() }

func TestMetrics(t *testing.T) {
	st := l2store.Stats{Kind: "embedded", Keys: 7, UsedBytes: 4096, MaxBytes: 1 << 20, Evictions: 3, Expirations: 5}
	reg := prometheus.NewRegistry()
	if err := l2store.RegisterMetrics(reg, statsFunc(func() l2store.Stats { return st })); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"sidecache_l2_bytes": 4096, "sidecache_l2_max_bytes": 1 << 20, "sidecache_l2_entries": 7,
		"sidecache_l2_evictions_total": 3, "sidecache_l2_expirations_total": 5,
	}
	st.Keys = 8 // read at scrape time: a change after registering shows
	want["sidecache_l2_entries"] = 8
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		got := m.GetGauge().GetValue() + m.GetCounter().GetValue()
		if w, ok := want[mf.GetName()]; !ok || got != w {
			t.Errorf("%s = %v, want %v (known %v)", mf.GetName(), got, w, ok)
		}
		delete(want, mf.GetName())
	}
	for name := range want {
		t.Errorf("%s missing", name)
	}
}
