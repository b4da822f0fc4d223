// Package kvmodel is the reference model of package kv, used only by kv's
// tests: the original map-based implementation of kv's API (one Go map per
// shard, an entry struct per key, a fixed 64-byte overhead per entry in the
// accounting, sampled-LRU eviction). It is simple enough to be obviously
// right, so the compact engine's tests run the same operations on both and
// compare the results. Its ExpireCycle sweeps every key, which makes its
// behaviour deterministic.
package kvmodel

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"time"
	"unsafe"
)

// ErrOOM is returned by writes that do not fit: under NoEviction when the
// bound is reached, under AllKeysLRU only for an entry larger than a shard.
var ErrOOM = errors.New("kvmodel: out of memory")

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

// MaxShards is the largest number of shards a DB can have.
const MaxShards = 256

// Config configures a DB. The zero value is usable.
type Config struct {
	// MaxBytes bounds all memory the DB holds for entries and indexes.
	// Default 256 MiB.
	MaxBytes int64
	// Policy applies when a write does not fit. Default AllKeysLRU.
	Policy Policy
	// Shards is the number of independently locked shards, a power of two
	// up to MaxShards. Default: derived from MaxBytes.
	Shards int
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// ExpireInterval is how often the background active-expiry cycle runs.
	// Default 100ms; negative disables the goroutine (tests then call
	// ExpireCycle themselves).
	ExpireInterval time.Duration
}

// DB is a sharded key-value map. It is safe for concurrent use.
type DB struct {
	cfg    Config
	shards []shard
	mask   uint64
	done   chan struct{}
	wg     sync.WaitGroup
}

type shard struct {
	mu          sync.Mutex
	m           map[string]*entry
	used        int64
	budget      int64
	expires     int64
	clock       uint64
	evictions   uint64
	expirations uint64
}

type entry struct {
	val    []byte
	exp    int64
	access uint64
}

const entryOverhead = 64

// New returns a DB configured by cfg.
func New(cfg Config) (*DB, error) {
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 256 << 20
	}
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("kvmodel: MaxBytes %d is negative", cfg.MaxBytes)
	}
	if cfg.Policy > NoEviction {
		return nil, fmt.Errorf("kvmodel: unknown policy %d", cfg.Policy)
	}
	if cfg.Shards == 0 {
		cfg.Shards = 16
	}
	if cfg.Shards < 0 || cfg.Shards > MaxShards || bits.OnesCount(uint(cfg.Shards)) != 1 {
		return nil, fmt.Errorf("kvmodel: Shards %d is not a power of two in [1, %d]", cfg.Shards, MaxShards)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ExpireInterval == 0 {
		cfg.ExpireInterval = 100 * time.Millisecond
	}
	db := &DB{cfg: cfg, shards: make([]shard, cfg.Shards), mask: uint64(cfg.Shards - 1), done: make(chan struct{})}
	for i := range db.shards {
		db.shards[i].m = make(map[string]*entry)
		db.shards[i].budget = cfg.MaxBytes / int64(cfg.Shards)
	}
	if cfg.ExpireInterval > 0 {
		db.wg.Add(1)
		go db.expireLoop()
	}
	return db, nil
}

