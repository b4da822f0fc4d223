package kv

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestPolicyNames(t *testing.T) {
	for _, p := range []Policy{AllKeysLRU, NoEviction} {
		got, err := ParsePolicy(p.String())
		if err != nil || got != p {
			t.Errorf("ParsePolicy(%q) = %v, %v", p.String(), got, err)
		}
	}
	if _, err := ParsePolicy("volatile-lru"); err == nil {
		t.Error("ParsePolicy accepted volatile-lru")
	}
	if s := Policy(7).String(); s != "Policy(7)" {
		t.Errorf("Policy(7).String() = %q", s)
	}
}

func TestNewConfig(t *testing.T) {
	tests := []struct {
		name                string
		cfg                 Config
		wantErr             bool
		wantShards, wantSeg int
	}{
		{name: "zero value", cfg: Config{}, wantShards: 16, wantSeg: 64 << 10},
		{name: "1 MiB", cfg: Config{MaxBytes: 1 << 20}, wantShards: 1, wantSeg: 64 << 10},
		{name: "64 KiB shrinks segments", cfg: Config{MaxBytes: 64 << 10}, wantShards: 1, wantSeg: 4 << 10},
		{name: "1 GiB", cfg: Config{MaxBytes: 1 << 30}, wantShards: 64, wantSeg: 64 << 10},
		{name: "32 GiB needs more shards", cfg: Config{MaxBytes: 32 << 30}, wantShards: 128, wantSeg: 64 << 10},
		{name: "explicit", cfg: Config{MaxBytes: 1 << 20, Shards: 4, SegmentSize: 4096}, wantShards: 4, wantSeg: 4096},
		{name: "explicit shards, derived segment", cfg: Config{MaxBytes: 1 << 20, Shards: 16}, wantShards: 16, wantSeg: 4096},
		{name: "negative MaxBytes", cfg: Config{MaxBytes: -1}, wantErr: true},
		{name: "3 shards", cfg: Config{Shards: 3}, wantErr: true},
		{name: "512 shards", cfg: Config{Shards: 512}, wantErr: true},
		{name: "bad policy", cfg: Config{Policy: 9}, wantErr: true},
		{name: "segment not a power of two", cfg: Config{SegmentSize: 3000}, wantErr: true},
		{name: "segment too small", cfg: Config{SegmentSize: 256}, wantErr: true},
		{name: "segment too large", cfg: Config{SegmentSize: 2 << 20}, wantErr: true},
		{name: "shard too small", cfg: Config{MaxBytes: 1000}, wantErr: true},
		{name: "shard too small for segments", cfg: Config{MaxBytes: 1 << 20, SegmentSize: 1 << 20}, wantErr: true},
		{name: "shard too large", cfg: Config{MaxBytes: 1 << 40, Shards: 256}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.ExpireInterval = -1
			db, err := New(tt.cfg)
			if tt.wantErr {
				if err == nil {
					db.Close()
					t.Fatal("New succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if got := len(db.shards); got != tt.wantShards {
				t.Errorf("shards = %d, want %d", got, tt.wantShards)
			}
			if got := db.shards[0].segSize; got != tt.wantSeg {
				t.Errorf("segment size = %d, want %d", got, tt.wantSeg)
			}
			st := db.Stats()
			if st.Keys != 0 || st.UsedBytes > st.MaxBytes || st.UsedBytes != int64(len(db.shards))*minIndexSlots*8 {
				t.Errorf("empty DB stats %+v", st)
			}
		})
	}
}

// set, get, del and friends run one operation in its own Tx.
func set(t testing.TB, db *DB, key, val string, exp int64) {
	t.Helper()
	tx := db.Begin([][]byte{[]byte(key)})
	defer tx.End()
	if err := tx.Set([]byte(key), []byte(val), exp); err != nil {
		t.Fatalf("Set(%.20q, %d bytes): %v", key, len(val), err)
	}
}

func get(db *DB, key string) (string, int64, bool) {
	tx := db.Begin([][]byte{[]byte(key)})
	defer tx.End()
	v, exp, ok := tx.Get([]byte(key))
	return string(v), exp, ok
}

func peek(db *DB, key string) (string, int64, bool) {
	tx := db.Begin([][]byte{[]byte(key)})
	defer tx.End()
	v, exp, ok := tx.Peek([]byte(key))
	return string(v), exp, ok
}

func del(db *DB, key string) bool {
	tx := db.Begin([][]byte{[]byte(key)})
	defer tx.End()
	return tx.Delete([]byte(key))
}

func appendTo(db *DB, key, data string) (int, error) {
	tx := db.Begin([][]byte{[]byte(key)})
	defer tx.End()
	return tx.Append([]byte(key), []byte(data))
}

func setExpire(db *DB, key string, exp int64) bool {
	tx := db.Begin([][]byte{[]byte(key)})
	defer tx.End()
	return tx.SetExpire([]byte(key), exp)
}

func TestOps(t *testing.T) {
	big := string(bytes.Repeat([]byte("0123456789abcdef"), 1<<16)) // 1 MiB
	huge := big + big + big                                        // 3 MiB, many segments
	mid := string(bytes.Repeat([]byte{'m'}, 20000))                // large, under a segment
	tests := []struct {
		name string
		run  func(t *testing.T, db *DB, clk *fakeClock)
	}{
		{"set get", func(t *testing.T, db *DB, clk *fakeClock) {
			set(t, db, "a", "1", 0)
			if v, exp, ok := get(db, "a"); v != "1" || exp != 0 || !ok {
				t.Errorf("get = %q %d %v", v, exp, ok)
			}
			if _, _, ok := get(db, "b"); ok {
				t.Error("missing key found")
			}
		}},
		{"empty key and empty value", func(t *testing.T, db *DB, clk *fakeClock) {
			set(t, db, "", "", 0)
			set(t, db, "e", "", 0)
			for _, k := range []string{"", "e"} {
				if v, _, ok := get(db, k); v != "" || !ok {
					t.Errorf("get(%q) = %q %v", k, v, ok)
				}
			}
			if !del(db, "") || del(db, "") {
				t.Error("delete of the empty key")
			}
		}},
		{"binary keys", func(t *testing.T, db *DB, clk *fakeClock) {
			keys := []string{"\x00", "\x00\x00", "\xff\xfe", "a\r\nb", "a\x00b"}
			for i, k := range keys {
				set(t, db, k, fmt.Sprint(i), 0)
			}
			for i, k := range keys {
				if v, _, ok := get(db, k); v != fmt.Sprint(i) || !ok {
					t.Errorf("get(%q) = %q %v", k, v, ok)
				}
			}
		}},
		{"overwrite same length, longer, shorter", func(t *testing.T, db *DB, clk *fakeClock) {
			for _, v := range []string{"aaaa", "bbbb", "cccccccccc", "d", mid, "eeee"} {
				set(t, db, "k", v, 0)
				if got, _, _ := get(db, "k"); got != v {
					t.Fatalf("after set %.10q: get = %.10q", v, got)
				}
			}
			if st := db.Stats(); st.Keys != 1 {
				t.Errorf("Keys = %d", st.Keys)
			}
		}},
		{"large values", func(t *testing.T, db *DB, clk *fakeClock) {
			for _, v := range []string{mid, big, huge} {
				set(t, db, "big", v, 0)
				if got, _, _ := get(db, "big"); got != v {
					t.Fatalf("%d-byte value came back as %d bytes", len(v), len(got))
				}
			}
			if st := db.Stats(); st.UsedBytes < int64(len(huge)) {
				t.Errorf("UsedBytes %d < value size %d", st.UsedBytes, len(huge))
			}
			del(db, "big")
			if st := db.Stats(); st.UsedBytes > 1<<20 {
				t.Errorf("UsedBytes %d after deleting the large value", st.UsedBytes)
			}
		}},
		{"long key", func(t *testing.T, db *DB, clk *fakeClock) {
			k := string(bytes.Repeat([]byte("k"), 100000))
			set(t, db, k, "v", 0)
			if v, _, ok := get(db, k); v != "v" || !ok {
				t.Errorf("get = %q %v", v, ok)
			}
			if _, _, ok := get(db, k[:99999]); ok {
				t.Error("prefix of the key found")
			}
		}},
		{"append", func(t *testing.T, db *DB, clk *fakeClock) {
			var want []byte
			for i := range 300 {
				chunk := bytes.Repeat([]byte{byte('a' + i%26)}, i*3)
				want = append(want, chunk...)
				n, err := appendTo(db, "k", string(chunk))
				if err != nil || n != len(want) {
					t.Fatalf("append %d: %d %v, want %d", i, n, err, len(want))
				}
			}
			if got, _, _ := get(db, "k"); got != string(want) {
				t.Errorf("value after appends differs (%d vs %d bytes)", len(got), len(want))
			}
			if n, err := appendTo(db, "k", ""); n != len(want) || err != nil {
				t.Errorf("empty append = %d %v", n, err)
			}
			if n, err := appendTo(db, "new", ""); n != 0 || err != nil {
				t.Errorf("empty append to a new key = %d %v", n, err)
			}
			if _, _, ok := get(db, "new"); !ok {
				t.Error("empty append did not create the key")
			}
		}},
		{"append keeps expiry", func(t *testing.T, db *DB, clk *fakeClock) {
			exp := clk.UnixMilli() + 5000
			set(t, db, "k", "x", exp)
			appendTo(db, "k", mid) // normal -> large
			appendTo(db, "k", "y")
			if v, e, _ := get(db, "k"); e != exp || v != "x"+mid+"y" {
				t.Errorf("get = %d bytes exp %d, want exp %d", len(v), e, exp)
			}
			if st := db.Stats(); st.Expires != 1 {
				t.Errorf("Expires = %d", st.Expires)
			}
		}},
		{"delete", func(t *testing.T, db *DB, clk *fakeClock) {
			set(t, db, "a", "1", 0)
			set(t, db, "b", mid, 0)
			if !del(db, "a") || !del(db, "b") {
				t.Error("delete of a present key returned false")
			}
			if del(db, "a") || del(db, "c") {
				t.Error("delete of a missing key returned true")
			}
			if st := db.Stats(); st.Keys != 0 {
				t.Errorf("Keys = %d", st.Keys)
			}
		}},
		{"set expire", func(t *testing.T, db *DB, clk *fakeClock) {
			set(t, db, "a", "1", 0)
			exp := clk.UnixMilli() + 1000
			if !setExpire(db, "a", exp) {
				t.Fatal("SetExpire of a present key returned false")
			}
			if _, e, _ := peek(db, "a"); e != exp {
				t.Errorf("expiry %d, want %d", e, exp)
			}
			if setExpire(db, "b", exp) {
				t.Error("SetExpire of a missing key returned true")
			}
			if !setExpire(db, "a", 0) {
				t.Error("persist returned false")
			}
			if st := db.Stats(); st.Expires != 0 {
				t.Errorf("Expires = %d after persist", st.Expires)
			}
		}},
		{"value too large for a shard", func(t *testing.T, db *DB, clk *fakeClock) {
			set(t, db, "k", "old", 0)
			tx := db.Begin([][]byte{[]byte("k")})
			err := tx.Set([]byte("k"), make([]byte, 5<<20), 0)
			ok := tx.Fits([][]byte{[]byte("k"), make([]byte, 5<<20)})
			tx.End()
			if !errors.Is(err, ErrOOM) || ok {
				t.Errorf("Set = %v, Fits = %v; want ErrOOM, false", err, ok)
			}
			if v, _, _ := get(db, "k"); v != "old" {
				t.Errorf("old value %q", v)
			}
		}},
		{"flush", func(t *testing.T, db *DB, clk *fakeClock) {
			for i := range 1000 {
				set(t, db, fmt.Sprint(i), mid[:i], clk.UnixMilli()+1000)
			}
			db.Flush()
			st := db.Stats()
			if st.Keys != 0 || st.Expires != 0 || st.UsedBytes != int64(len(db.shards))*minIndexSlots*8 {
				t.Errorf("stats after flush %+v", st)
			}
			set(t, db, "a", "1", 0)
			if v, _, _ := get(db, "a"); v != "1" {
				t.Error("set after flush")
			}
		}},
	}
	for _, tt := range tests {
		for _, p := range []Policy{AllKeysLRU, NoEviction} {
			t.Run(tt.name+"/"+p.String(), func(t *testing.T) {
				db, clk := newTestDB(t, Config{MaxBytes: 16 << 20, Shards: 4, Policy: p})
				tt.run(t, db, clk)
				mustCheck(t, db)
			})
		}
	}
}

// TestValuesAlias checks the documented aliasing: a value from Get stays
// valid across reads in the Tx, and writes may take such values as
// arguments even when the write moves or frees the memory they alias.
func TestValuesAlias(t *testing.T) {
	db, _ := newTestDB(t, Config{MaxBytes: 64 << 10, Shards: 1, SegmentSize: 1024, Policy: AllKeysLRU})
	for i := range 200 {
		set(t, db, fmt.Sprint("k", i), fmt.Sprintf("value-%03d-%s", i, bytes.Repeat([]byte{'x'}, 60)), 0)
	}
	// Copy each key's value onto the next key while memory is full, so
	// that the Sets compact and evict the segments the sources live in.
	for i := range 2000 {
		src, dst := []byte(fmt.Sprint("k", i%200)), []byte(fmt.Sprint("k", (i+1)%200))
		tx := db.Begin([][]byte{src, dst})
		v, _, ok := tx.Get(src)
		if ok {
			want := string(v)
			tx.Peek(dst)
			if string(v) != want {
				t.Fatal("value changed across a read")
			}
			if err := tx.Set(dst, v, 0); err != nil {
				t.Fatal(err)
			}
			if got, _, _ := tx.Peek(dst); string(got) != want {
				t.Fatalf("copied %q, got %q", want, got)
			}
		}
		tx.End()
		if _, err := appendTo(db, "grow", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	mustCheck(t, db)
}

func TestUnlockedShardPanics(t *testing.T) {
	db, _ := newTestDB(t, Config{Shards: 16})
	var other []byte
	for i := 0; other == nil; i++ {
		k := []byte(fmt.Sprint(i))
		if db.hash(k)&db.mask != db.hash([]byte("a"))&db.mask {
			other = k
		}
	}
	tx := db.Begin([][]byte{[]byte("a")})
	defer tx.End()
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	tx.Get(other)
}

// TestAllocs checks that the read paths and in-place writes do not
// allocate, and that Set allocates only for new segments and index growth.
func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	db, clk := newTestDB(t, Config{MaxBytes: 64 << 20, Policy: AllKeysLRU})
	keys := make([][]byte, 10000)
	val := bytes.Repeat([]byte{'v'}, 128)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key:%012d", i)
		set(t, db, string(keys[i]), string(val), 0)
	}
	big, bigVal := []byte("big"), make([]byte, 90000)
	set(t, db, "big", string(make([]byte, 100000)), 0)
	exp := clk.UnixMilli() + 1e6
	i := 0
	next := func() []byte { i++; return keys[i%len(keys)] }
	ops := []struct {
		name string
		op   func()
	}{
		{"Get", func() { k := next(); tx := db.Begin([][]byte{k}); tx.Get(k); tx.End() }},
		{"Peek", func() { k := next(); tx := db.Begin([][]byte{k}); tx.Peek(k); tx.End() }},
		{"Get missing", func() { k := []byte("nope"); tx := db.Begin([][]byte{k}); tx.Get(k); tx.End() }},
		{"SetExpire", func() { k := next(); tx := db.Begin([][]byte{k}); tx.SetExpire(k, exp); tx.End() }},
		{"Set same length", func() { k := next(); tx := db.Begin([][]byte{k}); tx.Set(k, val, 0); tx.End() }},
		{"Set large in place", func() { tx := db.Begin([][]byte{big}); tx.Set(big, bigVal, 0); tx.End() }},
		{"Delete missing", func() { k := []byte("missing"); tx := db.Begin([][]byte{k}); tx.Delete(k); tx.End() }},
	}
	for _, o := range ops {
		t.Run(o.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, o.op); n != 0 {
				t.Errorf("%v allocations per op", n)
			}
		})
	}
	t.Run("Delete", func(t *testing.T) {
		j := 0
		if n := testing.AllocsPerRun(1000, func() { k := keys[j]; j++; tx := db.Begin([][]byte{k}); tx.Delete(k); tx.End() }); n != 0 {
			t.Errorf("%v allocations per op", n)
		}
	})
	t.Run("Set new keys", func(t *testing.T) {
		// Steady state under eviction: a new segment comes from the
		// pool; only the free lists grow now and then.
		j := 0
		n := testing.AllocsPerRun(20000, func() {
			k := fmt.Appendf(keys[0][:0:0], "new:%012d", j)
			j++
			tx := db.Begin([][]byte{k})
			tx.Set(k, val, 0)
			tx.End()
		})
		if n > 1.05 { // 1 is fmt.Appendf's key
			t.Errorf("%v allocations per Set", n)
		}
	})
}
