package l1

import (
	"context"
	"math"
)

// Stale serving: the freshness of entries after ExpireAll, the answers of
// stale copies for a failing next tier, and background refreshes.

// eraLog records when the recent eras began. An era is the time between
// two ExpireAll calls; era 0 begins with the Cache, era n with the n-th
// ExpireAll. An entry filled in era e was fresh until min(its deadline,
// the beginning of era e+1). Eras that began StaleFor or more before the
// latest ExpireAll are trimmed: every entry they ended is past its stale
// window. So are eras beyond the last maxEras, which only shortens the
// stale windows of their entries (they count as past them). An eraLog is
// never modified once published.
type eraLog struct {
	first uint32  // the era that began at began[0]
	began []int64 // on c's clock; never empty
}

// maxEras bounds the eras an eraLog remembers, and so the copy each
// ExpireAll makes (8 KiB).
const maxEras = 1024

// gone is a freshness end so long ago that no stale window reaches now.
const gone = math.MinInt64 / 4

// beganAt returns when era began, or gone if it was trimmed.
func (l *eraLog) beganAt(era uint32) int64 {
	if era < l.first {
		return gone
	}
	return l.began[era-l.first]
}

// freshUntil returns when e stops or stopped being fresh at time t (on c's
// clock): its deadline, or, if an ExpireAll ran since e was filled
// (expiredAll), the earlier of its deadline and that ExpireAll, but not
// after t. expiredAll is also true for an entry Expire marked changed. expires reports that the end is Item.Expires. s is locked.
func (c *Cache) freshUntil(s *shard, e entry, t int64) (end int64, expires, expiredAll bool) {
	if e.era == s.era {
		return e.deadline, e.expires, e.changed
	}
	end, expires = c.eras.Load().beganAt(e.era+1), false
	if e.deadline <= end {
		end, expires = e.deadline, e.expires
	}
	return min(end, t), expires, true
}

// ExpireAll makes every entry stop being fresh now. The entries stay for
// StaleFor, served only if the next tier fails (never within
// StaleWhileRevalidate: their values may be out of date or deleted), and
// fetches in flight drop their results. The remote L2 calls for it when
// it lost track of changes (its tracking connection broke, or the upstream
// was flushed). Its cost grows with the number of shards, not entries:
// each shard's era moves on, and a lookup compares the era an entry was
// filled in.
func (c *Cache) ExpireAll() {
	c.eraMu.Lock()
	defer c.eraMu.Unlock()
	t := c.clock(c.now())
	next := &eraLog{first: 1}
	if old := c.eras.Load(); old != nil {
		next.first = old.first
		began := old.began
		for len(began) > 0 && (began[0]+c.staleFor.Load() <= t || len(began) >= maxEras) {
			began = began[1:]
			next.first++
		}
		next.began = append(make([]int64, 0, len(began)+1), began...)
	}
	next.began = append(next.began, t)
	era := next.first + uint32(len(next.began)) - 1
	c.eras.Store(next)
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.era = era
		s.gen++
		s.mu.Unlock()
	}
	c.expiredAll.Add(1)
}

// serveStale returns key's entry for a next tier that failed, if the
// shard still holds one within its stale window. An Invalidate or Flush
// since the failed fetch began has removed the entry the fetch saw; an
// entry filled since is newer than it.
func (c *Cache) serveStale(s *shard, h uint64, key []byte) ([]byte, bool) {
	t := c.clock(c.now())
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.lookup(h, key)
	if !ok {
		return nil, false
	}
	if end, _, _ := c.freshUntil(s, e, t); t >= end+c.staleFor.Load() {
		return nil, false
	}
	s.staleServed++
	return e.value(), true
}

// dropStale removes the stale entry e, stored under h, after the next tier
// had no value for it that L1 keeps, unless the shard's generation moved
// from gen (the fetch raced a write) or e was replaced.
func (c *Cache) dropStale(s *shard, h uint64, e entry, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen {
		return
	}
	if cur, ok := s.lru.Peek(h); ok && cur.same(e) {
		s.remove(h, cur)
		s.staleDropped++
	}
}

// claimRefresh reports whether a background refresh of the key hashed h
// may start, and if so records it as running: none runs for the key, fewer
// than MaxRefreshes run, and c is not closed. s is locked.
func (c *Cache) claimRefresh(s *shard, h uint64) bool {
	if _, ok := s.refreshing[h]; ok {
		return false
	}
	c.refreshMu.Lock()
	ok := !c.closed && c.running < c.maxRefreshes
	if ok {
		c.running++
		c.refreshWG.Add(1)
	}
	c.refreshMu.Unlock()
	if !ok {
		s.refreshesSkipped++
		return false
	}
	if s.refreshing == nil {
		s.refreshing = make(map[uint64]struct{})
	}
	s.refreshing[h] = struct{}{}
	s.refreshesStarted++
	return true
}

// refresh asks the next tier for key, whose stale entry e (stored under h
// in s) was served while the shard's generation was gen, and fills the
// answer as a miss would. ctx carries the client's values but not its
// cancellation.
func (c *Cache) refresh(ctx context.Context, s *shard, h uint64, key []byte, e entry, gen uint64) {
	defer c.endRefresh(s, h)
	now := c.now()
	t := c.clock(now)
	item, found, err := c.next.Get(ctx, key, true)
	switch {
	case err != nil:
		c.refreshErrors.Add(1) // the stale entry stays
	case !found:
		c.dropStale(s, h, e, gen)
	case !c.fill(s, h, gen, key, item, now, t):
		c.dropStale(s, h, e, gen)
	}
}

// endRefresh records the end of the refresh that claimRefresh started.
func (c *Cache) endRefresh(s *shard, h uint64) {
	s.mu.Lock()
	delete(s.refreshing, h)
	s.mu.Unlock()
	c.refreshMu.Lock()
	c.running--
	c.refreshMu.Unlock()
	c.refreshWG.Done()
}

// Close stops new background refreshes and waits for the running ones,
// which the next tier's own timeouts bound. Lookups still work afterwards:
// within StaleWhileRevalidate they return the stale copy without a
// refresh. Close is safe to call more than once.
func (c *Cache) Close() {
	c.refreshMu.Lock()
	c.closed = true
	c.refreshMu.Unlock()
	c.refreshWG.Wait()
}
