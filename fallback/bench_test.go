package fallback

import (
	"context"
	"testing"
)

// BenchmarkGetHit is the Shield's cost on an L2 hit: one call through.
func BenchmarkGetHit(b *testing.B) {
	item := Item{Value: []byte("value")}
	s, err := New(GetterFunc(func(context.Context, []byte) (Item, bool, error) { return item, true, nil }), Config{FillWait: DefaultFillWait})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	key, ctx := []byte("key"), context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, found, _ := s.Get(ctx, key, false); !found {
			b.Fatal("miss")
		}
	}
}

// BenchmarkWritten is the cost the proxy pays per write when no miss waits
// on the key, with and without flights open on other keys.
func BenchmarkWritten(b *testing.B) {
	for _, open := range []int{0, 1000} {
		b.Run(map[int]string{0: "no flights", 1000: "1000 flights"}[open], func(b *testing.B) {
			s, err := New(GetterFunc(func(context.Context, []byte) (Item, bool, error) { return Item{}, false, nil }), Config{FillWait: DefaultCallTimeout})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			for i := range open {
				s.Get(context.Background(), []byte{byte(i), byte(i >> 8), 'x'}, false)
			}
			key := []byte("written")
			b.ReportAllocs()
			for b.Loop() {
				s.Written(key)
			}
		})
	}
}
