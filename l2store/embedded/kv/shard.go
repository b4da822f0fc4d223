package kv

import (
	"encoding/binary"
	"hash/maphash"
	"math/bits"
	"sync"
	"unsafe"
)

// Entry layout. A normal entry, packed in a segment:
//
//	flags(1) expireAt(8, little endian, Unix ms, 0 = none)
//	uvarint(len(key)) uvarint(len(val)) key val
//
// A large entry, alone at the start of its own allocation, has fixed-width
// lengths so that Append can grow it in place:
//
//	flags(1) expireAt(8) len(key)(4) len(val)(4) key val
const (
	flagAccessed = 1 << 0 // read since written or last given a second chance
	flagDead     = 1 << 1 // deleted or overwritten; the bytes await reclaim

	hdrLen      = 1 + 8
	largeHdrLen = 1 + 8 + 4 + 4
)

// Index parameters.
const (
	minIndexSlots = 16
	// tagSpareBits is how many hash bits beyond the home position the
	// largest index still compares before looking at a key.
	tagSpareBits = 8
)

// segState is what a segment id holds.
type segState uint8

const (
	segFree   segState = iota // the id is unused
	segHead                   // the normal segment new entries are appended to
	segSealed                 // a normal segment that is no longer appended to
	segLarge                  // an allocation of its own, holding one large entry
)

// segment is the metadata of one segment id.
type segment struct {
	buf        []byte
	live       int32  // bytes of live (not dead) entries
	end        int32  // bytes written
	prev, next uint32 // FIFO neighbours, 0 for none
	state      segState
	cand       bool // on the compaction candidate stack
}

// metaCost is what one segment id costs in the accounting.
const metaCost = int64(unsafe.Sizeof(segment{}))

// minShardBytes is the smallest per-shard bound New accepts: room for four
// segments (a head, the reserve and two more) and the smallest index.
func minShardBytes(segSize int) int64 {
	return 4*int64(segSize) + 4*metaCost + minIndexSlots*8
}

// shard is one independently locked part of a DB: an index and an arena.
//
// The index is open addressing with linear probing over slots that pack
// hash bits (high) and an entry's location (low): segment id, then byte
// offset. A zero slot is empty (segment id 0 is never used). Deletion
// shifts the following cluster back, so there are no tombstones.
//
// The arena is a set of segments in FIFO order (oldest first): normal
// segments of segSize bytes, written once from start to end (the newest
// normal segment is the head), and large segments, each a dedicated
// allocation for one entry. The pool holds free normal segment buffers;
// while there are normal segments it keeps at least one (the reserve), so
// that reclaiming a segment always has room to move its survivors.
type shard struct {
	mu sync.Mutex

	// Fixed by init.
	seed     maphash.Seed
	budget   int64
	policy   Policy
	segSize  int
	maxSmall int   // largest entry stored in a normal segment
	maxLarge int64 // largest large-entry allocation (with its metadata)
	candMin  int   // dead bytes that make a sealed segment worth compacting
	offBits  uint
	locBits  uint
	offMask  uint64
	locMask  uint64
	maxSlots int

	// Index.
	slots        []uint64
	count        int
	expires      int64
	expireCursor int // where active expiry looks next

	// Arena.
	segs       []segment // by id; segs[0] is unused
	freeIDs    []uint32
	pool       [][]byte
	quarantine [][]byte // freed by Fits in the current Tx, see compactForFits
	head       uint32
	normals    int // normal segments (head and sealed)
	oldest     uint32
	newest     uint32
	cands      []uint32 // sealed segments that passed candMin (may be stale)
	used       int64

	// State of the write in progress, which reclaim must respect: pin is
	// the location of the entry the write replaces or extends (it is
	// moved, never evicted, and pin follows it); argA and argB are the
	// write's arguments, copied to scratch if a segment they point into
	// is freed.
	pin          uint64
	argA, argB   []byte
	scratch      []byte
	quarantining bool

	// The normal segments that values returned since the last Set or
	// Append in the current Tx point into (more than len(exposed): any).
	// Delete and SetExpire move nothing, so they leave values valid.
	exposed  [4]uint32
	nexposed int

	evictions   uint64
	expirations uint64

	_ [64]byte // keep neighbouring shards' locks off this cache line
}

