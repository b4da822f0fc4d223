package l1

import (
	"context"
	"math/rand/v2"
	"reflect"
	"runtime"
	"testing"
	"unsafe"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// TestLRUElementMirror checks that lruElement has the size of simplelru's
// real list element, so entryOverhead follows library upgrades.
func TestLRUElementMirror(t *testing.T) {
	items, ok := reflect.TypeFor[simplelru.LRU[uint64, entry]]().FieldByName("items")
	if !ok {
		t.Fatal("simplelru.LRU has no items field any more; re-derive lruElement")
	}
	// map[uint64]*internal.Entry[uint64, entry]
	elem := items.Type.Elem().Elem()
	if got, want := elem.Size(), unsafe.Sizeof(lruElement{}); got != want {
		t.Errorf("simplelru element is %d bytes, lruElement mirrors %d", got, want)
	}
	if items.Type.Key().Kind() != reflect.Uint64 || items.Type.Elem().Kind() != reflect.Pointer {
		t.Errorf("simplelru map is %v, want map[uint64]*Entry", items.Type)
	}
}

// TestAllocSizeMatchesRuntime checks the size-class table against the
// runtime: append to a nil slice rounds its capacity up to the size class.
func TestAllocSizeMatchesRuntime(t *testing.T) {
	for n := 0; n <= 100_000; n += 1 + n/64 {
		got := allocSize(n)
		want := int64(cap(append([]byte(nil), make([]byte, n)...)))
		if got != want {
			t.Fatalf("allocSize(%d) = %d, runtime rounds to %d", n, got, want)
		}
	}
}

// workload drives a cache whose Getter returns fresh values; key(i) sets
// the key buffer to the i-th key and returns it.
type workload func(c *Cache, key func(i int) []byte, rnd *rand.Rand)

var (
	// fill asks for n keys once: no evictions.
	fill = func(n int) workload {
		return func(c *Cache, key func(int) []byte, _ *rand.Rand) {
			for i := range n {
				c.Get(context.Background(), key(i))
			}
		}
	}
	// evictChurn asks for n*times distinct keys: once the cache is full,
	// every fill evicts the least recently used entries.
	evictChurn = func(n, times int) workload { return fill(n * times) }
	// invalidateChurn fills perShard keys into each shard, then
	// times*perShard*shards times invalidates a live key at random and
	// fills a new key of the same shard: shards keep their entry counts
	// while their maps see deletions in random order.
	invalidateChurn = func(perShard, times int) workload {
		return func(c *Cache, key func(int) []byte, rnd *rand.Rand) {
			n := perShard * len(c.shards)
			live := make([]int, 0, n)
			count := make([]int, len(c.shards))
			next := 0
			for len(live) < n {
				if s := c.shardIndex(key(next)); count[s] < perShard {
					count[s]++
					c.Get(context.Background(), key(next))
					live = append(live, next)
				}
				next++
			}
			for range n * times {
				j := rnd.IntN(n)
				s := c.shardIndex(key(live[j]))
				c.Invalidate(key(live[j]))
				for c.shardIndex(key(next)) != s {
					next++
				}
				c.Get(context.Background(), key(next))
				live[j] = next
				next++
			}
		}
	}
)

// heapGrowth runs w on a fresh cache whose values are valLen-byte slices
// and whose keys are keyLen bytes, and returns the growth of the live heap,
// the bytes the cache accounted, and its stats.
func heapGrowth(t testing.TB, cfg Config, keyLen, valLen int, w workload) (measured, accounted int64, st Stats) {
	next := GetterFunc(func(context.Context, []byte, bool) (Item, bool, error) {
		return Item{Value: make([]byte, valLen)}, true, nil
	})
	c, err := New(next, cfg)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, keyLen)
	key := func(i int) []byte {
		// Fixed-width decimal key, so every key has keyLen bytes.
		for j := len(buf) - 1; j >= 0; j-- {
			buf[j] = byte('0' + i%10)
			i /= 10
		}
		return buf
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	w(c, key, rnd)
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	after := ms.HeapAlloc
	st = c.Stats()
	runtime.KeepAlive(c)
	return int64(after) - int64(before), st.Bytes, st
}

// TestAccountingCoversHeap measures the live heap that entries take and
// checks that the bytes charged against MaxBytes are at least that, so
// MaxBytes really bounds memory; and not wildly more, so it is not wasted.
func TestAccountingCoversHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates tens of MB")
	}
	const shards = 16
	tests := []struct {
		name           string
		keyLen, valLen int
		n              int // entries that fit in MaxBytes
		evicting       bool
		w              workload
	}{
		{name: "tiny", keyLen: 8, valLen: 8, n: 100_000, w: fill(100_000)},
		{name: "small", keyLen: 16, valLen: 100, n: 100_000, w: fill(100_000)},
		{name: "small odd sizes", keyLen: 13, valLen: 77, n: 70_001, w: fill(70_001)},
		{name: "1 KiB values", keyLen: 40, valLen: 1000, n: 20_000, w: fill(20_000)},
		{name: "16 KiB values", keyLen: 40, valLen: 16 << 10, n: 1_000, w: fill(1_000)},
		// Per-shard entry counts where churn left Go 1.26's maps emptiest
		// in a scan of 9 to 120,000 entries (1310: evicting in order;
		// 322 and 2644: deleting at random), and a middling one.
		{name: "tiny evicting 1310/shard", keyLen: 8, valLen: 8, n: 1310 * shards, evicting: true, w: evictChurn(1310*shards, 16)},
		{name: "small evicting 3000/shard", keyLen: 16, valLen: 100, n: 3000 * shards, evicting: true, w: evictChurn(3000*shards, 8)},
		{name: "tiny invalidating 322/shard", keyLen: 8, valLen: 8, n: 322 * shards, w: invalidateChurn(322, 16)},
		{name: "tiny invalidating 2644/shard", keyLen: 8, valLen: 8, n: 2644 * shards, w: invalidateChurn(2644, 6)},
		{name: "small invalidating 3000/shard", keyLen: 16, valLen: 100, n: 3000 * shards, w: invalidateChurn(3000, 4)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			per := entrySize(tt.keyLen, tt.valLen)
			// Headroom for uneven shards unless the case wants evictions.
			cfg := Config{MaxBytes: int64(tt.n) * per * 3 / 2, Shards: shards, MaxItemBytes: 2 * per}
			if tt.evicting {
				cfg.MaxBytes = int64(tt.n) * per
			}
			measured, accounted, st := heapGrowth(t, cfg, tt.keyLen, tt.valLen, tt.w)
			switch {
			case !tt.evicting && (st.Entries != int64(tt.n) || st.Evictions != 0):
				t.Fatalf("Entries = %d, Evictions = %d; want %d, 0", st.Entries, st.Evictions, tt.n)
			case tt.evicting && st.Evictions == 0:
				t.Fatalf("no evictions")
			}
			// The workload's scaffolding (8 bytes an entry) and the GC's
			// own metadata.
			slack := int64(16<<10) + 8*int64(tt.n)
			t.Logf("entries %d: heap %d B/entry, accounted %d B/entry (ratio %.2f)",
				st.Entries, measured/st.Entries, accounted/st.Entries, float64(accounted)/float64(measured))
			if accounted < measured-slack {
				t.Errorf("accounted %d bytes but the heap grew by %d: MaxBytes does not bound memory", accounted, measured)
			}
			if accounted > 2*measured {
				t.Errorf("accounted %d bytes for %d bytes of heap: overhead constant far too high", accounted, measured)
			}
		})
	}
}

// shardIndex is the index of key's shard.
func (c *Cache) shardIndex(key []byte) int {
	_, s := c.shardOf(key)
	return int((uintptr(unsafe.Pointer(s)) - uintptr(unsafe.Pointer(&c.shards[0]))) / unsafe.Sizeof(c.shards[0]))
}
