package breaker_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/sidecache/sidecache/breaker"
	"github.com/sidecache/sidecache/l2store"
)

func TestTrips(t *testing.T) {
	type tc struct {
		name   string
		s      func(breaker.Settings) breaker.Settings
		next   func(*fakeClock) behavior
		step   time.Duration // clock advance after each Get
		at     int           // Gets that run before the breaker opens; 0: don't check
		reason breaker.Reason
		cause  string // regexp
	}
	id := func(s breaker.Settings) breaker.Settings { return s }
	cases := []tc{
		{
			name: "error ratio",
			s:    id,
			next: func(*fakeClock) behavior {
				return func(ctx context.Context, i int64) (l2store.Item, bool, error) {
					if i%5 < 3 {
						return fail(ctx, i)
					}
					return hit(ctx, i)
				}
			},
			step:   time.Millisecond,
			at:     20,
			reason: breaker.ReasonErrors,
			cause:  `^error ratio 0\.60 >= 0\.50 over 20 calls$`,
		},
		{
			name: "timeouts",
			s:    id,
			next: func(*fakeClock) behavior {
				return func(context.Context, int64) (l2store.Item, bool, error) {
					return l2store.Item{}, false, context.DeadlineExceeded
				}
			},
			step:   time.Millisecond,
			at:     20,
			reason: breaker.ReasonErrors,
			cause:  `^error ratio 1\.00 >= 0\.50 over 20 calls \(20 timeouts\)$`,
		},
		{
			name: "error ratio 0.8 configured",
			s:    func(s breaker.Settings) breaker.Settings { s.ErrorRatio = 0.8; s.MinRequests = 10; return s },
			next: func(*fakeClock) behavior {
				return func(ctx context.Context, i int64) (l2store.Item, bool, error) {
					if i < 10 { // 10 calls at 0.5: below 0.8
						if i%2 == 0 {
							return fail(ctx, i)
						}
						return hit(ctx, i)
					}
					// The last 10 calls reach 0.8 at k = 6 (3 + 6 of 10);
					// the window alone would at k = 15 (5 + k of 10 + k).
					return fail(ctx, i)
				}
			},
			step:   time.Millisecond,
			at:     16,
			reason: breaker.ReasonErrors,
			cause:  `^error ratio 0\.80 >= 0\.80 over 10 calls$`,
		},
		{
			name:   "slow calls",
			s:      id,
			next:   func(c *fakeClock) behavior { return slow(c, 150*time.Millisecond, hit) },
			at:     20,
			reason: breaker.ReasonSlow,
			cause:  `^slow-call ratio 1\.00 >= 0\.50 over 20 calls \(slow: 100ms or more\)$`,
		},
		{
			name:   "hit rate floor",
			s:      func(s breaker.Settings) breaker.Settings { s.HitRateFloor = 0.5; return s },
			next:   func(*fakeClock) behavior { return hitRate(1, 5) },
			step:   time.Millisecond,
			at:     20,
			reason: breaker.ReasonHitRate,
			cause:  `^hit rate 0\.20 < floor 0\.50 over 20 gets$`,
		},
		{
			// The incident: 98% hits for 20s, then the L2 restarts empty
			// and answers 6% hits. 50 Gets a second.
			name: "hit rate drop",
			s:    id,
			next: func(*fakeClock) behavior {
				return func(ctx context.Context, i int64) (l2store.Item, bool, error) {
					if i < 1000 {
						return hitRate(49, 50)(ctx, i)
					}
					return hitRate(3, 50)(ctx, i)
				}
			},
			step:   20 * time.Millisecond,
			reason: breaker.ReasonHitRate,
			cause:  `^hit rate 0\.[0-4]\d < 0\.49 \(0\.5 x baseline 0\.98\) over \d+ gets$`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c.s(noRetry()), nil)
			e.l2.set(c.next(e.clock))
			n := e.until(t, 5000, c.step)
			if n == 5000 {
				t.Fatalf("never opened: %+v", e.b.Stats())
			}
			if c.at != 0 && n != c.at {
				t.Errorf("opened after %d Gets, want %d", n, c.at)
			}
			st := e.b.Stats()
			if st.State != "open" || !e.b.Degraded() {
				t.Errorf("state %q, Degraded %v", st.State, e.b.Degraded())
			}
			if st.Reason != c.reason {
				t.Errorf("reason %v, want %v", st.Reason, c.reason)
			}
			if !regexp.MustCompile(c.cause).MatchString(st.Cause) {
				t.Errorf("cause %q, want %s", st.Cause, c.cause)
			}
			want := breaker.ByReason{}
			switch c.reason {
			case breaker.ReasonErrors:
				want.Errors = 1
			case breaker.ReasonSlow:
				want.Slow = 1
			case breaker.ReasonHitRate:
				want.HitRate = 1
			}
			if st.Opens != want || st.Transitions != (breaker.ByState{Open: 1}) {
				t.Errorf("opens %+v transitions %+v", st.Opens, st.Transitions)
			}
			if got := e.l2.calls.Load(); uint64(got) != st.Calls || got != int64(n) {
				t.Errorf("L2 calls %d, Stats.Calls %d, Gets let through %d", got, st.Calls, n)
			}
			_, _, err := e.get()
			if c.reason == breaker.ReasonHitRate {
				// The L2 answers but lost its data: Gets go through (the
				// fallback rations their misses), not as probes.
				if err != nil || e.l2.calls.Load() != int64(n)+1 || e.b.Stats().State != "open" {
					t.Errorf("Get while open for the hit rate: %v, L2 calls %d, state %s", err, e.l2.calls.Load(), e.b.Stats().State)
				}
			} else {
				// The refused Get reaches neither the L2 nor the counters of calls.
				if !errors.Is(err, breaker.ErrOpen) || !strings.Contains(err.Error(), st.Cause) {
					t.Errorf("refused Get: %v, want ErrOpen with the cause", err)
				}
				if st := e.b.Stats(); st.Rejected != 1 || e.l2.calls.Load() != int64(n) {
					t.Errorf("rejected %d, L2 calls %d: want the Get refused", st.Rejected, e.l2.calls.Load())
				}
			}
			logs := e.logs.FilterMessage("breaker opened").All()
			if len(logs) != 1 || logs[0].Level != zapcore.WarnLevel ||
				logs[0].ContextMap()["cause"] != st.Cause || logs[0].ContextMap()["reason"] != c.reason.String() {
				t.Errorf("logs %+v", logs)
			}
		})
	}
}