func (s *shard) init(seed maphash.Seed, budget int64, segSize int, policy Policy) {
	s.seed = seed
	s.budget = budget
	s.policy = policy
	s.segSize = segSize
	s.maxSmall = segSize / 8
	s.maxLarge = budget - 2*int64(segSize) - 2*metaCost - minIndexSlots*8
	s.candMin = s.maxSmall + 1
	if policy == AllKeysLRU {
		s.candMin = segSize / 2
	}
	s.offBits = uint(bits.TrailingZeros(uint(segSize)))
	// Every id holds at least maxSmall+1 bytes of the budget.
	maxIDs := budget/int64(s.maxSmall) + 4
	s.locBits = s.offBits + uint(bits.Len64(uint64(maxIDs)))
	s.offMask = 1<<s.offBits - 1
	s.locMask = 1<<s.locBits - 1
	s.maxSlots = 1 << (64 - s.locBits - tagSpareBits)
	if s.maxSlots < minIndexSlots || int64(s.maxSlots)*16 < budget {
		// New bounds the shard size so that this cannot happen.
		panic("kv: shard too large for the index's hash bits")
	}
	s.reset()
}

// reset empties the shard and releases its memory.
func (s *shard) reset() {
	s.slots = make([]uint64, minIndexSlots)
	s.count = 0
	s.expires = 0
	s.segs = make([]segment, 1, 16)
	s.freeIDs = nil
	s.pool = nil
	s.quarantine = nil
	s.head, s.oldest, s.newest = 0, 0, 0
	s.normals = 0
	s.cands = nil
	s.used = minIndexSlots * 8
}

// ent is a decoded entry: its segment and the offsets of its header, key,
// value and end.
type ent struct {
	buf          []byte
	id           uint32
	p, k, v, end int
}

func (e *ent) key() []byte { return e.buf[e.k:e.v:e.v] }
func (e *ent) val() []byte { return e.buf[e.v:e.end:e.end] }
func (e *ent) size() int   { return e.end - e.p }
func (e *ent) exp() int64  { return int64(binary.LittleEndian.Uint64(e.buf[e.p+1:])) }

// expired reports whether e has expired at the Tx's time.
func (e *ent) expired(tx *Tx) bool {
	x := e.exp()
	return x != 0 && x <= tx.Now()
}

// expiredAt reports whether e has expired at now.
func (e *ent) expiredAt(now int64) bool {
	x := e.exp()
	return x != 0 && x <= now
}

// entrySize is the size of a normal entry.
func entrySize(klen, vlen int) int {
	return hdrLen + uvarintLen(klen) + uvarintLen(vlen) + klen + vlen
}

func uvarintLen(x int) int { return (bits.Len64(uint64(x)|1) + 6) / 7 }

func (s *shard) loc(id uint32, off int) uint64 { return uint64(id)<<s.offBits | uint64(off) }

// decode returns the entry at loc.
func (s *shard) decode(loc uint64) ent {
	id := uint32(loc >> s.offBits)
	sg := &s.segs[id]
	if sg.state == segLarge {
		b := sg.buf
		k := largeHdrLen + int(binary.LittleEndian.Uint32(b[9:]))
		return ent{buf: b, id: id, k: largeHdrLen, v: k, end: k + int(binary.LittleEndian.Uint32(b[13:]))}
	}
	return decodeAt(sg.buf, id, int(loc&s.offMask))
}

// decodeAt decodes the normal entry at offset p of segment buffer b.
func decodeAt(b []byte, id uint32, p int) ent {
	q := p + hdrLen
	kl, q := uvarint(b, q)
	vl, q := uvarint(b, q)
	return ent{buf: b, id: id, p: p, k: q, v: q + kl, end: q + kl + vl}
}

func uvarint(b []byte, q int) (int, int) {
	if c := b[q]; c < 0x80 {
		return int(c), q + 1
	}
	x, n := binary.Uvarint(b[q:])
	return int(x), q + n
}

func putUvarint(b []byte, q, x int) int {
	for x >= 0x80 {
		b[q] = byte(x) | 0x80
		x >>= 7
		q++
	}
	b[q] = byte(x)
	return q + 1
}

// maxLoad is the number of keys an index of n slots holds before growing.
func maxLoad(n int) int { return n - n/5 }

