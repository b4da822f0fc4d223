package fallback

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	errDown      = errors.New("l2 down")
	errWrongType = errors.New("WRONGTYPE Operation against a key holding the wrong kind of value")
)

// isFailure is the tests' Config.IsFailure: a WRONGTYPE is an answer.
func isFailure(err error) bool { return !errors.Is(err, errWrongType) }

// fakeL2 is the next tier: a map, or an error for every Get.
type fakeL2 struct {
	mu   sync.Mutex
	data map[string]Item
	err  error
	gets atomic.Int64
}

func newFakeL2() *fakeL2 { return &fakeL2{data: make(map[string]Item)} }

func (l *fakeL2) get(ctx context.Context, key []byte) (Item, bool, error) {
	l.gets.Add(1)
	if err := ctx.Err(); err != nil {
		return Item{}, false, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return Item{}, false, l.err
	}
	it, ok := l.data[string(key)]
	return it, ok, nil
}

func (l *fakeL2) set(key, value string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.data[key] = Item{Value: []byte(value)}
}

func (l *fakeL2) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.err = err
}

// toggle is a Config.Failing that the test flips.
type toggle struct{ on atomic.Bool }

func (t *toggle) get() bool { return t.on.Load() }

func newShield(t *testing.T, l2 *fakeL2, cfg Config) *Shield {
	t.Helper()
	if cfg.IsFailure == nil {
		cfg.IsFailure = isFailure
	}
	s, err := New(GetterFunc(l2.get), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

type got struct {
	item  Item
	found bool
	err   error
}

// goGet runs s.Get in a goroutine; the result arrives on the channel.
func goGet(ctx context.Context, s *Shield, key string, hasStale bool) <-chan got {
	ch := make(chan got, 1)
	go func() {
		item, found, err := s.Get(ctx, []byte(key), hasStale)
		ch <- got{item, found, err}
	}()
	return ch
}

func TestNew(t *testing.T) {
	next := GetterFunc(func(context.Context, []byte) (Item, bool, error) { return Item{}, false, nil })
	tests := []struct {
		name string
		next Getter
		cfg  Config
		ok   bool
	}{
		{"zero config", next, Config{}, true},
		{"full config", next, Config{Rate: 5, Queue: 3, FillWait: time.Second, CallTimeout: time.Second}, true},
		{"nil getter", nil, Config{}, false},
		{"negative rate", next, Config{Rate: -1}, false},
		{"rate above 1e9", next, Config{Rate: int(time.Second) + 1}, false},
		{"negative queue", next, Config{Queue: -1}, false},
		{"negative fill wait", next, Config{FillWait: -time.Millisecond}, false},
		{"negative call timeout", next, Config{CallTimeout: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.next, tt.cfg)
			if tt.ok {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				s.Close()
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New: err %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// TestGet covers the answers that need no concurrency: pass-through, the
// stale shortcut, single misses and single origin loads.
func TestGet(t *testing.T) {
	ctxCanceled, cancel := context.WithCancel(context.Background())
	cancel()
	originValue := Item{Value: []byte("from-origin"), Expires: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)}
	tests := []struct {
		name      string
		ctx       context.Context
		l2Value   string // "" : miss
		l2Err     error
		failing   bool
		hasStale  bool
		origin    func(context.Context, []byte) (Item, bool, error) // nil: cache-aside
		wantValue string
		wantFound bool
		wantErr   error
		wantStats Stats
	}{
		{name: "hit", l2Value: "v", wantValue: "v", wantFound: true},
		{name: "hit while failing", l2Value: "v", failing: true, wantValue: "v", wantFound: true},
		{name: "hit with origin", l2Value: "v", origin: loadsValue(originValue), wantValue: "v", wantFound: true},
		{name: "wrongtype passes through", l2Err: errWrongType, hasStale: true, origin: loadsValue(originValue), wantErr: errWrongType},
		{name: "caller left", ctx: ctxCanceled, wantErr: context.Canceled},
		{name: "failure with stale: the L2's error, no admission", l2Err: errDown, hasStale: true,
			wantErr: errDown, wantStats: Stats{StaleErrors: 1}},
		{name: "breaker not closed, L2 miss, stale, nobody waiting: admitted to refill", failing: true, hasStale: true,
			wantStats: Stats{Admitted: 1, Misses: 1}},
		{name: "breaker not closed, L2 miss, stale, read-through: admitted load", failing: true, hasStale: true,
			origin: loadsValue(originValue), wantValue: "from-origin", wantFound: true,
			wantStats: Stats{Admitted: 1, OriginLoads: 1, StoreSkipped: 1}},
		{name: "failure with stale, read-through: no origin load", l2Err: errDown, hasStale: true, origin: loadsValue(originValue),
			wantErr: errDown, wantStats: Stats{StaleErrors: 1}},
		{name: "healthy miss", wantStats: Stats{Misses: 1}},
		{name: "healthy miss with stale", hasStale: true, wantStats: Stats{Misses: 1}},
		{name: "failure without stale: admitted miss", l2Err: errDown,
			wantStats: Stats{Admitted: 1, Misses: 1}},
		{name: "breaker not closed without stale: admitted miss", failing: true,
			wantStats: Stats{Admitted: 1, Misses: 1}},
		{name: "read-through healthy: not rate-limited", origin: loadsValue(originValue),
			wantValue: "from-origin", wantFound: true, wantStats: Stats{OriginLoads: 1, StoreSkipped: 1}},
		{name: "read-through failing: admitted load", l2Err: errDown, origin: loadsValue(originValue),
			wantValue: "from-origin", wantFound: true, wantStats: Stats{Admitted: 1, OriginLoads: 1, StoreSkipped: 1}},
		{name: "read-through origin miss",
			origin:    func(context.Context, []byte) (Item, bool, error) { return Item{}, false, nil },
			wantStats: Stats{OriginLoads: 1, OriginMisses: 1, Misses: 1}},
		{name: "read-through origin error",
			origin:  func(context.Context, []byte) (Item, bool, error) { return Item{}, false, errDown },
			wantErr: ErrOrigin, wantStats: Stats{OriginLoads: 1, OriginErrors: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			l2 := newFakeL2()
			if tt.l2Value != "" {
				l2.set("k", tt.l2Value)
			}
			l2.fail(tt.l2Err)
			var loads atomic.Int64
			cfg := Config{Clock: newFakeClock(), Failing: func() bool { return tt.failing }}
			if tt.origin != nil {
				cfg.Origin = OriginFunc(func(ctx context.Context, key []byte) (Item, bool, error) {
					loads.Add(1)
					return tt.origin(ctx, key)
				})
			}
			s := newShield(t, l2, cfg)
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			item, found, err := s.Get(ctx, []byte("k"), tt.hasStale)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if found != tt.wantFound || string(item.Value) != tt.wantValue {
				t.Fatalf("got (%q, %v), want (%q, %v)", item.Value, found, tt.wantValue, tt.wantFound)
			}
			if found && item.Origin != (tt.wantValue == "from-origin") {
				t.Fatalf("Origin %v for %q", item.Origin, item.Value)
			}
			if found && item.Origin && !item.Expires.Equal(originValue.Expires) {
				t.Fatalf("Expires %v, want the origin's %v", item.Expires, originValue.Expires)
			}
			s.Close() // waits for the load's goroutine: its counters are final
			if st := s.Stats(); st != tt.wantStats {
				t.Fatalf("stats\n got %+v\nwant %+v", st, tt.wantStats)
			}
			if int64(tt.wantStats.OriginLoads) != loads.Load() {
				t.Fatalf("origin called %d times, stats say %d", loads.Load(), tt.wantStats.OriginLoads)
			}
		})
	}
}

func loadsValue(it Item) func(context.Context, []byte) (Item, bool, error) {
	return func(context.Context, []byte) (Item, bool, error) { return it, true, nil }
}

// TestCacheAsideCoalescing: of N concurrent misses on one key the first gets
// the miss, the others wait for Written and get the value of one re-read.
func TestCacheAsideCoalescing(t *testing.T) {
	const n = 8
	tests := []struct {
		name         string
		failing      bool // the breaker is not closed (the L2 still answers)
		wantAdmitted uint64
	}{
		{"healthy", false, 0},
		{"breaker not closed: only the leader is admitted", true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			l2 := newFakeL2()
			var failing toggle
			failing.on.Store(tt.failing)
			s := newShield(t, l2, Config{FillWait: time.Hour, Failing: failing.get, Clock: newFakeClock()})
			var results []<-chan got
			for range n {
				results = append(results, goGet(context.Background(), s, "k", false))
			}
			waitFor(t, "one miss and n-1 waiters", func() bool {
				st := s.Stats()
				return st.Misses == 1 && st.Coalesced == n-1
			})
			l2.set("k", "filled")
			s.Written([]byte("k"))
			var misses, filled int
			for _, ch := range results {
				r := <-ch
				switch {
				case r.err != nil:
					t.Fatalf("Get: %v", r.err)
				case !r.found:
					misses++
				case string(r.item.Value) == "filled":
					filled++
				default:
					t.Fatalf("Get: unexpected value %q", r.item.Value)
				}
			}
			if misses != 1 || filled != n-1 {
				t.Fatalf("%d misses and %d filled, want 1 and %d", misses, filled, n-1)
			}
			if got := l2.gets.Load(); got != n+1 {
				t.Fatalf("%d reads of the L2, want %d (one each, then one re-read)", got, n+1)
			}
			st := s.Stats()
			want := Stats{Admitted: tt.wantAdmitted, Misses: 1, Coalesced: n - 1, Filled: n - 1}
			if st != want {
				t.Fatalf("stats\n got %+v\nwant %+v", st, want)
			}
		})
	}
}

// TestCacheAsideRereadFails: the L2 fails; after Written the one re-read
// fails too, so each waiter goes through admission itself.
func TestCacheAsideRereadFails(t *testing.T) {
	checkGoroutines(t)
	const n = 6
	l2 := newFakeL2()
	l2.fail(errDown)
	// The system clock, and a rate so high that no pacing slot is far off.
	s := newShield(t, l2, Config{FillWait: time.Hour, Rate: int(time.Second), Queue: n})
	var results []<-chan got
	for range n {
		results = append(results, goGet(context.Background(), s, "k", false))
	}
	waitFor(t, "one miss and n-1 waiters", func() bool {
		st := s.Stats()
		return st.Misses == 1 && st.Coalesced == n-1
	})
	s.Written([]byte("k"))
	for _, ch := range results {
		if r := <-ch; r.err != nil || r.found {
			t.Fatalf("Get: (%v, %v), want an admitted miss", r.found, r.err)
		}
	}
	st := s.Stats()
	want := Stats{Admitted: n, Misses: n, Coalesced: n - 1}
	if st != want {
		t.Fatalf("stats\n got %+v\nwant %+v", st, want)
	}
	if got := l2.gets.Load(); got != n+1 {
		t.Fatalf("%d reads of the L2, want %d", got, n+1)
	}
}

// TestFillWaitTimeout: waiters whose FillWait runs out before any write get
// a miss if their L2 read found the L2 healthy, and go through admission if
// it was failing. The leader is held in its admission (fake clock) so that
// its flight cannot end before every waiter has joined it.
func TestFillWaitTimeout(t *testing.T) {
	const n = 5
	tests := []struct {
		name            string
		waitersFailing  bool
		wantWaiterSleep int // waiters blocked in admission after timing out
	}{
		{"healthy waiters get a miss", false, 0},
		{"failing waiters are admitted", true, n - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			clock := newFakeClock()
			var failing toggle
			s := newShield(t, newFakeL2(), Config{FillWait: 10 * time.Millisecond, Rate: 1, Queue: n, Failing: failing.get, Clock: clock})
			failing.on.Store(true)
			// The first admission is immediate; the next slot is 1s later.
			if _, _, err := s.Get(context.Background(), []byte("primer"), false); err != nil {
				t.Fatal(err)
			}
			leader := goGet(context.Background(), s, "k", false)
			waitFor(t, "the leader waiting for its slot", func() bool { return clock.Sleeping() == 1 })
			failing.on.Store(tt.waitersFailing)
			var waiters []<-chan got
			for range n - 1 {
				waiters = append(waiters, goGet(context.Background(), s, "k", false))
			}
			waitFor(t, "the waiters' FillWait to run out", func() bool {
				return s.Stats().FillWaitTimeouts == n-1 && clock.Sleeping() == 1+tt.wantWaiterSleep
			})
			for clock.Sleeping() > 0 { // every sleeper is registered: no new one comes
				clock.Advance(time.Second)
			}
			for _, ch := range append(waiters, leader) {
				if r := <-ch; r.err != nil || r.found {
					t.Fatalf("Get: (%v, %v), want a miss", r.found, r.err)
				}
			}
			s.Close() // ends the open flights and waits for the admission goroutines
			st := s.Stats()
			want := Stats{Admitted: 2 + uint64(tt.wantWaiterSleep), Misses: 1 + n, Coalesced: n - 1, FillWaitTimeouts: n - 1}
			if st != want {
				t.Fatalf("stats\n got %+v\nwant %+v", st, want)
			}
		})
	}
}

// TestFlightExpires: a flight nobody writes ends FillWait after its miss,
// and the next miss on the key leads a new one.
func TestFlightExpires(t *testing.T) {
	checkGoroutines(t)
	s := newShield(t, newFakeL2(), Config{FillWait: 5 * time.Millisecond})
	for i := range 2 {
		if _, found, err := s.Get(context.Background(), []byte("k"), false); found || err != nil {
			t.Fatalf("Get %d: (%v, %v), want a miss", i, found, err)
		}
		waitFor(t, "the flight to expire", func() bool { return s.Stats().Flights == 0 })
	}
	if st := s.Stats(); st.Misses != 2 || st.Coalesced != 0 {
		t.Fatalf("stats %+v: want 2 misses, none coalesced", st)
	}
}

// TestLeaderLeaves: a leader whose ctx ends while it waits for admission
// spends its slot (Abandoned), and its waiters go through admission
// themselves.
func TestLeaderLeaves(t *testing.T) {
	checkGoroutines(t)
	const n = 4
	clock := newFakeClock()
	l2 := newFakeL2()
	l2.fail(errDown)
	s := newShield(t, l2, Config{FillWait: time.Hour, Rate: 1, Queue: n, Clock: clock})
	if _, _, err := s.Get(context.Background(), []byte("primer"), false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leader := goGet(ctx, s, "k", false)
	waitFor(t, "the leader waiting for its slot", func() bool { return clock.Sleeping() == 1 })
	var waiters []<-chan got
	for range n - 1 {
		waiters = append(waiters, goGet(context.Background(), s, "k", false))
	}
	waitFor(t, "the waiters", func() bool { return s.Stats().Coalesced == n-1 })
	cancel()
	if r := <-leader; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("leader: %v, want context.Canceled", r.err)
	}
	waitFor(t, "the waiters to queue", func() bool { return clock.Sleeping() == n })
	for clock.Sleeping() > 0 {
		clock.Advance(time.Second)
	}
	for _, ch := range waiters {
		if r := <-ch; r.err != nil || r.found {
			t.Fatalf("Get: (%v, %v), want an admitted miss", r.found, r.err)
		}
	}
	s.Close() // waits for the abandoned slot's goroutine
	st := s.Stats()
	want := Stats{Admitted: 1 + n, Abandoned: 1, Misses: n, Coalesced: n - 1, FillWaitTimeouts: n - 1}
	if st != want {
		t.Fatalf("stats\n got %+v\nwant %+v", st, want)
	}
}

// TestReadThroughSingleflight: N concurrent misses make one origin load;
// everyone gets its result, and a found value is written to the L2 once.
func TestReadThroughSingleflight(t *testing.T) {
	const n = 8
	expires := time.Date(2030, 1, 1, 0, 1, 0, 0, time.UTC) // a minute after the fake clock's start
	tests := []struct {
		name      string
		l2Err     error
		load      result
		written   bool // Written(key) during the load
		storeErr  error
		wantValue string
		wantErr   error
		wantSets  int
		wantStats Stats
	}{
		{name: "found: written once", load: result{item: Item{Value: []byte("v"), Expires: expires}, found: true},
			wantValue: "v", wantSets: 1, wantStats: Stats{OriginLoads: 1, StoreWrites: 1}},
		{name: "failing: one admission for all", l2Err: errDown, load: result{item: Item{Value: []byte("v")}, found: true},
			wantValue: "v", wantSets: 1, wantStats: Stats{Admitted: 1, OriginLoads: 1, StoreWrites: 1}},
		{name: "not to be kept: not written", load: result{item: Item{Value: []byte("v"), Expires: newFakeClock().Now()}, found: true},
			wantValue: "v", wantStats: Stats{OriginLoads: 1, StoreSkipped: 1}},
		{name: "written meanwhile: not written", load: result{item: Item{Value: []byte("v")}, found: true}, written: true,
			wantValue: "v", wantStats: Stats{OriginLoads: 1, StoreSkipped: 1}},
		{name: "store error counted", load: result{item: Item{Value: []byte("v")}, found: true}, storeErr: errDown,
			wantValue: "v", wantSets: 1, wantStats: Stats{OriginLoads: 1, StoreWrites: 1, StoreErrors: 1}},
		{name: "origin miss", load: result{},
			wantStats: Stats{OriginLoads: 1, OriginMisses: 1, Misses: n}},
		{name: "origin error", load: result{err: errDown},
			wantErr: ErrOrigin, wantStats: Stats{OriginLoads: 1, OriginErrors: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			l2 := newFakeL2()
			l2.fail(tt.l2Err)
			release := make(chan struct{})
			var loads atomic.Int64
			var mu sync.Mutex
			var sets []string
			s := newShield(t, l2, Config{
				Clock: newFakeClock(),
				Origin: OriginFunc(func(ctx context.Context, key []byte) (Item, bool, error) {
					loads.Add(1)
					<-release
					return tt.load.item, tt.load.found, tt.load.err
				}),
				Store: WriterFunc(func(ctx context.Context, key, value []byte, exp time.Time) error {
					mu.Lock()
					defer mu.Unlock()
					sets = append(sets, fmt.Sprintf("%s=%s@%v", key, value, exp))
					return tt.storeErr
				}),
			})
			var results []<-chan got
			for range n {
				results = append(results, goGet(context.Background(), s, "k", false))
			}
			waitFor(t, "n-1 callers waiting on one load", func() bool {
				return s.Stats().Coalesced == n-1 && loads.Load() == 1
			})
			if tt.written {
				s.Written([]byte("k"))
			}
			close(release)
			for _, ch := range results {
				r := <-ch
				if !errors.Is(r.err, tt.wantErr) || (tt.wantErr == nil && r.err != nil) {
					t.Fatalf("Get: err %v, want %v", r.err, tt.wantErr)
				}
				if string(r.item.Value) != tt.wantValue || r.found != (tt.wantValue != "") || r.item.Origin != r.found {
					t.Fatalf("Get: %+v, found %v; want %q from the origin", r.item, r.found, tt.wantValue)
				}
			}
			s.Close() // waits for the L2 write
			if loads.Load() != 1 {
				t.Fatalf("%d origin loads, want 1", loads.Load())
			}
			if len(sets) != tt.wantSets {
				t.Fatalf("L2 writes %q, want %d", sets, tt.wantSets)
			}
			if tt.wantSets == 1 {
				if want := fmt.Sprintf("k=v@%v", tt.load.item.Expires); sets[0] != want {
					t.Fatalf("L2 write %q, want %q", sets[0], want)
				}
			}
			want := tt.wantStats
			want.Coalesced = n - 1
			if st := s.Stats(); st != want {
				t.Fatalf("stats\n got %+v\nwant %+v", st, want)
			}
		})
	}
}

// TestReadThroughLeaderLeaves: the load is not tied to the first caller's
// ctx; it leaving fails nobody else.
func TestReadThroughLeaderLeaves(t *testing.T) {
	checkGoroutines(t)
	release := make(chan struct{})
	var loadCtxErr atomic.Value
	s := newShield(t, newFakeL2(), Config{Origin: OriginFunc(func(ctx context.Context, key []byte) (Item, bool, error) {
		<-release
		if err := ctx.Err(); err != nil {
			loadCtxErr.Store(err)
		}
		return Item{Value: []byte("v")}, true, nil
	})})
	ctx, cancel := context.WithCancel(context.Background())
	leader := goGet(ctx, s, "k", false)
	waitFor(t, "the load", func() bool { return s.Stats().OriginLoads == 1 })
	follower := goGet(context.Background(), s, "k", false)
	waitFor(t, "the follower", func() bool { return s.Stats().Coalesced == 1 })
	cancel()
	if r := <-leader; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("leader: %v, want context.Canceled", r.err)
	}
	close(release)
	if r := <-follower; r.err != nil || string(r.item.Value) != "v" {
		t.Fatalf("follower: %q, %v", r.item.Value, r.err)
	}
	s.Close()
	if err := loadCtxErr.Load(); err != nil {
		t.Fatalf("the load's ctx ended with the leader: %v", err)
	}
}

// TestAdmissionRate simulates an overload on a fake clock while the L2
// fails: callers arrive thirty times faster than Rate for a second, none
// arrive for half a second, then the overload resumes for a second. The
// admitted count is within 10% of Rate per loaded second; no second holds
// more than Rate+1 admissions (ratelimit without slack lets one slot run
// late, never a burst after the pause); the rest are shed at once, and the
// pacing queue never holds more than Queue+1 callers.
func TestAdmissionRate(t *testing.T) {
	const (
		rate     = 100
		queue    = 4
		step     = 2 * time.Millisecond
		perStep  = 6           // 3000 arrivals per second
		loaded   = time.Second // then idle, then loaded again
		idle     = time.Second / 2
		interval = 2*loaded + idle
	)
	tests := []struct {
		name        string
		origin      bool
		cancellable bool // the callers' ctx can end: admission waits in a goroutine
	}{
		{"cache-aside", false, false},
		{"cache-aside, cancellable ctx", false, true},
		{"read-through", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			clock := newFakeClock()
			l2 := newFakeL2()
			l2.fail(errDown)
			cfg := Config{Rate: rate, Queue: queue, Clock: clock}
			if tt.origin {
				cfg.Origin = OriginFunc(func(context.Context, []byte) (Item, bool, error) {
					return Item{Value: []byte("v")}, true, nil
				})
			}
			s := newShield(t, l2, cfg)
			ctx := context.Background()
			if tt.cancellable {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				defer cancel()
			}
			start := clock.Now()
			var (
				mu       sync.Mutex
				admitted []time.Duration // when each admitted Get returned
				shed     int
				returned atomic.Int64
				launched int64
				maxQueue int
			)
			get := func(key string) {
				_, _, err := s.Get(ctx, []byte(key), false)
				at := clock.Now().Sub(start)
				mu.Lock()
				switch {
				case err == nil:
					admitted = append(admitted, at)
				case errors.Is(err, ErrShed):
					shed++
				default:
					t.Errorf("Get: %v", err)
				}
				mu.Unlock()
				returned.Add(1)
			}
			settle := func() {
				waitFor(t, "every caller to return or sleep", func() bool {
					return returned.Load()+int64(clock.Sleeping()) == launched
				})
				maxQueue = max(maxQueue, clock.Sleeping())
			}
			for i := 0; clock.Now().Sub(start) < interval; i++ {
				if at := clock.Now().Sub(start); at >= loaded && at < loaded+idle {
					clock.Advance(step)
					settle()
					continue
				}
				for j := range perStep {
					launched++
					go get(fmt.Sprintf("k%d.%d", i, j))
				}
				settle()
				clock.Advance(step)
			}
			settle()
			mu.Lock()
			inInterval := len(admitted)
			mu.Unlock()
			for clock.Sleeping() > 0 { // drain the queue
				clock.Advance(step)
				settle()
			}

			want := float64(rate) * (2 * loaded).Seconds()
			if d := float64(inInterval) - want; d > want/10 || d < -want/10 {
				t.Errorf("%d admitted in %v loaded, want %v ± 10%%", inInterval, 2*loaded, want)
			}
			for i, at := range admitted {
				n := 0
				for _, b := range admitted[i:] {
					if b-at < time.Second {
						n++
					}
				}
				if n > rate+1 {
					t.Errorf("%d admitted in the second from %v, want at most %d", n, at, rate+1)
				}
			}
			if maxQueue > queue+1 {
				t.Errorf("%d callers waited for a slot at once, want at most Queue+1 = %d", maxQueue, queue+1)
			}
			st := s.Stats()
			if len(admitted)+shed != int(launched) || uint64(len(admitted)) != st.Admitted || uint64(shed) != st.Shed || st.QueueFull != st.Shed {
				t.Errorf("%d launched: %d admitted, %d shed; stats %+v", launched, len(admitted), shed, st)
			}
			if tt.origin && st.OriginLoads != st.Admitted {
				t.Errorf("%d origin loads for %d admissions", st.OriginLoads, st.Admitted)
			}
			t.Logf("%d arrivals, %d admitted in %v (%d after), %d shed", launched, inInterval, interval, len(admitted)-inInterval, shed)
		})
	}
}

// TestWrittenAll wakes the waiters of every key.
func TestWrittenAll(t *testing.T) {
	checkGoroutines(t)
	l2 := newFakeL2()
	s := newShield(t, l2, Config{FillWait: time.Hour})
	keys := []string{"a", "b", "c"}
	var waiters []<-chan got
	for _, k := range keys {
		if _, found, err := s.Get(context.Background(), []byte(k), false); found || err != nil {
			t.Fatalf("leader %s: (%v, %v)", k, found, err)
		}
		waiters = append(waiters, goGet(context.Background(), s, k, false))
	}
	waitFor(t, "the waiters", func() bool { return s.Stats().Coalesced == uint64(len(keys)) })
	for _, k := range keys {
		l2.set(k, "v"+k)
	}
	s.WrittenAll()
	for i, ch := range waiters {
		if r := <-ch; r.err != nil || string(r.item.Value) != "v"+keys[i] {
			t.Fatalf("waiter %s: %q, %v", keys[i], r.item.Value, r.err)
		}
	}
	if st := s.Stats(); st.Flights != 0 || st.Filled != uint64(len(keys)) {
		t.Fatalf("stats %+v", st)
	}
	s.Written([]byte("nobody waits")) // no flight: nothing to do
}

// TestClose wakes the waiters with ErrClosed, after which Get still serves
// values but nothing that needs the fallback.
func TestClose(t *testing.T) {
	checkGoroutines(t)
	l2 := newFakeL2()
	release := make(chan struct{})
	defer close(release)
	s, err := New(GetterFunc(l2.get), Config{FillWait: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, found, err := s.Get(context.Background(), []byte("k"), false); found || err != nil {
		t.Fatalf("leader: (%v, %v)", found, err)
	}
	waiter := goGet(context.Background(), s, "k", false)
	waitFor(t, "the waiter", func() bool { return s.Stats().Coalesced == 1 })
	s.Close()
	if r := <-waiter; !errors.Is(r.err, ErrClosed) {
		t.Fatalf("waiter: %v, want ErrClosed", r.err)
	}
	if _, _, err := s.Get(context.Background(), []byte("k"), false); !errors.Is(err, ErrClosed) {
		t.Fatalf("miss after Close: %v, want ErrClosed", err)
	}
	l2.set("k", "v")
	if item, _, err := s.Get(context.Background(), []byte("k"), false); err != nil || string(item.Value) != "v" {
		t.Fatalf("hit after Close: %q, %v", item.Value, err)
	}
	s.Close()

	// A load in progress is cancelled by Close.
	rt, err := New(GetterFunc(l2.get), Config{Origin: OriginFunc(func(ctx context.Context, key []byte) (Item, bool, error) {
		select {
		case <-ctx.Done():
			return Item{}, false, ctx.Err()
		case <-release:
			return Item{}, false, errors.New("released: Close did not cancel the load")
		}
	})})
	if err != nil {
		t.Fatal(err)
	}
	loader := goGet(context.Background(), rt, "x", false)
	waitFor(t, "the load", func() bool { return rt.Stats().OriginLoads == 1 })
	rt.Close()
	if r := <-loader; !errors.Is(r.err, ErrClosed) {
		t.Fatalf("loader: %v, want ErrClosed", r.err)
	}
	if st := rt.Stats(); st.OriginErrors != 1 {
		t.Fatalf("stats %+v: want the cancelled load counted", st)
	}
}

// TestReread: after Written, what the one re-read of the L2 gives decides
// the waiters' answer.
func TestReread(t *testing.T) {
	tests := []struct {
		name      string
		value     string // the L2's value at the re-read ("": a miss)
		err       error  // the L2's error at the re-read
		hasStale  bool   // the waiter has a stale copy in L1
		wantValue string
		wantErr   error
		wantStats Stats // besides the leader's miss and the waiter
	}{
		{name: "value", value: "v", wantValue: "v", wantStats: Stats{Filled: 1}},
		{name: "still a miss", wantStats: Stats{Misses: 1}},
		{name: "wrongtype passes through", err: errWrongType, wantErr: errWrongType},
		{name: "failure, waiter with stale copy: the L2's error", err: errDown, hasStale: true,
			wantErr: errDown, wantStats: Stats{StaleErrors: 1}},
		{name: "failure, waiter without: admitted miss", err: errDown,
			wantStats: Stats{Admitted: 1, Misses: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			l2 := newFakeL2()
			s := newShield(t, l2, Config{FillWait: time.Hour, Clock: newFakeClock()})
			if _, found, err := s.Get(context.Background(), []byte("k"), false); found || err != nil {
				t.Fatalf("leader: (%v, %v)", found, err)
			}
			waiter := goGet(context.Background(), s, "k", tt.hasStale)
			waitFor(t, "the waiter", func() bool { return s.Stats().Coalesced == 1 })
			if tt.value != "" {
				l2.set("k", tt.value)
			}
			l2.fail(tt.err)
			s.Written([]byte("k"))
			r := <-waiter
			if !errors.Is(r.err, tt.wantErr) || (tt.wantErr == nil && r.err != nil) {
				t.Fatalf("waiter: err %v, want %v", r.err, tt.wantErr)
			}
			if string(r.item.Value) != tt.wantValue || r.found != (tt.wantValue != "") {
				t.Fatalf("waiter: (%q, %v), want %q", r.item.Value, r.found, tt.wantValue)
			}
			want := tt.wantStats
			want.Misses++ // the leader's
			want.Coalesced = 1
			if st := s.Stats(); st != want {
				t.Fatalf("stats\n got %+v\nwant %+v", st, want)
			}
		})
	}
}

// TestStaleRefillNeverQueues: a caller with a stale copy, for a key the
// L2 lost while the breaker is not closed, is admitted to refill it only
// when nobody waits for a pacing slot; otherwise it gets ErrShed at once
// (L1 answers it with the stale copy) instead of queueing.
func TestStaleRefillNeverQueues(t *testing.T) {
	checkGoroutines(t)
	clock := newFakeClock()
	s := newShield(t, newFakeL2(), Config{Rate: 10, Queue: 4, Clock: clock, Failing: func() bool { return true }})
	ctx := context.Background()
	// The first admission takes the limiter's slot at once...
	if _, found, err := s.Get(ctx, []byte("a"), false); err != nil || found {
		t.Fatalf("first miss: %v, %v", found, err)
	}
	// ...the second waits for the next one (100ms on the fake clock).
	waiting := make(chan error, 1)
	go func() {
		_, _, err := s.Get(ctx, []byte("b"), false)
		waiting <- err
	}()
	if err := pollFor(func() bool { return len(s.pacing) > 0 }); err != nil {
		t.Fatal(err)
	}
	// Meanwhile a stale-holding caller does not queue.
	if _, _, err := s.Get(ctx, []byte("c"), true); !errors.Is(err, ErrShed) {
		t.Fatalf("stale caller while a slot is awaited: %v, want ErrShed at once", err)
	}
	for i := 0; len(waiting) == 0 && i < 1_000_000; i++ {
		clock.Advance(10 * time.Millisecond)
		runtime.Gosched()
	}
	if err := <-waiting; err != nil {
		t.Fatalf("queued caller: %v", err)
	}
	st := s.Stats()
	if st.Admitted != 2 || st.StaleErrors != 1 {
		t.Fatalf("%+v: want 2 admitted, 1 stale answer", st)
	}
}

// pollFor polls cond for up to 10s.
func pollFor(cond func() bool) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return nil
		}
	}
	return errors.New("condition not met within 10s")
}