func TestNoTripBelowMinRequests(t *testing.T) {
	cases := []struct {
		name string
		s    breaker.Settings
		next behavior
	}{
		{"errors", noRetry(), fail},
		{"hit rate floor", breaker.Settings{RetryBudget: breaker.Off, HitRateFloor: 0.9}, miss},
		{"min requests 50", breaker.Settings{RetryBudget: breaker.Off, MinRequests: 50}, fail},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c.s, c.next)
			min := c.s.MinRequests
			if min == 0 {
				min = breaker.DefaultMinRequests
			}
			for i := 0; i < min-1; i++ {
				if _, _, err := e.get(); errors.Is(err, breaker.ErrOpen) {
					t.Fatalf("Get %d refused", i)
				}
			}
			if st := e.b.Stats(); st.State != "closed" || st.WindowCalls != uint64(min-1) {
				t.Fatalf("after %d calls: state %q, window %d", min-1, st.State, st.WindowCalls)
			}
			e.get() // the MinRequests-th
			if st := e.b.Stats(); st.State != "open" {
				t.Fatalf("after %d calls: state %q", min, st.State)
			}
		})
	}
}

func TestWindowRolls(t *testing.T) {
	// 9 failures (below MinRequests 10), a gap, then 9 successes and a
	// failure: 10/19 calls failed if the first failures are still in the
	// window, 1/10 if they aged out. Window 10s in 1s buckets.
	cases := []struct {
		gap  time.Duration
		open bool
	}{
		{0, true},
		{5 * time.Second, true},
		{9*time.Second + 900*time.Millisecond, true}, // bucket 0 is still in the window
		{10 * time.Second, false},                    // bucket 0 left it
		{time.Hour, false},
	}
	for _, c := range cases {
		t.Run(c.gap.String(), func(t *testing.T) {
			e := newEnv(t, breaker.Settings{RetryBudget: breaker.Off, MinRequests: 10}, fail)
			for i := 0; i < 9; i++ {
				e.get()
			}
			e.clock.Advance(c.gap)
			e.l2.set(hit)
			for i := 0; i < 9; i++ {
				e.get()
			}
			e.l2.set(fail)
			e.get()
			if st := e.b.Stats(); (st.State == "open") != c.open {
				t.Errorf("state %q, want open %v (%+v)", st.State, c.open, st)
			}
		})
	}
}

