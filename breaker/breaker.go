package breaker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"

	"github.com/sidecache/sidecache/l2store"
)

// ErrOpen is returned, wrapped with the cause of the opening, when the
// breaker refuses a call: while open, and while half-open for a Get when all
// probes are out (or a Call after an opening for errors or latency).
var ErrOpen = errors.New("breaker: open")

// ErrTimeout is returned, wrapping the L2's error (usually
// context.DeadlineExceeded), when a Get ran out of Settings.Timeout or its
// context's deadline.
var ErrTimeout = errors.New("breaker: L2 timeout")

// Getter is the L2's read: l2store.Store.Get.
//
// Get returns key's value; found == false with a nil error is a miss. It
// must return soon after ctx is done. key is only read during the call.
type Getter interface {
	Get(ctx context.Context, key []byte) (l2store.Item, bool, error)
}

// GetterFunc adapts a function to a Getter.
type GetterFunc func(ctx context.Context, key []byte) (l2store.Item, bool, error)

// Get calls f(ctx, key).
func (f GetterFunc) Get(ctx context.Context, key []byte) (l2store.Item, bool, error) {
	return f(ctx, key)
}

// Breaker guards the calls to the L2. It is safe for concurrent use.
type Breaker struct {
	next Getter
	s    Settings // defaults applied
	cb   *gobreaker.TwoStepCircuitBreaker[struct{}]

	// state mirrors the state (a gobreaker.State), for Degraded without
	// the lock. Written under mu.
	state atomic.Int32

	// mu guards everything below. gobreaker is only ever called with mu
	// held, so its OnStateChange callback (onStateChange) runs with mu
	// held too.
	mu         sync.Mutex
	gen        uint64 // incremented on every state change
	win        *window
	recent     *recent   // the last MinRequests calls and Gets (closed, or open for the hit rate)
	openUntil  time.Time // on s.Now: when the open breaker lets probes through
	leftClosed time.Time // when the breaker last left the closed state
	last       cause     // cause of the last opening
	refusal    *refusal  // returned (as an error) by refused calls
	probeHits  int       // Gets among the half-open probes that found their key
	probeMiss  int       // Gets among the half-open probes that missed
	tokens     float64   // retry budget
	c          statCounters
	why        cause     // cause of the state change gobreaker may make in the current call
	at         time.Time // time of that call
	pending    []transition
}

// transition is a state change waiting to be logged outside the lock.
type transition struct {
	from, to gobreaker.State
	cause    cause
	openFor  time.Duration
}

// statCounters are Stats' counters.
type statCounters struct {
	calls, reads, rejected, retries, failures, timeouts, slow, hits, misses, canceled uint64
	opens                                                                             ByReason
	transitions                                                                       ByState
}

// errTrip is reported to gobreaker for the outcome that opens the breaker;
// errExcluded for an outcome that is not counted (the client left).
var (
	errTrip     = errors.New("breaker: trip")
	errExcluded = errors.New("breaker: excluded")
	errPanic    = errors.New("breaker: the L2 call panicked")
)

// New returns a closed Breaker in front of next.
func New(next Getter, s Settings) (*Breaker, error) {
	if next == nil {
		return nil, fmt.Errorf("%w: nil Getter", ErrInvalidSettings)
	}
	s, err := s.withDefaults()
	if err != nil {
		return nil, err
	}
	b := &Breaker{next: next, s: s}
	now := s.Now()
	b.win = newWindow(s.Window, s.Buckets, s.Baseline, now)
	b.recent = newRecent(s.MinRequests)
	if s.RetryBudget > 0 {
		b.tokens = float64(s.RetryBurst) // starts full
	}
	b.state.Store(int32(gobreaker.StateClosed))
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		MaxRequests: uint32(s.Probes),
		// While closed, gobreaker is only called to open: its Counts play
		// no part (the window judges), ReadyToTrip opens on the one
		// failure reported. Interval 0: nothing of it runs on its clock
		// while closed.
		Interval:    0,
		ReadyToTrip: func(gobreaker.Counts) bool { return true },
		// Open -> half-open is ours to time, on s.Now: gobreaker may move
		// on 1ns after opening, but it only looks when we call Allow,
		// which we do while open only once openUntil has passed.
		Timeout:       time.Nanosecond,
		OnStateChange: b.onStateChange,
		IsSuccessful:  func(err error) bool { return err == nil },
		IsExcluded:    func(err error) bool { return err == errExcluded },
	})
	return b, nil
}