// TestSetRate: a reload's rate and fill-wait apply to later callers.
func TestSetRate(t *testing.T) {
	checkGoroutines(t)
	clock := newFakeClock()
	s := newShield(t, newFakeL2(), Config{Rate: 1, FillWait: time.Hour, Clock: clock, Failing: func() bool { return true }})
	if err := s.SetRate(-1, 0); err == nil {
		t.Fatal("SetRate accepted a negative rate")
	}
	if err := s.SetRate(10, 0); err != nil {
		t.Fatal(err)
	}
	// FillWait 0: no flights, each caller is admitted on its own; at 10/s
	// the fake clock must move 100ms between admissions.
	done := make(chan error, 1)
	go func() {
		for i := range 3 {
			if _, found, err := s.Get(context.Background(), []byte("k"), false); err != nil || found {
				done <- fmt.Errorf("caller %d: %v, %v", i, found, err)
				return
			}
		}
		done <- nil
	}()
	for i := 0; len(done) == 0 && i < 1_000_000; i++ {
		if clock.Sleeping() > 0 { // the clock moves only while a caller waits on it
			clock.Advance(10 * time.Millisecond)
		}
		runtime.Gosched()
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Admitted != 3 || st.Coalesced != 0 || st.Flights != 0 {
		t.Fatalf("%+v: want 3 admitted misses, none coalesced", st)
	}
	if elapsed := clock.Now().Sub(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)); elapsed < 200*time.Millisecond || elapsed > time.Second {
		t.Fatalf("3 admissions took %v on the fake clock, want about 200ms at the reloaded 10/s (the old 1/s: 2s)", elapsed)
	}
}
