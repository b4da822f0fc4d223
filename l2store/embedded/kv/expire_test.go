package kv

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// TestLazyExpiry checks that every operation treats an expired key as
// missing, removes it, and counts one expiration.
func TestLazyExpiry(t *testing.T) {
	large := string(bytes.Repeat([]byte{'L'}, 100000))
	tests := []struct {
		name string
		op   func(t *testing.T, db *DB)
	}{
		{"get", func(t *testing.T, db *DB) {
			if _, _, ok := get(db, "k"); ok {
				t.Error("found")
			}
		}},
		{"peek", func(t *testing.T, db *DB) {
			if _, _, ok := peek(db, "k"); ok {
				t.Error("found")
			}
		}},
		{"delete", func(t *testing.T, db *DB) {
			if del(db, "k") {
				t.Error("deleted")
			}
		}},
		{"set expire", func(t *testing.T, db *DB) {
			if setExpire(db, "k", 0) {
				t.Error("persisted")
			}
		}},
		{"append", func(t *testing.T, db *DB) {
			if n, err := appendTo(db, "k", "new"); n != 3 || err != nil {
				t.Errorf("append = %d %v", n, err)
			}
			if v, e, _ := get(db, "k"); v != "new" || e != 0 {
				t.Errorf("value %q exp %d", v, e)
			}
		}},
		{"set", func(t *testing.T, db *DB) {
			set(t, db, "k", "new", 0)
			if v, e, _ := get(db, "k"); v != "new" || e != 0 {
				t.Errorf("value %q exp %d", v, e)
			}
		}},
	}
	for _, tt := range tests {
		for _, val := range []string{"small", large} {
			t.Run(fmt.Sprintf("%s/%d bytes", tt.name, len(val)), func(t *testing.T) {
				db, clk := newTestDB(t, Config{MaxBytes: 4 << 20})
				set(t, db, "k", val, clk.UnixMilli()+1000)
				set(t, db, "other", "x", 0)
				clk.Advance(999)
				if _, _, ok := peek(db, "k"); !ok {
					t.Fatal("expired early")
				}
				clk.Advance(1)
				tt.op(t, db)
				st := db.Stats()
				if st.Expirations != 1 {
					t.Errorf("Expirations = %d", st.Expirations)
				}
				wantKeys := int64(1)
				if _, _, ok := peek(db, "k"); ok {
					wantKeys = 2
				}
				if st.Keys != wantKeys || st.Expires != 0 {
					t.Errorf("Keys %d Expires %d, want %d 0", st.Keys, st.Expires, wantKeys)
				}
				mustCheck(t, db)
			})
		}
	}
}

// TestExpiresCount follows Stats.Expires through the writes that change a
// key's expiry.
func TestExpiresCount(t *testing.T) {
	db, clk := newTestDB(t, Config{})
	later := clk.UnixMilli() + 60000
	steps := []struct {
		name string
		op   func()
		want int64
	}{
		{"set with expiry", func() { set(t, db, "a", "1", later) }, 1},
		{"set another", func() { set(t, db, "b", "1", later) }, 2},
		{"overwrite same length, no expiry", func() { set(t, db, "a", "2", 0) }, 1},
		{"overwrite longer, expiry", func() { set(t, db, "a", "22", later) }, 2},
		{"append keeps it", func() { appendTo(db, "a", "3") }, 2},
		{"persist", func() { setExpire(db, "a", 0) }, 1},
		{"persist again", func() { setExpire(db, "a", 0) }, 1},
		{"expire", func() { setExpire(db, "a", later) }, 2},
		{"change expiry", func() { setExpire(db, "a", later+1) }, 2},
		{"delete", func() { del(db, "a") }, 1},
		{"append creates without", func() { appendTo(db, "c", "x") }, 1},
		{"large with expiry", func() { set(t, db, "d", string(make([]byte, 50000)), later) }, 2},
		{"large in place without", func() { set(t, db, "d", string(make([]byte, 49000)), 0) }, 1},
		{"flush", func() { db.Flush() }, 0},
	}
	for _, s := range steps {
		s.op()
		if got := db.Stats().Expires; got != s.want {
			t.Fatalf("after %s: Expires = %d, want %d", s.name, got, s.want)
		}
	}
	mustCheck(t, db)
}

// TestActiveExpiry checks that ExpireCycle removes expired keys that are
// never accessed, leaves live ones, and bounds its work per call.
func TestActiveExpiry(t *testing.T) {
	for _, shards := range []int{1, 4} {
		t.Run(fmt.Sprint(shards, " shards"), func(t *testing.T) {
			db, clk := newTestDB(t, Config{MaxBytes: 64 << 20, Shards: shards})
			const n = 5000
			for i := range n {
				set(t, db, string(key(i)), "short", clk.UnixMilli()+1000)
				set(t, db, fmt.Sprint("live", i), "long", clk.UnixMilli()+100000)
				set(t, db, fmt.Sprint("forever", i), "x", 0)
			}
			db.ExpireCycle()
			if st := db.Stats(); st.Expirations != 0 || st.Keys != 3*n {
				t.Fatalf("cycle before expiry: %+v", st)
			}
			clk.Advance(1000)
			db.ExpireCycle()
			// One cycle does at most expireMaxRounds rounds per shard.
			st := db.Stats()
			perCycle := uint64(shards * expireMaxRounds * expireKeysPerRound)
			t.Logf("one cycle: %d expired keys removed", st.Expirations)
			if st.Expirations == 0 || st.Expirations > perCycle || int64(st.Expirations)+st.Expires != 2*n {
				t.Errorf("after one cycle: stats %+v", st)
			}
			// The cursor moves on, so a few more cycles sweep the
			// whole index.
			cycles := 1
			for ; db.Stats().Expires > n && cycles < 10; cycles++ {
				db.ExpireCycle()
			}
			st = db.Stats()
			t.Logf("%d cycles to remove all %d expired keys", cycles, n)
			if st.Expires != n || st.Keys != 2*n || st.Expirations != n {
				t.Errorf("stats %+v", st)
			}
			for i := range n {
				if _, _, ok := peek(db, fmt.Sprint("live", i)); !ok {
					t.Fatalf("live key %d removed", i)
				}
			}
			mustCheck(t, db)
		})
	}
}

// TestExpireLoop checks the background goroutine: with a short interval,
// an expired key that nobody touches is removed. It polls with a deadline.
func TestExpireLoop(t *testing.T) {
	clk := newFakeClock()
	db, err := New(Config{Now: clk.Now, ExpireInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	set(t, db, "k", "v", clk.UnixMilli()+10)
	clk.Advance(10)
	deadline := time.Now().Add(10 * time.Second)
	for db.Stats().Expirations == 0 {
		if time.Now().After(deadline) {
			t.Fatal("expired key not removed by the background cycle")
		}
		time.Sleep(time.Millisecond)
	}
	db.Close()
	db.Close() // idempotent
}
