// Package l1 is sidecache's first tier: an in-process, byte-bounded LRU of
// string values that sits in front of the next tier (the breaker and L2) and
// reads through to it on a miss.
//
// The package owns the copies of values it keeps, their freshness, and the
// memory they take. It does not own the data: every write goes to L2 first
// and the proxy then calls Invalidate (or Flush), so L1 only ever holds what
// L2 held at some point after the last write.
//
// # Algorithm
//
// Keys are spread over a power-of-two number of shards by a seeded 64-bit
// hash/maphash of the key bytes. Each shard is golang-lru/v2's unlocked
// simplelru core behind one mutex, with its own byte budget MaxBytes/Shards.
// The LRU is keyed by the hash, and each entry keeps its key, promotion tick
// and value in one buffer, so a hit touches the map, the list element and
// that buffer; a lookup that finds another key under the same hash is a
// miss, and its fill replaces the other key. An entry is charged its buffer,
// rounded up to the Go allocator's size classes, plus a fixed per-entry
// overhead (the simplelru list element and a worst-case share of the map's
// slot table, see size.go); inserting an entry removes least recently used
// entries until the shard is within budget again. A hit moves its entry to
// the front of the list only if the entry is outside the front quarter
// (known from the shard's count of moves to the front since the entry's
// last one), which spares hot keys the list update. Entries whose charge
// exceeds MaxItemBytes are returned to the caller but not kept.
//
// Each entry records one deadline: min(Item.Expires, fill time + TTL), where
// fill time is taken before the next tier is asked. A Get before the deadline
// is a hit and touches no heap memory (the lookup uses an unsafe.String view
// of the key, which the map does not retain). A Get at or after the deadline
// removes the entry (counting an expiration if the deadline was Item.Expires,
// a refresh if it was the TTL cap) and reads through as a miss, so a value is
// never served at or past its Redis expiry.
//
// Coherence: a reader that misses could fetch the old value from L2 while a
// writer updates L2 and calls Invalidate, then insert the old value after the
// invalidation. To prevent this each shard has a generation counter that
// Invalidate and Flush increment. A reader records the generation (under the
// shard lock, with the miss) before calling the next tier, and inserts the
// fetched value only if the generation is unchanged when it re-takes the
// lock; otherwise the value is returned but dropped (Stats.FillsDropped). The
// shard lock is never held while the next tier is called. Misses are not
// cached, and concurrent misses on one key are not coalesced: each reads
// through.
package l1
