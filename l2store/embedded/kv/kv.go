package kv

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math/bits"
	"sync"
	"time"
)

// ErrOOM is returned by writes that do not fit: under NoEviction when the
// bound is reached, under AllKeysLRU only for an entry larger than a shard.
var ErrOOM = errors.New("kv: out of memory")

// Policy says what a write does when memory is full.
type Policy uint8

const (
	// AllKeysLRU evicts approximately least recently used keys.
	AllKeysLRU Policy = iota
	// NoEviction refuses the write with ErrOOM.
	NoEviction
)

// String returns the policy's name in Redis's spelling.
func (p Policy) String() string {
	switch p {
	case AllKeysLRU:
		return "allkeys-lru"
	case NoEviction:
		return "noeviction"
	}
	return fmt.Sprintf("Policy(%d)", p)
}

// ParsePolicy parses a policy name in Redis's spelling.
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "allkeys-lru":
		return AllKeysLRU, nil
	case "noeviction":
		return NoEviction, nil
	}
	return 0, fmt.Errorf("kv: unknown eviction policy %q (want allkeys-lru or noeviction)", s)
}

// MaxShards is the largest number of shards a DB can have.
const MaxShards = 256

// Defaults and limits of Config.
const (
	// DefaultMaxBytes is Config.MaxBytes when zero.
	DefaultMaxBytes = 256 << 20
	// DefaultSegmentSize is Config.SegmentSize when zero (it is halved,
	// down to MinSegmentSize, until a shard holds at least 16 segments).
	DefaultSegmentSize = 64 << 10
	// MinSegmentSize and MaxSegmentSize bound Config.SegmentSize.
	MinSegmentSize = 512
	MaxSegmentSize = 1 << 20
	// MaxShardBytes is the largest memory bound of one shard
	// (MaxBytes/Shards): the index packs an entry's location and hash
	// bits into 64 bits, and beyond this the hash bits run short.
	MaxShardBytes = 256 << 20

	// shardTargetBytes is the per-shard bound the default shard count
	// aims for: large enough for big values (a value must fit in one
	// shard), small enough for 16 shards at the default MaxBytes.
	shardTargetBytes = 16 << 20
	// defaultMaxShards caps the derived shard count.
	defaultMaxShards = 64
)

// Config configures a DB. The zero value is usable.
type Config struct {
	// MaxBytes bounds all memory the DB holds for entries and indexes.
	// Default 256 MiB. Each shard gets MaxBytes/Shards, and one entry
	// must fit in one shard.
	MaxBytes int64
	// Policy applies when a write does not fit. Default AllKeysLRU.
	Policy Policy
	// Shards is the number of independently locked shards, a power of two
	// up to MaxShards. Default: derived from MaxBytes, about one shard per
	// 16 MiB, between 1 and 64, more if a shard would exceed
	// MaxShardBytes.
	Shards int
	// SegmentSize is the size of the arena's segments, a power of two in
	// [MinSegmentSize, MaxSegmentSize]; entries larger than SegmentSize/8
	// get an allocation of their own. Default DefaultSegmentSize, halved
	// while a shard would hold fewer than 16 segments. A shard must hold
	// at least 4.
	SegmentSize int
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// ExpireInterval is how often the background active-expiry cycle runs.
	// Default 100ms; negative disables the goroutine (tests then call
	// ExpireCycle themselves).
	ExpireInterval time.Duration
}

// Stats is a snapshot of a DB's counters.
type Stats struct {
	Keys        int64  // keys held, including expired ones not yet reclaimed
	Expires     int64  // keys with an expiry
	UsedBytes   int64  // memory held for entries and indexes
	MaxBytes    int64  // the bound
	Evictions   uint64 // keys evicted to make room
	Expirations uint64 // keys removed because their expiry passed
}

