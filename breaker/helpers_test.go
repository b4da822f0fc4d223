package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidecache/sidecache/breaker"
	"github.com/sidecache/sidecache/l2store"
)

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// behavior answers the i-th call (from 0) to the fake L2.
type behavior func(ctx context.Context, i int64) (l2store.Item, bool, error)

// fakeL2 is the next tier: it counts calls and answers with a behavior
// that the test can change.
type fakeL2 struct {
	calls atomic.Int64
	mu    sync.Mutex
	b     behavior
}

func (f *fakeL2) set(b behavior) {
	f.mu.Lock()
	f.b = b
	f.mu.Unlock()
}

func (f *fakeL2) get(ctx context.Context, _ []byte) (l2store.Item, bool, error) {
	i := f.calls.Add(1) - 1
	f.mu.Lock()
	b := f.b
	f.mu.Unlock()
	return b(ctx, i)
}

var (
	errDown = fmt.Errorf("%w: connection refused", l2store.ErrUnavailable)
	value   = l2store.Item{Value: []byte("v")}
)

func hit(context.Context, int64) (l2store.Item, bool, error)  { return value, true, nil }
func miss(context.Context, int64) (l2store.Item, bool, error) { return l2store.Item{}, false, nil }
func fail(context.Context, int64) (l2store.Item, bool, error) { return l2store.Item{}, false, errDown }

// slow answers like b after moving the clock on by d.
func slow(c *fakeClock, d time.Duration, b behavior) behavior {
	return func(ctx context.Context, i int64) (l2store.Item, bool, error) {
		c.Advance(d)
		return b(ctx, i)
	}
}

// hitRate answers hits and misses so that exactly hits of every n calls
// hit (the first n-hits of each n miss).
func hitRate(hits, n int64) behavior {
	return func(ctx context.Context, i int64) (l2store.Item, bool, error) {
		if i%n >= n-hits {
			return hit(ctx, i)
		}
		return miss(ctx, i)
	}
}

// env is a Breaker on a fake clock and a fake L2, logging to an observer.
type env struct {
	b     *breaker.Breaker
	clock *fakeClock
	l2    *fakeL2
	logs  *observer.ObservedLogs
}

func newEnv(t testing.TB, s breaker.Settings, b behavior) *env {
	t.Helper()
	e := &env{clock: newClock(), l2: &fakeL2{b: b}}
	core, logs := observer.New(zap.DebugLevel)
	e.logs = logs
	s.Now = e.clock.Now
	s.Logger = zap.New(core)
	br, err := breaker.New(breaker.GetterFunc(e.l2.get), s)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.b = br
	return e
}

func (e *env) get() (l2store.Item, bool, error) {
	return e.b.Get(context.Background(), []byte("k"))
}

// until runs up to n Gets, moving the clock on by step after each, and
// returns how many ran before the breaker opened (n if it did not): the
// number of the first Get refused, or let through only because the
// breaker is open for the hit rate.
func (e *env) until(t testing.TB, n int, step time.Duration) int {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, _, err := e.get(); errors.Is(err, breaker.ErrOpen) {
			return i
		}
		if e.b.Degraded() {
			return i + 1
		}
		e.clock.Advance(step)
	}
	return n
}

// trip opens the breaker with failures and checks it did.
func (e *env) trip(t testing.TB) {
	t.Helper()
	e.l2.set(fail)
	for i := 0; i < 1000 && !e.b.Degraded(); i++ {
		e.get()
	}
	if st := e.b.Stats(); st.State != "open" {
		t.Fatalf("state %q after failures, want open", st.State)
	}
}

// noRetry is the base of most tests: retries would add calls to the window.
func noRetry() breaker.Settings { return breaker.Settings{RetryBudget: breaker.Off} }

// within runs f and fails the test if it does not return within d (a bound
// on a hang, not a measurement).
func within(t testing.TB, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}