// find returns the slot index of key and its entry, or -1.
func (s *shard) find(h uint64, key []byte) (int, ent) {
	hb := h >> s.locBits
	mask := uint64(len(s.slots) - 1)
	for i := hb & mask; ; i = (i + 1) & mask {
		sl := s.slots[i]
		if sl == 0 {
			return -1, ent{}
		}
		if sl>>s.locBits == hb {
			e := s.decode(sl & s.locMask)
			if string(e.key()) == string(key) {
				return int(i), e
			}
		}
	}
}

// slotOf returns the index of the slot that holds hash h and location loc.
func (s *shard) slotOf(h, loc uint64) int {
	hb := h >> s.locBits
	want := hb<<s.locBits | loc
	mask := uint64(len(s.slots) - 1)
	for i := hb & mask; ; i = (i + 1) & mask {
		switch s.slots[i] {
		case want:
			return int(i)
		case 0:
			panic("kv: index lost an entry")
		}
	}
}

// insertSlot adds a slot for hash h at location loc, growing the index if
// it is full. The caller has checked that the key is not there and, via
// makeRoom, that the growth fits.
func (s *shard) insertSlot(h, loc uint64) {
	if s.count+1 > maxLoad(len(s.slots)) {
		s.resize(2 * len(s.slots))
	}
	hb := h >> s.locBits
	mask := uint64(len(s.slots) - 1)
	i := hb & mask
	for s.slots[i] != 0 {
		i = (i + 1) & mask
	}
	s.slots[i] = hb<<s.locBits | loc
	s.count++
}

// deleteSlot empties slot i and shifts the rest of its cluster back so that
// every key stays reachable from its home slot.
func (s *shard) deleteSlot(i int) {
	mask := len(s.slots) - 1
	for {
		s.slots[i] = 0
		j := i
		for {
			j = (j + 1) & mask
			sl := s.slots[j]
			if sl == 0 {
				return
			}
			home := int(sl>>s.locBits) & mask
			// The slot at j may move to i unless its home lies
			// cyclically in (i, j].
			if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
				s.slots[i] = sl
				i = j
				break
			}
		}
	}
}

// resize rehashes the index into n slots.
func (s *shard) resize(n int) {
	old := s.slots
	s.slots = make([]uint64, n)
	s.used += int64(n-len(old)) * 8
	mask := uint64(n - 1)
	for _, sl := range old {
		if sl == 0 {
			continue
		}
		i := (sl >> s.locBits) & mask
		for s.slots[i] != 0 {
			i = (i + 1) & mask
		}
		s.slots[i] = sl
	}
}

// growthCost is the extra index memory that inserting one more key needs.
func (s *shard) growthCost() int64 {
	n := len(s.slots)
	if s.count+1 <= maxLoad(n) {
		return 0
	}
	if 2*n > s.maxSlots {
		return s.budget + 1 // cannot grow: only fewer keys help
	}
	return int64(n) * 8
}

// shrinkIndex halves a sparse index (under 20% full) until it is at most
// half full. It reports whether it did.
func (s *shard) shrinkIndex() bool {
	n := len(s.slots)
	if n <= minIndexSlots || (s.count+1)*5 > n {
		return false
	}
	m := n
	for m > minIndexSlots && (s.count+1)*2 <= m/2 {
		m /= 2
	}
	s.resize(m)
	return true
}

// remove deletes the entry e held by slot i.
func (s *shard) remove(i int, e ent) {
	if e.exp() != 0 {
		s.expires--
	}
	s.kill(e)
	s.deleteSlot(i)
	s.count--
}

// expire removes the expired entry e held by slot i.
func (s *shard) expire(i int, e ent) {
	s.remove(i, e)
	s.expirations++
}

// kill releases an entry's bytes: a large entry's allocation is dropped, a
// normal entry is marked dead and its bytes count as dead in its segment.
func (s *shard) kill(e ent) {
	sg := &s.segs[e.id]
	if sg.state == segLarge {
		s.freeLarge(e.id)
		return
	}
	e.buf[e.p] |= flagDead
	sg.live -= int32(e.size())
	s.noteDead(e.id)
}

