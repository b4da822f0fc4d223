package kv

import "hash/maphash"

// prepare makes room for a write of a normal entry of size bytes, or of a
// large entry in an allocation of alloc bytes (alloc > 0), for the key with
// hash h whose current entry is at oldLoc (0 if it is new). The write's
// arguments a and b may alias segments that reclaim frees; prepare returns
// the old entry's location and the arguments as they are afterwards. If
// dropOld (a Set, which replaces the old entry anyway), the old entry may
// be dropped to make room: under AllKeysLRU when nothing else is left to
// evict, under NoEviction when that alone makes the write fit.
func (s *shard) prepare(h, oldLoc uint64, a, b []byte, size, alloc int, tx *Tx, dropOld bool) (uint64, []byte, []byte, error) {
	s.pin, s.argA, s.argB = oldLoc, a, b
	if len(s.quarantine) > 0 {
		s.endQuarantine()
	}
	err := s.makeRoom(h, size, alloc, tx, dropOld)
	oldLoc, a, b = s.pin, s.argA, s.argB
	s.pin, s.argA, s.argB = 0, nil, nil
	return oldLoc, a, b, err
}

// need returns the budget bytes the pending write needs beyond what the
// shard holds, and how many pool buffers the write itself will use (the
// rest may be released).
func (s *shard) need(size, alloc int) (req int64, keep int) {
	if s.pin == 0 {
		req = s.growthCost()
	}
	switch {
	case alloc > 0:
		req += int64(alloc) + metaCost
		if s.normals > 0 {
			keep = 1 // the reserve
		}
	case s.headRoom() < size:
		// A new head, and a reserve behind it.
		req += metaCost
		if n := len(s.pool); n < 2 {
			req += int64(2-n) * int64(s.segSize)
		}
		keep = 2
	default:
		keep = 1
	}
	return req, keep
}

// makeRoom reclaims memory until the pending write fits in the budget (see
// prepare). Under NoEviction it only compacts, which changes nothing that
// readers can see; if that is not enough it returns ErrOOM.
func (s *shard) makeRoom(h uint64, size, alloc int, tx *Tx, dropOld bool) error {
	stall := 0
	for {
		req, keep := s.need(size, alloc)
		if req <= s.budget-s.used {
			return nil
		}
		if n := len(s.pool); n > keep {
			s.pool[n-1] = nil
			s.pool = s.pool[:n-1]
			s.used -= int64(s.segSize)
			continue
		}
		if s.shrinkIndex() {
			continue
		}
		if did, progress := s.reclaimOne(tx.Now()); did {
			// A pass that only moved the pinned entry (or gave
			// nothing back) does not count; after a full round of
			// those there is nothing left to take.
			if progress {
				stall = 0
				continue
			}
			if stall++; stall <= len(s.segs) {
				continue
			}
		}
		if dropOld && s.pin != 0 && (s.policy == AllKeysLRU || s.dropFits(size, alloc)) {
			s.remove(s.slotOf(h, s.pin), s.decode(s.pin))
			s.pin = 0
			stall = 0
			continue
		}
		return ErrOOM
	}
}

// dropFits reports whether the pending write fits once the pinned entry,
// which it replaces, is dropped: true only for a large entry, whose
// allocation is freed at once (a normal entry leaves dead bytes). The key
// then counts as new, but its removal made room in the index.
func (s *shard) dropFits(size, alloc int) bool {
	sg := &s.segs[s.pin>>s.offBits]
	if sg.state != segLarge {
		return false
	}
	req, _ := s.need(size, alloc)
	return req <= s.budget-s.used+int64(len(sg.buf))+metaCost
}

