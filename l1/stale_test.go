package l1

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	errDown      = errors.New("l2 down")
	errWrongType = errors.New("WRONGTYPE")
)

// notWrongType is a Config.Failed that, like sidecache's, does not count a
// Redis reply error as a failure.
func notWrongType(err error) bool { return !errors.Is(err, errWrongType) }

// staleStep is one event of a stale-serving timeline.
type staleStep struct {
	// op: set (L2 only), unset (L2 only), write (L2 then Invalidate), del
	// (L2 then Invalidate), advance, flush, expireall, fail (L2 Gets
	// return err; nil answers again), get, settle (wait for background
	// refreshes), expire (Expire key: written elsewhere).
	op  string
	key string
	val string
	ttl time.Duration // set/write: key expiry from now, 0 for none
	d   time.Duration // advance
	err error         // fail

	// get expectations
	want     string
	outcome  Outcome
	wantErr  error // the error Lookup returns (errors.Is)
	cause    error // Result.Cause (errors.Is), for Stale
	fetched  bool  // the lookup asked the next tier itself
	hasStale bool  // the hasStale the next tier saw, if fetched
}

func TestStaleTimeline(t *testing.T) {
	const ttl = 10 * time.Second
	base := Config{TTL: ttl, StaleFor: time.Minute, Failed: notWrongType}
	tests := []struct {
		name  string
		cfg   Config
		steps []staleStep
		want  Stats // compared by compareStats
	}{
		{
			name: "fresh, then stale served on failure, then gone",
			cfg:  base,
			steps: []staleStep{
				{op: "set", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true},
				{op: "fail", err: errDown},
				{op: "advance", d: ttl - time.Nanosecond},
				{op: "get", key: "k", want: "v1", outcome: Hit},
				{op: "advance", d: time.Nanosecond},
				{op: "get", key: "k", want: "v1", outcome: Stale, cause: errDown, fetched: true, hasStale: true},
				{op: "advance", d: time.Minute - time.Nanosecond},
				{op: "get", key: "k", want: "v1", outcome: Stale, cause: errDown, fetched: true, hasStale: true},
				{op: "advance", d: time.Nanosecond},
				{op: "get", key: "k", wantErr: errDown, fetched: true},
				{op: "get", key: "k", wantErr: errDown, fetched: true},
			},
			want: Stats{Hits: 1, Misses: 5, Fills: 1, Refreshes: 1, StaleServed: 2, NextErrors: 2},
		},
		{
			name: "Expire: not fresh, stale on failure, never revalidated",
			cfg:  Config{TTL: ttl, StaleFor: time.Minute, StaleWhileRevalidate: time.Minute, Failed: notWrongType},
			steps: []staleStep{
				{op: "set", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true},
				{op: "set", key: "k", val: "v2"},
				{op: "expire", key: "k"},
				{op: "get", key: "k", want: "v2", outcome: Next, fetched: true, hasStale: true},
				{op: "set", key: "k", val: "v3"},
				{op: "expire", key: "k"},
				{op: "fail", err: errDown},
				{op: "get", key: "k", want: "v2", outcome: Stale, cause: errDown, fetched: true, hasStale: true},
				{op: "expire", key: "nothing"},
			},
			want: Stats{Misses: 3, Fills: 2, Refreshes: 1, StaleServed: 1, Invalidations: 2, Entries: 1},
		},
		{
			name: "Expire without a stale window removes the entry",
			cfg:  Config{TTL: ttl, Failed: notWrongType},
			steps: []staleStep{
				{op: "set", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true},
				{op: "expire", key: "k"},
				{op: "fail", err: errDown},
				{op: "get", key: "k", wantErr: errDown, fetched: true},
			},
			want: Stats{Misses: 2, Fills: 1, Invalidations: 1, NextErrors: 1},
		},
		{
			name: "stale replaced when the next tier answers",
			cfg:  base,
			steps: []staleStep{
				{op: "set", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true},
				{op: "set", key: "k", val: "v2"},
				{op: "advance", d: ttl},
				{op: "get", key: "k", want: "v2", outcome: Next, fetched: true, hasStale: true},
				{op: "get", key: "k", want: "v2", outcome: Hit},
				{op: "fail", err: errDown},
				{op: "advance", d: ttl + time.Second},
				{op: "get", key: "k", want: "v2", outcome: Stale, cause: errDown, fetched: true, hasStale: true},
			},
			want: Stats{Hits: 1, Misses: 3, Fills: 2, Refreshes: 1, StaleServed: 1, Entries: 1},
		},
		{
			name: "stale past the Redis expiry, then the miss drops it",
			cfg:  base,
			steps: []staleStep{
				{op: "set", key: "k", val: "v1", ttl: 2 * time.Second},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true},
				{op: "advance", d: 2 * time.Second},
				{op: "fail", err: errDown},
				{op: "get", key: "k", want: "v1", outcome: Stale, cause: errDown, fetched: true, hasStale: true},
				{op: "fail"},
				{op: "get", key: "k", outcome: Miss, fetched: true, hasStale: true},
				{op: "fail", err: errDown},
				{op: "get", key: "k", wantErr: errDown, fetched: true},
			},
			want: Stats{Misses: 4, Fills: 1, StaleServed: 1, StaleDropped: 1, NextErrors: 1},
		},
		{
			name: "an error Failed rejects is returned, the stale copy stays",
			cfg:  base,
			steps: []staleStep{
				{op: "set", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true},
				{op: "advance", d: ttl},
				{op: "fail", err: fmt.Errorf("reply: %w", errWrongType)},
				{op: "get", key: "k", wantErr: errWrongType, fetched: true, hasStale: true},
				{op: "fail", err: errDown},
				{op: "get", key: "k", want: "v1", outcome: Stale, cause: errDown, fetched: true, hasStale: true},
			},
			want: Stats{Misses: 3, Fills: 1, StaleServed: 1, NextErrors: 1, Entries: 1},
		},
		{
			name: "StaleFor zero: no stale copies",
			cfg:  Config{TTL: ttl},
			steps: []staleStep{
				{op: "set", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true},
				{op: "advance", d: ttl},
				{op: "fail", err: errDown},
				{op: "get", key: "k", wantErr: errDown, fetched: true},
			},
			want: Stats{Misses: 2, Fills: 1, Refreshes: 1, NextErrors: 1},
		},
		{
			name: "a client's write removes the stale copy",
			cfg:  base,
			steps: []staleStep{
				{op: "set", key: "k", val: "v1"},
				{op: "set", key: "j", val: "j1"},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true},
				{op: "get", key: "j", want: "j1", outcome: Next, fetched: true},
				{op: "advance", d: ttl},
				{op: "write", key: "k", val: "v2"},
				{op: "fail", err: errDown},
				{op: "get", key: "k", wantErr: errDown, fetched: true},
				{op: "get", key: "j", want: "j1", outcome: Stale, cause: errDown, fetched: true, hasStale: true},
				{op: "flush"},
				{op: "get", key: "j", wantErr: errDown, fetched: true},
			},
			want: Stats{Misses: 5, Fills: 2, Invalidations: 1, Flushed: 1, StaleServed: 1, NextErrors: 2},
		},
		{
			name: "ExpireAll: stale served on failure, then refilled",
			cfg:  base,
			steps: []staleStep{
				{op: "set", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true},
				{op: "get", key: "k", want: "v1", outcome: Hit},
				{op: "set", key: "k", val: "v2"},
				{op: "expireall"},
				{op: "fail", err: errDown},
				{op: "get", key: "k", want: "v1", outcome: Stale, cause: errDown, fetched: true, hasStale: true},
				{op: "fail"},
				{op: "get", key: "k", want: "v2", outcome: Next, fetched: true, hasStale: true},
				{op: "get", key: "k", want: "v2", outcome: Hit},
			},
			want: Stats{Hits: 2, Misses: 3, Fills: 2, Refreshes: 1, StaleServed: 1, ExpiredAll: 1, Entries: 1},
		},
		{
			name: "ExpireAll: the stale window starts at the call",
			cfg:  base,
			steps: []staleStep{
				{op: "set", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true},
				{op: "advance", d: 5 * time.Second},
				{op: "expireall"},
				{op: "fail", err: errDown},
				{op: "advance", d: time.Minute - time.Nanosecond},
				{op: "get", key: "k", want: "v1", outcome: Stale, cause: errDown, fetched: true, hasStale: true},
				{op: "advance", d: time.Nanosecond},
				{op: "get", key: "k", wantErr: errDown, fetched: true},
			},
			want: Stats{Misses: 3, Fills: 1, Refreshes: 1, StaleServed: 1, NextErrors: 1, ExpiredAll: 1},
		},
		{
			name: "ExpireAll: an entry already stale keeps its window",
			cfg:  base,
			steps: []staleStep{
				{op: "set", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true},
				{op: "advance", d: ttl + 30*time.Second},
				{op: "expireall"},
				{op: "fail", err: errDown},
				{op: "advance", d: 30*time.Second - time.Nanosecond},
				{op: "get", key: "k", want: "v1", outcome: Stale, cause: errDown, fetched: true, hasStale: true},
				{op: "advance", d: time.Nanosecond},
				{op: "get", key: "k", wantErr: errDown, fetched: true},
			},
			want: Stats{Misses: 3, Fills: 1, Refreshes: 1, StaleServed: 1, NextErrors: 1, ExpiredAll: 1},
		},
		{
			name: "ExpireAll twice: the window counts from the first",
			cfg:  Config{TTL: time.Hour, StaleFor: time.Minute},
			steps: []staleStep{
				{op: "set", key: "old", val: "o"},
				{op: "set", key: "new", val: "n"},
				{op: "get", key: "old", want: "o", outcome: Next, fetched: true},
				{op: "expireall"},
				{op: "advance", d: 50 * time.Second},
				{op: "get", key: "new", want: "n", outcome: Next, fetched: true},
				{op: "expireall"},
				{op: "fail", err: errDown},
				{op: "advance", d: 10*time.Second - time.Nanosecond},
				{op: "get", key: "old", want: "o", outcome: Stale, cause: errDown, fetched: true, hasStale: true},
				{op: "advance", d: time.Nanosecond},
				{op: "get", key: "old", wantErr: errDown, fetched: true},
				{op: "get", key: "new", want: "n", outcome: Stale, cause: errDown, fetched: true, hasStale: true},
				// More calls trim the log of old ExpireAlls; "new" still
				// dates from the second.
				{op: "advance", d: 30 * time.Second},
				{op: "expireall"},
				{op: "advance", d: 2 * time.Minute},
				{op: "expireall"},
				{op: "get", key: "new", wantErr: errDown, fetched: true},
			},
			want: Stats{Misses: 6, Fills: 2, Refreshes: 2, StaleServed: 2, NextErrors: 2, ExpiredAll: 4},
		},
		{
			name: "ExpireAll without StaleFor drops every entry on access",
			cfg:  Config{TTL: ttl},
			steps: []staleStep{
				{op: "set", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true},
				{op: "expireall"},
				{op: "fail", err: errDown},
				{op: "get", key: "k", wantErr: errDown, fetched: true},
			},
			want: Stats{Misses: 2, Fills: 1, Refreshes: 1, NextErrors: 1, ExpiredAll: 1},
		},
		{
			name: "ExpireAll drops a fill that began before it",
			cfg:  base,
			steps: []staleStep{
				{op: "set", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true},
				{op: "expireall"},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true, hasStale: true},
				{op: "get", key: "k", want: "v1", outcome: Hit},
			},
			want: Stats{Hits: 1, Misses: 2, Fills: 2, Refreshes: 1, ExpiredAll: 1, Entries: 1},
		},
		{
			name: "stale-while-revalidate: served at once, refreshed in the background",
			cfg:  Config{TTL: ttl, StaleFor: time.Minute, StaleWhileRevalidate: 5 * time.Second},
			steps: []staleStep{
				{op: "set", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true},
				{op: "set", key: "k", val: "v2"},
				{op: "advance", d: ttl},
				{op: "get", key: "k", want: "v1", outcome: Revalidating},
				{op: "settle"},
				{op: "get", key: "k", want: "v2", outcome: Hit},
				// Past the SWR window, within StaleFor: asked synchronously.
				{op: "set", key: "k", val: "v3"},
				{op: "advance", d: ttl + 5*time.Second},
				{op: "get", key: "k", want: "v3", outcome: Next, fetched: true, hasStale: true},
				// A failing refresh keeps the stale copy.
				{op: "advance", d: ttl + 4*time.Second},
				{op: "fail", err: errDown},
				{op: "get", key: "k", want: "v3", outcome: Revalidating},
				{op: "settle"},
				{op: "get", key: "k", want: "v3", outcome: Revalidating},
				{op: "settle"},
				// A refresh that finds the key gone drops the stale copy.
				{op: "fail"},
				{op: "del", key: "k"},
				{op: "set", key: "j", val: "j1"},
				{op: "get", key: "j", want: "j1", outcome: Next, fetched: true},
				{op: "advance", d: ttl},
				{op: "unset", key: "j"},
				{op: "get", key: "j", want: "j1", outcome: Revalidating},
				{op: "settle"},
				{op: "get", key: "j", outcome: Miss, fetched: true},
			},
			want: Stats{
				Hits: 1, Misses: 4, Fills: 4, Refreshes: 2, Invalidations: 1, StaleDropped: 1,
				Revalidations: 4, RefreshesStarted: 4, RefreshErrors: 2,
			},
		},
		{
			name: "stale-while-revalidate not for entries ExpireAll made stale",
			cfg:  Config{TTL: ttl, StaleFor: time.Minute, StaleWhileRevalidate: 5 * time.Second},
			steps: []staleStep{
				{op: "set", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", outcome: Next, fetched: true},
				{op: "unset", key: "k"}, // an upstream flush, say
				{op: "expireall"},
				{op: "get", key: "k", outcome: Miss, fetched: true, hasStale: true},
			},
			want: Stats{Misses: 2, Fills: 1, StaleDropped: 1, ExpiredAll: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			l2 := newFakeL2(clk.Now)
			cfg := tt.cfg
			cfg.Now = clk.Now
			c, err := New(l2, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for i, s := range tt.steps {
				switch s.op {
				case "set":
					l2.set(s.key, s.val, s.ttl)
				case "unset":
					l2.del(s.key)
				case "write":
					l2.set(s.key, s.val, s.ttl)
					c.Invalidate([]byte(s.key))
				case "del":
					l2.del(s.key)
					c.Invalidate([]byte(s.key))
				case "advance":
					clk.Advance(s.d)
				case "flush":
					c.Flush()
				case "expireall":
					c.ExpireAll()
				case "expire":
					c.Expire([]byte(s.key))
				case "fail":
					l2.fail(s.err)
				case "settle":
					c.refreshWG.Wait() // sequential: every Add happened before
				case "get":
					before, refreshes := l2.callsFor(s.key), c.Stats().RefreshesStarted
					r, err := c.Lookup(context.Background(), []byte(s.key))
					if r.Outcome == Revalidating {
						// The refresh it started calls the next tier in the
						// background: wait for it, and do not count it.
						c.refreshWG.Wait()
					}
					fetched := l2.callsFor(s.key)-before > int(c.Stats().RefreshesStarted-refreshes)
					switch {
					case s.wantErr != nil && !errors.Is(err, s.wantErr):
						t.Fatalf("step %d: Lookup(%q) error %v, want %v", i, s.key, err, s.wantErr)
					case s.wantErr == nil && err != nil:
						t.Fatalf("step %d: Lookup(%q) error %v", i, s.key, err)
					case err == nil && (r.Outcome != s.outcome || string(r.Value) != s.want):
						t.Fatalf("step %d: Lookup(%q) = %q, %v; want %q, %v", i, s.key, r.Value, r.Outcome, s.want, s.outcome)
					case (s.cause == nil) != (r.Cause == nil) || !errors.Is(r.Cause, s.cause):
						t.Fatalf("step %d: Lookup(%q) Cause %v, want %v", i, s.key, r.Cause, s.cause)
					case fetched != s.fetched:
						t.Fatalf("step %d: Lookup(%q) fetched from next tier = %v, want %v", i, s.key, fetched, s.fetched)
					case fetched && l2.lastHasStale() != s.hasStale:
						t.Fatalf("step %d: Lookup(%q) told the next tier hasStale = %v, want %v", i, s.key, l2.lastHasStale(), s.hasStale)
					}
				default:
					t.Fatalf("step %d: unknown op %q", i, s.op)
				}
			}
			c.Close()
			compareStats(t, c.Stats(), tt.want)
			checkAccounting(t, c)
		})
	}
}