// ticket is an admitted call.
type ticket struct {
	gen   uint64
	kind  ticketKind
	done  func(error) // gobreaker's, for a probe
	start time.Time
}

type ticketKind int

const (
	closedCall ticketKind = iota // let through while closed: judged by the window
	probeCall                    // a half-open probe, admitted by gobreaker
	openCall                     // a Call let through while open for the hit rate: counted only
)

// outcome classifies a call's result.
type outcome int

const (
	answered outcome = iota // the L2 answered (a value, a miss, or an error reply)
	failed                  // the L2 could not answer
	timedOut                // the deadline passed
	canceled                // the client left: not counted
)

// Get reads key from the L2 through the breaker. While open (and while
// half-open with all probes out) it returns an error wrapping ErrOpen at
// once, without calling next. Otherwise it calls next with a context
// bounded by Settings.Timeout, measures the outcome and, on a failure,
// retries once within the same deadline if the breaker is still closed and
// the retry budget allows. A timeout returns an error wrapping ErrTimeout.
func (b *Breaker) Get(ctx context.Context, key []byte) (l2store.Item, bool, error) {
	t, err := b.admit(true)
	if err != nil {
		return l2store.Item{}, false, err
	}
	cctx, cancel := b.bound(ctx)
	defer cancel()
	finished := false
	defer func() {
		if !finished { // next panicked: a failure (a probe must not hold its slot forever)
			b.finish(t, failed, true, false, errPanic, false)
		}
	}()
	for {
		item, found, err := b.next.Get(cctx, key)
		o := classify(b.s.IsFailure, ctx, cctx, err)
		retry, again := b.finish(t, o, true, found, err, cctx.Err() == nil)
		if !again {
			finished = true
			if o == timedOut {
				err = fmt.Errorf("%w: %w", ErrTimeout, err)
			}
			return item, found, err
		}
		t = retry
	}
}

// Call runs fn, a call to the L2 other than a Get (a pass-through command,
// a write), through b. It is refused with an error wrapping ErrOpen while
// the breaker is open or half-open after an opening for errors or latency;
// after an opening for a hit-rate collapse it runs (the L2 answers, and
// writes are how it refills) without being a probe. The caller waits at
// most Settings.CallTimeout (see there); fn's context carries that
// deadline too. Its outcome is measured (error, timeout, slow) and never
// retried. Blocking commands (BLPOP, XREAD BLOCK, ...) must not go through
// Call: their wait would count as slow, and time out.
func Call[T any](b *Breaker, ctx context.Context, fn func(ctx context.Context) (T, error)) (T, error) {
	t, err := b.admit(false)
	if err != nil {
		var zero T
		return zero, err
	}
	if b.s.CallTimeout < 0 {
		finished := false
		defer func() {
			if !finished { // fn panicked
				b.finish(t, failed, false, false, errPanic, false)
			}
		}()
		v, err := fn(ctx)
		finished = true
		b.finish(t, classify(b.s.IsFailure, ctx, ctx, err), false, false, err, false)
		return v, err
	}
	cctx, cancel := context.WithTimeout(ctx, b.s.CallTimeout)
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- result{err: fmt.Errorf("%w: %v", errPanic, r)}
			}
		}()
		v, err := fn(cctx)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		o := classify(b.s.IsFailure, ctx, cctx, r.err)
		cancel()
		b.finish(t, o, false, false, r.err, false)
		return r.v, r.err
	case <-cctx.Done():
		o := classify(b.s.IsFailure, ctx, cctx, cctx.Err())
		cancel()
		b.finish(t, o, false, false, cctx.Err(), false)
		var zero T
		if o == timedOut {
			return zero, fmt.Errorf("%w: %w", ErrTimeout, cctx.Err())
		}
		return zero, cctx.Err()
	}
}

