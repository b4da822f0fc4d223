package kv

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

func key(i int) []byte { return fmt.Appendf(nil, "key:%012d", i) }

// value returns a value of n bytes that encodes i, so that a corrupted or
// misplaced value is noticed.
func value(i, n int) []byte {
	v := bytes.Repeat([]byte{byte(i), byte(i >> 8), byte(i >> 16), '.'}, n/4+1)
	return v[:n]
}

func TestEvictionLRU(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		valLen int
	}{
		{"one shard", Config{MaxBytes: 1 << 20, Shards: 1}, 128},
		{"four shards", Config{MaxBytes: 4 << 20, Shards: 4}, 128},
		{"small segments", Config{MaxBytes: 256 << 10, Shards: 2, SegmentSize: 2048}, 100},
		{"large entries", Config{MaxBytes: 4 << 20, Shards: 2}, 20000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, _ := newTestDB(t, tt.cfg)
			// A hot set, read every 50 writes, and a stream of cold
			// keys that overflows memory many times.
			const hot = 100
			n := int(10 * tt.cfg.MaxBytes / int64(tt.valLen+16))
			for i := 0; i < n; i++ {
				k := key(i)
				if i < hot {
					k = fmt.Appendf(nil, "hot:%d", i)
				}
				set(t, db, string(k), string(value(i, tt.valLen)), 0)
				if i >= hot && i%50 == 0 {
					for j := range hot {
						if v, _, ok := get(db, fmt.Sprint("hot:", j)); !ok || !bytes.Equal([]byte(v), value(j, tt.valLen)) {
							t.Fatalf("after %d writes: hot key %d lost or corrupted", i, j)
						}
					}
				}
				if st := db.Stats(); st.UsedBytes > st.MaxBytes {
					t.Fatalf("after %d writes: UsedBytes %d > MaxBytes %d", i, st.UsedBytes, st.MaxBytes)
				}
			}
			mustCheck(t, db)
			st := db.Stats()
			if st.Keys+int64(st.Evictions) != int64(n) {
				t.Errorf("Keys %d + Evictions %d != %d writes", st.Keys, st.Evictions, n)
			}
			// The most recent writes survive, the oldest cold ones do not.
			if _, _, ok := peek(db, string(key(n-1))); !ok {
				t.Error("newest key evicted")
			}
			if _, _, ok := peek(db, string(key(hot))); ok {
				t.Error("oldest cold key survived")
			}
			// Memory is used: the live data fill most of the bound.
			live := st.Keys * int64(tt.valLen+16)
			t.Logf("%d keys, %d evictions, live data %.0f%% of MaxBytes", st.Keys, st.Evictions, 100*float64(live)/float64(st.MaxBytes))
			if live < st.MaxBytes/2 {
				t.Errorf("only %d bytes of live data in %d", live, st.MaxBytes)
			}
		})
	}
}

// TestEvictionLRUOrder checks the approximation: with no reads, eviction
// is FIFO, so of the keys written the survivors are the newest.
func TestEvictionLRUOrder(t *testing.T) {
	db, _ := newTestDB(t, Config{MaxBytes: 1 << 20, Shards: 1})
	const n = 20000
	for i := range n {
		set(t, db, string(key(i)), string(value(i, 128)), 0)
	}
	st := db.Stats()
	oldestLive := n
	for i := n - 1; i >= 0; i-- {
		if _, _, ok := peek(db, string(key(i))); ok {
			oldestLive = i
		} else if i < oldestLive-1 && oldestLive < n {
			break
		}
	}
	// Every key newer than the oldest survivor survives (pure FIFO
	// within the one shard).
	for i := oldestLive; i < n; i++ {
		if _, _, ok := peek(db, string(key(i))); !ok {
			t.Fatalf("key %d evicted, but older key %d survived", i, oldestLive)
		}
	}
	if int64(n-oldestLive) != st.Keys {
		t.Errorf("survivors %d..%d, Keys %d", oldestLive, n-1, st.Keys)
	}
}