// reclaimOne processes one segment: a sealed segment with at least candMin
// dead bytes is compacted (its live entries move to the head); otherwise,
// under AllKeysLRU, the oldest segment gets the CLOCK treatment. It reports
// whether it found a segment, and whether it made progress (freed space,
// removed an entry or cleared an accessed bit).
func (s *shard) reclaimOne(now int64) (did, progress bool) {
	for len(s.cands) > 0 {
		id := s.cands[len(s.cands)-1]
		s.cands = s.cands[:len(s.cands)-1]
		if sg := &s.segs[id]; sg.state == segSealed && sg.cand {
			sg.cand = false
			s.process(id, false, now)
			return true, true
		}
	}
	if s.policy == NoEviction {
		if s.head != 0 {
			if hs := &s.segs[s.head]; int(hs.end-hs.live) >= s.candMin {
				s.process(s.head, false, now)
				return true, true
			}
		}
		return false, false
	}
	id := s.oldest
	if id == 0 {
		return false, false
	}
	if s.segs[id].state == segLarge {
		return true, s.clockLarge(id, now)
	}
	return true, s.process(id, true, now)
}

// process empties normal segment id and frees it: dead entries are
// skipped, expired ones removed, and live ones moved to the head. If
// evict (CLOCK), a live entry that was not read since it was written or
// last moved is evicted instead, and moved entries lose their accessed
// bit; the pinned entry is always moved.
func (s *shard) process(id uint32, evict bool, now int64) (progress bool) {
	if id == s.head {
		s.seal()
	}
	sg := s.segs[id] // a copy: relocation may grow s.segs
	buf, end := sg.buf, int(sg.end)
	progress = int(sg.live) < end
	for p := 0; p < end; {
		e := decodeAt(buf, id, p)
		p = e.end
		f := buf[e.p]
		if f&flagDead != 0 {
			continue
		}
		loc := s.loc(id, e.p)
		h := maphash.Bytes(s.seed, e.key())
		if e.expiredAt(now) {
			s.expire(s.slotOf(h, loc), e)
			progress = true
			continue
		}
		if evict && loc != s.pin {
			if f&flagAccessed == 0 {
				s.remove(s.slotOf(h, loc), e)
				s.evictions++
				progress = true
				continue
			}
			progress = true // its bit is cleared below
		}
		nloc := s.relocate(&e, evict)
		i := s.slotOf(h, loc)
		s.slots[i] = s.slots[i]&^s.locMask | nloc
		if loc == s.pin {
			s.pin = nloc
		}
	}
	s.freeNormal(id)
	return progress
}

// relocate copies entry e to the head, clearing its accessed bit if clear,
// and returns the new location. It may take the reserve segment.
func (s *shard) relocate(e *ent, clear bool) uint64 {
	n := e.size()
	if s.headRoom() < n {
		s.newHead(true)
	}
	hs := &s.segs[s.head]
	p := int(hs.end)
	copy(hs.buf[p:], e.buf[e.p:e.end])
	if clear {
		hs.buf[p] &^= flagAccessed
	}
	hs.end += int32(n)
	hs.live += int32(n)
	return s.loc(s.head, p)
}

// clockLarge gives the large segment id the CLOCK treatment: expired, it is
// removed; accessed (or pinned), it goes to the back of the FIFO with its
// bit cleared; otherwise it is evicted.
func (s *shard) clockLarge(id uint32, now int64) (progress bool) {
	loc := s.loc(id, 0)
	e := s.decode(loc)
	switch {
	case e.expiredAt(now):
		s.expire(s.slotOf(maphash.Bytes(s.seed, e.key()), loc), e)
		return true
	case loc == s.pin || e.buf[0]&flagAccessed != 0:
		progress = e.buf[0]&flagAccessed != 0
		e.buf[0] &^= flagAccessed
		s.unlinkFIFO(id)
		s.pushFIFO(id)
		return progress
	}
	s.remove(s.slotOf(maphash.Bytes(s.seed, e.key()), loc), e)
	s.evictions++
	return true
}

// fitsAcc sums what a multi-key write needs from one shard.
type fitsAcc struct {
	small int64 // bytes of normal entries
	large int64 // bytes of large allocations, with their metadata
	keys  int
}

