package l1

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// ErrInvalidConfig is returned (wrapped) by New for a Config it cannot use.
var ErrInvalidConfig = errors.New("l1: invalid config")

// Item is a value from the next tier with its absolute expiry.
type Item struct {
	// Value is the key's string value. Ownership passes to the L1 with the
	// return from Getter.Get: nobody may modify it afterwards. L1 charges
	// cap(Value) bytes for it, so a Getter should not hand over a slice of
	// a larger shared buffer.
	Value []byte
	// Expires is the instant the key expires in the next tier; the zero
	// Time means never.
	Expires time.Time
	// Origin reports that the value was loaded from the origin rather than
	// the L2. L1 passes it through to Result.Origin and does not keep it.
	Origin bool
}

// Getter is the next tier (the origin shield, which asks the breaker and
// L2 first).
//
// Get returns key's value. found == false with a nil error is a miss (no
// such key); L1 does not cache misses, and drops a stale copy of the key.
// A non-nil error is returned to L1's caller, or answered with a stale copy
// (see Config.StaleFor), and nothing is cached. key is only read during the
// call. The returned Item.Value is owned by the L1 afterwards and is never
// modified by anyone.
//
// hasStale reports that L1 holds a stale copy of key that it will serve if
// Get returns a failure (Config.Failed). A tier that rations loads (the
// origin shield) can then fail at once instead of spending its budget on
// this key.
type Getter interface {
	Get(ctx context.Context, key []byte, hasStale bool) (item Item, found bool, err error)
}

// GetterFunc adapts a function to a Getter.
type GetterFunc func(ctx context.Context, key []byte, hasStale bool) (Item, bool, error)

// Get calls f(ctx, key, hasStale).
func (f GetterFunc) Get(ctx context.Context, key []byte, hasStale bool) (Item, bool, error) {
	return f(ctx, key, hasStale)
}

