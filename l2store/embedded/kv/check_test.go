package kv

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable clock for Config.Now.
type fakeClock struct{ ms atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ms.Store(1_700_000_000_000)
	return c
}

func (c *fakeClock) Now() time.Time   { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) Advance(ms int64) { c.ms.Add(ms) }
func (c *fakeClock) UnixMilli() int64 { return c.ms.Load() }

// newTestDB returns a DB on a fake clock without the expiry goroutine.
func newTestDB(t testing.TB, cfg Config) (*DB, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	cfg.Now = clk.Now
	cfg.ExpireInterval = -1
	db, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db, clk
}

// mustCheck fails the test if the DB's internal invariants do not hold.
func mustCheck(t testing.TB, db *DB) {
	t.Helper()
	if err := db.check(); err != nil {
		t.Fatal(err)
	}
}

// lookup returns a copy of key's value and its expiry if key is live at
// now, without side effects.
func (db *DB) lookup(key []byte, now int64) ([]byte, int64, bool) {
	h := db.hash(key)
	s := &db.shards[h&db.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	i, e := s.find(h, key)
	if i < 0 || e.expiredAt(now) {
		return nil, 0, false
	}
	return append([]byte(nil), e.val()...), e.exp(), true
}

// live returns the number of keys live at now and how many of them have an
// expiry.
func (db *DB) live(now int64) (keys, expires int64) {
	for i := range db.shards {
		s := &db.shards[i]
		s.mu.Lock()
		for _, sl := range s.slots {
			if sl == 0 {
				continue
			}
			if e := s.decode(sl & s.locMask); !e.expiredAt(now) {
				keys++
				if e.exp() != 0 {
					expires++
				}
			}
		}
		s.mu.Unlock()
	}
	return keys, expires
}

// check verifies every shard's invariants: the index and the arena agree,
// the counters match what is stored, and the accounting matches the
// memory held and stays within the budget.
func (db *DB) check() error {
	for i := range db.shards {
		s := &db.shards[i]
		s.mu.Lock()
		err := s.check(db, uint64(i))
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("shard %d: %w", i, err)
		}
	}
	return nil
}