// TestEvictionExpiredFirst checks that reclaim counts expired entries as
// expirations, not evictions.
func TestEvictionExpiredFirst(t *testing.T) {
	db, clk := newTestDB(t, Config{MaxBytes: 1 << 20, Shards: 1})
	for i := range 4000 {
		set(t, db, string(key(i)), string(value(i, 128)), clk.UnixMilli()+1000)
	}
	clk.Advance(2000)
	for i := 4000; i < 12000; i++ {
		set(t, db, string(key(i)), string(value(i, 128)), 0)
	}
	st := db.Stats()
	if st.Expirations != 4000 {
		t.Errorf("Expirations = %d, want 4000 (Evictions %d)", st.Expirations, st.Evictions)
	}
	if st.Keys+int64(st.Evictions) != 8000 {
		t.Errorf("Keys %d + Evictions %d != 8000", st.Keys, st.Evictions)
	}
	mustCheck(t, db)
}

// TestOverwriteHeavyLRU checks compaction: overwriting the same keys over
// and over leaves dead bytes, which must be reclaimed without evicting the
// keys, since they all fit.
func TestOverwriteHeavyLRU(t *testing.T) {
	db, _ := newTestDB(t, Config{MaxBytes: 1 << 20, Shards: 1})
	const keys = 2000 // about 300 KiB live
	for round := range 50 {
		for i := range keys {
			n := 100 + (i+round)%50 // varying length: no in-place overwrite
			set(t, db, string(key(i)), string(value(i+round, n)), 0)
		}
	}
	st := db.Stats()
	if st.Evictions != 0 || st.Keys != keys {
		t.Errorf("Keys %d, Evictions %d; want %d, 0", st.Keys, st.Evictions, keys)
	}
	for i := range keys {
		if v, _, _ := peek(db, string(key(i))); !bytes.Equal([]byte(v), value(i+49, 100+(i+49)%50)) {
			t.Fatalf("key %d corrupted", i)
		}
	}
	mustCheck(t, db)
}

// TestLRUReplaceLargerThanHalf replaces a value bigger than half a shard:
// the old and the new value cannot both be held, so the old one is dropped
// first.
func TestLRUReplaceLargerThanHalf(t *testing.T) {
	for _, p := range []Policy{AllKeysLRU, NoEviction} {
		t.Run(p.String(), func(t *testing.T) {
			db, _ := newTestDB(t, Config{MaxBytes: 4 << 20, Shards: 1, Policy: p})
			a, b := bytes.Repeat([]byte{'a'}, 3<<20), bytes.Repeat([]byte{'b'}, 3<<20-1)
			set(t, db, "k", string(a), 0)
			set(t, db, "k", string(b), 0)
			if v, _, _ := get(db, "k"); v != string(b) {
				t.Error("value not replaced")
			}
			st := db.Stats()
			if st.Evictions != 0 || st.Keys != 1 {
				t.Errorf("stats %+v", st)
			}
			mustCheck(t, db)
		})
	}
}