// blockingNext is a next tier whose Gets block until released. Each Get
// reports on started, then waits for release, then answers with answer.
type blockingNext struct {
	started chan string
	release chan struct{}
	answer  func(key []byte) (Item, bool, error)

	calls, running, maxRunning atomic.Int64
}

func newBlockingNext(answer func(key []byte) (Item, bool, error)) *blockingNext {
	return &blockingNext{started: make(chan string, 100), release: make(chan struct{}), answer: answer}
}

func (b *blockingNext) Get(_ context.Context, key []byte, _ bool) (Item, bool, error) {
	b.calls.Add(1)
	n := b.running.Add(1)
	for {
		m := b.maxRunning.Load()
		if n <= m || b.maxRunning.CompareAndSwap(m, n) {
			break
		}
	}
	b.started <- string(key)
	<-b.release
	b.running.Add(-1)
	return b.answer(key)
}

// TestDuringFailingFetch stops a lookup of a stale key inside the next
// tier, runs an action, then lets the next tier fail (or miss): whether the
// stale copy answers, and whether it stays, depends on the action.
func TestDuringFailingFetch(t *testing.T) {
	tests := []struct {
		name      string
		between   func(c *Cache)
		miss      bool // the next tier says miss instead of failing
		wantStale bool // the blocked lookup gets the stale copy
		wantKept  bool // the stale entry is still there after
	}{
		{name: "nothing", between: func(*Cache) {}, wantStale: true, wantKept: true},
		{name: "invalidate the key", between: func(c *Cache) { c.Invalidate([]byte("k")) }},
		{name: "invalidate another key of the shard", between: func(c *Cache) { c.Invalidate([]byte("other")) }, wantStale: true, wantKept: true},
		{name: "flush", between: func(c *Cache) { c.Flush() }},
		{name: "expire all", between: func(c *Cache) { c.ExpireAll() }, wantStale: true, wantKept: true},
		{name: "miss drops the stale entry", between: func(*Cache) {}, miss: true},
		{name: "miss after an invalidation of another key keeps it", between: func(c *Cache) { c.Invalidate([]byte("other")) }, miss: true, wantKept: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			var blocking atomic.Bool
			next := newBlockingNext(func([]byte) (Item, bool, error) {
				if tt.miss {
					return Item{}, false, nil
				}
				return Item{}, false, errDown
			})
			c, err := New(GetterFunc(func(ctx context.Context, key []byte, hasStale bool) (Item, bool, error) {
				if blocking.Load() {
					return next.Get(ctx, key, hasStale)
				}
				return Item{Value: []byte("v1")}, true, nil
			}), Config{Shards: 1, TTL: time.Second, StaleFor: time.Minute, Now: clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if r, err := c.Lookup(context.Background(), []byte("k")); err != nil || r.Outcome != Next {
				t.Fatalf("fill: %+v, %v", r, err)
			}
			clk.Advance(time.Second)
			blocking.Store(true)
			type result struct {
				r   Result
				err error
			}
			done := make(chan result)
			go func() {
				r, err := c.Lookup(context.Background(), []byte("k"))
				done <- result{r, err}
			}()
			<-next.started
			tt.between(c)
			close(next.release)
			got := <-done
			switch {
			case tt.miss && (got.err != nil || got.r.Outcome != Miss):
				t.Errorf("blocked Lookup = %+v, %v; want a miss", got.r, got.err)
			case !tt.miss && tt.wantStale && (got.err != nil || got.r.Outcome != Stale || string(got.r.Value) != "v1" || !errors.Is(got.r.Cause, errDown)):
				t.Errorf("blocked Lookup = %+v, %v; want stale v1 for errDown", got.r, got.err)
			case !tt.miss && !tt.wantStale && !errors.Is(got.err, errDown):
				t.Errorf("blocked Lookup = %+v, %v; want errDown", got.r, got.err)
			}
			h, s := c.shardOf([]byte("k"))
			s.mu.Lock()
			_, kept := s.lookup(h, []byte("k"))
			s.mu.Unlock()
			if kept != tt.wantKept {
				t.Errorf("stale entry kept = %v, want %v", kept, tt.wantKept)
			}
			checkAccounting(t, c)
		})
	}
}

// swrCache returns a cache over next whose keys filled now are within
// the stale-while-revalidate window after advance is called.
func swrCache(t *testing.T, next Getter, clk *fakeClock, maxRefreshes int) *Cache {
	t.Helper()
	c, err := New(next, Config{
		TTL: time.Second, StaleFor: time.Minute, StaleWhileRevalidate: 10 * time.Second,
		MaxRefreshes: maxRefreshes, Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRevalidateOncePerKey: many concurrent lookups of a key within the
// SWR window all get the stale value at once, and one refresh runs.
func TestRevalidateOncePerKey(t *testing.T) {
	const lookups = 32
	clk := newFakeClock()
	var version atomic.Int64
	var fillMode atomic.Bool
	fillMode.Store(true)
	next := newBlockingNext(func([]byte) (Item, bool, error) {
		return Item{Value: strconv.AppendInt(nil, version.Load(), 10)}, true, nil
	})
	c := swrCache(t, GetterFunc(func(ctx context.Context, key []byte, hasStale bool) (Item, bool, error) {
		if fillMode.Load() {
			return Item{Value: []byte("0")}, true, nil
		}
		if !hasStale {
			t.Error("a refresh told the next tier there is no stale copy")
		}
		return next.Get(ctx, key, hasStale)
	}), clk, 4)
	defer c.Close()
	if _, err := c.Lookup(context.Background(), []byte("k")); err != nil {
		t.Fatal(err)
	}
	fillMode.Store(false)
	version.Store(1)
	clk.Advance(time.Second)

	var wg sync.WaitGroup
	errc := make(chan error, lookups)
	for range lookups {
		wg.Go(func() {
			r, err := c.Lookup(context.Background(), []byte("k"))
			if err != nil || r.Outcome != Revalidating || string(r.Value) != "0" {
				errc <- fmt.Errorf("Lookup = %q, %v, %v; want the stale 0, Revalidating", r.Value, r.Outcome, err)
			}
		})
	}
	// Every lookup returns while the one refresh is blocked.
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	<-next.started
	if n := next.calls.Load(); n != 1 {
		t.Errorf("next tier called %d times by %d lookups, want 1", n, lookups)
	}
	close(next.release)
	c.refreshWG.Wait()
	r, err := c.Lookup(context.Background(), []byte("k"))
	if err != nil || r.Outcome != Hit || string(r.Value) != "1" {
		t.Errorf("after the refresh: %q, %v, %v; want 1, Hit", r.Value, r.Outcome, err)
	}
	st := c.Stats()
	if st.Revalidations != lookups || st.RefreshesStarted != 1 || st.RefreshesSkipped != 0 || st.Fills != 2 {
		t.Errorf("Stats %+v; want %d Revalidations, 1 refresh, 2 fills", st, lookups)
	}
	checkAccounting(t, c)
}

// TestRefreshCap: at most MaxRefreshes run at once; lookups beyond it get
// the stale value without one.
func TestRefreshCap(t *testing.T) {
	const keys, maxRefreshes = 6, 2
	clk := newFakeClock()
	var fillMode atomic.Bool
	fillMode.Store(true)
	next := newBlockingNext(func([]byte) (Item, bool, error) {
		return Item{Value: []byte("new")}, true, nil
	})
	c := swrCache(t, GetterFunc(func(ctx context.Context, key []byte, hasStale bool) (Item, bool, error) {
		if fillMode.Load() {
			return Item{Value: []byte("old")}, true, nil
		}
		return next.Get(ctx, key, hasStale)
	}), clk, maxRefreshes)
	defer c.Close()
	key := func(i int) []byte { return []byte("key" + strconv.Itoa(i)) }
	for i := range keys {
		if _, err := c.Lookup(context.Background(), key(i)); err != nil {
			t.Fatal(err)
		}
	}
	fillMode.Store(false)
	clk.Advance(time.Second)
	for i := range keys {
		r, err := c.Lookup(context.Background(), key(i))
		if err != nil || r.Outcome != Revalidating || string(r.Value) != "old" {
			t.Fatalf("Lookup(%s) = %q, %v, %v", key(i), r.Value, r.Outcome, err)
		}
	}
	for range maxRefreshes {
		<-next.started
	}
	st := c.Stats()
	if st.RefreshesStarted != maxRefreshes || st.RefreshesSkipped != keys-maxRefreshes {
		t.Errorf("RefreshesStarted %d, RefreshesSkipped %d; want %d, %d", st.RefreshesStarted, st.RefreshesSkipped, maxRefreshes, keys-maxRefreshes)
	}
	close(next.release)
	c.refreshWG.Wait()
	if m := next.maxRunning.Load(); m > maxRefreshes {
		t.Errorf("%d refreshes ran at once, cap %d", m, maxRefreshes)
	}
	// The skipped keys start their refresh on a later lookup.
	for i := range keys {
		if _, err := c.Lookup(context.Background(), key(i)); err != nil {
			t.Fatal(err)
		}
		c.refreshWG.Wait()
	}
	for i := range keys {
		if r, _ := c.Lookup(context.Background(), key(i)); r.Outcome != Hit || string(r.Value) != "new" {
			t.Errorf("Lookup(%s) = %q, %v; want new, Hit", key(i), r.Value, r.Outcome)
		}
	}
	if n := next.calls.Load(); n != keys {
		t.Errorf("next tier called %d times, want %d", n, keys)
	}
}

// TestCloseWaitsForRefreshes: Close returns only after the running
// refresh has, and starts no new ones.
func TestCloseWaitsForRefreshes(t *testing.T) {
	clk := newFakeClock()
	var fillMode atomic.Bool
	fillMode.Store(true)
	var finished atomic.Bool
	next := newBlockingNext(func([]byte) (Item, bool, error) {
		finished.Store(true)
		return Item{Value: []byte("new")}, true, nil
	})
	c := swrCache(t, GetterFunc(func(ctx context.Context, key []byte, hasStale bool) (Item, bool, error) {
		if fillMode.Load() {
			return Item{Value: []byte("old")}, true, nil
		}
		return next.Get(ctx, key, hasStale)
	}), clk, 0)
	for _, k := range []string{"a", "b"} {
		if _, err := c.Lookup(context.Background(), []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	fillMode.Store(false)
	clk.Advance(time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	if r, err := c.Lookup(ctx, []byte("a")); err != nil || r.Outcome != Revalidating {
		t.Fatalf("Lookup(a) = %+v, %v", r, err)
	}
	cancel() // the refresh does not depend on the client's context
	<-next.started

	closing := make(chan struct{})
	closed := make(chan bool)
	go func() {
		close(closing)
		c.Close()
		closed <- finished.Load()
	}()
	<-closing
	for range 100 {
		runtime.Gosched()
	}
	select {
	case <-closed:
		t.Fatal("Close returned while a refresh was running")
	default:
	}
	close(next.release)
	if !<-closed {
		t.Error("Close returned before the refresh finished")
	}
	if r, _ := c.Lookup(context.Background(), []byte("a")); r.Outcome != Hit || string(r.Value) != "new" {
		t.Errorf("Lookup(a) after the refresh = %q, %v; want new, Hit", r.Value, r.Outcome)
	}
	// Closed: b is served stale without a refresh.
	if r, err := c.Lookup(context.Background(), []byte("b")); err != nil || r.Outcome != Revalidating || string(r.Value) != "old" {
		t.Errorf("Lookup(b) after Close = %+v, %v", r, err)
	}
	c.Close()
	if n := next.calls.Load(); n != 1 {
		t.Errorf("next tier called %d times, want 1 (no refresh after Close)", n)
	}
	if st := c.Stats(); st.RefreshesStarted != 1 || st.RefreshesSkipped != 1 {
		t.Errorf("RefreshesStarted %d, RefreshesSkipped %d; want 1, 1", st.RefreshesStarted, st.RefreshesSkipped)
	}
}

// TestRefreshRacesInvalidate: a refresh whose fetch overlaps a client's
// write does not put the older value back.
func TestRefreshRacesInvalidate(t *testing.T) {
	clk := newFakeClock()
	l2 := newFakeL2(clk.Now)
	next := newBlockingNext(func([]byte) (Item, bool, error) { return Item{Value: []byte("v1")}, true, nil })
	var blocking atomic.Bool
	c := swrCache(t, GetterFunc(func(ctx context.Context, key []byte, hasStale bool) (Item, bool, error) {
		if blocking.CompareAndSwap(true, false) {
			return next.Get(ctx, key, hasStale) // read v1 before the write
		}
		return l2.Get(ctx, key, hasStale)
	}), clk, 0)
	defer c.Close()
	l2.set("k", "v1", 0)
	if _, err := c.Lookup(context.Background(), []byte("k")); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	blocking.Store(true)
	if r, _ := c.Lookup(context.Background(), []byte("k")); r.Outcome != Revalidating {
		t.Fatalf("Outcome %v, want Revalidating", r.Outcome)
	}
	<-next.started
	l2.set("k", "v2", 0)
	c.Invalidate([]byte("k"))
	close(next.release)
	c.refreshWG.Wait()
	r, err := c.Lookup(context.Background(), []byte("k"))
	if err != nil || string(r.Value) != "v2" || r.Outcome != Next {
		t.Errorf("Lookup after the write = %q, %v, %v; want v2 from the next tier", r.Value, r.Outcome, err)
	}
	if st := c.Stats(); st.FillsDropped != 1 {
		t.Errorf("FillsDropped = %d, want 1", st.FillsDropped)
	}
}

// TestStaleEntriesAreEvicted: stale entries count against MaxBytes and
// leave like any other.
func TestStaleEntriesAreEvicted(t *testing.T) {
	const keyLen, valLen = 4, 100
	size := entrySize(keyLen, valLen)
	clk := newFakeClock()
	l2 := newFakeL2(clk.Now)
	c, err := New(l2, Config{MaxBytes: 3 * size, Shards: 1, MaxItemBytes: size, TTL: time.Second, StaleFor: time.Hour, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	val := string(make([]byte, valLen))
	key := func(i int) string { return fmt.Sprintf("k%03d", i) }
	for i := range 6 {
		l2.set(key(i), val, 0)
	}
	for i := range 3 {
		if _, err := c.Lookup(context.Background(), []byte(key(i))); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Second) // 0..2 are stale now
	if st := c.Stats(); st.Entries != 3 || st.Bytes != 3*size {
		t.Fatalf("stale entries: Entries %d, Bytes %d; want 3, %d", st.Entries, st.Bytes, 3*size)
	}
	checkAccounting(t, c)
	for i := 3; i < 5; i++ {
		if _, err := c.Lookup(context.Background(), []byte(key(i))); err != nil {
			t.Fatal(err)
		}
	}
	st := c.Stats()
	if st.Evictions != 2 || st.Entries != 3 || st.Bytes != 3*size {
		t.Errorf("Evictions %d, Entries %d, Bytes %d; want 2, 3, %d", st.Evictions, st.Entries, st.Bytes, 3*size)
	}
	checkAccounting(t, c)
	l2.fail(errDown)
	for i, want := range []bool{false, false, true} {
		r, err := c.Lookup(context.Background(), []byte(key(i)))
		if got := err == nil && r.Outcome == Stale; got != want {
			t.Errorf("key %d: stale answer %v (%v, %v), want %v", i, got, r.Outcome, err, want)
		}
	}
}

// TestStaleValueTooLargeNow: when the next tier's new value is not kept
// (too large), the older stale copy is dropped too.
func TestStaleValueTooLargeNow(t *testing.T) {
	clk := newFakeClock()
	l2 := newFakeL2(clk.Now)
	c, err := New(l2, Config{MaxBytes: 1 << 20, Shards: 1, MaxItemBytes: 1000, TTL: time.Second, StaleFor: time.Hour, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	l2.set("k", "small", 0)
	if _, err := c.Lookup(context.Background(), []byte("k")); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	l2.set("k", string(make([]byte, 2000)), 0)
	if r, err := c.Lookup(context.Background(), []byte("k")); err != nil || len(r.Value) != 2000 || r.Outcome != Next {
		t.Fatalf("Lookup = %d bytes, %v, %v", len(r.Value), r.Outcome, err)
	}
	l2.fail(errDown)
	if _, err := c.Lookup(context.Background(), []byte("k")); !errors.Is(err, errDown) {
		t.Errorf("Lookup after a newer, unkept value = %v, want errDown (no older stale copy)", err)
	}
	if st := c.Stats(); st.StaleDropped != 1 || st.TooLarge != 1 || st.Entries != 0 {
		t.Errorf("StaleDropped %d, TooLarge %d, Entries %d; want 1, 1, 0", st.StaleDropped, st.TooLarge, st.Entries)
	}
}

// TestStaleCoherence runs readers, writers, ExpireAll and a failing next
// tier at once, with stale-if-error and stale-while-revalidate on and a
// clock that runs fast, and checks that a lookup that starts after a
// write's Invalidate returned never sees an older value, whether the
// answer is fresh, stale or revalidating. Run it with -race.
func TestStaleCoherence(t *testing.T) {
	const (
		keys     = 32
		writers  = 2
		readers  = 4
		readsPer = 20000
	)
	// Every reading of the clock advances it by a microsecond.
	var ticks atomic.Int64
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return start.Add(time.Duration(ticks.Add(1)) * time.Microsecond) }
	var (
		l2mu      sync.Mutex
		l2        [keys]uint64
		committed [keys]atomic.Uint64
		nextCalls atomic.Int64
	)
	keyName := func(i int) []byte { return []byte("key:" + strconv.Itoa(i)) }
	next := GetterFunc(func(_ context.Context, key []byte, _ bool) (Item, bool, error) {
		i, err := strconv.Atoi(string(key[len("key:"):]))
		if err != nil {
			return Item{}, false, err
		}
		if nextCalls.Add(1)%3 == 0 {
			return Item{}, false, errDown
		}
		l2mu.Lock()
		v := l2[i]
		l2mu.Unlock()
		runtime.Gosched()
		return Item{Value: strconv.AppendUint(nil, v, 10)}, true, nil
	})
	c, err := New(next, Config{
		MaxBytes: 64 * entrySize(6, 8), Shards: 4,
		TTL: 2 * time.Millisecond, StaleFor: 100 * time.Millisecond, StaleWhileRevalidate: 5 * time.Millisecond,
		MaxRefreshes: 4, Now: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	var (
		writersWG, readersWG sync.WaitGroup
		readersDone          atomic.Bool
		outcomes             [Next + 1]atomic.Int64
		failures             atomic.Int64
	)
	errc := make(chan error, readers)
	for w := range writers {
		writersWG.Go(func() {
			for n := 0; !readersDone.Load(); n++ {
				// Half the keys are written; the others only go stale.
				i := (n*writers + w) % (keys / 2)
				l2mu.Lock()
				l2[i]++
				v := l2[i]
				l2mu.Unlock()
				c.Invalidate(keyName(i))
				committed[i].Store(v)
				for range 4 {
					runtime.Gosched()
				}
			}
		})
	}
	for r := range readers {
		readersWG.Go(func() {
			for n := range readsPer {
				if r == 0 && n%2000 == 1999 {
					c.ExpireAll()
				}
				i := (n*7 + r*13) % keys
				floor := committed[i].Load()
				res, err := c.Lookup(context.Background(), keyName(i))
				if errors.Is(err, errDown) {
					failures.Add(1)
					continue
				}
				if err != nil || res.Outcome == Miss {
					errc <- fmt.Errorf("Lookup(%d) = %+v, %v", i, res, err)
					return
				}
				outcomes[res.Outcome].Add(1)
				got, err := strconv.ParseUint(string(res.Value), 10, 64)
				if err != nil {
					errc <- err
					return
				}
				if got < floor {
					errc <- fmt.Errorf("key %d: %v read version %d after version %d was written and invalidated", i, res.Outcome, got, floor)
					return
				}
			}
		})
	}
	readersWG.Wait()
	readersDone.Store(true)
	writersWG.Wait()
	c.Close()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	st := c.Stats()
	t.Logf("hit %d stale %d revalidating %d next %d failed %d; %+v",
		outcomes[Hit].Load(), outcomes[Stale].Load(), outcomes[Revalidating].Load(), outcomes[Next].Load(), failures.Load(), st)
	if outcomes[Hit].Load() == 0 || outcomes[Stale].Load() == 0 || outcomes[Revalidating].Load() == 0 ||
		st.RefreshesStarted == 0 || st.ExpiredAll == 0 || st.FillsDropped == 0 {
		t.Errorf("the run exercised too little: %+v", st)
	}
	checkAccounting(t, c)
}

func TestRevalidatingHitDoesNotAllocate(t *testing.T) {
	clk := newFakeClock()
	refresh := make(chan struct{})
	var fillMode atomic.Bool
	fillMode.Store(true)
	c := swrCache(t, GetterFunc(func(context.Context, []byte, bool) (Item, bool, error) {
		if !fillMode.Load() {
			<-refresh
		}
		return Item{Value: []byte("value")}, true, nil
	}), clk, 0)
	defer c.Close()
	ctx := context.Background()
	key := []byte("some:key:1234")
	if _, err := c.Lookup(ctx, key); err != nil {
		t.Fatal(err)
	}
	fillMode.Store(false)
	clk.Advance(time.Second)
	if r, _ := c.Lookup(ctx, key); r.Outcome != Revalidating {
		t.Fatalf("Outcome %v", r.Outcome)
	}
	// The refresh is blocked: every lookup below is a Revalidating
	// answer that starts nothing.
	allocs := testing.AllocsPerRun(1000, func() {
		if r, _ := c.Lookup(ctx, key); r.Outcome != Revalidating {
			panic(r.Outcome)
		}
	})
	close(refresh)
	if allocs != 0 {
		t.Errorf("a Revalidating answer allocates %v times, want 0", allocs)
	}
	if st := c.Stats(); st.RefreshesStarted != 1 {
		t.Errorf("RefreshesStarted = %d, want 1", st.RefreshesStarted)
	}
}

// TestExpireAllLogBounded: the log of eras stays within maxEras however
// often ExpireAll runs; entries of forgotten eras lose their stale copies
// (never the reverse), the newest keep theirs.
func TestExpireAllLogBounded(t *testing.T) {
	clk := newFakeClock()
	l2 := newFakeL2(clk.Now)
	c, err := New(l2, Config{TTL: time.Hour, StaleFor: time.Hour, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	l2.set("first", "1", 0)
	l2.set("last", "2", 0)
	if _, err := c.Lookup(context.Background(), []byte("first")); err != nil {
		t.Fatal(err)
	}
	for i := range maxEras + 10 {
		if i == maxEras+5 {
			if _, err := c.Lookup(context.Background(), []byte("last")); err != nil {
				t.Fatal(err)
			}
		}
		clk.Advance(time.Millisecond)
		c.ExpireAll()
	}
	if n := len(c.eras.Load().began); n > maxEras {
		t.Errorf("era log holds %d eras, want at most %d", n, maxEras)
	}
	l2.fail(errDown)
	if _, err := c.Lookup(context.Background(), []byte("first")); !errors.Is(err, errDown) {
		t.Errorf("entry of a forgotten era: err %v, want errDown", err)
	}
	if r, err := c.Lookup(context.Background(), []byte("last")); err != nil || r.Outcome != Stale || string(r.Value) != "2" {
		t.Errorf("entry of a recent era: %+v, %v; want stale 2", r, err)
	}
}

// TestSetTimes: a reload's new times apply to later fills and lookups.
func TestSetTimes(t *testing.T) {
	clk := newFakeClock()
	l2 := newFakeL2(clk.Now)
	c, err := New(l2, Config{TTL: 10 * time.Second, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetTimes(time.Second, time.Second, 2*time.Second); err == nil {
		t.Fatal("SetTimes accepted StaleWhileRevalidate > StaleFor")
	}
	if err := c.SetTimes(time.Second, time.Minute, 0); err != nil {
		t.Fatal(err)
	}
	l2.set("k", "v1", 0)
	if r, _ := c.Lookup(context.Background(), []byte("k")); r.Outcome != Next {
		t.Fatalf("first lookup %v", r.Outcome)
	}
	clk.Advance(time.Second) // the new TTL (1s) has passed: no longer fresh
	l2.fail(errDown)
	r, err := c.Lookup(context.Background(), []byte("k"))
	if err != nil || r.Outcome != Stale || string(r.Value) != "v1" {
		t.Fatalf("after the new TTL, with the L2 down: %v %v %q, want the stale copy (StaleFor now 1m)", err, r.Outcome, r.Value)
	}
}