// fits implements Tx.Fits.
func (db *DB) fits(tx *Tx, kvs [][]byte) bool {
	var one fitsAcc // the common case: every key in one shard
	var oneShard *shard
	var more map[*shard]*fitsAcc
	for i := 0; i+1 < len(kvs); i += 2 {
		h := db.hash(kvs[i])
		s := tx.shard(h)
		acc := &one
		switch {
		case oneShard == nil:
			oneShard = s
		case s != oneShard:
			if more == nil {
				more = make(map[*shard]*fitsAcc)
			}
			if acc = more[s]; acc == nil {
				acc = new(fitsAcc)
				more[s] = acc
			}
		}
		acc.keys++
		if a := s.largeAlloc(len(kvs[i]), len(kvs[i+1])); a > 0 {
			if int64(a)+metaCost > s.maxLarge {
				return false
			}
			acc.large += int64(a) + metaCost
		} else {
			acc.small += int64(entrySize(len(kvs[i]), len(kvs[i+1])))
		}
	}
	if db.cfg.Policy != NoEviction || oneShard == nil {
		return true // eviction makes room for any entry that fits a shard
	}
	if !oneShard.fitsMany(one, tx) {
		return false
	}
	for s, acc := range more {
		if !s.fitsMany(*acc, tx) {
			return false
		}
	}
	return true
}

// fitsMany reports whether a NoEviction shard can take the writes summed
// in acc, all as new keys, in any order, without reclaiming memory: the
// head segment takes at least headRoom-maxSmall bytes before it is sealed
// and every new head at least segSize-maxSmall, which bounds the segments
// needed. If they do not fit, it compacts candidate segments (which
// changes nothing readers can see) and looks again.
func (s *shard) fitsMany(acc fitsAcc, tx *Tx) bool {
	for {
		if s.fitsNow(acc) {
			return true
		}
		if !s.compactForFits(tx.Now()) {
			return false
		}
	}
}

func (s *shard) fitsNow(acc fitsAcc) bool {
	seg, small := int64(s.segSize), int64(s.maxSmall)
	var idx int64
	for n := len(s.slots); s.count+acc.keys > maxLoad(n); n *= 2 {
		if 2*n > s.maxSlots {
			return false
		}
		idx += int64(n) * 8
	}
	room := int64(s.headRoom())
	var heads int64
	if acc.small > room {
		heads = (acc.small - max(0, room-small) + seg - small - 1) / (seg - small)
	}
	// Free buffers beyond the reserve serve as new heads or are released
	// for the budget (quarantined ones return to the pool when the first
	// Set begins). Without any, the reserve itself must be allocated.
	spare := int64(len(s.pool) + len(s.quarantine))
	if s.normals > 0 || acc.small > 0 {
		spare--
	}
	need := max(0, heads-spare)*seg + heads*metaCost + acc.large + idx
	return need <= s.budget-s.used+max(0, spare-heads)*seg
}

// compactForFits compacts one candidate segment for Fits. If a value
// returned earlier in the Tx may alias the segment, its buffer is
// quarantined until the next write or the end of the Tx, so that the value
// stays valid. It reports whether it compacted a segment.
func (s *shard) compactForFits(now int64) bool {
	for i := len(s.cands) - 1; i >= 0; i-- {
		id := s.cands[i]
		sg := &s.segs[id]
		if sg.state != segSealed || !sg.cand {
			s.cands = append(s.cands[:i], s.cands[i+1:]...)
			continue
		}
		if int(sg.live) > s.headRoom() && len(s.pool) == 0 {
			if s.budget-s.used < int64(s.segSize)+metaCost {
				continue // look for one whose survivors fit the head
			}
			s.pool = append(s.pool, make([]byte, s.segSize))
			s.used += int64(s.segSize)
		}
		s.cands = append(s.cands[:i], s.cands[i+1:]...)
		sg.cand = false
		s.quarantining = true
		s.process(id, false, now)
		s.quarantining = false
		return true
	}
	return false
}

// endQuarantine returns quarantined buffers to the pool, copying the
// pending write's arguments away from them first.
func (s *shard) endQuarantine() {
	for i, buf := range s.quarantine {
		s.protect(buf)
		s.pool = append(s.pool, buf)
		s.quarantine[i] = nil
	}
	s.quarantine = s.quarantine[:0]
}
