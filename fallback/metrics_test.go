package fallback

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// recorder is an Observer that keeps what it is given.
type recorder struct {
	mu   sync.Mutex
	vals []float64
}

func (r *recorder) Observe(v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.vals = append(r.vals, v)
}

func (r *recorder) values() []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]float64(nil), r.vals...)
}

// TestObserveDurations: the L2 read and the origin load are timed on the
// Shield's clock, and only once ObserveDurations has been called.
func TestObserveDurations(t *testing.T) {
	clock := newFakeClock()
	next := GetterFunc(func(context.Context, []byte) (Item, bool, error) {
		clock.Advance(3 * time.Millisecond)
		return Item{}, false, nil // a miss: the origin loads it
	})
	errOrigin := errors.New("origin down")
	origin := OriginFunc(func(_ context.Context, key []byte) (Item, bool, error) {
		clock.Advance(7 * time.Millisecond)
		if string(key) == "bad" {
			return Item{}, false, errOrigin
		}
		return Item{Value: []byte("v")}, true, nil
	})
	s, err := New(next, Config{Origin: origin, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, _, err := s.Get(ctx, []byte("before"), false); err != nil {
		t.Fatal(err)
	}
	l2, org := &recorder{}, &recorder{}
	s.ObserveDurations(l2, org)
	if _, found, err := s.Get(ctx, []byte("k"), false); err != nil || !found {
		t.Fatalf("Get: %v, %v", found, err)
	}
	if _, _, err := s.Get(ctx, []byte("bad"), false); !errors.Is(err, ErrOrigin) {
		t.Fatalf("Get of a failing load: %v, want ErrOrigin", err)
	}
	if got := l2.values(); len(got) != 2 || got[0] != 0.003 || got[1] != 0.003 {
		t.Errorf("L2 durations %v, want [0.003 0.003]", got)
	}
	if got := org.values(); len(got) != 2 || got[0] != 0.007 || got[1] != 0.007 {
		t.Errorf("origin durations %v, want [0.007 0.007]", got)
	}

	reg := prometheus.NewRegistry()
	if err := s.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	want := map[string]float64{
		"sidecache_origin_admitted_total": float64(st.Admitted),
		"sidecache_origin_shed_total":     float64(st.Shed),
		"sidecache_origin_loads_total":    3,
		"sidecache_origin_errors_total":   1,
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		got := mf.GetMetric()[0].GetCounter().GetValue()
		if w, ok := want[mf.GetName()]; !ok || got != w {
			t.Errorf("%s = %v, want %v (known %v)", mf.GetName(), got, w, ok)
		}
		delete(want, mf.GetName())
	}
	for name := range want {
		t.Errorf("%s missing", name)
	}
}