func TestHalfOpen(t *testing.T) {
	const openFor = 5 * time.Second
	cases := []struct {
		name   string
		s      breaker.Settings
		probes behavior // answers the probes, called with their index from 0
		slow   time.Duration
		state  string // after the probes
		reason breaker.Reason
		cause  string // of the last transition, regexp
	}{
		{
			name:   "all hit",
			s:      noRetry(),
			probes: hit,
			state:  "closed",
			cause:  `^5 probes succeeded, 5/5 hits$`,
		},
		{
			name: "a failure",
			s:    noRetry(),
			probes: func(ctx context.Context, i int64) (l2store.Item, bool, error) {
				if i == 2 {
					return fail(ctx, i)
				}
				return hit(ctx, i)
			},
			state:  "open",
			reason: breaker.ReasonErrors,
			cause:  `^probe failed: l2store: upstream unavailable: connection refused$`,
		},
		{
			name: "a timeout",
			s:    noRetry(),
			probes: func(context.Context, int64) (l2store.Item, bool, error) {
				return l2store.Item{}, false, context.DeadlineExceeded
			},
			state:  "open",
			reason: breaker.ReasonErrors,
			cause:  `^probe timed out: context deadline exceeded$`,
		},
		{
			name:   "slow",
			s:      noRetry(),
			probes: hit,
			slow:   200 * time.Millisecond,
			state:  "open",
			reason: breaker.ReasonSlow,
			cause:  `^probe took 200ms >= 100ms$`,
		},
		{
			// No baseline, no floor: misses are answers like any other.
			name:   "misses, no hit-rate threshold",
			s:      noRetry(),
			probes: miss,
			state:  "closed",
			cause:  `^5 probes succeeded, 0/5 hits$`,
		},
		{
			name:   "misses below the floor",
			s:      breaker.Settings{RetryBudget: breaker.Off, HitRateFloor: 0.5},
			probes: hitRate(2, 5), // floor(5 x 0.5) = 2 misses allowed; 3 miss
			state:  "open",
			reason: breaker.ReasonHitRate,
			cause:  `^probes missed 3 times, at most 2 of 5 may \(hit rate 0\.50 needed\)$`,
		},
		{
			name:   "misses within the floor",
			s:      breaker.Settings{RetryBudget: breaker.Off, HitRateFloor: 0.5},
			probes: hitRate(3, 5),
			state:  "closed",
			cause:  `^5 probes succeeded, 3/5 hits$`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.s.OpenFor = openFor
			e := newEnv(t, c.s, hit)
			e.trip(t)
			opened := e.clock.Now()
			calls := e.l2.calls.Load()

			// Refused until OpenFor has passed on the clock.
			e.clock.Advance(openFor - time.Nanosecond)
			if _, _, err := e.get(); !errors.Is(err, breaker.ErrOpen) {
				t.Fatalf("Get before OpenFor: %v, want ErrOpen", err)
			}
			if e.l2.calls.Load() != calls {
				t.Fatal("a refused Get reached the L2")
			}
			e.clock.Advance(time.Nanosecond)

			base := e.l2.calls.Load()
			e.l2.set(func(ctx context.Context, i int64) (l2store.Item, bool, error) {
				if c.slow > 0 {
					e.clock.Advance(c.slow)
				}
				return c.probes(ctx, i-base)
			})
			for i := 0; i < 5; i++ {
				if _, _, err := e.get(); errors.Is(err, breaker.ErrOpen) {
					t.Fatalf("probe %d refused: %v", i, err)
				}
				if e.b.Stats().State != "half-open" {
					break
				}
			}
			st := e.b.Stats()
			if st.State != c.state {
				t.Fatalf("state %q, want %q", st.State, c.state)
			}
			all := e.logs.All()
			last := all[len(all)-1]
			if got := last.ContextMap()["cause"]; !regexp.MustCompile(c.cause).MatchString(got.(string)) {
				t.Errorf("last transition's cause %q, want %s", got, c.cause)
			}
			if half := e.logs.FilterMessage("breaker half-open").All(); len(half) != 1 ||
				half[0].ContextMap()["cause"] != "open for 5s elapsed" {
				t.Errorf("half-open logs %+v", half)
			}
			switch c.state {
			case "closed":
				if st.Transitions != (breaker.ByState{Open: 1, HalfOpen: 1, Closed: 1}) || e.b.Degraded() {
					t.Errorf("transitions %+v, Degraded %v", st.Transitions, e.b.Degraded())
				}
				if _, _, err := e.get(); err != nil {
					t.Errorf("Get after closing: %v", err)
				}
			case "open":
				if st.Reason != c.reason || st.Transitions != (breaker.ByState{Open: 2, HalfOpen: 1}) {
					t.Errorf("reason %v transitions %+v", st.Reason, st.Transitions)
				}
				if want := e.clock.Now().Add(openFor); !st.OpenUntil.Equal(want) || !st.OpenUntil.After(opened.Add(openFor)) {
					t.Errorf("open until %v, want %v", st.OpenUntil, want)
				}
				_, _, err := e.get()
				switch {
				case c.reason == breaker.ReasonHitRate && err != nil:
					t.Errorf("Get after reopening for the hit rate: %v, want it let through (not as a probe)", err)
				case c.reason != breaker.ReasonHitRate && !errors.Is(err, breaker.ErrOpen):
					t.Errorf("Get after reopening: %v", err)
				}
			}
		})
	}
}

// The incident's recovery: the L2 restarts empty, the breaker opens on the
// hit-rate drop, writes (Call) refill it while open, and the probes close it
// once the hit rate is back.
func TestHitRateRecovery(t *testing.T) {
	e := newEnv(t, noRetry(), hitRate(49, 50))
	e.until(t, 1000, 20*time.Millisecond) // 20s at 98%: a baseline
	if st := e.b.Stats(); !st.BaselineReady || st.Baseline < 0.979 || st.Baseline > 0.981 {
		t.Fatalf("baseline %v ready %v, want 0.98", st.Baseline, st.BaselineReady)
	}
	e.l2.set(hitRate(3, 50))
	if n := e.until(t, 5000, 20*time.Millisecond); n == 5000 {
		t.Fatal("never opened")
	}

	// Probes: threshold 0.49, floor(5 x 0.51) = 2 misses allowed.
	e.clock.Advance(5 * time.Second)
	e.l2.set(miss)
	for i := 0; i < 3; i++ {
		e.get()
	}
	if st := e.b.Stats(); st.State != "open" || st.Reason != breaker.ReasonHitRate ||
		st.Cause != "probes missed 3 times, at most 2 of 5 may (hit rate 0.49 needed)" {
		t.Fatalf("after 3 missing probes: %+v", st)
	}

	// Writes go through while open for the hit rate, and are not probes.
	var wrote atomic.Int64
	for i := 0; i < 10; i++ {
		_, err := breaker.Call(e.b, context.Background(), func(context.Context) (string, error) {
			wrote.Add(1)
			return "OK", nil
		})
		if err != nil {
			t.Fatalf("Call while open for the hit rate: %v", err)
		}
	}
	if st := e.b.Stats(); wrote.Load() != 10 || st.State != "open" || st.Transitions.HalfOpen != 1 {
		t.Fatalf("wrote %d, %+v", wrote.Load(), st)
	}

	e.clock.Advance(5 * time.Second)
	e.l2.set(hitRate(4, 5)) // miss, then 4 hits
	for i := 0; i < 5; i++ {
		if _, _, err := e.get(); err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
	}
	if st := e.b.Stats(); st.State != "closed" || !st.BaselineReady {
		t.Fatalf("after the probes: %+v", st)
	}
	if all := e.logs.All(); all[len(all)-1].ContextMap()["cause"] != "5 probes succeeded, 4/5 hits" {
		t.Errorf("last log %+v", all[len(all)-1])
	}
}