func TestNoEviction(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		valLen int
	}{
		{"small values", Config{MaxBytes: 1 << 20, Shards: 1}, 128},
		{"two shards", Config{MaxBytes: 2 << 20, Shards: 2}, 300},
		{"large values", Config{MaxBytes: 4 << 20, Shards: 1}, 20000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Policy = NoEviction
			db, _ := newTestDB(t, tt.cfg)
			// Fill until every shard is full: 100 refusals in a row.
			var stored []int
			i := 0
			fill := func() {
				for failed := 0; failed < 100; i++ {
					tx := db.Begin([][]byte{key(i)})
					err := tx.Set(key(i), value(i, tt.valLen), 0)
					tx.End()
					switch {
					case errors.Is(err, ErrOOM):
						failed++
					case err != nil:
						t.Fatal(err)
					default:
						stored = append(stored, i)
						failed = 0
					}
				}
			}
			verify := func() {
				t.Helper()
				for _, j := range stored {
					if v, _, ok := peek(db, string(key(j))); !ok || !bytes.Equal([]byte(v), value(j, tt.valLen)) {
						t.Fatalf("key %d lost or corrupted", j)
					}
				}
				if st := db.Stats(); st.Keys != int64(len(stored)) || st.Evictions != 0 || st.UsedBytes > st.MaxBytes {
					t.Fatalf("stats %+v, %d keys stored", st, len(stored))
				}
				mustCheck(t, db)
			}
			fill()
			st := db.Stats()
			live := int64(len(stored) * (tt.valLen + 16))
			t.Logf("%d keys stored, live data %.1f%% of MaxBytes, UsedBytes %.1f%%", len(stored), 100*float64(live)/float64(st.MaxBytes), 100*float64(st.UsedBytes)/float64(st.MaxBytes))
			if live < st.MaxBytes*7/10 {
				t.Errorf("stored %d bytes, UsedBytes %d, MaxBytes %d", live, st.UsedBytes, st.MaxBytes)
			}
			// A failed overwrite and a multi-key write that does not
			// fit change nothing.
			k0, k1 := key(stored[0]), key(stored[1])
			tx := db.Begin([][]byte{k0, k1})
			if err := tx.Set(k0, value(0, 3*tt.valLen), 0); !errors.Is(err, ErrOOM) {
				t.Errorf("overwrite with a bigger value: %v", err)
			}
			if tx.Fits([][]byte{k0, value(7, tt.valLen), k1, value(8, 2*tt.valLen)}) {
				t.Error("Fits at the bound")
			}
			tx.End()
			verify()
			// Delete every third key; about as many new ones fit again.
			var kept []int
			for j, k := range stored {
				if j%3 == 0 {
					del(db, string(key(k)))
				} else {
					kept = append(kept, k)
				}
			}
			deleted := len(stored) - len(kept)
			stored = kept
			fill()
			added := len(stored) - len(kept)
			t.Logf("deleted %d keys, then stored %d", deleted, added)
			if added < deleted*3/4 {
				t.Errorf("deleted %d keys but only %d new ones fit", deleted, added)
			}
			verify()
		})
	}
}

// TestFitsThenSet drives multi-key writes at the NoEviction bound with
// deletes in between (so that Fits must count on compaction): whenever
// Fits says yes, every Set must succeed.
func TestFitsThenSet(t *testing.T) {
	for _, tt := range []struct{ seg, maxBytes int }{{1024, 40 << 10}, {8192, 160 << 10}} {
		seg := tt.seg
		t.Run(fmt.Sprint("segment ", seg), func(t *testing.T) {
			db, _ := newTestDB(t, Config{MaxBytes: int64(tt.maxBytes), Shards: 2, SegmentSize: seg, Policy: NoEviction})
			r := rand.New(rand.NewPCG(1, 2))
			var yes, no int
			for round := range 3000 {
				var kvs, keys [][]byte
				for range 1 + r.IntN(6) {
					k := key(r.IntN(400))
					kvs = append(kvs, k, value(round, r.IntN(seg/4)))
					keys = append(keys, k)
				}
				tx := db.Begin(keys)
				if tx.Fits(kvs) {
					yes++
					for i := 0; i < len(kvs); i += 2 {
						if err := tx.Set(kvs[i], kvs[i+1], 0); err != nil {
							t.Fatalf("round %d: Fits said yes, then Set %d of %d failed: %v", round, i/2+1, len(kvs)/2, err)
						}
					}
				} else {
					no++
					for range 20 {
						k := key(r.IntN(400))
						tx.End()
						del(db, string(k))
						tx = db.Begin(keys)
					}
				}
				tx.End()
			}
			mustCheck(t, db)
			t.Logf("Fits: %d yes, %d no", yes, no)
			if no < 300 || yes < 300 {
				t.Errorf("not at the bound often enough: %d yes, %d no", yes, no)
			}
		})
	}
}