// Reconfigure applies a reloaded configuration's thresholds to a running
// breaker: ErrorRatio, SlowCall, SlowRatio, HitRateFloor, HitRateDrop,
// OpenFor and RetryBudget (zero selects the default, Off turns off, as in
// New). The other fields keep the values New gave them (the window, the
// probes, the timeouts and the functions need a restart). They apply from
// the next judgement; an open breaker keeps its current open period.
func (b *Breaker) Reconfigure(s Settings) error {
	b.mu.Lock()
	cur := b.s
	b.mu.Unlock()
	s.Window, s.Buckets, s.MinRequests, s.Baseline = cur.Window, cur.Buckets, cur.MinRequests, cur.Baseline
	s.Probes, s.Timeout, s.CallTimeout, s.RetryBurst = cur.Probes, cur.Timeout, cur.CallTimeout, cur.RetryBurst
	s.IsFailure, s.Now, s.Logger = cur.IsFailure, cur.Now, cur.Logger
	ns, err := s.withDefaults()
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.s.ErrorRatio, b.s.SlowCall, b.s.SlowRatio = ns.ErrorRatio, ns.SlowCall, ns.SlowRatio
	b.s.HitRateFloor, b.s.HitRateDrop = ns.HitRateFloor, ns.HitRateDrop
	b.s.OpenFor, b.s.RetryBudget = ns.OpenFor, ns.RetryBudget
	return nil
}

// Degraded reports whether the breaker is not closed (open or half-open):
// the fallback then rations misses.
func (b *Breaker) Degraded() bool {
	return gobreaker.State(b.state.Load()) != gobreaker.StateClosed
}

// bound returns ctx limited to Timeout from now (real time: contexts run on
// it).
func (b *Breaker) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if b.s.Timeout < 0 {
		return ctx, func() {}
	}
	deadline := time.Now().Add(b.s.Timeout)
	if d, ok := ctx.Deadline(); ok && !d.After(deadline) {
		return ctx, func() {}
	}
	return context.WithDeadline(ctx, deadline)
}

// classify sorts a call's error. parent is the caller's context, cctx the
// one the call ran with.
func classify(isFailure func(error) bool, parent, cctx context.Context, err error) outcome {
	switch {
	case err == nil:
		return answered
	case errors.Is(err, context.Canceled) || parent.Err() == context.Canceled:
		return canceled
	case errors.Is(err, context.DeadlineExceeded) || cctx.Err() == context.DeadlineExceeded:
		return timedOut
	case isFailure(err):
		return failed
	default:
		return answered
	}
}

// admit lets a call through or refuses it. get is true for a Get's first
// attempt, false for a Call.
func (b *Breaker) admit(get bool) (ticket, error) {
	b.mu.Lock()
	now := b.s.Now()
	var (
		t   ticket
		err error
	)
	lostData := b.last.reason() == ReasonHitRate
	switch st := gobreaker.State(b.state.Load()); {
	case st != gobreaker.StateClosed && lostData && (!get || (st == gobreaker.StateOpen && now.Before(b.openUntil))):
		// Open for a hit-rate collapse: the L2 answers but has lost its
		// data. Calls and Gets go through, not as probes: its hits are
		// answers, writes refill it, and the fallback rations the misses.
		t = ticket{gen: b.gen, kind: openCall}
	case !get && st != gobreaker.StateClosed:
		err = b.refusal
	case st == gobreaker.StateOpen && now.Before(b.openUntil):
		err = b.refusal
	default:
		if st == gobreaker.StateOpen {
			b.why = cause{kind: causeOpenElapsed, d: b.s.OpenFor}
		}
		t, err = b.allow(now)
		if err != nil && lostData {
			t, err = ticket{gen: b.gen, kind: openCall}, nil // all probes out: not one
		}
		if err == nil && get && b.s.RetryBudget > 0 && t.kind == closedCall {
			b.tokens = math.Min(b.tokens+b.s.RetryBudget, float64(b.s.RetryBurst))
		}
	}
	if err != nil {
		b.c.rejected++
	}
	t.start = now
	b.unlock()
	return t, err
}

