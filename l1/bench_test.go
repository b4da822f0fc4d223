package l1

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// valueGetter is a next tier that returns a fresh size-byte value for any
// key, as L2 would (it allocates: the value's ownership passes to L1).
func valueGetter(size int) GetterFunc {
	return func(context.Context, []byte, bool) (Item, bool, error) {
		return Item{Value: make([]byte, size)}, true, nil
	}
}

func benchKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = []byte("user:session:" + strconv.Itoa(i))
	}
	return keys
}

// BenchmarkGetHit measures parallel Gets that all hit: ns/op and
// allocs/op (which must be 0).
func BenchmarkGetHit(b *testing.B) {
	for _, nkeys := range []int{1, 1024, 65536} {
		b.Run(fmt.Sprintf("keys=%d", nkeys), func(b *testing.B) {
			c, err := New(valueGetter(100), Config{})
			if err != nil {
				b.Fatal(err)
			}
			keys := benchKeys(nkeys)
			ctx := context.Background()
			for _, k := range keys {
				c.Get(ctx, k)
			}
			var seq atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(seq.Add(1)) * 7919
				for pb.Next() {
					i++
					if _, found, _ := c.Get(ctx, keys[i%nkeys]); !found {
						panic("miss")
					}
				}
			})
			b.StopTimer()
			if st := c.Stats(); st.Misses != uint64(nkeys) {
				b.Fatalf("%d misses during a hit-only benchmark", st.Misses-uint64(nkeys))
			}
		})
	}
}

// BenchmarkGetZipf measures parallel Gets of keys drawn from a Zipf
// distribution over a key space larger than L1, reading through to a next
// tier that allocates each value; it reports L1's hit ratio.
func BenchmarkGetZipf(b *testing.B) {
	const (
		keySpace = 100_000
		valLen   = 200
	)
	keys := benchKeys(keySpace)
	for _, tc := range []struct {
		s       float64 // Zipf exponent
		fitFrac float64 // fraction of the key space that fits in MaxBytes
	}{
		{1.01, 0.01}, {1.01, 0.1}, {1.2, 0.01}, {1.2, 0.1},
	} {
		b.Run(fmt.Sprintf("s=%.2f/fit=%.0f%%", tc.s, tc.fitFrac*100), func(b *testing.B) {
			per := entrySize(len(keys[keySpace/2]), valLen)
			maxBytes := int64(tc.fitFrac*keySpace) * per
			c, err := New(valueGetter(valLen), Config{MaxBytes: maxBytes, Shards: 16})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			var seq atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				n := seq.Add(1)
				z := rand.NewZipf(rand.New(rand.NewPCG(n, n*31)), tc.s, 1, keySpace-1)
				for pb.Next() {
					c.Get(ctx, keys[z.Uint64()])
				}
			})
			b.StopTimer()
			st := c.Stats()
			b.ReportMetric(float64(st.Hits)/float64(st.Hits+st.Misses)*100, "hit%")
			b.ReportMetric(float64(st.Evictions)/float64(b.N), "evictions/op")
		})
	}
}

// BenchmarkFill measures filling L1 with b.N distinct entries (a miss that
// reads through and inserts) and reports the live heap per entry next to
// the bytes charged per entry against MaxBytes.
func BenchmarkFill(b *testing.B) {
	for _, tc := range []struct{ keyLen, valLen int }{{16, 16}, {32, 200}, {40, 1000}} {
		b.Run(fmt.Sprintf("key=%d/val=%d", tc.keyLen, tc.valLen), func(b *testing.B) {
			per := entrySize(tc.keyLen, tc.valLen)
			cfg := Config{MaxBytes: max(int64(b.N)*per*2, 16<<20), Shards: 16, MaxItemBytes: 2 * per}
			b.ReportAllocs()
			b.ResetTimer()
			measured, accounted, st := heapGrowth(b, cfg, tc.keyLen, tc.valLen, fill(b.N))
			b.StopTimer()
			if st.Entries != int64(b.N) {
				b.Fatalf("Entries = %d, want %d", st.Entries, b.N)
			}
			b.ReportMetric(float64(measured)/float64(b.N), "heap-B/entry")
			b.ReportMetric(float64(accounted)/float64(b.N), "accounted-B/entry")
		})
	}
}

// BenchmarkLookupStale measures lookups answered with a stale copy:
// Revalidating (the key's one refresh is in flight, so each lookup only
// returns the copy) and Stale (the next tier fails at once and the copy
// answers for it).
func BenchmarkLookupStale(b *testing.B) {
	errDown := errors.New("down")
	for _, tc := range []struct {
		name    string
		swr     time.Duration
		outcome Outcome
	}{
		{"revalidating", time.Minute, Revalidating},
		{"stale-if-error", 0, Stale},
	} {
		b.Run(tc.name, func(b *testing.B) {
			clk := newFakeClock()
			var failing atomic.Bool
			block := make(chan struct{})
			next := GetterFunc(func(_ context.Context, _ []byte, hasStale bool) (Item, bool, error) {
				if !failing.Load() {
					return Item{Value: make([]byte, 100)}, true, nil
				}
				if tc.swr > 0 {
					<-block // the refresh stays in flight
				}
				return Item{}, false, errDown
			})
			c, err := New(next, Config{TTL: time.Second, StaleFor: time.Hour, StaleWhileRevalidate: tc.swr, Now: clk.Now})
			if err != nil {
				b.Fatal(err)
			}
			keys := benchKeys(1024)
			ctx := context.Background()
			for _, k := range keys {
				c.Get(ctx, k)
			}
			failing.Store(true)
			clk.Advance(time.Second)
			var seq atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(seq.Add(1)) * 7919
				for pb.Next() {
					i++
					if r, _ := c.Lookup(ctx, keys[i%len(keys)]); r.Outcome != tc.outcome {
						panic(r.Outcome)
					}
				}
			})
			b.StopTimer()
			close(block)
			c.Close()
		})
	}
}
