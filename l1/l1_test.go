package l1

import (
	"bytes"
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

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

// fakeL2 is a next tier over a map, with Redis's expiry (a key is gone
// from its expiry instant on), a count of Gets per key, the hasStale flag
// of the last Get, and an error to fail with.
type fakeL2 struct {
	now      func() time.Time
	mu       sync.Mutex
	m        map[string]Item
	calls    map[string]int
	hasStale bool  // of the last Get
	err      error // returned by Get if set
}

func newFakeL2(now func() time.Time) *fakeL2 {
	return &fakeL2{now: now, m: map[string]Item{}, calls: map[string]int{}}
}

func (l *fakeL2) Get(_ context.Context, key []byte, hasStale bool) (Item, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls[string(key)]++
	l.hasStale = hasStale
	if l.err != nil {
		return Item{}, false, l.err
	}
	it, ok := l.m[string(key)]
	if !ok || (!it.Expires.IsZero() && !l.now().Before(it.Expires)) {
		return Item{}, false, nil
	}
	// Hand over a private copy, as the Getter contract requires.
	return Item{Value: bytes.Clone(it.Value), Expires: it.Expires}, true, nil
}

func (l *fakeL2) set(key, value string, ttl time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	it := Item{Value: []byte(value)}
	if ttl > 0 {
		it.Expires = l.now().Add(ttl)
	}
	l.m[key] = it
}

func (l *fakeL2) del(key string) {
	l.mu.Lock()
	delete(l.m, key)
	l.mu.Unlock()
}

// fail makes every Get return err (nil: answer again).
func (l *fakeL2) fail(err error) {
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
}

func (l *fakeL2) lastHasStale() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hasStale
}

func (l *fakeL2) callsFor(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls[key]
}

func TestNewConfig(t *testing.T) {
	next := GetterFunc(func(context.Context, []byte, bool) (Item, bool, error) { return Item{}, false, nil })
	tests := []struct {
		name        string
		next        Getter
		cfg         Config
		wantErr     bool
		wantShards  int
		wantMaxItem int64
		wantMax     int64
	}{
		{name: "defaults", next: next, wantShards: 64, wantMaxItem: 256 << 10, wantMax: 64 << 20},
		{name: "small MaxBytes fewer shards", next: next, cfg: Config{MaxBytes: 1 << 20}, wantShards: 16, wantMaxItem: 16 << 10, wantMax: 1 << 20},
		{name: "tiny MaxBytes one shard", next: next, cfg: Config{MaxBytes: 4000}, wantShards: 1, wantMaxItem: 1000, wantMax: 4000},
		{name: "explicit shards", next: next, cfg: Config{MaxBytes: 1 << 20, Shards: 4, MaxItemBytes: 1000}, wantShards: 4, wantMaxItem: 1000, wantMax: 1 << 20},
		{name: "budget rounds down", next: next, cfg: Config{MaxBytes: 1<<20 + 3, Shards: 4}, wantShards: 4, wantMaxItem: 1 << 16, wantMax: 1 << 20},
		{name: "nil getter", cfg: Config{}, wantErr: true},
		{name: "negative MaxBytes", next: next, cfg: Config{MaxBytes: -1}, wantErr: true},
		{name: "negative TTL", next: next, cfg: Config{TTL: -time.Second}, wantErr: true},
		{name: "shards not power of two", next: next, cfg: Config{Shards: 3}, wantErr: true},
		{name: "negative shards", next: next, cfg: Config{Shards: -4}, wantErr: true},
		{name: "negative MaxItemBytes", next: next, cfg: Config{MaxItemBytes: -1}, wantErr: true},
		{name: "MaxItemBytes above shard budget", next: next, cfg: Config{MaxBytes: 1 << 20, Shards: 4, MaxItemBytes: 1<<18 + 1}, wantErr: true},
		{name: "MaxItemBytes below overhead", next: next, cfg: Config{MaxItemBytes: 10}, wantErr: true},
		{name: "MaxBytes too small for one entry", next: next, cfg: Config{MaxBytes: 500}, wantErr: true},
		{name: "stale windows", next: next, cfg: Config{StaleFor: time.Minute, StaleWhileRevalidate: time.Minute, MaxRefreshes: 3}, wantShards: 64, wantMaxItem: 256 << 10, wantMax: 64 << 20},
		{name: "negative StaleFor", next: next, cfg: Config{StaleFor: -time.Second}, wantErr: true},
		{name: "negative StaleWhileRevalidate", next: next, cfg: Config{StaleFor: time.Minute, StaleWhileRevalidate: -time.Second}, wantErr: true},
		{name: "StaleWhileRevalidate above StaleFor", next: next, cfg: Config{StaleFor: time.Second, StaleWhileRevalidate: 2 * time.Second}, wantErr: true},
		{name: "StaleWhileRevalidate without StaleFor", next: next, cfg: Config{StaleWhileRevalidate: time.Second}, wantErr: true},
		{name: "negative MaxRefreshes", next: next, cfg: Config{MaxRefreshes: -1}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.next, tt.cfg)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidConfig) {
					t.Fatalf("New() error = %v, want ErrInvalidConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New() error = %v", err)
			}
			st := c.Stats()
			if st.Shards != tt.wantShards || c.maxItem != tt.wantMaxItem || st.MaxBytes != tt.wantMax {
				t.Errorf("shards %d, MaxItemBytes %d, MaxBytes %d; want %d, %d, %d",
					st.Shards, c.maxItem, st.MaxBytes, tt.wantShards, tt.wantMaxItem, tt.wantMax)
			}
		})
	}
}