// noteDead makes segment id a compaction candidate if it is sealed and has
// at least candMin dead bytes (its unwritten tail included).
func (s *shard) noteDead(id uint32) {
	sg := &s.segs[id]
	if sg.state == segSealed && !sg.cand && s.segSize-int(sg.live) >= s.candMin {
		sg.cand = true
		s.cands = append(s.cands, id)
	}
}

// setExp rewrites an entry's expiry in place.
func (s *shard) setExp(e ent, exp int64) {
	if e.exp() != 0 {
		s.expires--
	}
	if exp != 0 {
		s.expires++
	}
	binary.LittleEndian.PutUint64(e.buf[e.p+1:], uint64(exp))
}

// headRoom is the free space at the end of the head segment.
func (s *shard) headRoom() int {
	if s.head == 0 {
		return 0
	}
	return s.segSize - int(s.segs[s.head].end)
}

func (s *shard) newID() uint32 {
	if n := len(s.freeIDs); n > 0 {
		id := s.freeIDs[n-1]
		s.freeIDs = s.freeIDs[:n-1]
		return id
	}
	s.segs = append(s.segs, segment{})
	id := uint32(len(s.segs) - 1)
	if uint64(id) > s.locMask>>s.offBits {
		panic("kv: segment ids exhausted")
	}
	return id
}

func (s *shard) pushFIFO(id uint32) {
	sg := &s.segs[id]
	sg.prev, sg.next = s.newest, 0
	if s.newest != 0 {
		s.segs[s.newest].next = id
	} else {
		s.oldest = id
	}
	s.newest = id
}

func (s *shard) unlinkFIFO(id uint32) {
	sg := &s.segs[id]
	if sg.prev != 0 {
		s.segs[sg.prev].next = sg.next
	} else {
		s.oldest = sg.next
	}
	if sg.next != 0 {
		s.segs[sg.next].prev = sg.prev
	} else {
		s.newest = sg.prev
	}
	sg.prev, sg.next = 0, 0
}

// newHead seals the head, if any, and starts a new one. A write takes the
// buffer from the pool only if the reserve stays behind, and then makes
// sure there is a reserve; a relocation (reloc) may take the reserve.
func (s *shard) newHead(reloc bool) {
	if s.head != 0 {
		s.seal()
	}
	var buf []byte
	if n := len(s.pool); n >= 2 || (reloc && n == 1) {
		buf = s.pool[n-1]
		s.pool[n-1] = nil
		s.pool = s.pool[:n-1]
	} else {
		if reloc {
			panic("kv: no reserve segment")
		}
		buf = make([]byte, s.segSize)
		s.used += int64(s.segSize)
	}
	id := s.newID()
	s.used += metaCost
	s.segs[id] = segment{buf: buf, state: segHead}
	s.head = id
	s.normals++
	s.pushFIFO(id)
	if len(s.pool) == 0 && !reloc {
		s.pool = append(s.pool, make([]byte, s.segSize))
		s.used += int64(s.segSize)
	}
}

// seal ends the head segment.
func (s *shard) seal() {
	s.segs[s.head].state = segSealed
	s.noteDead(s.head)
	s.head = 0
}

// freeNormal returns a normal segment's buffer to the pool.
func (s *shard) freeNormal(id uint32) {
	sg := &s.segs[id]
	s.protect(sg.buf)
	if s.head == id {
		s.head = 0
	}
	s.unlinkFIFO(id)
	s.normals--
	if s.quarantining && s.isExposed(id) {
		s.quarantine = append(s.quarantine, sg.buf)
	} else {
		s.pool = append(s.pool, sg.buf)
	}
	*sg = segment{}
	s.freeIDs = append(s.freeIDs, id)
	s.used -= metaCost
}

// expose records that a value in normal segment id was handed out.
func (s *shard) expose(id uint32) {
	n := min(s.nexposed, len(s.exposed))
	for _, x := range s.exposed[:n] {
		if x == id {
			return
		}
	}
	if n < len(s.exposed) {
		s.exposed[n] = id
	}
	s.nexposed++
}

func (s *shard) isExposed(id uint32) bool {
	if s.nexposed > len(s.exposed) {
		return true
	}
	for _, x := range s.exposed[:s.nexposed] {
		if x == id {
			return true
		}
	}
	return false
}

