package kv

import (
	"fmt"
	"runtime"
	"testing"
)

// heapAlloc returns the live heap after a full collection.
func heapAlloc() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// fill sets n keys "key:%012d" (16 bytes) with values of valLen(i) bytes,
// reusing its buffers so that it retains nothing itself. It returns the
// total key and value bytes.
func fill(tb testing.TB, db *DB, n int, valLen func(i int) int) int64 {
	var raw int64
	kb := make([]byte, 0, 32)
	vb := make([]byte, 0, 1<<20)
	keys := make([][]byte, 1)
	for i := range n {
		kb = fmt.Appendf(kb[:0], "key:%012d", i)
		vb = vb[:valLen(i)]
		keys[0] = kb
		tx := db.Begin(keys)
		if err := tx.Set(kb, vb, 0); err != nil {
			tb.Fatal(err)
		}
		tx.End()
		raw += int64(len(kb) + len(vb))
	}
	return raw
}

// TestUsedBytesHonest checks the accounting against the Go heap: after
// inserting entries, the heap grew by UsedBytes plus at most the
// unaccounted metadata (shard structs, the segment tables' spare capacity,
// free lists: under 1% + 64 KiB here), and by no less than 98% of
// UsedBytes.
func TestUsedBytesHonest(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 64 MiB")
	}
	tests := []struct {
		name   string
		n      int
		valLen func(int) int
	}{
		{"128-byte values", 200000, func(int) int { return 128 }},
		{"mixed small", 200000, func(i int) int { return i % 300 }},
		{"large values", 2500, func(i int) int { return 9000 + i*7 }},
	}
	allocSize(1) // the size-class table is allocated once, outside the measure
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := heapAlloc()
			db, err := New(Config{MaxBytes: 64 << 20, ExpireInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			raw := fill(t, db, tt.n, tt.valLen)
			growth := heapAlloc() - before
			st := db.Stats()
			runtime.KeepAlive(db)
			t.Logf("%d keys: UsedBytes %d, heap growth %d (%+.2f%%), overhead %.1f B/key accounted, %.1f B/key on the heap",
				st.Keys, st.UsedBytes, growth, 100*float64(growth-st.UsedBytes)/float64(st.UsedBytes),
				float64(st.UsedBytes-raw)/float64(st.Keys), float64(growth-raw)/float64(st.Keys))
			if st.Evictions != 0 || st.Keys != int64(tt.n) {
				t.Fatalf("stats %+v", st)
			}
			if slack := st.UsedBytes/100 + 64<<10; growth > st.UsedBytes+slack {
				t.Errorf("heap grew by %d, UsedBytes %d: %d bytes unaccounted (slack %d)", growth, st.UsedBytes, growth-st.UsedBytes, slack)
			}
			if growth < st.UsedBytes*98/100 {
				t.Errorf("heap grew by %d, UsedBytes %d: accounting inflated", growth, st.UsedBytes)
			}
		})
	}
}
