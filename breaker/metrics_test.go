package breaker_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metricValue returns the value of the counter or gauge name whose labels
// include labels (name, value pairs), and whether there is one.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// TestMetrics follows the breaker through open, half-open and closed, and
// checks the metrics at each step against Stats.
func TestMetrics(t *testing.T) {
	s := noRetry()
	s.OpenFor = time.Second
	s.Probes = 2
	e := newEnv(t, s, hit)
	reg := prometheus.NewRegistry()
	if err := e.b.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	check := func(step string, state float64, opensErrors, halfOpens, closes float64) {
		t.Helper()
		for _, c := range []struct {
			name   string
			labels []string
			want   float64
		}{
			{"sidecache_breaker_state", nil, state},
			{"sidecache_breaker_transitions_total", []string{"to", "open", "reason", "errors"}, opensErrors},
			{"sidecache_breaker_transitions_total", []string{"to", "open", "reason", "slow"}, 0},
			{"sidecache_breaker_transitions_total", []string{"to", "open", "reason", "hit-rate"}, 0},
			{"sidecache_breaker_transitions_total", []string{"to", "half-open", "reason", "open-for-elapsed"}, halfOpens},
			{"sidecache_breaker_transitions_total", []string{"to", "closed", "reason", "probes-ok"}, closes},
		} {
			if got, ok := metricValue(t, reg, c.name, c.labels...); !ok || got != c.want {
				t.Errorf("%s: %s%v = %v (present %v), want %v", step, c.name, c.labels, got, ok, c.want)
			}
		}
		st := e.b.Stats()
		if got, _ := metricValue(t, reg, "sidecache_l2_hit_ratio"); got != st.HitRate {
			t.Errorf("%s: sidecache_l2_hit_ratio %v, Stats.HitRate %v", step, got, st.HitRate)
		}
		if got, _ := metricValue(t, reg, "sidecache_l2_hit_ratio_baseline"); got != st.Baseline {
			t.Errorf("%s: sidecache_l2_hit_ratio_baseline %v, Stats.Baseline %v", step, got, st.Baseline)
		}
	}
	for i := 0; i < 30; i++ {
		e.get()
	}
	check("closed", 0, 0, 0, 0)
	if got, _ := metricValue(t, reg, "sidecache_l2_hit_ratio"); got != 1 {
		t.Errorf("sidecache_l2_hit_ratio %v after hits only, want 1", got)
	}
	e.trip(t)
	check("open", 1, 1, 0, 0)
	e.clock.Advance(2 * time.Second)
	e.l2.set(hit)
	e.get() // the first probe: half-open
	if st := e.b.Stats(); st.State != "half-open" {
		t.Fatalf("state %q after one of two probes, want half-open", st.State)
	}
	check("half-open", 2, 1, 1, 0)
	e.get() // the second: closed
	if st := e.b.Stats(); st.State != "closed" {
		t.Fatalf("state %q after a good probe, want closed", st.State)
	}
	check("closed again", 0, 1, 1, 1)
}
