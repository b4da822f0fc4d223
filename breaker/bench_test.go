package breaker_test

import (
	"context"
	"testing"

	"github.com/sidecache/sidecache/breaker"
	"github.com/sidecache/sidecache/l2store"
)

// BenchmarkGetHit measures what the breaker adds to an L2 hit: "direct"
// calls the fake L2 itself, "breaker" goes through Get (admission, the
// Timeout context, measurement, the window).
func BenchmarkGetHit(b *testing.B) {
	item := l2store.Item{Value: []byte("value")}
	var next breaker.Getter = breaker.GetterFunc(func(context.Context, []byte) (l2store.Item, bool, error) {
		return item, true, nil
	})
	br, err := breaker.New(next, breaker.Settings{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, key := context.Background(), []byte("key")
	// The proxy's contexts are per connection and cancelable.
	connCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := func(b *testing.B, g breaker.Getter) {
		b.ReportAllocs()
		hits := 0
		for b.Loop() {
			if _, found, err := g.Get(ctx, key); err != nil || !found {
				b.Fatalf("Get: %v %v", found, err)
			}
			hits++
		}
		b.ReportMetric(float64(hits)/float64(b.N), "hits/op")
	}
	runParallel := func(b *testing.B, g breaker.Getter) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, found, err := g.Get(ctx, key); err != nil || !found {
					b.Errorf("Get: %v %v", found, err)
					return
				}
			}
		})
	}
	noTimeout, err := breaker.New(next, breaker.Settings{Timeout: breaker.Off})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("direct", func(b *testing.B) { run(b, next) })
	b.Run("breaker", func(b *testing.B) { run(b, br) })
	b.Run("breaker-no-timeout", func(b *testing.B) { run(b, noTimeout) })
	b.Run("breaker-cancelable-ctx", func(b *testing.B) {
		ctx, connCtx = connCtx, ctx
		defer func() { ctx, connCtx = connCtx, ctx }()
		run(b, br)
	})
	b.Run("direct-parallel", func(b *testing.B) { runParallel(b, next) })
	b.Run("breaker-parallel", func(b *testing.B) { runParallel(b, br) })
	if st := br.Stats(); st.State != "closed" || st.Failures != 0 {
		b.Fatalf("breaker %+v", st)
	}
}
