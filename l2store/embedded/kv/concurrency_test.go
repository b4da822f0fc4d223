package kv

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// TestConcurrent runs goroutines doing mixed operations on overlapping
// keys, multi-key Txs over random key sets in random order, with active
// expiry, Stats and the clock moving alongside, under memory pressure.
// Every value consists of one byte that depends on its key's group, and
// writes copy values only within a group, so a value torn, misplaced or
// corrupted by a concurrent move is noticed. Run with -race.
func TestConcurrent(t *testing.T) {
	configs := []struct {
		name string
		cfg  Config
	}{
		{"allkeys-lru", Config{MaxBytes: 160 << 10, Shards: 8, SegmentSize: 4096}},
		{"noeviction", Config{MaxBytes: 160 << 10, Shards: 8, SegmentSize: 4096, Policy: NoEviction}},
		{"one shard", Config{MaxBytes: 64 << 10, Shards: 1, SegmentSize: 2048}},
	}
	const workers, ops, nkeys = 8, 3000, 192
	keys := make([][]byte, nkeys)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "c%d", i)
	}
	tag := func(i int) byte { return byte('a' + i%4) }
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			db, clk := newTestDB(t, c.cfg)
			var failed atomic.Bool
			fail := func(format string, args ...any) {
				if failed.CompareAndSwap(false, true) {
					t.Errorf(format, args...)
				}
			}
			valid := func(i int, v []byte) {
				if bytes.Count(v, []byte{tag(i)}) != len(v) {
					fail("key %d: value of %d bytes is not all %q: %.40q", i, len(v), tag(i), v)
				}
			}
			var wg sync.WaitGroup
			done := make(chan struct{})
			go func() { // background: expiry, stats, time
				for {
					select {
					case <-done:
						return
					default:
					}
					db.ExpireCycle()
					if st := db.Stats(); st.UsedBytes > st.MaxBytes {
						fail("UsedBytes %d > MaxBytes %d", st.UsedBytes, st.MaxBytes)
					}
					clk.Advance(7)
				}
			}()
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(w), 99))
					for range ops {
						i := r.IntN(nkeys)
						k := keys[i]
						switch op := r.IntN(20); {
						case op < 5:
							tx := db.Begin([][]byte{k})
							if v, _, ok := tx.Get(k); ok {
								valid(i, v)
							}
							tx.End()
						case op < 9:
							v := bytes.Repeat([]byte{tag(i)}, r.IntN(1500))
							var exp int64
							if r.IntN(3) == 0 {
								exp = clk.UnixMilli() + int64(r.IntN(200))
							}
							tx := db.Begin([][]byte{k})
							if err := tx.Set(k, v, exp); err != nil && !errors.Is(err, ErrOOM) {
								fail("set: %v", err)
							}
							tx.End()
						case op < 11:
							tx := db.Begin([][]byte{k})
							if _, err := tx.Append(k, bytes.Repeat([]byte{tag(i)}, 1+r.IntN(100))); err != nil && !errors.Is(err, ErrOOM) {
								fail("append: %v", err)
							}
							if v, _, ok := tx.Peek(k); ok {
								valid(i, v)
							}
							tx.End()
						case op < 13:
							tx := db.Begin([][]byte{k})
							tx.Delete(k)
							tx.End()
						case op < 14:
							tx := db.Begin([][]byte{k})
							tx.SetExpire(k, clk.UnixMilli()+int64(r.IntN(100)))
							tx.End()
						case op < 17:
							// Multi-key write over random keys,
							// named in random order.
							idx := r.Perm(nkeys)[:2+r.IntN(5)]
							var ks, kvs [][]byte
							for _, j := range idx {
								ks = append(ks, keys[j])
								kvs = append(kvs, keys[j], bytes.Repeat([]byte{tag(j)}, r.IntN(600)))
							}
							tx := db.Begin(ks)
							for n, j := range idx {
								if v, _, ok := tx.Get(ks[n]); ok {
									valid(j, v)
								}
							}
							if tx.Fits(kvs) {
								for n := 0; n < len(kvs); n += 2 {
									if err := tx.Set(kvs[n], kvs[n+1], 0); err != nil {
										fail("Fits, then Set failed: %v", err)
									}
								}
							}
							tx.End()
						case op < 19:
							// Copy within a group: SET dst (GET src).
							j := (i + 4*(1+r.IntN(nkeys/4-1))) % nkeys
							tx := db.Begin([][]byte{k, keys[j]})
							if v, e, ok := tx.Get(k); ok {
								if err := tx.Set(keys[j], v, e); err != nil && !errors.Is(err, ErrOOM) {
									fail("copy: %v", err)
								}
								if v, _, ok := tx.Peek(keys[j]); ok {
									valid(j, v)
								}
							}
							tx.End()
						default:
							if r.IntN(1000) == 0 {
								db.Flush()
							}
						}
					}
				}()
			}
			wg.Wait()
			close(done)
			mustCheck(t, db)
			for i, k := range keys {
				tx := db.Begin([][]byte{k})
				if v, _, ok := tx.Peek(k); ok {
					valid(i, v)
				}
				tx.End()
			}
			st := db.Stats()
			t.Logf("%+v", st)
		})
	}
}