// step is one event of a timeline test.
type step struct {
	op  string // get, set (L2 only), write (L2 then Invalidate), del (L2 then Invalidate), advance, flush
	key string
	val string
	ttl time.Duration // set/write: key expiry from now, 0 for none
	d   time.Duration // advance

	// get expectations
	want    string
	found   bool
	fetched bool // the get asked the next tier
}

func TestTimeline(t *testing.T) {
	big := string(make([]byte, 2000))
	tests := []struct {
		name  string
		cfg   Config
		steps []step
		want  Stats // counters compared: see compareStats
	}{
		{
			name: "hit after fill",
			steps: []step{
				{op: "set", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", found: true, fetched: true},
				{op: "get", key: "k", want: "v1", found: true},
				{op: "get", key: "k", want: "v1", found: true},
			},
			want: Stats{Hits: 2, Misses: 1, Fills: 1, Entries: 1},
		},
		{
			name: "misses are not cached",
			steps: []step{
				{op: "get", key: "nope", fetched: true},
				{op: "get", key: "nope", fetched: true},
			},
			want: Stats{Misses: 2},
		},
		{
			name: "empty key and empty value",
			steps: []step{
				{op: "set", key: "", val: ""},
				{op: "get", key: "", want: "", found: true, fetched: true},
				{op: "get", key: "", want: "", found: true},
			},
			want: Stats{Hits: 1, Misses: 1, Fills: 1, Entries: 1},
		},
		{
			name: "never served at or past Item.Expires",
			cfg:  Config{TTL: time.Minute},
			steps: []step{
				{op: "set", key: "k", val: "v1", ttl: 2 * time.Second},
				{op: "get", key: "k", want: "v1", found: true, fetched: true},
				// L2 changes without an invalidation: L1 may serve v1 until it expires.
				{op: "set", key: "k", val: "v2"},
				{op: "advance", d: 2*time.Second - time.Nanosecond},
				{op: "get", key: "k", want: "v1", found: true},
				{op: "advance", d: time.Nanosecond},
				{op: "get", key: "k", want: "v2", found: true, fetched: true},
			},
			want: Stats{Hits: 1, Misses: 2, Fills: 2, Expirations: 1, Entries: 1},
		},
		{
			name: "expired in L2 too",
			steps: []step{
				{op: "set", key: "k", val: "v1", ttl: time.Second},
				{op: "get", key: "k", want: "v1", found: true, fetched: true},
				{op: "advance", d: time.Second},
				{op: "get", key: "k", fetched: true},
				{op: "get", key: "k", fetched: true},
			},
			want: Stats{Misses: 3, Fills: 1, Expirations: 1},
		},
		{
			name: "TTL caps freshness",
			cfg:  Config{TTL: 10 * time.Second},
			steps: []step{
				{op: "set", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", found: true, fetched: true},
				{op: "set", key: "k", val: "v2"},
				{op: "advance", d: 10*time.Second - time.Nanosecond},
				{op: "get", key: "k", want: "v1", found: true},
				{op: "advance", d: time.Nanosecond},
				{op: "get", key: "k", want: "v2", found: true, fetched: true},
				{op: "get", key: "k", want: "v2", found: true},
			},
			want: Stats{Hits: 2, Misses: 2, Fills: 2, Refreshes: 1, Entries: 1},
		},
		{
			name: "TTL caps an expiry further away",
			cfg:  Config{TTL: 10 * time.Second},
			steps: []step{
				{op: "set", key: "k", val: "v1", ttl: time.Hour},
				{op: "get", key: "k", want: "v1", found: true, fetched: true},
				{op: "advance", d: 10 * time.Second},
				{op: "get", key: "k", want: "v1", found: true, fetched: true},
			},
			want: Stats{Misses: 2, Fills: 2, Refreshes: 1, Entries: 1},
		},
		{
			name: "invalidate after write",
			steps: []step{
				{op: "set", key: "k", val: "v1"},
				{op: "set", key: "other", val: "o"},
				{op: "get", key: "k", want: "v1", found: true, fetched: true},
				{op: "get", key: "other", want: "o", found: true, fetched: true},
				{op: "write", key: "k", val: "v2"},
				{op: "get", key: "k", want: "v2", found: true, fetched: true},
				{op: "get", key: "other", want: "o", found: true},
				{op: "del", key: "k"},
				{op: "get", key: "k", fetched: true},
			},
			want: Stats{Hits: 1, Misses: 4, Fills: 3, Invalidations: 2, Entries: 1},
		},
		{
			name: "invalidate absent key",
			steps: []step{
				{op: "write", key: "k", val: "v1"},
				{op: "get", key: "k", want: "v1", found: true, fetched: true},
			},
			want: Stats{Misses: 1, Fills: 1, Entries: 1},
		},
		{
			name: "flush",
			steps: []step{
				{op: "set", key: "a", val: "1"},
				{op: "set", key: "b", val: "2"},
				{op: "get", key: "a", want: "1", found: true, fetched: true},
				{op: "get", key: "b", want: "2", found: true, fetched: true},
				{op: "flush"},
				{op: "get", key: "a", want: "1", found: true, fetched: true},
				{op: "get", key: "b", want: "2", found: true, fetched: true},
				{op: "get", key: "b", want: "2", found: true},
			},
			want: Stats{Hits: 1, Misses: 4, Fills: 4, Flushed: 2, Entries: 2},
		},
		{
			name: "MaxItemBytes passes large values through",
			cfg:  Config{MaxBytes: 1 << 20, Shards: 1, MaxItemBytes: 1000},
			steps: []step{
				{op: "set", key: "big", val: big},
				{op: "get", key: "big", want: big, found: true, fetched: true},
				{op: "get", key: "big", want: big, found: true, fetched: true},
				{op: "set", key: "small", val: "s"},
				{op: "get", key: "small", want: "s", found: true, fetched: true},
				{op: "get", key: "small", want: "s", found: true},
			},
			want: Stats{Hits: 1, Misses: 3, Fills: 1, TooLarge: 2, Entries: 1},
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
			for i, s := range tt.steps {
				switch s.op {
				case "set":
					l2.set(s.key, s.val, s.ttl)
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
				case "get":
					before := l2.callsFor(s.key)
					v, found, err := c.Get(context.Background(), []byte(s.key))
					if err != nil {
						t.Fatalf("step %d: Get(%q) error %v", i, s.key, err)
					}
					if found != s.found || string(v) != s.want {
						t.Fatalf("step %d: Get(%q) = %.20q, %v; want %.20q, %v", i, s.key, v, found, s.want, s.found)
					}
					if fetched := l2.callsFor(s.key) > before; fetched != s.fetched {
						t.Fatalf("step %d: Get(%q) fetched from next tier = %v, want %v", i, s.key, fetched, s.fetched)
					}
				default:
					t.Fatalf("step %d: unknown op %q", i, s.op)
				}
			}
			compareStats(t, c.Stats(), tt.want)
			checkAccounting(t, c)
		})
	}
}

// compareStats compares the counters and Entries of got and want.
func compareStats(t *testing.T, got, want Stats) {
	t.Helper()
	got.Bytes, got.MaxBytes, got.Shards = 0, 0, 0
	if got != want {
		t.Errorf("Stats = %+v\n         want %+v", got, want)
	}
}

// checkAccounting checks that every shard's byte count is the sum of its
// entries' sizes and within the shard budget.
func checkAccounting(t *testing.T, c *Cache) {
	t.Helper()
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		var sum int64
		for _, k := range s.lru.Keys() {
			e, _ := s.lru.Peek(k)
			sum += entrySize(int(e.klen), len(e.value()))
		}
		bytes := s.bytes
		s.mu.Unlock()
		if sum != bytes {
			t.Errorf("shard %d: bytes = %d, sum of entries = %d", i, bytes, sum)
		}
		if bytes > c.budget {
			t.Errorf("shard %d: bytes = %d over budget %d", i, bytes, c.budget)
		}
	}
}