func (s *shard) check(db *DB, index uint64) error {
	mask := len(s.slots) - 1
	if len(s.slots) < minIndexSlots || len(s.slots)&mask != 0 {
		return fmt.Errorf("index has %d slots", len(s.slots))
	}
	refs := make(map[uint64]bool)
	var keys, expires int
	for i, sl := range s.slots {
		if sl == 0 {
			continue
		}
		keys++
		loc := sl & s.locMask
		id := int(loc >> s.offBits)
		if id <= 0 || id >= len(s.segs) {
			return fmt.Errorf("slot %d: bad segment id %d", i, id)
		}
		switch st := s.segs[id].state; {
		case st == segLarge && loc&s.offMask != 0:
			return fmt.Errorf("slot %d: large entry at offset %d", i, loc&s.offMask)
		case st == segFree:
			return fmt.Errorf("slot %d: points into free segment %d", i, id)
		case st != segLarge && int(loc&s.offMask) >= int(s.segs[id].end):
			return fmt.Errorf("slot %d: offset %d past segment end %d", i, loc&s.offMask, s.segs[id].end)
		}
		e := s.decode(loc)
		if e.buf[e.p]&flagDead != 0 {
			return fmt.Errorf("slot %d: points at a dead entry", i)
		}
		h := maphash.Bytes(db.seed, e.key())
		if h&db.mask != index {
			return fmt.Errorf("slot %d: key %q belongs to shard %d", i, e.key(), h&db.mask)
		}
		if h>>s.locBits != sl>>s.locBits {
			return fmt.Errorf("slot %d: hash bits do not match key %q", i, e.key())
		}
		for j := int(h>>s.locBits) & mask; j != i; j = (j + 1) & mask {
			if s.slots[j] == 0 {
				return fmt.Errorf("slot %d: unreachable from its home (empty slot %d)", i, j)
			}
		}
		if refs[loc] {
			return fmt.Errorf("slot %d: location %x referenced twice", i, loc)
		}
		refs[loc] = true
		if e.exp() != 0 {
			expires++
		}
	}
	if keys != s.count {
		return fmt.Errorf("count %d, index holds %d", s.count, keys)
	}
	if int64(expires) != s.expires {
		return fmt.Errorf("expires %d, index holds %d", s.expires, expires)
	}

	used := int64(len(s.slots))*8 + int64(len(s.pool))*int64(s.segSize)
	var normals, heads, liveEntries int
	free := make(map[uint32]bool)
	for _, id := range s.freeIDs {
		if free[id] {
			return fmt.Errorf("id %d free twice", id)
		}
		free[id] = true
	}
	inUse := make(map[uint32]bool)
	for id := 1; id < len(s.segs); id++ {
		sg := &s.segs[id]
		if sg.state == segFree {
			if !free[uint32(id)] || sg.buf != nil {
				return fmt.Errorf("segment %d: free but not on the free list or still holding memory", id)
			}
			continue
		}
		if free[uint32(id)] {
			return fmt.Errorf("segment %d: in use and on the free list", id)
		}
		inUse[uint32(id)] = true
		used += metaCost
		if sg.state == segLarge {
			used += int64(len(sg.buf))
			if int64(len(sg.buf)) != int64(allocSize(len(sg.buf))) {
				return fmt.Errorf("segment %d: large allocation of %d bytes is not a size class", id, len(sg.buf))
			}
			e := s.decode(s.loc(uint32(id), 0))
			if e.end > len(sg.buf) || int(sg.end) != e.end || sg.live != sg.end {
				return fmt.Errorf("segment %d: large entry size %d, end %d, live %d, cap %d", id, e.end, sg.end, sg.live, len(sg.buf))
			}
			if e.buf[0]&flagDead != 0 || !refs[s.loc(uint32(id), 0)] {
				return fmt.Errorf("segment %d: large entry not live and referenced", id)
			}
			liveEntries++
			continue
		}
		normals++
		used += int64(s.segSize)
		if len(sg.buf) != s.segSize {
			return fmt.Errorf("segment %d: %d bytes", id, len(sg.buf))
		}
		if sg.state == segHead {
			heads++
			if uint32(id) != s.head {
				return fmt.Errorf("segment %d: a head that is not the head %d", id, s.head)
			}
		}
		var live int
		for p := 0; p < int(sg.end); {
			e := decodeAt(sg.buf, uint32(id), p)
			if e.end > int(sg.end) {
				return fmt.Errorf("segment %d: entry at %d runs past end %d", id, p, sg.end)
			}
			if e.buf[p]&flagDead == 0 {
				live += e.size()
				liveEntries++
				if !refs[s.loc(uint32(id), p)] {
					return fmt.Errorf("segment %d: live entry at %d not in the index", id, p)
				}
			}
			p = e.end
		}
		if live != int(sg.live) {
			return fmt.Errorf("segment %d: live %d, entries hold %d", id, sg.live, live)
		}
		if sg.state == segSealed {
			if !sg.cand && s.segSize-int(sg.live) >= s.candMin {
				return fmt.Errorf("segment %d: %d dead bytes but not a candidate", id, s.segSize-int(sg.live))
			}
		}
	}
	if liveEntries != keys {
		return fmt.Errorf("%d live entries, %d keys", liveEntries, keys)
	}
	if s.head != 0 && heads != 1 {
		return fmt.Errorf("head %d, %d head segments", s.head, heads)
	}
	if s.head == 0 && heads != 0 {
		return errors.New("a head segment but no head")
	}
	if normals != s.normals {
		return fmt.Errorf("normals %d, counted %d", s.normals, normals)
	}
	if normals > 0 && len(s.pool) == 0 {
		return errors.New("normal segments but no reserve")
	}
	if used != s.used {
		return fmt.Errorf("used %d, counted %d", s.used, used)
	}
	if s.used > s.budget {
		return fmt.Errorf("used %d over budget %d", s.used, s.budget)
	}
	// FIFO: exactly the segments in use, linked both ways.
	var prev uint32
	n := 0
	for id := s.oldest; id != 0; id = s.segs[id].next {
		if !inUse[id] {
			return fmt.Errorf("FIFO holds segment %d, which is not in use", id)
		}
		if s.segs[id].prev != prev {
			return fmt.Errorf("FIFO: segment %d prev %d, want %d", id, s.segs[id].prev, prev)
		}
		prev = id
		if n++; n > len(s.segs) {
			return errors.New("FIFO has a cycle")
		}
	}
	if prev != s.newest || n != len(inUse) {
		return fmt.Errorf("FIFO has %d segments ending at %d, want %d ending at %d", n, prev, len(inUse), s.newest)
	}
	if s.pin != 0 || s.argA != nil || s.argB != nil || len(s.quarantine) != 0 || s.quarantining || s.nexposed != 0 {
		return errors.New("write state left behind")
	}
	return nil
}