// A hit rate that stays low for Baseline is the new normal: the baseline is
// forgotten and the breaker closes.
func TestBaselineForgotten(t *testing.T) {
	e := newEnv(t, breaker.Settings{RetryBudget: breaker.Off, Baseline: time.Minute}, hitRate(49, 50))
	e.until(t, 1000, 20*time.Millisecond)
	e.l2.set(hitRate(3, 50))
	if n := e.until(t, 5000, 20*time.Millisecond); n == 5000 {
		t.Fatal("never opened")
	}
	e.l2.set(miss)
	for i := 0; i < 11; i++ { // 55s: reopened on every round of probes
		e.clock.Advance(5 * time.Second)
		for j := 0; j < 3; j++ {
			e.get()
		}
		if st := e.b.Stats(); st.State != "open" {
			t.Fatalf("round %d: %+v", i, st)
		}
	}
	e.clock.Advance(6 * time.Second) // 61s since it opened: more than Baseline
	for i := 0; i < 5; i++ {
		e.get()
	}
	st := e.b.Stats()
	if st.State != "closed" || st.BaselineReady {
		t.Fatalf("after Baseline away from closed: %+v", st)
	}
}

func TestRefusedDoNotWait(t *testing.T) {
	e := newEnv(t, breaker.Settings{RetryBudget: breaker.Off, Probes: 2, Timeout: time.Hour}, hit)
	e.trip(t)
	// An L2 that hangs until the Get's context is done: a refused call
	// that reached it would hang for an hour.
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	e.l2.set(func(ctx context.Context, i int64) (l2store.Item, bool, error) {
		entered <- struct{}{}
		select {
		case <-release:
			return hit(ctx, i)
		case <-ctx.Done():
			return l2store.Item{}, false, ctx.Err()
		}
	})
	calls := e.l2.calls.Load()
	within(t, 10*time.Second, "a Get while open", func() {
		for i := 0; i < 100; i++ {
			if _, _, err := e.get(); !errors.Is(err, breaker.ErrOpen) {
				t.Errorf("Get while open: %v", err)
			}
		}
	})
	within(t, 10*time.Second, "a Call while open for errors", func() {
		_, err := breaker.Call(e.b, context.Background(), func(context.Context) (int, error) {
			t.Error("Call reached the L2")
			return 0, nil
		})
		if !errors.Is(err, breaker.ErrOpen) {
			t.Errorf("Call while open: %v", err)
		}
	})
	if got := e.l2.calls.Load(); got != calls {
		t.Fatalf("%d refused Gets reached the L2", got-calls)
	}

	// Half-open with both probes out: the third Get is refused at once.
	e.clock.Advance(5 * time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := e.get(); err != nil {
				t.Errorf("probe: %v", err)
			}
		}()
		<-entered
	}
	within(t, 10*time.Second, "a Get with all probes out", func() {
		_, _, err := e.get()
		if !errors.Is(err, breaker.ErrOpen) || !strings.Contains(err.Error(), "half-open") {
			t.Errorf("Get with all probes out: %v", err)
		}
		_, err = breaker.Call(e.b, context.Background(), func(context.Context) (int, error) { return 0, nil })
		if !errors.Is(err, breaker.ErrOpen) {
			t.Errorf("Call while half-open after errors: %v", err)
		}
	})
	if got := e.l2.calls.Load(); got != calls+2 {
		t.Fatalf("L2 calls %d, want the 2 probes", got-calls)
	}
	close(release)
	wg.Wait()
	if st := e.b.Stats(); st.State != "closed" {
		t.Fatalf("after 2 good probes: %+v", st)
	}
}