// DB is a sharded key-value map. It is safe for concurrent use.
type DB struct {
	cfg       Config
	seed      maphash.Seed
	shards    []shard
	mask      uint64
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// New returns a DB configured by cfg.
func New(cfg Config) (*DB, error) {
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("kv: MaxBytes %d is negative", cfg.MaxBytes)
	}
	if cfg.Policy > NoEviction {
		return nil, fmt.Errorf("kv: unknown policy %d", cfg.Policy)
	}
	if cfg.Shards == 0 {
		cfg.Shards = defaultShards(cfg.MaxBytes)
	}
	if cfg.Shards < 0 || cfg.Shards > MaxShards || bits.OnesCount(uint(cfg.Shards)) != 1 {
		return nil, fmt.Errorf("kv: Shards %d is not a power of two in [1, %d]", cfg.Shards, MaxShards)
	}
	budget := cfg.MaxBytes / int64(cfg.Shards)
	if budget > MaxShardBytes {
		return nil, fmt.Errorf("kv: MaxBytes/Shards is %d, more than %d; use more shards", budget, MaxShardBytes)
	}
	if cfg.SegmentSize == 0 {
		cfg.SegmentSize = DefaultSegmentSize
		for cfg.SegmentSize > MinSegmentSize && budget/int64(cfg.SegmentSize) < 16 {
			cfg.SegmentSize /= 2
		}
	}
	if cfg.SegmentSize < MinSegmentSize || cfg.SegmentSize > MaxSegmentSize || bits.OnesCount(uint(cfg.SegmentSize)) != 1 {
		return nil, fmt.Errorf("kv: SegmentSize %d is not a power of two in [%d, %d]", cfg.SegmentSize, MinSegmentSize, MaxSegmentSize)
	}
	if min := minShardBytes(cfg.SegmentSize); budget < min {
		return nil, fmt.Errorf("kv: MaxBytes/Shards is %d, less than the %d bytes a shard needs with %d-byte segments", budget, min, cfg.SegmentSize)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ExpireInterval == 0 {
		cfg.ExpireInterval = 100 * time.Millisecond
	}
	db := &DB{
		cfg:    cfg,
		seed:   maphash.MakeSeed(),
		shards: make([]shard, cfg.Shards),
		mask:   uint64(cfg.Shards - 1),
		done:   make(chan struct{}),
	}
	for i := range db.shards {
		db.shards[i].init(db.seed, budget, cfg.SegmentSize, cfg.Policy)
	}
	if cfg.ExpireInterval > 0 {
		db.wg.Add(1)
		go db.expireLoop()
	}
	return db, nil
}

// defaultShards derives the shard count from the memory bound.
func defaultShards(maxBytes int64) int {
	n := 1
	for n < defaultMaxShards && int64(n)*2*shardTargetBytes <= maxBytes {
		n *= 2
	}
	for n < MaxShards && maxBytes/int64(n) > MaxShardBytes {
		n *= 2
	}
	return n
}

// Close stops the background goroutine. The DB must not be used after.
func (db *DB) Close() {
	db.closeOnce.Do(func() { close(db.done) })
	db.wg.Wait()
}

func (db *DB) expireLoop() {
	defer db.wg.Done()
	t := time.NewTicker(db.cfg.ExpireInterval)
	defer t.Stop()
	for {
		select {
		case <-db.done:
			return
		case <-t.C:
			db.ExpireCycle()
		}
	}
}

// ExpireCycle runs one active-expiry pass, Redis 7's algorithm per shard:
// look at the next 20 keys that have an expiry (visiting at most 400 index
// slots from where the last round stopped), remove the expired ones, and
// repeat while more than 10% of them had expired, at most 256 rounds per
// shard per cycle. The shard lock is taken per round, so a cycle holds it
// only briefly.
func (db *DB) ExpireCycle() {
	now := db.cfg.Now().UnixMilli()
	for i := range db.shards {
		db.shards[i].expireCycle(now)
	}
}

func (db *DB) hash(key []byte) uint64 { return maphash.Bytes(db.seed, key) }

// Tx is a set of locked shards, from Begin to End. All methods that take a
// key panic if the key's shard is not locked by this Tx.
type Tx struct {
	db     *DB
	now    int64 // Unix ms, read from the clock at first use
	hasNow bool
	locked [MaxShards / 64]uint64
}

// Begin locks the shards owning keys, in a fixed order, and returns the Tx
// that reads and writes them. The caller must call End. Now() is fixed for
// the whole Tx, like Redis's command time snapshot.
func (db *DB) Begin(keys [][]byte) Tx {
	tx := Tx{db: db}
	for _, k := range keys {
		i := db.hash(k) & db.mask
		tx.locked[i/64] |= 1 << (i % 64)
	}
	for w, word := range tx.locked {
		for word != 0 {
			b := bits.TrailingZeros64(word)
			word &^= 1 << b
			db.shards[w*64+b].mu.Lock()
		}
	}
	return tx
}

// End unlocks the Tx's shards. Values returned by Get and Peek must not be
// used after End.
func (tx *Tx) End() {
	for w, word := range tx.locked {
		for word != 0 {
			b := bits.TrailingZeros64(word)
			word &^= 1 << b
			s := &tx.db.shards[w*64+b]
			if len(s.quarantine) > 0 {
				s.endQuarantine()
			}
			s.nexposed = 0
			s.mu.Unlock()
		}
	}
	tx.locked = [MaxShards / 64]uint64{}
	tx.hasNow = false
}

// Now returns the Tx's time in Unix milliseconds. The clock is read at the
// first call (many Txs never need it) and the time stays fixed until End.
func (tx *Tx) Now() int64 {
	if !tx.hasNow {
		tx.now, tx.hasNow = tx.db.cfg.Now().UnixMilli(), true
	}
	return tx.now
}

// shard returns the locked shard that owns hash h.
func (tx *Tx) shard(h uint64) *shard {
	i := h & tx.db.mask
	if tx.locked[i/64]&(1<<(i%64)) == 0 {
		panic("kv: key's shard is not locked by this Tx")
	}
	return &tx.db.shards[i]
}

// Get returns key's value and expiry (Unix ms, 0 for none) and marks the
// key as recently used. The value aliases the DB's memory: it is valid
// until the next write in this Tx or End, and must not be modified.
func (tx *Tx) Get(key []byte) (val []byte, expireAt int64, ok bool) {
	h := tx.db.hash(key)
	return tx.shard(h).get(h, key, tx, true)
}

// Peek is Get without marking the key as used (like Redis's NOTOUCH lookups).
func (tx *Tx) Peek(key []byte) (val []byte, expireAt int64, ok bool) {
	h := tx.db.hash(key)
	return tx.shard(h).get(h, key, tx, false)
}

// Set stores val under key with expiry expireAt (Unix ms, 0 for none),
// replacing any value and expiry. It copies key and val, which may alias
// values returned by this Tx. It returns ErrOOM if the entry does not fit,
// and then leaves the key's old value and expiry as they were.
func (tx *Tx) Set(key, val []byte, expireAt int64) error {
	h := tx.db.hash(key)
	return tx.shard(h).set(h, key, val, expireAt, tx)
}

// Fits reports whether setting every pair of kvs (key, value, key, value,
// ...) in this Tx would succeed. Multi-key writes call it first so that they
// either set every key or none. It changes no key; under NoEviction it may
// compact memory, but values returned earlier in the Tx stay valid. It errs
// on the safe side: near the bound it may report false for writes that
// would just have fit.
func (tx *Tx) Fits(kvs [][]byte) bool {
	return tx.db.fits(tx, kvs)
}

// Append appends data to key's value, creating the key (without expiry) if
// it is missing, and returns the new length. It may return ErrOOM, and then
// changes nothing.
func (tx *Tx) Append(key, data []byte) (int, error) {
	h := tx.db.hash(key)
	return tx.shard(h).append(h, key, data, tx)
}

// Delete removes key and reports whether it was there (and not expired).
func (tx *Tx) Delete(key []byte) bool {
	h := tx.db.hash(key)
	return tx.shard(h).delete(h, key, tx)
}

// SetExpire sets key's expiry (Unix ms, 0 to persist) and reports whether
// the key exists.
func (tx *Tx) SetExpire(key []byte, expireAt int64) bool {
	h := tx.db.hash(key)
	return tx.shard(h).setExpire(h, key, expireAt, tx)
}

// Flush removes every key and releases the memory that held them.
func (db *DB) Flush() {
	for i := range db.shards {
		s := &db.shards[i]
		s.mu.Lock()
		s.reset()
		s.mu.Unlock()
	}
}

// Stats returns a snapshot of the DB's counters.
func (db *DB) Stats() Stats {
	st := Stats{MaxBytes: db.cfg.MaxBytes}
	for i := range db.shards {
		s := &db.shards[i]
		s.mu.Lock()
		st.Keys += int64(s.count)
		st.Expires += s.expires
		st.UsedBytes += s.used
		st.Evictions += s.evictions
		st.Expirations += s.expirations
		s.mu.Unlock()
	}
	return st
}