// Close stops the background goroutine. The DB must not be used after.
func (db *DB) Close() {
	select {
	case <-db.done:
	default:
		close(db.done)
	}
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

// ExpireCycle runs one active-expiry pass: it samples keys with an expiry
// in every shard and removes those whose time has passed, repeating on a
// shard while more than a quarter of a sample was expired, as Redis does.
func (db *DB) ExpireCycle() {
	now := db.cfg.Now().UnixMilli()
	for i := range db.shards {
		s := &db.shards[i]
		s.mu.Lock()
		for k, e := range s.m {
			if e.exp != 0 && e.exp <= now {
				s.remove(k, e)
				s.expirations++
			}
		}
		s.mu.Unlock()
	}
}

func hash(key []byte) uint64 {
	// FNV-1a
	h := uint64(14695981039346656037)
	for _, c := range key {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

func (db *DB) shardOf(key []byte) int { return int(hash(key) & db.mask) }

// Tx is a set of locked shards, from Begin to End. All methods that take a
// key panic if the key's shard is not locked by this Tx.
type Tx struct {
	db     *DB
	now    int64
	locked [MaxShards / 64]uint64
}

// Begin locks the shards owning keys, in a fixed order, and returns the Tx
// that reads and writes them. The caller must call End. Now() is fixed for
// the whole Tx, like Redis's command time snapshot.
func (db *DB) Begin(keys [][]byte) Tx {
	tx := Tx{db: db, now: db.cfg.Now().UnixMilli()}
	for _, k := range keys {
		i := db.shardOf(k)
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
			tx.db.shards[w*64+b].mu.Unlock()
		}
	}
	tx.locked = [MaxShards / 64]uint64{}
}

func (tx *Tx) shard(key []byte) *shard {
	i := tx.db.shardOf(key)
	if tx.locked[i/64]&(1<<(i%64)) == 0 {
		panic("kvmodel: key's shard is not locked by this Tx")
	}
	return &tx.db.shards[i]
}

// lookup returns key's live entry, removing it if it has expired.
func (tx *Tx) lookup(s *shard, key []byte) *entry {
	k := unsafe.String(unsafe.SliceData(key), len(key))
	e := s.m[k]
	if e == nil {
		return nil
	}
	if e.exp != 0 && e.exp <= tx.now {
		s.remove(k, e)
		s.expirations++
		return nil
	}
	return e
}

// Get returns key's value and expiry (Unix ms, 0 for none) and marks the
// key as recently used. The value aliases the DB's memory: it is valid
// until the next write in this Tx or End, and must not be modified.
func (tx *Tx) Get(key []byte) (val []byte, expireAt int64, ok bool) {
	s := tx.shard(key)
	e := tx.lookup(s, key)
	if e == nil {
		return nil, 0, false
	}
	s.clock++
	e.access = s.clock
	return e.val, e.exp, true
}

// Peek is Get without marking the key as used (like Redis's NOTOUCH lookups).
func (tx *Tx) Peek(key []byte) (val []byte, expireAt int64, ok bool) {
	s := tx.shard(key)
	e := tx.lookup(s, key)
	if e == nil {
		return nil, 0, false
	}
	return e.val, e.exp, true
}

// Set stores val under key with expiry expireAt (Unix ms, 0 for none),
// replacing any value and expiry. It copies key and val. It returns ErrOOM
// if the entry does not fit.
func (tx *Tx) Set(key, val []byte, expireAt int64) error {
	s := tx.shard(key)
	size := int64(len(key) + len(val) + entryOverhead)
	k := unsafe.String(unsafe.SliceData(key), len(key))
	old := s.m[k]
	need := size
	if old != nil {
		need -= int64(len(key) + len(old.val) + entryOverhead)
	}
	if size > s.budget {
		return ErrOOM
	}
	for s.used+need > s.budget {
		if tx.db.cfg.Policy == NoEviction || !s.evictOne(old) {
			return ErrOOM
		}
	}
	if old != nil {
		s.remove(k, old)
	}
	s.clock++
	s.m[string(key)] = &entry{val: append([]byte(nil), val...), exp: expireAt, access: s.clock}
	s.used += size
	if expireAt != 0 {
		s.expires++
	}
	return nil
}

// evictOne removes the least recently used of a few sampled entries,
// never keep.
func (s *shard) evictOne(keep *entry) bool {
	var victimKey string
	var victim *entry
	n := 0
	for k, e := range s.m {
		if e == keep {
			continue
		}
		if victim == nil || e.access < victim.access {
			victimKey, victim = k, e
		}
		if n++; n == 5 {
			break
		}
	}
	if victim == nil {
		return false
	}
	s.remove(victimKey, victim)
	s.evictions++
	return true
}

func (s *shard) remove(k string, e *entry) {
	delete(s.m, k)
	s.used -= int64(len(k) + len(e.val) + entryOverhead)
	if e.exp != 0 {
		s.expires--
	}
}

// Append appends data to key's value, creating the key (without expiry) if
// it is missing, and returns the new length. It may return ErrOOM.
func (tx *Tx) Append(key, data []byte) (int, error) {
	s := tx.shard(key)
	e := tx.lookup(s, key)
	var val []byte
	var exp int64
	if e != nil {
		val, exp = e.val, e.exp
	}
	nv := make([]byte, 0, len(val)+len(data))
	nv = append(append(nv, val...), data...)
	if err := tx.Set(key, nv, exp); err != nil {
		return 0, err
	}
	return len(nv), nil
}

// Delete removes key and reports whether it was there (and not expired).
func (tx *Tx) Delete(key []byte) bool {
	s := tx.shard(key)
	e := tx.lookup(s, key)
	if e == nil {
		return false
	}
	s.remove(string(key), e)
	return true
}

// SetExpire sets key's expiry (Unix ms, 0 to persist) and reports whether
// the key exists.
func (tx *Tx) SetExpire(key []byte, expireAt int64) bool {
	s := tx.shard(key)
	e := tx.lookup(s, key)
	if e == nil {
		return false
	}
	if e.exp != 0 {
		s.expires--
	}
	if expireAt != 0 {
		s.expires++
	}
	e.exp = expireAt
	return true
}

// Flush removes every key.
func (db *DB) Flush() {
	for i := range db.shards {
		s := &db.shards[i]
		s.mu.Lock()
		s.m = make(map[string]*entry)
		s.used, s.expires = 0, 0
		s.mu.Unlock()
	}
}

// Lookup returns key's value and expiry if key is live at now (Unix ms),
// without side effects: no lazy expiry, no LRU touch. Tests use it to
// compare states without disturbing them.
func (db *DB) Lookup(key []byte, now int64) (val []byte, expireAt int64, ok bool) {
	s := &db.shards[db.shardOf(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[string(key)]
	if e == nil || (e.exp != 0 && e.exp <= now) {
		return nil, 0, false
	}
	return append([]byte(nil), e.val...), e.exp, true
}

// Live returns the number of keys live at now and how many of them have an
// expiry.
func (db *DB) Live(now int64) (keys, expires int64) {
	for i := range db.shards {
		s := &db.shards[i]
		s.mu.Lock()
		for _, e := range s.m {
			if e.exp == 0 || e.exp > now {
				keys++
				if e.exp != 0 {
					expires++
				}
			}
		}
		s.mu.Unlock()
	}
	return keys, expires
}