// freeLarge drops a large segment's allocation.
func (s *shard) freeLarge(id uint32) {
	sg := &s.segs[id]
	s.used -= int64(len(sg.buf)) + metaCost
	s.unlinkFIFO(id)
	*sg = segment{}
	s.freeIDs = append(s.freeIDs, id)
}

// protect copies the write's arguments to scratch if they point into buf,
// which is about to be reused.
func (s *shard) protect(buf []byte) {
	if !overlaps(s.argA, buf) && !overlaps(s.argB, buf) {
		return
	}
	s.scratch = append(append(s.scratch[:0], s.argA...), s.argB...)
	n := len(s.argA)
	s.argA = s.scratch[:n:n]
	s.argB = s.scratch[n:]
}

func overlaps(a, buf []byte) bool {
	if len(a) == 0 || cap(buf) == 0 {
		return false
	}
	pa := uintptr(unsafe.Pointer(unsafe.SliceData(a)))
	pb := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	return pa < pb+uintptr(cap(buf)) && pb < pa+uintptr(len(a))
}

// write stores a new entry for key with value v1+v2 and returns its
// location: in the head segment, or in a new allocation of alloc bytes if
// alloc > 0. makeRoom has made room for it.
func (s *shard) write(key, v1, v2 []byte, exp int64, alloc int) uint64 {
	vlen := len(v1) + len(v2)
	if alloc > 0 {
		b := make([]byte, alloc)
		binary.LittleEndian.PutUint64(b[1:], uint64(exp))
		binary.LittleEndian.PutUint32(b[9:], uint32(len(key)))
		binary.LittleEndian.PutUint32(b[13:], uint32(vlen))
		q := largeHdrLen + copy(b[largeHdrLen:], key)
		q += copy(b[q:], v1)
		q += copy(b[q:], v2)
		id := s.newID()
		s.used += int64(alloc) + metaCost
		s.segs[id] = segment{buf: b, state: segLarge, live: int32(q), end: int32(q)}
		s.pushFIFO(id)
		return s.loc(id, 0)
	}
	n := entrySize(len(key), vlen)
	if s.headRoom() < n {
		s.newHead(false)
	}
	sg := &s.segs[s.head]
	b := sg.buf
	p := int(sg.end)
	b[p] = 0
	binary.LittleEndian.PutUint64(b[p+1:], uint64(exp))
	q := putUvarint(b, p+hdrLen, len(key))
	q = putUvarint(b, q, vlen)
	q += copy(b[q:], key)
	q += copy(b[q:], v1)
	copy(b[q:], v2)
	sg.end += int32(n)
	sg.live += int32(n)
	return s.loc(s.head, p)
}

// link points the index at a newly written entry: it replaces the slot of
// the key's old entry at oldLoc (which dies), or adds a slot.
func (s *shard) link(h, oldLoc, loc uint64, exp int64) {
	if exp != 0 {
		s.expires++
	}
	if oldLoc == 0 {
		s.insertSlot(h, loc)
		return
	}
	i := s.slotOf(h, oldLoc)
	old := s.decode(oldLoc)
	if old.exp() != 0 {
		s.expires--
	}
	s.kill(old)
	s.slots[i] = s.slots[i]&^s.locMask | loc
}

func (s *shard) get(h uint64, key []byte, tx *Tx, touch bool) ([]byte, int64, bool) {
	i, e := s.find(h, key)
	if i < 0 {
		return nil, 0, false
	}
	exp := e.exp()
	if exp != 0 && exp <= tx.Now() {
		s.expire(i, e)
		return nil, 0, false
	}
	if touch && e.buf[e.p]&flagAccessed == 0 {
		e.buf[e.p] |= flagAccessed
	}
	if s.segs[e.id].state != segLarge {
		s.expose(e.id)
	}
	return e.val(), exp, true
}

// largeAlloc returns the allocation size for a large entry with key and
// value lengths klen and vlen, or 0 if the entry is small.
func (s *shard) largeAlloc(klen, vlen int) int {
	if entrySize(klen, vlen) <= s.maxSmall {
		return 0
	}
	return allocSize(largeHdrLen + klen + vlen)
}

