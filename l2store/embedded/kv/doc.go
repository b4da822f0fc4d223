// Package kv is the memory of the embedded L2: a sharded, byte-bounded
// key-value map with Redis expiry semantics and eviction policies. It owns
// the bytes of every key and value the embedded store holds, and the
// accounting that keeps them under Config.MaxBytes; package embedded
// builds Redis's commands on top of its transactions (Tx).
//
// # Sharding and transactions
//
// Keys are spread over a power-of-two number of shards by a 64-bit hash
// (hash/maphash with a per-DB seed), each shard behind its own mutex and
// with its own share of the memory bound (MaxBytes/Shards); there is no
// global lock. A Tx locks the shards of the keys it names, in index order,
// so that multi-key Txs cannot deadlock.
//
// # Memory layout
//
// A shard packs its entries into a log-structured arena of fixed-size
// segments (SegmentSize, 64 KiB by default), plain []byte that the garbage
// collector does not scan. An entry is a flags byte (accessed, dead), the
// expiry (8 bytes, Unix ms, 0 = none), the key and value lengths as
// uvarints, then the key and value bytes: 12 bytes of header for a 16-byte
// key and a 128-byte value. Writes append to the head segment; an
// overwrite with a value of the same length is done in place, and any
// other overwrite or a delete only marks the old entry dead. Entries over
// SegmentSize/8 get an allocation of their own, accounted at the size
// class Go really allocates; Append keeps spare capacity in them (double,
// or +1 MiB beyond 1 MiB, as Redis's sds does), so appending is amortized
// O(1).
//
// The index is open addressing with linear probing over []uint64 slots:
// each slot packs the high bits of the key's hash (which give the home
// slot and a tag compared before the key itself) and the entry's location
// (segment id, byte offset). Deletion shifts the rest of the cluster back,
// so there are no tombstones; the index doubles at 80% load and halves,
// when memory is short, below 20%. Get, Peek, Delete, SetExpire and
// in-place overwrites allocate nothing; Set allocates only for a new
// segment or index growth.
//
// # Reclaiming memory
//
// UsedBytes counts every segment (including free ones kept for reuse and
// the reserve), every large allocation, the per-segment metadata and the
// index, and stays within MaxBytes: after inserting entries, the Go heap
// grows by UsedBytes to within 0.1% (see TestUsedBytesHonest). When a
// write needs memory that the shard's budget does not have, the shard
// first returns spare free segments, shrinks a sparse index, then
// processes one segment at a time:
//
//   - A sealed segment with many dead bytes (half of it under
//     allkeys-lru; more than the largest small entry under noeviction) is
//     compacted: its live entries move to the head and it is freed.
//   - Under allkeys-lru, otherwise the oldest segment (FIFO order) gets a
//     second chance (CLOCK): entries read since they were written or last
//     moved (the accessed bit, set by Get) move to the head with the bit
//     cleared, the rest are evicted. Large entries take part in the same
//     FIFO. Within a shard, eviction thus approximates LRU the way CLOCK
//     does; with no reads it is FIFO.
//   - Expired entries met on the way are removed and counted as
//     expirations.
//
// One free segment is always kept in reserve, so that moving a segment's
// survivors never needs memory the shard does not have. Under noeviction,
// only dead space is reclaimed; a write that still does not fit fails with
// ErrOOM before changing anything, and Tx.Fits tells a multi-key write in
// advance whether all of it fits (it may compact, but it keeps the values
// returned earlier in the Tx valid). Under either policy an entry larger
// than a shard's budget is refused with ErrOOM.
//
// # Expiry
//
// As in Redis, an expired key is removed lazily when an operation finds it,
// and actively by ExpireCycle, which the DB runs every ExpireInterval:
// from a cursor that persists across calls, it looks at 20 keys that have
// an expiry, removes the expired ones, and repeats while more than 10% of
// them had expired (at most 256 rounds per shard and cycle, taking the
// shard lock per round). A Tx's time (Tx.Now) is read once and fixed.
//
// # Measured
//
// On the development machine (Go 1.26, 2 shared vCPUs), 1M keys of 16
// bytes with 128-byte values (BenchmarkMemory1M, MaxBytes 512 MiB, 32
// shards) take 31.1 bytes per key beyond the raw key and value bytes, by
// the DB's accounting and by the Go heap alike: 12 bytes of entry header,
// 16 bytes of index at that size (8 bytes per slot at 50% load; between 10
// and 20 bytes as the load ranges from 80% to 40%), the rest segment tails
// and the reserve. With 200k keys in 4 shards it is 24.5 bytes per key
// (index at 76% load). For the same 1M keys, Redis 7.0.15 takes 104.5
// bytes per key (used_memory), and a Go map[string][]byte 96 bytes.
package kv