// Config configures a Cache. The zero value of every field selects its
// default.
type Config struct {
	// MaxBytes bounds the memory held by entries, fresh or stale: keys,
	// values and a fixed per-entry overhead, each rounded up to the Go
	// allocator's size classes (--l1-max-bytes). Each shard gets
	// MaxBytes/Shards. Default 64 MiB.
	MaxBytes int64

	// TTL caps how long an entry is served without asking the next tier
	// (--l1-ttl): an entry is fresh until min(Item.Expires, fill time +
	// TTL). Default 10s.
	TTL time.Duration

	// StaleFor is how long an entry is kept after it stops being fresh
	// (--stale-for), to answer for the next tier when it fails
	// (stale-if-error, RFC 5861). Default 0: an entry is removed when it
	// stops being fresh.
	StaleFor time.Duration

	// StaleWhileRevalidate is how long after an entry stops being fresh it
	// is still returned at once while one background refresh per key asks
	// the next tier (stale-while-revalidate, RFC 5861). It must not exceed
	// StaleFor. Entries made stale by ExpireAll are never served this way,
	// only on a failure. Default 0: off.
	StaleWhileRevalidate time.Duration

	// MaxRefreshes caps the background refreshes running at once, over all
	// keys. A lookup that finds the cap reached returns the stale value
	// without starting a refresh (Stats.RefreshesSkipped). Default 16.
	MaxRefreshes int

	// Failed reports whether an error from the next tier is a failure that
	// a stale copy may answer for. Other errors (a Redis WRONGTYPE) are
	// returned even when a stale copy exists. Default: every error.
	Failed func(error) bool

	// Shards is the number of independently locked shards, a power of two.
	// Default 64, or fewer so that each shard has at least 64 KiB.
	Shards int

	// MaxItemBytes is the largest entry (key, value and overhead, as
	// charged against MaxBytes) that is kept; larger values are returned
	// but not cached. It must lie between the per-entry overhead and
	// MaxBytes/Shards. Default MaxBytes/Shards/4.
	MaxItemBytes int64

	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// Defaults of Config's zero fields.
const (
	DefaultMaxBytes     = 64 << 20
	DefaultTTL          = 10 * time.Second
	DefaultMaxRefreshes = 16
)

const (
	defaultShards    = 64
	minDefaultBudget = 64 << 10 // per-shard bytes below which the default shard count halves
)

// Outcome says where a Lookup's answer came from.
type Outcome uint8

// Outcomes of a Lookup.
const (
	Miss         Outcome = iota // no value anywhere below
	Hit                         // fresh in L1
	Stale                       // a stale L1 copy, served because the next tier failed (stale-if-error)
	Revalidating                // a stale L1 copy within the stale-while-revalidate window; a refresh runs
	Next                        // from the next tier (L2, or the origin when Result.Origin)
)

var outcomeNames = [...]string{Miss: "miss", Hit: "hit", Stale: "stale", Revalidating: "revalidating", Next: "next"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("Outcome(%d)", o)
}

// Result is a Lookup's answer.
type Result struct {
	// Value is the key's value (nil for a Miss). It is owned by L1 and
	// never modified: the caller must not modify it, and it stays valid
	// after later calls.
	Value   []byte
	Outcome Outcome
	// Origin is Item.Origin of a value from the next tier (Outcome Next).
	Origin bool
	// Cause is, for Outcome Stale, the next tier's error that the stale
	// copy answered for.
	Cause error
}

// Stats is a snapshot of a Cache's counters. Counters only grow; Entries and
// Bytes are current values.
type Stats struct {
	Hits          uint64 // lookups answered with a fresh entry
	Misses        uint64 // lookups that asked the next tier (absent, expired or stale in L1)
	Fills         uint64 // entries inserted after a miss or a refresh
	FillsDropped  uint64 // fetched values not inserted: Invalidate, Flush or ExpireAll ran during the fetch
	TooLarge      uint64 // fetched values not kept: entry larger than MaxItemBytes
	Evictions     uint64 // entries removed to keep a shard within its byte budget
	Expirations   uint64 // entries removed or replaced after they reached Item.Expires (and StaleFor ran out or a fill came)
	Refreshes     uint64 // the same for entries whose freshness ended by the TTL cap or ExpireAll
	Invalidations uint64 // entries removed by Invalidate
	Flushed       uint64 // entries removed by Flush
	NextErrors    uint64 // errors from the next tier returned to the caller (not answered by a stale copy)

	StaleServed      uint64 // misses answered with a stale copy because the next tier failed (among Misses)
	StaleDropped     uint64 // stale entries removed because the next tier had no value for them, or one L1 does not keep
	Revalidations    uint64 // lookups answered with a stale copy within StaleWhileRevalidate (neither Hits nor Misses)
	RefreshesStarted uint64 // background refreshes started
	RefreshesSkipped uint64 // Revalidations that started no refresh: MaxRefreshes were running or the Cache was closed
	RefreshErrors    uint64 // background refreshes that got an error from the next tier (the stale copy stays)
	ExpiredAll       uint64 // ExpireAll calls

	Entries  int64 // entries held, fresh or stale
	Bytes    int64 // bytes charged for the entries held
	MaxBytes int64 // the configured bound (Shards * per-shard budget)
	Shards   int
}

// entry is the value stored in simplelru for each key, under the key's
// 64-bit hash. Its key and value share one allocation with the tick at
// which the entry last went to the front of the LRU list, so a hit reads
// the list element and that one buffer.
type entry struct {
	// buf is the promotion tick (tickLen bytes, read and written only
	// under the shard lock), the key, then the value.
	buf  []byte
	klen int32
	// era is the shard's era (count of ExpireAll calls) when the entry was
	// filled; the entry is not fresh once the shard's era moves on.
	era uint32
	// expires is true if the deadline is Item.Expires (the key is gone in
	// the next tier then), false if it is the TTL cap.
	expires bool
	// changed is true once Expire reported the key written elsewhere: the
	// entry is stale, served only if the next tier fails.
	changed bool
	// deadline is when the entry stops being fresh, in nanoseconds since
	// Cache.epoch: min(Item.Expires, fill time + TTL).
	deadline int64
}

// tickLen is the size of the promotion tick at the start of entry.buf.
const tickLen = 8

func newEntry(key, value []byte) entry {
	buf := make([]byte, tickLen+len(key)+len(value))
	copy(buf[tickLen:], key)
	copy(buf[tickLen+len(key):], value)
	return entry{buf: buf, klen: int32(len(key))}
}

func (e entry) key() []byte { return e.buf[tickLen : tickLen+int(e.klen)] }

// value returns the value, capped so that an append by the caller cannot
// write into L1's buffer.
func (e entry) value() []byte { return e.buf[tickLen+int(e.klen) : len(e.buf) : len(e.buf)] }

func (e entry) promoted() uint64     { return binary.NativeEndian.Uint64(e.buf) }
func (e entry) setPromoted(t uint64) { binary.NativeEndian.PutUint64(e.buf, t) }

// same reports whether e and o are the same fill (not merely the same key).
func (e entry) same(o entry) bool { return &e.buf[0] == &o.buf[0] }

// size is the number of bytes the entry is charged.
func (e entry) size() int64 { return entryOverhead + allocSize(len(e.buf)) }

// shardState is one shard: a simplelru core and its accounting, all guarded
// by mu.
type shardState struct {
	mu  sync.Mutex
	lru *simplelru.LRU[uint64, entry]
	gen uint64 // incremented by Invalidate, Flush and ExpireAll
	era uint32 // count of ExpireAll calls that reached this shard
	// tick counts moves to the front of the LRU list. An entry that went
	// to the front at tick p is at most tick-p places from it.
	tick  uint64
	bytes int64
	// refreshing holds the hashes of keys with a background refresh
	// running; nil until the first one.
	refreshing map[uint64]struct{}

	hits, misses, fills, fillsDropped uint64
	evictions, expirations, refreshes uint64
	invalidations, flushed            uint64
	staleServed, staleDropped         uint64
	revalidations, refreshesStarted   uint64
	refreshesSkipped                  uint64
}

// shard pads shardState to a multiple of 128 bytes so that neighbouring
// shards' locks do not share a cache line.
type shard struct {
	shardState
	_ [128 - unsafe.Sizeof(shardState{})%128]byte
}

// Cache is a sharded, byte-bounded, read-through LRU that can serve stale
// copies. It is safe for concurrent use. Close stops its background
// refreshes.
type Cache struct {
	next    Getter
	shards  []shard
	mask    uint64
	seed    maphash.Seed
	budget  int64 // bytes per shard
	maxItem int64
	// The times of Config, in nanoseconds; SetTimes changes them.
	ttl      atomic.Int64
	staleFor atomic.Int64
	swr      atomic.Int64
	failed   func(error) bool
	now      func() time.Time
	epoch    time.Time
	tooLarge atomic.Uint64
	errors   atomic.Uint64

	// eras records when recent ExpireAll calls ran (see eraLog);
	// eraMu serializes ExpireAll.
	eras       atomic.Pointer[eraLog]
	eraMu      sync.Mutex
	expiredAll atomic.Uint64

	// Background refreshes: refreshMu guards closed and running, and
	// orders refreshWG.Add before Close's Wait.
	refreshMu     sync.Mutex
	closed        bool
	running       int
	maxRefreshes  int
	refreshWG     sync.WaitGroup
	refreshErrors atomic.Uint64
}

// New returns a Cache that reads through to next.
func New(next Getter, cfg Config) (*Cache, error) {
	if next == nil {
		return nil, fmt.Errorf("%w: nil Getter", ErrInvalidConfig)
	}
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("%w: negative MaxBytes %d", ErrInvalidConfig, cfg.MaxBytes)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.TTL < 0 {
		return nil, fmt.Errorf("%w: negative TTL %v", ErrInvalidConfig, cfg.TTL)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	switch {
	case cfg.StaleFor < 0:
		return nil, fmt.Errorf("%w: negative StaleFor %v", ErrInvalidConfig, cfg.StaleFor)
	case cfg.StaleWhileRevalidate < 0:
		return nil, fmt.Errorf("%w: negative StaleWhileRevalidate %v", ErrInvalidConfig, cfg.StaleWhileRevalidate)
	case cfg.StaleWhileRevalidate > cfg.StaleFor:
		return nil, fmt.Errorf("%w: StaleWhileRevalidate %v exceeds StaleFor %v", ErrInvalidConfig, cfg.StaleWhileRevalidate, cfg.StaleFor)
	case cfg.MaxRefreshes < 0:
		return nil, fmt.Errorf("%w: negative MaxRefreshes %d", ErrInvalidConfig, cfg.MaxRefreshes)
	}
	if cfg.MaxRefreshes == 0 {
		cfg.MaxRefreshes = DefaultMaxRefreshes
	}
	if cfg.Failed == nil {
		cfg.Failed = func(error) bool { return true }
	}
	switch {
	case cfg.Shards < 0 || cfg.Shards&(cfg.Shards-1) != 0:
		return nil, fmt.Errorf("%w: Shards %d is not a power of two", ErrInvalidConfig, cfg.Shards)
	case cfg.Shards == 0:
		cfg.Shards = defaultShards
		for cfg.Shards > 1 && cfg.MaxBytes/int64(cfg.Shards) < minDefaultBudget {
			cfg.Shards /= 2
		}
	}
	budget := cfg.MaxBytes / int64(cfg.Shards)
	if cfg.MaxItemBytes < 0 {
		return nil, fmt.Errorf("%w: negative MaxItemBytes %d", ErrInvalidConfig, cfg.MaxItemBytes)
	}
	if cfg.MaxItemBytes == 0 {
		cfg.MaxItemBytes = budget / 4
	}
	if cfg.MaxItemBytes > budget {
		return nil, fmt.Errorf("%w: MaxItemBytes %d exceeds the per-shard budget %d (MaxBytes %d / Shards %d)",
			ErrInvalidConfig, cfg.MaxItemBytes, budget, cfg.MaxBytes, cfg.Shards)
	}
	if cfg.MaxItemBytes < entryOverhead {
		return nil, fmt.Errorf("%w: MaxItemBytes %d is below the per-entry overhead %d (MaxBytes %d, Shards %d): nothing could be cached",
			ErrInvalidConfig, cfg.MaxItemBytes, entryOverhead, cfg.MaxBytes, cfg.Shards)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}

	c := &Cache{
		next:         next,
		shards:       make([]shard, cfg.Shards),
		mask:         uint64(cfg.Shards - 1),
		seed:         maphash.MakeSeed(),
		budget:       budget,
		maxItem:      cfg.MaxItemBytes,
		failed:       cfg.Failed,
		maxRefreshes: cfg.MaxRefreshes,
		now:          cfg.Now,
	}
	c.epoch = c.now()
	c.ttl.Store(int64(cfg.TTL))
	c.staleFor.Store(int64(cfg.StaleFor))
	c.swr.Store(int64(cfg.StaleWhileRevalidate))
	for i := range c.shards {
		c.shards[i].lru = newLRU()
	}
	return c, nil
}

// SetTimes changes TTL, StaleFor and StaleWhileRevalidate (as in Config;
// zero TTL: the default) while the Cache runs, for a configuration reload.
// Entries keep the freshness they were filled with; the stale windows
// apply from the next lookup on.
func (c *Cache) SetTimes(ttl, staleFor, swr time.Duration) error {
	switch {
	case ttl < 0:
		return fmt.Errorf("%w: negative TTL %v", ErrInvalidConfig, ttl)
	case staleFor < 0 || swr < 0 || swr > staleFor:
		return fmt.Errorf("%w: StaleFor %v, StaleWhileRevalidate %v: want 0 <= StaleWhileRevalidate <= StaleFor", ErrInvalidConfig, staleFor, swr)
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	c.ttl.Store(int64(ttl))
	c.staleFor.Store(int64(staleFor))
	c.swr.Store(int64(swr))
	return nil
}

func newLRU() *simplelru.LRU[uint64, entry] {
	// The count bound is never reached: shards evict by bytes themselves.
	lru, err := simplelru.NewLRU[uint64, entry](math.MaxInt, nil)
	if err != nil {
		panic(err) // only for a non-positive size
	}
	return lru
}

// shardOf returns key's hash and its shard: the hash's low bits pick the
// shard, and the whole hash is the key in the shard's LRU. Two keys with
// the same hash share a slot: the entry holds its key, a lookup that finds
// another key is a miss, and filling it replaces the other key.
func (c *Cache) shardOf(key []byte) (uint64, *shard) {
	h := maphash.Bytes(c.seed, key)
	return h, &c.shards[h&c.mask]
}

// lookup returns key's entry in s, if any.
func (s *shard) lookup(h uint64, key []byte) (entry, bool) {
	e, ok := s.lru.Peek(h)
	if !ok || !bytes.Equal(e.key(), key) {
		return entry{}, false
	}
	return e, true
}

// remove removes e, stored under h, from s.
func (s *shard) remove(h uint64, e entry) {
	s.lru.Remove(h)
	s.bytes -= e.size()
}

// clock returns t as nanoseconds since c.epoch.
func (c *Cache) clock(t time.Time) int64 {
	return int64(t.Sub(c.epoch))
}

// Get returns key's value as Lookup does: found is Outcome != Miss. The
// returned slice must not be modified by the caller; it stays valid after
// later calls (L1 never reuses it).
func (c *Cache) Get(ctx context.Context, key []byte) (value []byte, found bool, err error) {
	r, err := c.Lookup(ctx, key)
	return r.Value, r.Outcome != Miss, err
}

// Lookup returns key's value and where it came from:
//
//   - a fresh entry: Hit;
//   - an entry within StaleWhileRevalidate after its freshness ended (and
//     not made stale by ExpireAll): Revalidating, at once, and a background
//     refresh starts unless one runs for the key or MaxRefreshes run;
//   - otherwise the next tier is asked (hasStale true if an entry within
//     StaleFor after its freshness is kept) and its value returned (Next)
//     and kept if it fits; its miss returned (Miss) and the stale entry
//     dropped; its failure (Config.Failed) answered with the stale entry
//     if there still is one (Stale, with the error as Result.Cause), else
//     returned, as is any other error.
func (c *Cache) Lookup(ctx context.Context, key []byte) (Result, error) {
	h, s := c.shardOf(key)
	now := c.now()
	t := c.clock(now)

	s.mu.Lock()
	e, ok := s.lookup(h, key)
	if ok && t < e.deadline && e.era == s.era {
		s.hits++
		s.promote(h, e)
		s.mu.Unlock()
		return Result{Value: e.value(), Outcome: Hit}, nil
	}
	return c.lookupSlow(ctx, s, h, key, e, ok, now, t)
}

// lookupSlow is Lookup past the fresh hit, with s locked; it unlocks s.
// e is key's entry if ok.
func (c *Cache) lookupSlow(ctx context.Context, s *shard, h uint64, key []byte, e entry, ok bool, now time.Time, t int64) (Result, error) {
	hasStale := false
	if ok {
		end, expires, expiredAll := c.freshUntil(s, e, t)
		switch {
		case t < end+c.swr.Load() && !expiredAll:
			s.revalidations++
			s.promote(h, e)
			start := c.claimRefresh(s, h)
			gen := s.gen
			s.mu.Unlock()
			if start {
				go c.refresh(context.WithoutCancel(ctx), s, h, bytes.Clone(key), e, gen)
			}
			return Result{Value: e.value(), Outcome: Revalidating}, nil
		case t < end+c.staleFor.Load():
			hasStale = true
		default:
			s.remove(h, e)
			s.countEnded(expires)
		}
	}
	s.misses++
	gen := s.gen
	s.mu.Unlock()

	item, found, err := c.next.Get(ctx, key, hasStale)
	switch {
	case err != nil:
		if c.staleFor.Load() > 0 && c.failed(err) {
			if v, ok := c.serveStale(s, h, key); ok {
				return Result{Value: v, Outcome: Stale, Cause: err}, nil
			}
		}
		c.errors.Add(1)
		return Result{}, err
	case !found:
		if hasStale {
			c.dropStale(s, h, e, gen)
		}
		return Result{}, nil
	}
	if !c.fill(s, h, gen, key, item, now, t) && hasStale {
		c.dropStale(s, h, e, gen)
	}
	return Result{Value: item.Value, Outcome: Next, Origin: item.Origin}, nil
}

// countEnded counts an entry removed or replaced after its freshness ended,
// by Item.Expires (expires) or else the TTL cap or ExpireAll.
func (s *shard) countEnded(expires bool) {
	if expires {
		s.expirations++
	} else {
		s.refreshes++
	}
}

// promote moves a hit entry to the front of the LRU list unless it is
// already in the front quarter, which a hit on a hot key usually finds: it
// saves the list update, which touches three other entries' memory. An
// entry is evicted from the back, so this keeps the LRU order of every
// entry that could be evicted before the front quarter is.
func (s *shard) promote(h uint64, e entry) {
	if s.tick-e.promoted() <= uint64(s.lru.Len()/4) {
		return
	}
	s.lru.Get(h)
	s.tick++
	e.setPromoted(s.tick)
}

// fill inserts a copy of key's item, fetched after the shard's generation
// was gen at time now (t on c's clock), unless the entry is too large,
// already expired, or the shard was invalidated since. It reports whether
// the item was kept, or would have been but for the generation.
func (c *Cache) fill(s *shard, h uint64, gen uint64, key []byte, item Item, now time.Time, t int64) bool {
	if entrySize(len(key), len(item.Value)) > c.maxItem {
		c.tooLarge.Add(1)
		return false
	}
	ttl := c.ttl.Load()
	deadline, expires := t+ttl, false
	if !item.Expires.IsZero() {
		left := item.Expires.Sub(now)
		if left <= 0 {
			return false // expired already: the caller gets it, L1 does not keep it
		}
		if int64(left) < ttl {
			deadline, expires = t+int64(left), true
		}
	}
	e := newEntry(key, item.Value)
	e.deadline, e.expires = deadline, expires

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen {
		s.fillsDropped++
		return true
	}
	e.era = s.era // unchanged since gen was read: ExpireAll moves gen too
	if old, ok := s.lru.Peek(h); ok {
		// A stale entry of the key, one a concurrent reader filled first,
		// or a key with the same hash: replace it.
		s.bytes -= old.size()
		if bytes.Equal(old.key(), key) {
			if end, oldExpires, _ := c.freshUntil(s, old, t); end <= t {
				s.countEnded(oldExpires)
			}
		}
	}
	s.tick++
	e.setPromoted(s.tick)
	s.lru.Add(h, e)
	s.bytes += e.size()
	s.fills++
	for s.bytes > c.budget {
		_, old, ok := s.lru.RemoveOldest()
		if !ok {
			break
		}
		s.bytes -= old.size()
		if old.expires && old.deadline <= t {
			s.expirations++
		} else {
			s.evictions++
		}
	}
	return true
}

// Invalidate removes key from L1, stale copy included, and makes any fetch
// of a key of its shard that is in flight drop its result. The proxy calls
// it after every write to L2, before replying.
func (c *Cache) Invalidate(key []byte) {
	h, s := c.shardOf(key)
	s.mu.Lock()
	s.gen++
	if e, ok := s.lookup(h, key); ok {
		s.remove(h, e)
		s.invalidations++
	}
	s.mu.Unlock()
}

// Expire makes key's entry stop being fresh now but keeps it for
// StaleFor, served only if the next tier fails (never within
// StaleWhileRevalidate), and makes any fetch of a key of its shard in
// flight drop its result. The remote L2 calls for it when key was written
// elsewhere. A client's own write uses Invalidate instead: nobody may read
// a value older than their own write; a write made elsewhere may be
// answered with the value before it while the L2 is down, as any stale
// answer may be.
func (c *Cache) Expire(key []byte) {
	h, s := c.shardOf(key)
	t := c.clock(c.now())
	s.mu.Lock()
	s.gen++
	if e, ok := s.lookup(h, key); ok {
		if c.staleFor.Load() <= 0 {
			s.remove(h, e)
		} else {
			e.deadline, e.expires, e.changed = min(e.deadline, t), false, true
			s.lru.Add(h, e) // same size: the byte count holds
		}
		s.invalidations++
	}
	s.mu.Unlock()
}

// Flush removes every entry, stale ones included, and makes every fetch in
// flight drop its result. The proxy calls it after FLUSHDB/FLUSHALL.
func (c *Cache) Flush() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.gen++
		s.flushed += uint64(s.lru.Len())
		// A new LRU rather than Purge: Go maps do not shrink.
		s.lru = newLRU()
		s.bytes = 0
		s.mu.Unlock()
	}
}

// Stats returns a snapshot of c's counters. Shards are read one at a time,
// so the totals are not from a single instant.
func (c *Cache) Stats() Stats {
	st := Stats{
		TooLarge:      c.tooLarge.Load(),
		NextErrors:    c.errors.Load(),
		RefreshErrors: c.refreshErrors.Load(),
		ExpiredAll:    c.expiredAll.Load(),
		MaxBytes:      c.budget * int64(len(c.shards)),
		Shards:        len(c.shards),
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		st.Hits += s.hits
		st.Misses += s.misses
		st.Fills += s.fills
		st.FillsDropped += s.fillsDropped
		st.Evictions += s.evictions
		st.Expirations += s.expirations
		st.Refreshes += s.refreshes
		st.Invalidations += s.invalidations
		st.Flushed += s.flushed
		st.StaleServed += s.staleServed
		st.StaleDropped += s.staleDropped
		st.Revalidations += s.revalidations
		st.RefreshesStarted += s.refreshesStarted
		st.RefreshesSkipped += s.refreshesSkipped
		st.Entries += int64(s.lru.Len())
		st.Bytes += s.bytes
		s.mu.Unlock()
	}
	return st
}