func TestEvictionByBytes(t *testing.T) {
	const keyLen, valLen = 8, 100
	size := entrySize(keyLen, valLen)
	clk := newFakeClock()
	l2 := newFakeL2(clk.Now)
	c, err := New(l2, Config{MaxBytes: 3 * size, Shards: 1, MaxItemBytes: size, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	val := string(make([]byte, valLen))
	key := func(i int) string { return fmt.Sprintf("key%05d", i) }
	for i := range 6 {
		l2.set(key(i), val, 0)
	}
	get := func(i int) (fetched bool) {
		t.Helper()
		before := l2.callsFor(key(i))
		if _, found, err := c.Get(context.Background(), []byte(key(i))); !found || err != nil {
			t.Fatalf("Get(%s) = %v, %v", key(i), found, err)
		}
		return l2.callsFor(key(i)) > before
	}

	tests := []struct {
		name        string
		get         int
		wantFetched bool
		wantEvicted uint64
	}{
		{"fill 0", 0, true, 0},
		{"fill 1", 1, true, 0},
		{"fill 2", 2, true, 0},
		{"0 is a hit and becomes most recent", 0, false, 0},
		{"fill 3 evicts 1, the least recent", 3, true, 1},
		{"2 still cached", 2, false, 1},
		{"1 was evicted", 1, true, 2}, // evicts 0
		{"0 was evicted", 0, true, 3}, // evicts 3
		{"2 still cached again", 2, false, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if fetched := get(tt.get); fetched != tt.wantFetched {
				t.Errorf("fetched = %v, want %v", fetched, tt.wantFetched)
			}
			st := c.Stats()
			if st.Evictions != tt.wantEvicted {
				t.Errorf("Evictions = %d, want %d", st.Evictions, tt.wantEvicted)
			}
			if st.Bytes > st.MaxBytes || st.Entries > 3 {
				t.Errorf("Bytes = %d (max %d), Entries = %d", st.Bytes, st.MaxBytes, st.Entries)
			}
			checkAccounting(t, c)
		})
	}
}

func TestEvictingExpiredCountsExpiration(t *testing.T) {
	const keyLen, valLen = 1, 100
	size := entrySize(keyLen, valLen)
	clk := newFakeClock()
	l2 := newFakeL2(clk.Now)
	c, err := New(l2, Config{MaxBytes: 2 * size, Shards: 1, MaxItemBytes: size, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	val := string(make([]byte, valLen))
	l2.set("a", val, time.Second)
	l2.set("b", val, 0)
	l2.set("c", val, 0)
	for _, k := range []string{"a", "b"} {
		if _, _, err := c.Get(context.Background(), []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Second)
	// Filling c pushes out a, which expired unread.
	if _, _, err := c.Get(context.Background(), []byte("c")); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Expirations != 1 || st.Evictions != 0 || st.Entries != 2 {
		t.Errorf("Expirations %d, Evictions %d, Entries %d; want 1, 0, 2", st.Expirations, st.Evictions, st.Entries)
	}
}

func TestNextTierError(t *testing.T) {
	errDown := errors.New("l2 down")
	var fail atomic.Bool
	fail.Store(true)
	var calls atomic.Int64
	next := GetterFunc(func(context.Context, []byte, bool) (Item, bool, error) {
		calls.Add(1)
		if fail.Load() {
			return Item{Value: []byte("partial")}, true, fmt.Errorf("get: %w", errDown)
		}
		return Item{Value: []byte("v")}, true, nil
	})
	c, err := New(next, Config{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		v, found, err := c.Get(context.Background(), []byte("k"))
		if !errors.Is(err, errDown) || found || v != nil {
			t.Fatalf("Get #%d = %q, %v, %v; want nil, false, errDown", i, v, found, err)
		}
	}
	if st := c.Stats(); st.Entries != 0 || st.NextErrors != 2 || calls.Load() != 2 {
		t.Fatalf("after errors: Entries %d, NextErrors %d, calls %d; want 0, 2, 2", st.Entries, st.NextErrors, calls.Load())
	}
	fail.Store(false)
	for range 2 {
		if v, found, err := c.Get(context.Background(), []byte("k")); string(v) != "v" || !found || err != nil {
			t.Fatalf("Get = %q, %v, %v", v, found, err)
		}
	}
	if calls.Load() != 3 {
		t.Errorf("next tier called %d times, want 3", calls.Load())
	}
}

func TestAlreadyExpiredItemNotKept(t *testing.T) {
	clk := newFakeClock()
	var calls int
	next := GetterFunc(func(context.Context, []byte, bool) (Item, bool, error) {
		calls++
		// Expired between the next tier's read and now.
		return Item{Value: []byte("v"), Expires: clk.Now()}, true, nil
	})
	c, err := New(next, Config{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if v, found, err := c.Get(context.Background(), []byte("k")); string(v) != "v" || !found || err != nil {
			t.Fatalf("Get = %q, %v, %v", v, found, err)
		}
	}
	if calls != 2 || c.Stats().Entries != 0 {
		t.Errorf("calls %d, Entries %d; want 2, 0", calls, c.Stats().Entries)
	}
}

// TestInvalidateDuringFetch stops a reader inside the next tier, runs an
// action, then lets the reader return the value it read before the action.
func TestInvalidateDuringFetch(t *testing.T) {
	tests := []struct {
		name        string
		between     func(c *Cache, l2 *fakeL2)
		wantDropped uint64
		// The Get after the blocked one.
		wantValue   string
		wantFound   bool
		wantFetched bool
	}{
		{
			name:        "write and invalidate the key",
			between:     func(c *Cache, l2 *fakeL2) { l2.set("k", "new", 0); c.Invalidate([]byte("k")) },
			wantDropped: 1,
			wantValue:   "new", wantFound: true, wantFetched: true,
		},
		{
			name:        "delete and invalidate the key",
			between:     func(c *Cache, l2 *fakeL2) { l2.del("k"); c.Invalidate([]byte("k")) },
			wantDropped: 1,
			wantFetched: true,
		},
		{
			name:        "write and flush",
			between:     func(c *Cache, l2 *fakeL2) { l2.set("k", "new", 0); c.Flush() },
			wantDropped: 1,
			wantValue:   "new", wantFound: true, wantFetched: true,
		},
		{
			name:        "invalidate another key of the shard",
			between:     func(c *Cache, l2 *fakeL2) { c.Invalidate([]byte("other")) },
			wantDropped: 1,
			wantValue:   "old", wantFound: true, wantFetched: true,
		},
		{
			name:      "nothing happens",
			between:   func(c *Cache, l2 *fakeL2) {},
			wantValue: "old", wantFound: true, wantFetched: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			l2 := newFakeL2(clk.Now)
			l2.set("k", "old", 0)
			started := make(chan struct{})
			release := make(chan struct{})
			var block atomic.Bool
			block.Store(true)
			next := GetterFunc(func(ctx context.Context, key []byte, hasStale bool) (Item, bool, error) {
				it, found, err := l2.Get(ctx, key, hasStale)
				if block.CompareAndSwap(true, false) {
					close(started)
					<-release
				}
				return it, found, err
			})
			c, err := New(next, Config{Shards: 1, Now: clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			type result struct {
				v     []byte
				found bool
				err   error
			}
			done := make(chan result)
			go func() {
				v, found, err := c.Get(context.Background(), []byte("k"))
				done <- result{v, found, err}
			}()
			<-started
			tt.between(c, l2)
			close(release)
			r := <-done
			if string(r.v) != "old" || !r.found || r.err != nil {
				t.Fatalf("blocked Get = %q, %v, %v; want the value it read, old", r.v, r.found, r.err)
			}
			if st := c.Stats(); st.FillsDropped != tt.wantDropped {
				t.Errorf("FillsDropped = %d, want %d", st.FillsDropped, tt.wantDropped)
			}

			before := l2.callsFor("k")
			v, found, err := c.Get(context.Background(), []byte("k"))
			if err != nil {
				t.Fatal(err)
			}
			fetched := l2.callsFor("k") > before
			if string(v) != tt.wantValue || found != tt.wantFound || fetched != tt.wantFetched {
				t.Errorf("next Get = %q, %v (fetched %v); want %q, %v (fetched %v)",
					v, found, fetched, tt.wantValue, tt.wantFound, tt.wantFetched)
			}
			checkAccounting(t, c)
		})
	}
}

// TestConcurrentCoherence runs readers, writers and flushers at once and
// checks that a Get that starts after a write's Invalidate returned never
// sees an older value (read-your-writes through L1), and that byte
// accounting stays exact. Run it with -race.
func TestConcurrentCoherence(t *testing.T) {
	const (
		keys       = 64
		writers    = 4 // each owns keys i with i%writers == w
		readers    = 4
		readsPer   = 20000
		valPadding = 40
	)
	var (
		l2mu      sync.Mutex
		l2        [keys]uint64 // version stored in the next tier
		committed [keys]atomic.Uint64
	)
	keyName := func(i int) []byte { return []byte("key:" + strconv.Itoa(i)) }
	next := GetterFunc(func(_ context.Context, key []byte, _ bool) (Item, bool, error) {
		i, err := strconv.Atoi(string(key[len("key:"):]))
		if err != nil {
			return Item{}, false, err
		}
		l2mu.Lock()
		v := l2[i]
		l2mu.Unlock()
		runtime.Gosched() // widen the window between reading L2 and filling L1
		val := strconv.AppendUint(make([]byte, 0, 20+valPadding), v, 10)
		val = append(val, make([]byte, valPadding)...)
		return Item{Value: val}, true, nil
	})
	// Room for about half the keys, so evictions race too.
	c, err := New(next, Config{MaxBytes: 32 * entrySize(6, 64), Shards: 4, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}

	var (
		writersWG, readersWG sync.WaitGroup
		readersDone          atomic.Bool
	)
	errc := make(chan error, readers)
	// Writers run until the readers are done, so the two overlap whatever
	// the scheduler does.
	for w := range writers {
		writersWG.Go(func() {
			for n := 0; !readersDone.Load(); n++ {
				i := (n*writers + w) % keys
				if n%2 == 0 {
					i %= 16
				}
				l2mu.Lock()
				l2[i]++
				v := l2[i]
				l2mu.Unlock()
				c.Invalidate(keyName(i))
				committed[i].Store(v) // only this writer writes key i
				if n%1000 == 999 && w == 0 {
					c.Flush()
				}
				runtime.Gosched() // let readers fill between writes
			}
		})
	}
	for r := range readers {
		readersWG.Go(func() {
			for n := range readsPer {
				// Three reads in four go to 16 hot keys that stay cached;
				// the rest cycle through all keys and cause evictions.
				i := (n*7 + r*13) % keys
				if n%4 != 0 {
					i %= 16
				}
				floor := committed[i].Load()
				v, found, err := c.Get(context.Background(), keyName(i))
				if err != nil || !found {
					errc <- fmt.Errorf("Get(%d) = %v, %v", i, found, err)
					return
				}
				end := bytes.IndexByte(v, 0)
				got, err := strconv.ParseUint(string(v[:end]), 10, 64)
				if err != nil {
					errc <- err
					return
				}
				if got < floor {
					errc <- fmt.Errorf("key %d: read version %d after version %d was written and invalidated", i, got, floor)
					return
				}
			}
		})
	}
	readersWG.Wait()
	readersDone.Store(true)
	writersWG.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	st := c.Stats()
	t.Logf("%+v", st)
	if st.Hits == 0 || st.Evictions == 0 || st.Invalidations == 0 || st.FillsDropped == 0 {
		t.Errorf("the run exercised too little: %+v", st)
	}
	checkAccounting(t, c)
}

func TestHitDoesNotAllocate(t *testing.T) {
	next := GetterFunc(func(context.Context, []byte, bool) (Item, bool, error) {
		return Item{Value: []byte("value")}, true, nil
	})
	c, err := New(next, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key := []byte("some:key:1234")
	if _, _, err := c.Get(ctx, key); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if v, found, _ := c.Get(ctx, key); !found || len(v) != 5 {
			panic("miss")
		}
	})
	if allocs != 0 {
		t.Errorf("a hit allocates %v times, want 0", allocs)
	}
	if st := c.Stats(); st.Misses != 1 {
		t.Errorf("Misses = %d, want 1 (all timed Gets must be hits)", st.Misses)
	}
}

// TestPromotion checks the lazy LRU update: a hit on an entry near the back
// moves it to the front, a hit on one already in the front quarter leaves
// the list alone, and both survive the evictions that follow.
func TestPromotion(t *testing.T) {
	const n, keyLen, valLen = 16, 5, 100
	size := entrySize(keyLen, valLen)
	clk := newFakeClock()
	l2 := newFakeL2(clk.Now)
	c, err := New(l2, Config{MaxBytes: n * size, Shards: 1, MaxItemBytes: size, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	val := string(make([]byte, valLen))
	key := func(i int) string { return fmt.Sprintf("k%04d", i) }
	get := func(i int) (fetched bool) {
		t.Helper()
		before := l2.callsFor(key(i))
		if _, found, err := c.Get(context.Background(), []byte(key(i))); !found || err != nil {
			t.Fatalf("Get(%s) = %v, %v", key(i), found, err)
		}
		return l2.callsFor(key(i)) > before
	}
	for i := range 2 * n {
		l2.set(key(i), val, 0)
	}
	for i := range n {
		get(i)
	}
	s := &c.shards[0]
	tick := s.tick
	if get(0) {
		t.Fatal("key 0 was not cached")
	}
	if s.tick != tick+1 {
		t.Errorf("a hit at the back of the list did not move it to the front")
	}
	if get(n - 2) {
		t.Fatal("key 14 was not cached")
	}
	if s.tick != tick+1 {
		t.Errorf("a hit in the front quarter moved the entry")
	}
	// n-3 new keys evict keys 1..n-3, the least recently used.
	for i := n; i < 2*n-3; i++ {
		get(i)
	}
	if st := c.Stats(); st.Evictions != n-3 {
		t.Errorf("Evictions = %d, want %d", st.Evictions, n-3)
	}
	for _, i := range []int{0, n - 2, n - 1} {
		if get(i) {
			t.Errorf("recently used key %d was evicted", i)
		}
	}
	if !get(1) {
		t.Error("least recently used key 1 was not evicted")
	}
	checkAccounting(t, c)
}

// TestHashCollision: entries are keyed by a 64-bit hash of the key, and
// each holds its key. A lookup that finds another key under the same hash
// is a miss, and the fill replaces the other key's entry.
func TestHashCollision(t *testing.T) {
	clk := newFakeClock()
	l2 := newFakeL2(clk.Now)
	c, err := New(l2, Config{Shards: 1, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	l2.set("b", "value of b", 0)
	// Plant key "a" under the hash of "b", as a collision would.
	h, s := c.shardOf([]byte("b"))
	e := newEntry([]byte("a"), []byte("value of a"))
	e.deadline = int64(time.Hour)
	s.lru.Add(h, e)
	s.bytes += e.size()

	got, found, err := c.Get(context.Background(), []byte("b"))
	if err != nil || !found || string(got) != "value of b" {
		t.Fatalf("Get(b) = %q, %v, %v", got, found, err)
	}
	if l2.callsFor("b") != 1 {
		t.Errorf("Get(b) was answered from a's entry")
	}
	if got, _, _ := c.Get(context.Background(), []byte("b")); string(got) != "value of b" || l2.callsFor("b") != 1 {
		t.Errorf("b's fill did not replace a's entry: %q, %d calls", got, l2.callsFor("b"))
	}
	c.Invalidate([]byte("a")) // a different hash: must not touch b
	if _, _, _ = c.Get(context.Background(), []byte("b")); l2.callsFor("b") != 1 {
		t.Errorf("invalidating a removed b")
	}
	checkAccounting(t, c)
}
