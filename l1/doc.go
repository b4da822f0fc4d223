// Package l1 is sidecache's first tier: an in-process, byte-bounded LRU of
// string values that sits in front of the next tier (the origin shield,
// which asks the breaker and L2) and reads through to it on a miss, and
// serves stale copies when that tier fails.
//
// The package owns the copies of values it keeps, their freshness and
// staleness, the background refreshes of stale entries, and the memory
// they take. It does not own the data: every write goes to L2 first
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
// fill time is taken before the next tier is asked. A lookup before the
// deadline is a hit and touches no heap memory (the lookup uses an
// unsafe.String view of the key, which the map does not retain), so a value
// is never served fresh at or past its Redis expiry.
//
// Stale serving (RFC 5861). An entry past its deadline is kept for StaleFor
// more (with StaleFor 0 it is removed at once, as are entries past
// deadline+StaleFor; removal at lookup counts an expiration if the deadline
// was Item.Expires, a refresh if it was the TTL cap). Within
// StaleWhileRevalidate after the deadline a lookup returns the stale value
// at once (Revalidating) and starts a background refresh unless one runs
// for the key already (each shard keeps the hashes of keys being refreshed)
// or MaxRefreshes run in all; the refresh asks the next tier with a context
// that keeps the client's values but not its cancellation, and fills like a
// miss. Past that window, a lookup asks the next tier itself, telling it
// whether a stale copy exists (hasStale) so that a tier rationing loads can
// fail fast. If the next tier fails (Config.Failed), the stale copy answers
// (Stale, with the error as Result.Cause) provided the shard still holds
// it after the call: an Invalidate or Flush during the call has removed it,
// and a client's write is never answered with an older value. If the next
// tier says miss, or returns a value L1 does not keep, the stale entry is
// removed unless the shard's generation moved during the call. Other
// errors (WRONGTYPE) are returned. Stale entries are ordinary entries for
// the byte bound and the LRU.
//
// ExpireAll (the remote L2 lost track of changes) makes every entry stale
// in O(shards): it starts a new era, recorded per shard and in a small
// copy-on-write log of when each recent era began; an entry records the era
// it was filled in, and an entry of an earlier era was fresh until
// min(deadline, start of the next era), so calling ExpireAll again does not
// extend an older entry's stale window. Eras are trimmed from the log once
// every entry they ended is past StaleFor. Entries made stale this way are
// served only on a failure, never while revalidating: their values may be
// out of date or deleted upstream.
//
// Coherence: a reader that misses could fetch the old value from L2 while a
// writer updates L2 and calls Invalidate, then insert the old value after the
// invalidation. To prevent this each shard has a generation counter that
// Invalidate, Flush and ExpireAll increment. A reader records the
// generation (under the shard lock, with the miss) before calling the next
// tier, and inserts the fetched value only if the generation is unchanged
// when it re-takes the lock; otherwise the value is returned but dropped
// (Stats.FillsDropped).
// Background refreshes fill the same way, with the generation read when the
// stale value was served. The shard lock is never held while the next tier
// is called. Misses are not cached, and concurrent misses on one key are not
// coalesced here: each reads through (coalescing misses of L2 is the
// fallback tier's job).
package l1
