package l1

import "unsafe"

// Byte accounting.
//
// An entry of key k and value v costs, on the Go heap (amd64, Go 1.26):
//
//   - the simplelru list element, internal.Entry[uint64, entry]: next, prev
//     and list pointers, the key's 64-bit hash, our entry (buffer slice
//     header, key length, era, flag, deadline), plus simplelru's unused
//     ExpiresAt/ExpireBucket fields. lruElement below mirrors its layout;
//     TestLRUElementMirror checks the mirror against the real type by
//     reflection;
//   - one slot of the shard's map[uint64]*Entry: an 8-byte key, an 8-byte
//     pointer and a 1-byte control word, 17 bytes. Swiss-table groups hold
//     8 slots; a table doubles when its live entries plus tombstones reach
//     7/8 of its slots and too few tombstones can be pruned (a prune must
//     free 10% of the capacity), so the load it settles at depends on the
//     order of deletions. Measured with Go 1.26, a map only filled sits
//     between 7/16 and 7/8 full; under churn (an LRU evicting in order, or
//     invalidations deleting at random) down to about 0.31. We charge the
//     slot at a load of 0.3, plus 8% for the size-class rounding of a
//     table's group array;
//   - the entry's buffer: an 8-byte promotion tick, the key and the value,
//     copied into one allocation on fill and rounded up to its allocator
//     size class.
//
// Not charged: each shard's fixed structures (the LRU and map headers, the
// list's sentinel element, a map's directory; a few hundred bytes a shard).
// Go maps never shrink, so a slot table grown for many small entries stays
// when they are replaced by fewer large ones. The count of entries in a
// shard is at most budget/entryOverhead, so that stale table is at most
// budget*mapSlotBytes/entryOverhead (about a third of the budget) in the
// worst case; Flush releases it.

// lruElement mirrors golang-lru/v2's internal.Entry[uint64, entry].
type lruElement struct {
	next, prev, list unsafe.Pointer
	key              uint64
	value            entry
	expiresAt        [3]uint64 // time.Time
	expireBucket     uint8
}

const (
	// mapSlotBytes is the charge for one map slot: (8+8+1) bytes at a load
	// factor of 0.3, plus 8% rounding.
	mapSlotBytes = (8 + 8 + 1) * 10 / 3 * 108 / 100
)

// entryOverhead is what an entry costs beyond its buffer (172 on amd64: a
// 112-byte list element and a 60-byte map slot).
var entryOverhead = allocSize(int(unsafe.Sizeof(lruElement{}))) + mapSlotBytes

// entrySize is the number of bytes charged for an entry whose key is keyLen
// bytes long and whose value is valueLen bytes long.
func entrySize(keyLen, valueLen int) int64 {
	return entryOverhead + allocSize(tickLen+keyLen+valueLen)
}

// sizeClasses are the Go 1.26 runtime's small-object size classes
// (internal/runtime/gc/sizeclasses.go). Objects up to 32 KiB take the
// smallest class that fits; larger ones take whole 8 KiB pages.
var sizeClasses = [...]uint16{
	8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224,
	240, 256, 288, 320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896,
	1024, 1152, 1280, 1408, 1536, 1792, 2048, 2304, 2688, 3072, 3200, 3456,
	4096, 4864, 5376, 6144, 6528, 6784, 6912, 8192, 9472, 9728, 10240, 10880,
	12288, 13568, 14336, 16384, 18432, 19072, 20480, 21760, 24576, 27264,
	28672, 32768,
}

const (
	maxSmallSize = 32768
	pageSize     = 8192
)

// allocSize returns the bytes the Go allocator reserves for a pointer-free
// object of n bytes: 0 for n == 0, else n rounded up to its size class.
func allocSize(n int) int64 {
	switch {
	case n <= 0:
		return 0
	case n > maxSmallSize:
		return (int64(n) + pageSize - 1) / pageSize * pageSize
	}
	lo, hi := 0, len(sizeClasses)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if int(sizeClasses[mid]) < n {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return int64(sizeClasses[lo])
}
