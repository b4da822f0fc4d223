package kv

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/sidecache/sidecache/l2store/embedded/kv/internal/kvmodel"
)

// harness runs one sequence of operations, decoded from bytes, on the
// engine and on the reference model, and checks after every operation that
// both hold the same keys, values and expiries, and that the engine's
// invariants hold.
//
// With a roomy budget nothing may differ. Under NoEviction near the bound,
// an engine write may fail with ErrOOM; the model then skips it, and the
// engine must still hold the old value. Under AllKeysLRU near the bound,
// keys may vanish from the engine only as counted evictions: after every
// operation, the number of keys the model has and the engine lacks must
// equal the growth of Stats.Evictions. Reads must always agree, since the
// previous check left both sides with the same keys.
type harness struct {
	t     testing.TB
	db    *DB
	clk   *fakeClock
	model *kvmodel.DB
	keys  [][]byte
	evict bool
	roomy bool // no write may fail
	ooms  int
	src   []byte
	pos   int
	seq   int
	log   []string
	// multi is the number of keys of a multi-key write: one of its Sets
	// may evict a key that a later one writes again, which is counted but
	// leaves no key missing.
	multi uint64
}

// harnessModes are the configurations the model tests run: 1 KiB segments
// (entries over 128 bytes are large), a roomy one and two near the bound;
// then 8 KiB segments near the bound (entries up to 1 KiB are small).
var harnessModes = []struct {
	name string
	cfg  Config
}{
	{"roomy", Config{MaxBytes: 1 << 20, Shards: 2, SegmentSize: 1024, Policy: NoEviction}},
	{"noeviction", Config{MaxBytes: 24 << 10, Shards: 2, SegmentSize: 1024, Policy: NoEviction}},
	{"allkeys-lru", Config{MaxBytes: 24 << 10, Shards: 2, SegmentSize: 1024, Policy: AllKeysLRU}},
	{"noeviction-8k", Config{MaxBytes: 36 << 10, Shards: 1, SegmentSize: 8 << 10, Policy: NoEviction}},
	{"allkeys-lru-8k", Config{MaxBytes: 36 << 10, Shards: 1, SegmentSize: 8 << 10, Policy: AllKeysLRU}},
}