func TestTimeout(t *testing.T) {
	e := newEnv(t, breaker.Settings{Timeout: 20 * time.Millisecond}, nil)
	e.l2.set(func(ctx context.Context, _ int64) (l2store.Item, bool, error) {
		<-ctx.Done() // hangs until the breaker's deadline
		return l2store.Item{}, false, ctx.Err()
	})
	var err error
	within(t, 10*time.Second, "a Get on a hanging L2", func() { _, _, err = e.get() })
	if !errors.Is(err, breaker.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want ErrTimeout wrapping context.DeadlineExceeded", err)
	}
	st := e.b.Stats()
	if st.Timeouts != 1 || st.Failures != 1 || st.Calls != 1 || st.Retries != 0 {
		t.Fatalf("stats %+v: want 1 timeout, no retry (no time left)", st)
	}
	if e.l2.calls.Load() != 1 {
		t.Fatalf("L2 calls %d, want 1", e.l2.calls.Load())
	}

	// A caller's deadline shorter than Timeout bounds the call too.
	e2 := newEnv(t, breaker.Settings{Timeout: time.Hour}, nil)
	e2.l2.set(func(ctx context.Context, _ int64) (l2store.Item, bool, error) {
		<-ctx.Done()
		return l2store.Item{}, false, ctx.Err()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	within(t, 10*time.Second, "a Get with a caller deadline", func() {
		_, _, err = e2.b.Get(ctx, []byte("k"))
	})
	if !errors.Is(err, breaker.ErrTimeout) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
}

func TestOutcomes(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name     string
		ctx      context.Context
		next     behavior
		isFail   func(error) bool
		want     breaker.Stats // only the counters below are compared
		wantOpen bool          // after 100 of them
	}{
		{"hit", context.Background(), hit, nil, breaker.Stats{Calls: 1, Hits: 1}, false},
		{"miss", context.Background(), miss, nil, breaker.Stats{Calls: 1, Misses: 1}, false},
		{"wrongtype", context.Background(), func(context.Context, int64) (l2store.Item, bool, error) {
			return l2store.Item{}, false, l2store.ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value")
		}, nil, breaker.Stats{Calls: 1}, false},
		{"oom", context.Background(), func(context.Context, int64) (l2store.Item, bool, error) {
			return l2store.Item{}, false, l2store.ErrOOM
		}, nil, breaker.Stats{Calls: 1}, false},
		{"unavailable", context.Background(), fail, nil, breaker.Stats{Calls: 1, Failures: 1}, true},
		{"client left", canceled, func(ctx context.Context, _ int64) (l2store.Item, bool, error) {
			return l2store.Item{}, false, ctx.Err()
		}, nil, breaker.Stats{Calls: 1, Canceled: 1}, false},
		{"custom IsFailure", context.Background(), fail, func(error) bool { return false }, breaker.Stats{Calls: 1}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, breaker.Settings{RetryBudget: breaker.Off, IsFailure: c.isFail}, c.next)
			e.b.Get(c.ctx, []byte("k"))
			st := e.b.Stats()
			got := breaker.Stats{Calls: st.Calls, Hits: st.Hits, Misses: st.Misses, Failures: st.Failures, Canceled: st.Canceled}
			if got != c.want {
				t.Errorf("counters %+v, want %+v", got, c.want)
			}
			for i := 0; i < 99; i++ {
				e.b.Get(c.ctx, []byte("k"))
			}
			if st := e.b.Stats(); (st.State == "open") != c.wantOpen {
				t.Errorf("after 100: state %q", st.State)
			}
		})
	}
}