func (s *shard) set(h uint64, key, val []byte, exp int64, tx *Tx) error {
	s.nexposed = 0 // values handed out before a Set are no longer valid
	i, old := s.find(h, key)
	if i >= 0 && old.expired(tx) {
		s.expire(i, old)
		i = -1
	}
	if i >= 0 && s.overwrite(old, val, exp) {
		return nil
	}
	alloc := s.largeAlloc(len(key), len(val))
	if int64(alloc)+metaCost > s.maxLarge {
		return ErrOOM
	}
	var oldLoc uint64
	if i >= 0 {
		oldLoc = s.slots[i] & s.locMask
	}
	oldLoc, key, val, err := s.prepare(h, oldLoc, key, val, entrySize(len(key), len(val)), alloc, tx, true)
	if err != nil {
		return err
	}
	s.link(h, oldLoc, s.write(key, val, nil, exp, alloc), exp)
	return nil
}

// overwrite replaces e's value in place if the new value fits there: same
// length for a normal entry; for a large entry, a large value that fits in
// the allocation and uses at least half of it. It reports whether it did.
func (s *shard) overwrite(e ent, val []byte, exp int64) bool {
	sg := &s.segs[e.id]
	if sg.state == segLarge {
		klen := e.v - e.k
		n := largeHdrLen + klen + len(val)
		if n > len(e.buf) || entrySize(klen, len(val)) <= s.maxSmall || 2*allocSize(n) < len(e.buf) {
			return false
		}
		copy(e.buf[e.v:], val)
		binary.LittleEndian.PutUint32(e.buf[13:], uint32(len(val)))
		sg.live, sg.end = int32(n), int32(n)
	} else {
		if e.end-e.v != len(val) {
			return false
		}
		copy(e.buf[e.v:e.end], val)
	}
	s.setExp(e, exp)
	e.buf[e.p] |= flagAccessed
	return true
}

func (s *shard) append(h uint64, key, data []byte, tx *Tx) (int, error) {
	s.nexposed = 0
	i, old := s.find(h, key)
	if i >= 0 && old.expired(tx) {
		s.expire(i, old)
		i = -1
	}
	if i < 0 {
		if err := s.set(h, key, data, 0, tx); err != nil {
			return 0, err
		}
		return len(data), nil
	}
	klen, nlen := old.v-old.k, old.end-old.v+len(data)
	if len(data) == 0 {
		return nlen, nil
	}
	sg := &s.segs[old.id]
	if sg.state == segLarge && largeHdrLen+klen+nlen <= len(old.buf) {
		// Grow in place into the spare capacity.
		copy(old.buf[old.end:], data)
		binary.LittleEndian.PutUint32(old.buf[13:], uint32(nlen))
		sg.live += int32(len(data))
		sg.end += int32(len(data))
		old.buf[0] |= flagAccessed
		return nlen, nil
	}
	exp := old.exp()
	exact := s.largeAlloc(klen, nlen)
	if int64(exact)+metaCost > s.maxLarge {
		return 0, ErrOOM
	}
	alloc := exact
	if exact > 0 {
		// Keep spare capacity as Redis's sds does, so that appending
		// to a large value costs amortized O(1).
		grow := nlen + min(nlen, 1<<20)
		if a := allocSize(largeHdrLen + klen + grow); int64(a)+metaCost <= s.maxLarge {
			alloc = a
		}
	}
	size := entrySize(klen, nlen)
	oldLoc, key, data, err := s.prepare(h, s.slots[i]&s.locMask, key, data, size, alloc, tx, false)
	if err != nil && alloc != exact {
		alloc = exact
		oldLoc, key, data, err = s.prepare(h, oldLoc, key, data, size, alloc, tx, false)
	}
	if err != nil {
		return 0, err
	}
	old = s.decode(oldLoc)
	s.link(h, oldLoc, s.write(key, old.val(), data, exp, alloc), exp)
	return nlen, nil
}

func (s *shard) delete(h uint64, key []byte, tx *Tx) bool {
	i, e := s.find(h, key)
	if i < 0 {
		return false
	}
	if e.expired(tx) {
		s.expire(i, e)
		return false
	}
	s.remove(i, e)
	return true
}

func (s *shard) setExpire(h uint64, key []byte, exp int64, tx *Tx) bool {
	i, e := s.find(h, key)
	if i < 0 {
		return false
	}
	if e.expired(tx) {
		s.expire(i, e)
		return false
	}
	s.setExp(e, exp)
	e.buf[e.p] |= flagAccessed
	return true
}