func newHarness(t testing.TB, cfg Config, src []byte) *harness {
	db, clk := newTestDB(t, cfg)
	model, err := kvmodel.New(kvmodel.Config{MaxBytes: 1 << 40, Now: clk.Now, ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(model.Close)
	keys := [][]byte{{}, {0}, []byte("\xff\r\n\x00"), bytes.Repeat([]byte("L"), 200)}
	for i := range 20 {
		keys = append(keys, fmt.Appendf(nil, "key:%d", i))
	}
	return &harness{t: t, db: db, clk: clk, model: model, keys: keys, src: src,
		evict: cfg.Policy == AllKeysLRU, roomy: cfg.MaxBytes >= 1<<20}
}

func (h *harness) next() int {
	if h.pos >= len(h.src) {
		h.pos++
		return 0
	}
	b := h.src[h.pos]
	h.pos++
	return int(b)
}

func (h *harness) key() []byte { return h.keys[h.next()%len(h.keys)] }

// value returns a fresh value whose length class comes from the input.
func (h *harness) value() []byte {
	var n int
	switch c, r := h.next(), h.next()+h.next()<<8; c % 8 {
	case 0:
		n = 0
	case 1, 2, 3:
		n = 1 + r%32
	case 4, 5:
		n = 100 + r%60 // around the 128-byte large-entry threshold
	case 6:
		n = 161 + r%1200 // large, up to past a segment
	default:
		n = 1200 + r%2000
	}
	h.seq++
	v := make([]byte, n)
	for i := range v {
		v[i] = byte(h.seq + i*7)
	}
	return v
}

// expiry returns 0, a time in the future, or one already past.
func (h *harness) expiry() int64 {
	switch c := h.next(); c % 4 {
	case 0, 1:
		return 0
	case 2:
		return h.clk.UnixMilli() + 1 + int64(h.next()*20)
	default:
		return h.clk.UnixMilli() - int64(h.next())
	}
}

func (h *harness) fatalf(format string, args ...any) {
	h.t.Helper()
	start := max(0, len(h.log)-20)
	h.t.Fatalf("after ops (last %d):\n%s\n%s", len(h.log)-start, strings.Join(h.log[start:], "\n"), fmt.Sprintf(format, args...))
}

func (h *harness) logf(format string, args ...any) {
	h.log = append(h.log, fmt.Sprintf(format, args...))
}

// oom checks an engine error: ErrOOM is allowed under NoEviction near the
// bound and, under AllKeysLRU, only for an entry too large for a shard or
// an append (which needs the old and the new value at once).
func (h *harness) oom(err error, key, val []byte, isAppend bool) bool {
	h.t.Helper()
	if err == nil {
		return false
	}
	if !errors.Is(err, ErrOOM) || h.roomy {
		h.fatalf("unexpected error %v", err)
	}
	h.ooms++
	if h.evict && !isAppend {
		s := &h.db.shards[h.db.hash(key)&h.db.mask]
		if a := s.largeAlloc(len(key), len(val)); int64(a)+metaCost <= s.maxLarge {
			h.fatalf("ErrOOM under allkeys-lru for an entry that fits a shard (%d+%d bytes)", len(key), len(val))
		}
	}
	return true
}

// step runs one operation on both sides. It reports false when the input
// is used up.
func (h *harness) step() bool {
	if h.pos >= len(h.src) {
		return false
	}
	before := h.db.Stats().Evictions
	switch op := h.next() % 16; op {
	case 0, 1:
		k := h.key()
		tx, mt := h.db.Begin([][]byte{k}), h.model.Begin([][]byte{k})
		get, mget, name := tx.Get, mt.Get, "get"
		if op == 1 {
			get, mget, name = tx.Peek, mt.Peek, "peek"
		}
		v, e, ok := get(k)
		mv, me, mok := mget(k)
		h.logf("%s %q -> %d bytes %d %v", name, k, len(v), e, ok)
		if ok != mok || e != me || !bytes.Equal(v, mv) {
			h.fatalf("%s %q: engine (%d bytes, %d, %v), model (%d bytes, %d, %v)", name, k, len(v), e, ok, len(mv), me, mok)
		}
		tx.End()
		mt.End()
	case 2, 3, 4:
		k, v, e := h.key(), h.value(), h.expiry()
		h.logf("set %q %d bytes exp %d", k, len(v), e)
		tx, mt := h.db.Begin([][]byte{k}), h.model.Begin([][]byte{k})
		if !h.oom(tx.Set(k, v, e), k, v, false) {
			mt.Set(k, v, e)
		}
		tx.End()
		mt.End()
	case 5:
		k := h.key()
		tx, mt := h.db.Begin([][]byte{k}), h.model.Begin([][]byte{k})
		ok, mok := tx.Delete(k), mt.Delete(k)
		h.logf("del %q -> %v", k, ok)
		if ok != mok {
			h.fatalf("delete %q: engine %v, model %v", k, ok, mok)
		}
		tx.End()
		mt.End()
	case 6:
		k, e := h.key(), h.expiry()
		tx, mt := h.db.Begin([][]byte{k}), h.model.Begin([][]byte{k})
		ok, mok := tx.SetExpire(k, e), mt.SetExpire(k, e)
		h.logf("setexpire %q %d -> %v", k, e, ok)
		if ok != mok {
			h.fatalf("setexpire %q: engine %v, model %v", k, ok, mok)
		}
		tx.End()
		mt.End()
	case 7, 8:
		k, d := h.key(), h.value()
		if op == 8 {
			d = d[:min(len(d), 40)]
		}
		tx, mt := h.db.Begin([][]byte{k}), h.model.Begin([][]byte{k})
		n, err := tx.Append(k, d)
		h.logf("append %q %d bytes -> %d %v", k, len(d), n, err)
		if !h.oom(err, k, d, true) {
			mn, _ := mt.Append(k, d)
			if n != mn {
				h.fatalf("append %q: engine %d, model %d", k, n, mn)
			}
		}
		tx.End()
		mt.End()
	case 9:
		// Multi-key write, all or nothing.
		var kvs [][]byte
		for range 1 + h.next()%4 {
			kvs = append(kvs, h.key(), h.value())
		}
		var keys [][]byte
		for i := 0; i < len(kvs); i += 2 {
			keys = append(keys, kvs[i])
		}
		h.multi = uint64(len(keys))
		tx, mt := h.db.Begin(keys), h.model.Begin(keys)
		fits := tx.Fits(kvs)
		h.logf("mset %d keys -> fits %v", len(keys), fits)
		if !fits && h.roomy {
			h.fatalf("Fits false with a roomy budget")
		}
		if !fits {
			h.ooms++
		}
		if fits {
			for i := 0; i < len(kvs); i += 2 {
				if err := tx.Set(kvs[i], kvs[i+1], 0); err != nil {
					h.fatalf("mset: Fits said yes, then Set %q (%d bytes) failed: %v", kvs[i], len(kvs[i+1]), err)
				}
				mt.Set(kvs[i], kvs[i+1], 0)
			}
		}
		tx.End()
		mt.End()
	case 10, 11:
		// A write whose argument aliases a value read in the same Tx:
		// SET dst (GET src), or APPEND k (GET k).
		src, dst := h.key(), h.key()
		if op == 11 {
			dst = src
		}
		tx, mt := h.db.Begin([][]byte{src, dst}), h.model.Begin([][]byte{src, dst})
		v, e, ok := tx.Get(src)
		mv, me, mok := mt.Get(src)
		if ok && mok {
			if !bytes.Equal(v, mv) || e != me {
				h.fatalf("get %q: engine (%d bytes, %d), model (%d bytes, %d)", src, len(v), e, len(mv), me)
			}
			if op == 10 {
				h.logf("set %q (get %q) %d bytes", dst, src, len(v))
				if !h.oom(tx.Set(dst, v, e), dst, v, false) {
					mt.Set(dst, mv, me)
				}
			} else {
				v, mv = v[:len(v)/2], mv[:len(mv)/2]
				h.logf("append %q (half of itself) %d bytes", dst, len(v))
				n, err := tx.Append(dst, v)
				if !h.oom(err, dst, v, true) {
					if mn, _ := mt.Append(dst, mv); mn != n {
						h.fatalf("append: engine %d, model %d", n, mn)
					}
				}
			}
		} else if ok != mok {
			h.fatalf("get %q: engine %v, model %v", src, ok, mok)
		}
		tx.End()
		mt.End()
	case 12:
		ms := int64(h.next() * 10)
		h.logf("advance %dms", ms)
		h.clk.Advance(ms)
	case 13:
		h.logf("expire cycle")
		h.db.ExpireCycle()
	case 14:
		if h.next()%8 == 0 {
			h.logf("flush")
			h.db.Flush()
			h.model.Flush()
		}
	case 15:
		// Overwrite with a value of the same length (in place).
		k := h.key()
		tx, mt := h.db.Begin([][]byte{k}), h.model.Begin([][]byte{k})
		if v, _, ok := tx.Peek(k); ok {
			nv := bytes.Repeat([]byte{byte(h.next())}, len(v))
			e := h.expiry()
			h.logf("set %q same length %d exp %d", k, len(nv), e)
			if !h.oom(tx.Set(k, nv, e), k, nv, false) {
				mt.Set(k, nv, e)
			}
		}
		tx.End()
		mt.End()
	}
	h.compare(h.db.Stats().Evictions - before)
	return true
}

// compare checks that engine and model hold the same live keys, values and
// expiries (looking without side effects, so expired keys stay for the
// lazy and active paths to find), accounts for evictions, and checks the
// engine's invariants.
func (h *harness) compare(evicted uint64) {
	h.t.Helper()
	now := h.clk.UnixMilli()
	var missing uint64
	for _, k := range h.keys {
		v, e, ok := h.db.lookup(k, now)
		mv, me, mok := h.model.Lookup(k, now)
		switch {
		case ok && !mok:
			h.fatalf("engine holds %q, model does not", k)
		case !ok && mok:
			if !h.evict {
				h.fatalf("engine lost %q (%d bytes)", k, len(mv))
			}
			missing++
			mt := h.model.Begin([][]byte{k})
			mt.Delete(k)
			mt.End()
		case ok && (e != me || !bytes.Equal(v, mv)):
			h.fatalf("key %q: engine (%d bytes, exp %d), model (%d bytes, exp %d)", k, len(v), e, len(mv), me)
		}
	}
	if missing > evicted || evicted > missing+h.multi {
		h.fatalf("%d keys vanished, %d evictions counted", missing, evicted)
	}
	h.multi = 0
	keys, expires := h.db.live(now)
	mkeys, mexpires := h.model.Live(now)
	if keys != mkeys || expires != mexpires {
		h.fatalf("live: engine %d keys %d expires, model %d keys %d expires", keys, expires, mkeys, mexpires)
	}
	if st := h.db.Stats(); st.UsedBytes > st.MaxBytes || st.Keys < keys || st.Expires < expires {
		h.fatalf("stats %+v, %d live keys, %d live expires", st, keys, expires)
	}
	if err := h.db.check(); err != nil {
		h.fatalf("invariants: %v", err)
	}
}

func TestModelRandom(t *testing.T) {
	seeds := 30
	if testing.Short() || raceEnabled {
		seeds = 5
	}
	for _, mode := range harnessModes {
		t.Run(mode.name, func(t *testing.T) {
			for seed := range seeds {
				r := rand.New(rand.NewPCG(uint64(seed), 42))
				src := make([]byte, 30000)
				for i := range src {
					src[i] = byte(r.Uint32())
				}
				h := newHarness(t, mode.cfg, src)
				for h.step() {
				}
			}
		})
	}
}

// TestModelPressure checks that the pressure modes really are under
// pressure, so that the model tests exercise compaction, eviction and OOM.
func TestModelPressure(t *testing.T) {
	for _, mode := range harnessModes[1:] {
		t.Run(mode.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(7, 7))
			src := make([]byte, 30000)
			for i := range src {
				src[i] = byte(r.Uint32())
			}
			h := newHarness(t, mode.cfg, src)
			for h.step() {
			}
			st := h.db.Stats()
			t.Logf("%s: %d ops, evictions %d, expirations %d, writes refused %d", mode.name, len(h.log), st.Evictions, st.Expirations, h.ooms)
			if mode.cfg.Policy == AllKeysLRU && st.Evictions == 0 {
				t.Error("no evictions under pressure")
			}
			if mode.cfg.Policy == NoEviction && h.ooms == 0 {
				t.Error("no refused writes under pressure")
			}
		})
	}
}

func FuzzOps(f *testing.F) {
	f.Add([]byte{2, 5, 3, 0, 1, 0, 0, 5, 0})
	f.Add([]byte{9, 3, 1, 6, 0, 0, 2, 7, 0, 0, 0, 10, 2, 2, 11, 4})
	f.Add(bytes.Repeat([]byte{2, 9, 7, 200, 100, 0, 12, 255, 13}, 40))
	f.Fuzz(func(t *testing.T, src []byte) {
		for _, mode := range harnessModes {
			h := newHarness(t, mode.cfg, src)
			for h.step() {
			}
		}
	})
}