// allow lets a call through: at once while closed, through gobreaker
// otherwise (which moves an open breaker to half-open, and refuses a call
// when all probes are out). Called with mu held.
func (b *Breaker) allow(now time.Time) (ticket, error) {
	if gobreaker.State(b.state.Load()) == gobreaker.StateClosed {
		return ticket{gen: b.gen, kind: closedCall}, nil
	}
	b.at = now
	done, err := b.cb.Allow()
	b.why = cause{}
	if err != nil {
		// ErrTooManyRequests (half-open, all probes out) or ErrOpenState
		// (within gobreaker's 1ns open period).
		return ticket{}, b.refusal
	}
	return ticket{gen: b.gen, kind: probeCall, done: done}, nil
}

// trip opens the closed breaker for why: gobreaker, closed, lets a call
// through and opens on its failure (ReadyToTrip is always true). Called
// with mu held.
func (b *Breaker) trip(now time.Time, why cause) {
	b.at, b.why = now, why
	if done, err := b.cb.Allow(); err == nil {
		done(errTrip)
	}
	b.why = cause{}
}

// finish measures an admitted call. get is true for a Get, found its
// result; canRetry is true if a failed Get still has time to be retried. It
// returns the ticket of the retry and true if the Get is to be retried.
func (b *Breaker) finish(t ticket, o outcome, get, found bool, err error, canRetry bool) (ticket, bool) {
	b.mu.Lock()
	defer b.unlock()
	now := b.s.Now()
	elapsed := now.Sub(t.start)

	var c counts
	if o != canceled {
		c.calls = 1
		if b.s.SlowCall >= 0 && elapsed >= b.s.SlowCall {
			c.slow = 1
		}
		switch {
		case o == failed:
			c.failures = 1
		case o == timedOut:
			c.failures, c.timeouts = 1, 1
		case get && err == nil && found:
			c.hits = 1
		case get && err == nil:
			c.misses = 1
		}
	}
	b.count(c, o == canceled)
	if get {
		b.c.reads++
	}

	if t.gen == b.gen && t.kind == openCall && o != canceled && b.last.reason() == ReasonHitRate {
		// Calls let through while open for the hit rate are judged as in
		// the closed state, for errors and latency only.
		b.win.record(now, c)
		b.recent.add(now, c)
	}
	if why, bad := b.openCallsVerdict(now, t); bad {
		// The L2 that had lost its data now fails too: from now on calls
		// are refused as after an opening for errors or latency.
		b.last = why
		b.refusal = &refusal{halfOpen: gobreaker.State(b.state.Load()) == gobreaker.StateHalfOpen, cause: b.last}
		if why.reason() == ReasonSlow {
			b.c.opens.Slow++
		} else {
			b.c.opens.Errors++
		}
		st := gobreaker.State(b.state.Load())
		b.pending = append(b.pending, transition{from: st, to: gobreaker.StateOpen, cause: b.last, openFor: b.s.OpenFor})
	}
	if t.gen != b.gen || t.kind == openCall {
		// Let through in an earlier state (its outcome says nothing about
		// this one), or let through while open for the hit rate: counted
		// only.
		return ticket{}, false
	}
	if t.kind == probeCall {
		b.at = now
		b.probeDone(t, o, c, elapsed, err)
		b.why = cause{}
		return ticket{}, false
	}
	if o == canceled {
		return ticket{}, false
	}
	b.win.record(now, c)
	b.recent.add(now, c)
	if v, trip := b.verdict(now); trip {
		b.trip(now, v)
		return ticket{}, false
	}
	if !get || !canRetry || c.failures == 0 || c.timeouts > 0 || b.tokens < 1 {
		return ticket{}, false
	}
	b.tokens--
	b.c.retries++
	return ticket{gen: b.gen, kind: closedCall, start: now}, true
}