func TestRetryBudget(t *testing.T) {
	t.Run("bounded", func(t *testing.T) {
		// Failing 100% with the error ratio off: never opens, so the budget
		// alone bounds the retries.
		const n = 1000
		e := newEnv(t, breaker.Settings{ErrorRatio: breaker.Off}, fail)
		for i := 0; i < n; i++ {
			if _, _, err := e.get(); !errors.Is(err, l2store.ErrUnavailable) {
				t.Fatalf("Get %d: %v", i, err)
			}
		}
		calls := e.l2.calls.Load()
		st := e.b.Stats()
		bound := n*(1+breaker.DefaultRetryBudget) + breaker.DefaultRetryBurst
		if float64(calls) > bound || calls < n+n*breaker.DefaultRetryBudget {
			t.Errorf("L2 calls %d for %d Gets, want in [%v, %v]", calls, n, n*(1+breaker.DefaultRetryBudget), bound)
		}
		if st.Retries != uint64(calls-n) || st.Calls != uint64(calls) || st.State != "closed" {
			t.Errorf("stats %+v, L2 calls %d", st, calls)
		}
	})
	t.Run("a transient failure is retried", func(t *testing.T) {
		e := newEnv(t, breaker.Settings{}, func(ctx context.Context, i int64) (l2store.Item, bool, error) {
			if i == 0 {
				return fail(ctx, i)
			}
			return hit(ctx, i)
		})
		if _, found, err := e.get(); err != nil || !found {
			t.Fatalf("Get: %v %v, want the retry's hit", found, err)
		}
		if st := e.b.Stats(); st.Retries != 1 || st.Calls != 2 || st.Failures != 1 || st.Hits != 1 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("off", func(t *testing.T) {
		e := newEnv(t, breaker.Settings{RetryBudget: breaker.Off, ErrorRatio: breaker.Off}, fail)
		for i := 0; i < 100; i++ {
			e.get()
		}
		if st := e.b.Stats(); st.Retries != 0 || e.l2.calls.Load() != 100 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("not while open or half-open", func(t *testing.T) {
		e := newEnv(t, breaker.Settings{}, fail)
		e.trip(t)
		retries, calls := e.b.Stats().Retries, e.l2.calls.Load()
		for i := 0; i < 100; i++ {
			e.get()
		}
		if e.l2.calls.Load() != calls || e.b.Stats().Retries != retries {
			t.Fatalf("L2 calls or retries while open")
		}
		e.clock.Advance(5 * time.Second)
		e.get() // a failing probe: reopens, not retried
		if st := e.b.Stats(); e.l2.calls.Load() != calls+1 || st.Retries != retries || st.State != "open" {
			t.Fatalf("probe: L2 calls +%d, %+v", e.l2.calls.Load()-calls, st)
		}
	})
	t.Run("answers are not retried", func(t *testing.T) {
		e := newEnv(t, breaker.Settings{}, func(context.Context, int64) (l2store.Item, bool, error) {
			return l2store.Item{}, false, l2store.ReplyError("WRONGTYPE")
		})
		e.get()
		if e.l2.calls.Load() != 1 {
			t.Fatal("a WRONGTYPE reply was retried")
		}
	})
}

func TestCall(t *testing.T) {
	cases := []struct {
		name    string
		s       breaker.Settings
		trip    behavior
		allowed bool // while open
	}{
		{"open for errors", breaker.Settings{RetryBudget: breaker.Off}, fail, false},
		{"open for slow calls", breaker.Settings{RetryBudget: breaker.Off}, nil, false},
		{"open for the hit rate", breaker.Settings{RetryBudget: breaker.Off, HitRateFloor: 0.5}, miss, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c.s, hit)
			next := c.trip
			if next == nil {
				next = slow(e.clock, 200*time.Millisecond, hit)
			}
			e.l2.set(next)
			e.until(t, 100, 0)
			if !e.b.Degraded() {
				t.Fatal("did not open")
			}
			before := e.b.Stats()
			ran := false
			v, err := breaker.Call(e.b, context.Background(), func(context.Context) (string, error) {
				ran = true
				return "OK", nil
			})
			if ran != c.allowed || (err == nil) != c.allowed || (c.allowed && v != "OK") ||
				(!c.allowed && !errors.Is(err, breaker.ErrOpen)) {
				t.Fatalf("Call while open: ran %v, %q, %v", ran, v, err)
			}
			// Still open, not a probe, even once OpenFor has passed.
			e.clock.Advance(time.Minute)
			breaker.Call(e.b, context.Background(), func(context.Context) (int, error) { return 0, errDown })
			after := e.b.Stats()
			if after.State != "open" || after.Transitions != before.Transitions {
				t.Fatalf("Call moved the breaker: %+v", after)
			}
			if c.allowed && (after.Calls != before.Calls+2 || after.Failures != before.Failures+1) {
				t.Errorf("Calls while open not measured: %+v", after)
			}
		})
	}

	t.Run("closed: measured, can trip", func(t *testing.T) {
		e := newEnv(t, noRetry(), hit)
		calls := 0
		for i := 0; i < 20; i++ {
			_, err := breaker.Call(e.b, context.Background(), func(context.Context) (int, error) {
				calls++
				return 0, errDown
			})
			if !errors.Is(err, errDown) {
				t.Fatalf("Call %d: %v", i, err)
			}
		}
		st := e.b.Stats()
		if calls != 20 || st.State != "open" || st.Retries != 0 || st.Cause != "error ratio 1.00 >= 0.50 over 20 calls" {
			t.Fatalf("calls %d, %+v", calls, st)
		}
	})
}

func TestLogsOutsideTheLock(t *testing.T) {
	// A logger hook that calls back into the breaker would deadlock if
	// the breaker logged under its lock.
	e := newEnv(t, noRetry(), hit)
	e.trip(t)
	e.clock.Advance(5 * time.Second)
	e.l2.set(hit)
	for i := 0; i < 5; i++ {
		e.get()
	}
	type entry struct{ level, msg, cause string }
	var got []entry
	for _, l := range e.logs.All() {
		got = append(got, entry{l.Level.String(), l.Message, l.ContextMap()["cause"].(string)})
	}
	want := []entry{
		{"warn", "breaker opened", "error ratio 1.00 >= 0.50 over 20 calls"},
		{"info", "breaker half-open", "open for 5s elapsed"},
		{"info", "breaker closed", "5 probes succeeded, 5/5 hits"},
	}
	if len(got) != len(want) {
		t.Fatalf("logs %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("log %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if st := e.b.Stats(); st.Transitions != (breaker.ByState{Open: 1, HalfOpen: 1, Closed: 1}) {
		t.Errorf("transitions %+v", st.Transitions)
	}
}

func TestSettings(t *testing.T) {
	next := breaker.GetterFunc(func(context.Context, []byte) (l2store.Item, bool, error) { return value, true, nil })
	cases := []struct {
		name string
		s    breaker.Settings
		ok   bool
	}{
		{"zero", breaker.Settings{}, true},
		{"all off", breaker.Settings{ErrorRatio: breaker.Off, SlowCall: breaker.Off, SlowRatio: breaker.Off,
			HitRateDrop: breaker.Off, RetryBudget: breaker.Off, Timeout: breaker.Off}, true},
		{"ratios of 1", breaker.Settings{ErrorRatio: 1, SlowRatio: 1, HitRateFloor: 1, HitRateDrop: 1, RetryBudget: 1}, true},
		{"negative Window", breaker.Settings{Window: -time.Second}, false},
		{"Window shorter than Buckets", breaker.Settings{Window: 5, Buckets: 10}, false},
		{"negative Buckets", breaker.Settings{Buckets: -1}, false},
		{"negative MinRequests", breaker.Settings{MinRequests: -1}, false},
		{"ErrorRatio above 1", breaker.Settings{ErrorRatio: 1.5}, false},
		{"NaN SlowRatio", breaker.Settings{SlowRatio: nan()}, false},
		{"negative HitRateFloor", breaker.Settings{HitRateFloor: -0.1}, false},
		{"HitRateDrop above 1", breaker.Settings{HitRateDrop: 2}, false},
		{"negative Baseline", breaker.Settings{Baseline: -1}, false},
		{"negative OpenFor", breaker.Settings{OpenFor: -1}, false},
		{"negative Probes", breaker.Settings{Probes: -1}, false},
		{"too many Probes", breaker.Settings{Probes: 1 << 20}, false},
		{"RetryBudget above 1", breaker.Settings{RetryBudget: 1.1}, false},
		{"negative RetryBurst", breaker.Settings{RetryBurst: -1}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := breaker.New(next, c.s)
			if c.ok != (err == nil) || (err != nil && !errors.Is(err, breaker.ErrInvalidSettings)) {
				t.Fatalf("New: %v, want ok %v", err, c.ok)
			}
			if b != nil && b.Stats().State != "closed" {
				t.Fatalf("new breaker %+v", b.Stats())
			}
		})
	}
	if _, err := breaker.New(nil, breaker.Settings{}); !errors.Is(err, breaker.ErrInvalidSettings) {
		t.Errorf("New(nil): %v", err)
	}
}

func nan() float64 { z := 0.0; return z / z }

// TestConcurrent drives Gets, Calls and Stats from many goroutines while
// the clock moves and the L2 flips between healthy and failing, and checks
// that every call was either refused or measured once.
func TestConcurrent(t *testing.T) {
	e := newEnv(t, breaker.Settings{MinRequests: 10, OpenFor: 50 * time.Millisecond, Probes: 3}, hit)
	var phase atomic.Int64
	e.l2.set(func(ctx context.Context, i int64) (l2store.Item, bool, error) {
		switch phase.Load() % 4 {
		case 0:
			return hit(ctx, i)
		case 1:
			return fail(ctx, i)
		case 2:
			return hitRate(1, 3)(ctx, i)
		default:
			return slow(e.clock, 200*time.Millisecond, hit)(ctx, i)
		}
	})
	const workers, ops = 8, 2000
	var (
		wg                  sync.WaitGroup
		refused, fnCalls    atomic.Int64
		getsOK, getsCounted atomic.Int64
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < ops; i++ {
				switch {
				case i%10 == 9:
					_, err := breaker.Call(e.b, context.Background(), func(context.Context) (int, error) {
						fnCalls.Add(1)
						return 0, nil
					})
					if errors.Is(err, breaker.ErrOpen) {
						refused.Add(1)
					}
				case i%100 == 50:
					e.b.Stats()
					e.b.Degraded()
				default:
					_, _, err := e.get()
					if errors.Is(err, breaker.ErrOpen) {
						refused.Add(1)
					} else {
						getsCounted.Add(1)
						if err == nil {
							getsOK.Add(1)
						}
					}
				}
				if w == 0 && i%50 == 0 {
					phase.Add(1)
				}
				if w == 1 {
					e.clock.Advance(5 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	st := e.b.Stats()
	if got, want := st.Calls, uint64(e.l2.calls.Load()+fnCalls.Load()); got != want {
		t.Errorf("Stats.Calls %d, L2 Gets + Calls %d", got, want)
	}
	if st.Reads != uint64(e.l2.calls.Load()) {
		t.Errorf("Stats.Reads %d, L2 Gets %d", st.Reads, e.l2.calls.Load())
	}
	if st.Rejected != uint64(refused.Load()) {
		t.Errorf("Stats.Rejected %d, refused %d", st.Rejected, refused.Load())
	}
	if st.Calls-st.Retries != uint64(getsCounted.Load()+fnCalls.Load()) {
		t.Errorf("calls %d - retries %d != Gets let through %d + Calls %d", st.Calls, st.Retries, getsCounted.Load(), fnCalls.Load())
	}
	if o := st.Opens; o.Errors+o.Slow+o.HitRate != st.Transitions.Open {
		t.Errorf("opens %+v, transitions %+v", o, st.Transitions)
	}
	if tr := st.Transitions; tr.Open == 0 || tr.HalfOpen > tr.Open || tr.Closed > tr.HalfOpen {
		t.Errorf("transitions %+v", tr)
	}
	if n := len(e.logs.All()); uint64(n) != st.Transitions.Open+st.Transitions.HalfOpen+st.Transitions.Closed {
		t.Errorf("%d logs for transitions %+v", n, st.Transitions)
	}
	t.Logf("%+v", st)
}

// A probe whose L2 call panics counts as failed: its slot is not lost.
func TestPanickingProbe(t *testing.T) {
	e := newEnv(t, breaker.Settings{RetryBudget: breaker.Off, Probes: 1}, hit)
	e.trip(t)
	e.clock.Advance(5 * time.Second)
	e.l2.set(func(context.Context, int64) (l2store.Item, bool, error) { panic("boom") })
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want the L2's panic", r)
			}
		}()
		e.get()
	}()
	st := e.b.Stats()
	if st.State != "open" || st.Cause != "probe failed: breaker: the L2 call panicked" {
		t.Fatalf("after a panicking probe: %+v", st)
	}
	e.clock.Advance(5 * time.Second)
	e.l2.set(hit)
	if _, _, err := e.get(); err != nil || e.b.Stats().State != "closed" {
		t.Fatalf("next probe: %v, %+v", err, e.b.Stats())
	}
}

// TestCallTimeout: a Call whose fn ignores its context (go-redis's
// autopipeliner does) still returns at CallTimeout, counted as a timeout;
// fn finishes on its own later, and a panic in it becomes an error.
func TestCallTimeout(t *testing.T) {
	e := newEnv(t, breaker.Settings{CallTimeout: 20 * time.Millisecond}, hit)
	release := make(chan struct{})
	finished := make(chan struct{})
	var err error
	within(t, 10*time.Second, "a Call on a hanging L2", func() {
		_, err = breaker.Call(e.b, context.Background(), func(context.Context) (int, error) {
			defer close(finished)
			<-release // ignores ctx
			return 1, nil
		})
	})
	if !errors.Is(err, breaker.ErrTimeout) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
	if st := e.b.Stats(); st.Timeouts != 1 || st.Failures != 1 || st.Calls != 1 {
		t.Fatalf("stats %+v: want the call counted as one timeout", st)
	}
	close(release)
	<-finished

	_, err = breaker.Call(e.b, context.Background(), func(context.Context) (int, error) { panic("boom") })
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("a panicking Call returned %v, want an error naming the panic", err)
	}
	if st := e.b.Stats(); st.Failures != 2 {
		t.Fatalf("stats %+v: want the panic counted as a failure", st)
	}

	// Off: fn runs in the caller's goroutine and is waited for.
	e2 := newEnv(t, breaker.Settings{CallTimeout: breaker.Off}, hit)
	v, err := breaker.Call(e2.b, context.Background(), func(context.Context) (int, error) { return 7, nil })
	if v != 7 || err != nil {
		t.Fatalf("Call with CallTimeout Off = %d, %v", v, err)
	}
}

// TestCollapseCaughtInNewestBucket: an L2 that empties at full load is
// caught after the last MinRequests Gets show it, not once its misses
// weigh half the window.
func TestCollapseCaughtInNewestBucket(t *testing.T) {
	e := newEnv(t, noRetry(), hitRate(49, 50))
	e.until(t, 1000, 20*time.Millisecond) // 20s at 98%: a baseline, a full window
	e.clock.Advance(time.Second)          // a fresh bucket (1s wide)
	e.l2.set(miss)
	n := e.until(t, 1000, time.Millisecond)
	if n > 20 {
		t.Fatalf("opened after %d misses, want MinRequests (20): the window alone needs hundreds", n)
	}
	if st := e.b.Stats(); st.Reason != breaker.ReasonHitRate {
		t.Fatalf("%+v", st)
	}
}

// TestOpenForHitRateThenFailing: while open for the hit rate Gets go
// through, judged for errors and latency as while closed; once they fail
// as an opening for errors would need, calls are refused.
func TestOpenForHitRateThenFailing(t *testing.T) {
	e := newEnv(t, noRetry(), hitRate(49, 50))
	e.until(t, 1000, 20*time.Millisecond)
	e.l2.set(miss)
	if n := e.until(t, 5000, time.Millisecond); n == 5000 {
		t.Fatal("never opened")
	}
	if _, _, err := e.get(); err != nil {
		t.Fatalf("Get while open for the hit rate: %v", err)
	}
	// One failure (a connection to the old server) is not an outage.
	e.l2.set(fail)
	if _, _, err := e.get(); err == nil || errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("failing L2: Get = %v, want its failure", err)
	}
	e.l2.set(miss)
	if _, _, err := e.get(); err != nil {
		t.Fatalf("after one failure: %v, want Gets still let through", err)
	}
	// MinRequests calls, half of them failing: refused from then on.
	e.l2.set(fail)
	refusedAt := -1
	for i := 0; i < 40 && refusedAt < 0; i++ {
		if _, _, err := e.get(); errors.Is(err, breaker.ErrOpen) {
			refusedAt = i
		}
	}
	if refusedAt < 0 {
		t.Fatalf("never refused: %+v", e.b.Stats())
	}
	calls := e.l2.calls.Load()
	if _, _, err := e.get(); !errors.Is(err, breaker.ErrOpen) || e.l2.calls.Load() != calls {
		t.Fatalf("after the failures: %v (L2 calls %d -> %d), want refused", err, calls, e.l2.calls.Load())
	}
	if _, err := breaker.Call(e.b, context.Background(), func(context.Context) (int, error) { return 0, nil }); !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("Call: %v, want refused", err)
	}
	st := e.b.Stats()
	if st.Reason != breaker.ReasonErrors || !strings.HasPrefix(st.Cause, "error ratio") || st.Opens.Errors != 1 {
		t.Fatalf("%+v", st)
	}
	if logs := e.logs.FilterMessage("breaker opened").All(); len(logs) != 2 {
		t.Fatalf("%d 'breaker opened' logs, want 2 (the escalation logged)", len(logs))
	}
}

// TestRecent: the last MinRequests calls and Gets, as a ring.
func TestRecentRing(t *testing.T) {
	e := newEnv(t, noRetry(), hitRate(49, 50))
	e.until(t, 1000, 20*time.Millisecond) // a baseline at 98%, a full window
	// Failures at the end of a long healthy window: caught once the last
	// 20 calls are half failures, long before the window's ratio is.
	e.l2.set(fail)
	n := e.until(t, 1000, time.Millisecond)
	if n > 10 {
		t.Fatalf("opened after %d failures, want at most 10 (half of the last 20 calls)", n)
	}
	if st := e.b.Stats(); st.Reason != breaker.ReasonErrors {
		t.Fatalf("%+v", st)
	}
}

// TestReconfigure: reloaded thresholds apply from the next judgement.
func TestReconfigure(t *testing.T) {
	e := newEnv(t, noRetry(), nil)
	// 40% errors: below the default 0.5, above a reloaded 0.3.
	e.l2.set(func(ctx context.Context, i int64) (l2store.Item, bool, error) {
		if i%5 < 2 {
			return fail(ctx, i)
		}
		return hit(ctx, i)
	})
	if n := e.until(t, 100, time.Millisecond); n != 100 {
		t.Fatalf("opened at 40%% errors with ErrorRatio 0.5 (after %d)", n)
	}
	if err := e.b.Reconfigure(breaker.Settings{ErrorRatio: 2}); err == nil {
		t.Fatal("Reconfigure accepted ErrorRatio 2")
	}
	if err := e.b.Reconfigure(breaker.Settings{ErrorRatio: 0.3, RetryBudget: breaker.Off}); err != nil {
		t.Fatal(err)
	}
	if n := e.until(t, 100, time.Millisecond); n == 100 {
		t.Fatal("never opened after ErrorRatio was reloaded to 0.3")
	}
	if st := e.b.Stats(); !strings.Contains(st.Cause, ">= 0.30") {
		t.Fatalf("cause %q, want the reloaded threshold", st.Cause)
	}
}
