package l1

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetrics(t *testing.T) {
	c, err := New(GetterFunc(func(_ context.Context, key []byte, _ bool) (Item, bool, error) {
		return Item{Value: []byte("value of " + string(key))}, true, nil
	}), Config{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reg := prometheus.NewRegistry()
	if err := c.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c", "a"} {
		if _, err := c.Lookup(context.Background(), []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	st := c.Stats()
	if st.Entries != 3 {
		t.Fatalf("Stats.Entries %d, want 3", st.Entries)
	}
	want := map[string]float64{
		"sidecache_l1_bytes": float64(st.Bytes), "sidecache_l1_max_bytes": float64(st.MaxBytes), "sidecache_l1_entries": 3,
		"sidecache_l1_evictions_total": float64(st.Evictions), "sidecache_l1_expirations_total": float64(st.Expirations),
		"sidecache_l1_stale_served_total": float64(st.StaleServed),
	}
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
	if st.Bytes <= 0 {
		t.Errorf("Stats.Bytes %d with 3 entries", st.Bytes)
	}
}