// probeDone judges a half-open probe: any failure or slow probe opens the
// breaker again, and so does one miss too many; the last of Probes
// successes closes it (gobreaker counts them).
func (b *Breaker) probeDone(t ticket, o outcome, c counts, elapsed time.Duration, err error) {
	switch {
	case o == canceled:
		t.done(errExcluded) // frees its probe slot
		return
	case c.failures > 0:
		b.why = cause{kind: causeProbeFailed, err: err, timeout: o == timedOut}
		t.done(errTrip)
		return
	case c.slow > 0:
		b.why = cause{kind: causeProbeSlow, d: elapsed, slowCall: b.s.SlowCall}
		t.done(errTrip)
		return
	}
	b.probeHits += int(c.hits)
	b.probeMiss += int(c.misses)
	threshold := b.threshold(b.at)
	allowed := int(math.Floor(float64(b.s.Probes)*(1-threshold) + 1e-9))
	if b.probeMiss > allowed {
		b.why = cause{kind: causeProbeMisses, n: uint64(b.s.Probes), misses: b.probeMiss, allowed: allowed, threshold: threshold}
		t.done(errTrip)
		return
	}
	b.why = cause{kind: causeProbesOK, n: uint64(b.s.Probes), count: uint64(b.probeHits)}
	t.done(nil)
}

// count adds a call's outcome to the Stats counters.
func (b *Breaker) count(c counts, canceled bool) {
	b.c.calls++
	if canceled {
		b.c.canceled++
	}
	b.c.failures += c.failures
	b.c.timeouts += c.timeouts
	b.c.slow += c.slow
	b.c.hits += c.hits
	b.c.misses += c.misses
}

// verdict judges the window (closed state): the cause to open for, if any.
// It judges the whole window, then the last MinRequests calls and Gets
// alone (see recent).
func (b *Breaker) verdict(now time.Time) (cause, bool) {
	if why, ok := b.judge(now, b.win.total, true); ok {
		return why, true
	}
	b.recent.expire(now, b.s.Window)
	return b.judge(now, b.recent.c, true)
}

// openCallsVerdict reports whether the calls let through while open for
// the hit rate (t is one of them) show errors or latency to open for.
func (b *Breaker) openCallsVerdict(now time.Time, t ticket) (cause, bool) {
	if t.gen != b.gen || t.kind != openCall || b.last.reason() != ReasonHitRate {
		return cause{}, false
	}
	if why, ok := b.judge(now, b.win.total, false); ok {
		return why, true
	}
	b.recent.expire(now, b.s.Window)
	return b.judge(now, b.recent.c, false)
}

// judge applies the thresholds to the outcomes tot; the hit-rate ones only
// if hitRate.
func (b *Breaker) judge(now time.Time, tot counts, hitRate bool) (cause, bool) {
	s, minReq := &b.s, uint64(b.s.MinRequests)
	if tot.calls >= minReq {
		n := float64(tot.calls)
		if r := float64(tot.failures) / n; s.ErrorRatio >= 0 && r >= s.ErrorRatio {
			return cause{kind: causeErrorRatio, ratio: r, limit: s.ErrorRatio, n: tot.calls, count: tot.timeouts}, true
		}
		if r := float64(tot.slow) / n; s.SlowRatio >= 0 && s.SlowCall >= 0 && r >= s.SlowRatio {
			return cause{kind: causeSlowRatio, ratio: r, limit: s.SlowRatio, n: tot.calls, d: s.SlowCall}, true
		}
	}
	if g := tot.gets(); hitRate && g >= minReq {
		r := float64(tot.hits) / float64(g)
		if s.HitRateFloor > 0 && r < s.HitRateFloor {
			return cause{kind: causeHitRateFloor, ratio: r, limit: s.HitRateFloor, n: g}, true
		}
		if base, ok := b.baseline(now); ok && s.HitRateDrop > 0 && r < s.HitRateDrop*base {
			return cause{kind: causeHitRateDrop, ratio: r, limit: s.HitRateDrop * base, drop: s.HitRateDrop, baseline: base, n: g}, true
		}
	}
	return cause{}, false
}

// baseline returns the baseline hit rate if it is usable: it weighs
// MinRequests Gets, and the breaker has not been away from closed for
// longer than Baseline.
func (b *Breaker) baseline(now time.Time) (float64, bool) {
	rate, weight := b.win.baseline()
	if weight < float64(b.s.MinRequests) {
		return 0, false
	}
	if gobreaker.State(b.state.Load()) != gobreaker.StateClosed && now.Sub(b.leftClosed) > b.s.Baseline {
		return 0, false
	}
	return rate, true
}

// threshold is the hit rate the half-open probes must show.
func (b *Breaker) threshold(now time.Time) float64 {
	th := max(b.s.HitRateFloor, 0)
	if base, ok := b.baseline(now); ok && b.s.HitRateDrop > 0 {
		th = max(th, b.s.HitRateDrop*base)
	}
	return th
}

// onStateChange is gobreaker's OnStateChange. It runs under gobreaker's
// lock and ours, during a call that set b.why and b.at: it only records.
func (b *Breaker) onStateChange(_ string, from, to gobreaker.State) {
	now, why := b.at, b.why
	b.gen++
	b.state.Store(int32(to))
	b.probeHits, b.probeMiss = 0, 0
	switch to {
	case gobreaker.StateOpen:
		if from == gobreaker.StateClosed {
			b.leftClosed = now
		}
		b.openUntil = now.Add(b.s.OpenFor)
		b.last = why
		b.refusal = &refusal{cause: why}
		switch why.reason() {
		case ReasonErrors:
			b.c.opens.Errors++
		case ReasonSlow:
			b.c.opens.Slow++
		case ReasonHitRate:
			b.c.opens.HitRate++
		}
		b.c.transitions.Open++
	case gobreaker.StateHalfOpen:
		b.refusal = &refusal{halfOpen: true, cause: b.last}
		b.c.transitions.HalfOpen++
	case gobreaker.StateClosed:
		if now.Sub(b.leftClosed) > b.s.Baseline {
			b.win.forgetBaseline()
		}
		b.refusal = nil
		b.c.transitions.Closed++
	}
	b.win.reset(now)
	b.recent.reset()
	b.pending = append(b.pending, transition{from: from, to: to, cause: why, openFor: b.s.OpenFor})
}

// unlock releases mu and then logs the state changes made while it was
// held.
func (b *Breaker) unlock() {
	p := b.pending
	b.pending = nil
	b.mu.Unlock()
	for _, t := range p {
		fields := []zap.Field{
			zap.String("from", t.from.String()),
			zap.String("to", t.to.String()),
			zap.String("cause", t.cause.String()),
		}
		switch t.to {
		case gobreaker.StateOpen:
			b.s.Logger.Warn("breaker opened", append(fields,
				zap.Stringer("reason", t.cause.reason()), zap.Duration("open_for", t.openFor))...)
		case gobreaker.StateHalfOpen:
			b.s.Logger.Info("breaker half-open", append(fields, zap.Int("probes", b.s.Probes))...)
		default:
			b.s.Logger.Info("breaker closed", fields...)
		}
	}
}

// refusal is the error of a refused call: it wraps ErrOpen and carries the
// cause of the opening. One is made per state change and shared.
type refusal struct {
	halfOpen bool
	cause    cause
}

func (e *refusal) Error() string {
	if e.halfOpen {
		return "breaker: open: half-open, probing (opened on " + e.cause.String() + ")"
	}
	return "breaker: open: " + e.cause.String()
}

func (e *refusal) Unwrap() error { return ErrOpen }
