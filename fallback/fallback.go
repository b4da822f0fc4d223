package fallback

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/ratelimit"
)

// Errors. Get's errors other than the next tier's and the caller's ctx's
// wrap one of these.
var (
	// ErrShed is returned while the L2 is failing to a caller with no stale
	// copy that the origin shield did not admit (or that waited on a
	// leader it did not admit). The client must treat it as a miss it must
	// NOT fill from its database: the proxy answers -TRYAGAIN. Also
	// returned to a caller with a stale copy when the failing L2 answered
	// a miss: L1 then serves the stale copy.
	ErrShed = errors.New("fallback: shed")

	// ErrOrigin wraps every error of an origin load.
	ErrOrigin = errors.New("fallback: origin")

	// ErrClosed is returned by Get after Close, where it would need the
	// fallback.
	ErrClosed = errors.New("fallback: closed")

	// ErrInvalidConfig is returned (wrapped) by New and NewHTTPOrigin for
	// a configuration they cannot use.
	ErrInvalidConfig = errors.New("fallback: invalid config")
)

// Item is a value with its absolute expiry.
type Item struct {
	// Value is read-only for everyone once returned: a value returned by
	// Get may be shared by every caller of a flight.
	Value []byte
	// Expires is the instant the value expires; the zero Time means never.
	Expires time.Time
	// Origin is true if the value was loaded from the origin (not the L2).
	Origin bool
}

// Getter is the next tier: the L2 read, behind the breaker.
//
// Get returns key's value. found == false with a nil error is a miss. An
// error either means the L2 could not answer (Config.IsFailure) or is an
// answer, such as a WRONGTYPE, that Get returns to its caller unchanged.
// key is only read during the call; the returned Item.Value belongs to the
// Shield, which never modifies it.
type Getter interface {
	Get(ctx context.Context, key []byte) (item Item, found bool, err error)
}

// GetterFunc adapts a function to a Getter.
type GetterFunc func(ctx context.Context, key []byte) (Item, bool, error)

// Get calls f(ctx, key).
func (f GetterFunc) Get(ctx context.Context, key []byte) (Item, bool, error) { return f(ctx, key) }

// Origin is the system of record, for read-through.
//
// Load returns key's value. found == false with a nil error means the
// origin has no such key. An Item with Expires at or before now is returned
// to the callers but not written to the L2. key is only read during the
// call; the returned Item.Value is never modified afterwards.
type Origin interface {
	Load(ctx context.Context, key []byte) (item Item, found bool, err error)
}

// OriginFunc adapts a function to an Origin.
type OriginFunc func(ctx context.Context, key []byte) (Item, bool, error)

// Load calls f(ctx, key).
func (f OriginFunc) Load(ctx context.Context, key []byte) (Item, bool, error) { return f(ctx, key) }

// Writer stores an origin load in the L2 (read-through). key and value are
// only read during the call. expires is the absolute expiry, zero for none,
// and is always after now when Set is called.
type Writer interface {
	Set(ctx context.Context, key, value []byte, expires time.Time) error
}

// WriterFunc adapts a function to a Writer.
type WriterFunc func(ctx context.Context, key, value []byte, expires time.Time) error

// Set calls f(ctx, key, value, expires).
func (f WriterFunc) Set(ctx context.Context, key, value []byte, expires time.Time) error {
	return f(ctx, key, value, expires)
}

// Clock is the Shield's time: Now for expiries and the pacing of the origin
// shield, Sleep for the pacing. It is a ratelimit.Clock.
type Clock interface {
	Now() time.Time
	Sleep(d time.Duration)
}

// Config configures a Shield. The zero value is usable: cache-aside, no
// coalescing, 100 misses per second while failing, nobody queued behind the
// caller taking the next pacing slot.
type Config struct {
	// Origin is the read-through origin (--origin-url). nil: cache-aside,
	// the client reads its database on a miss and SETs the key.
	Origin Origin

	// Store receives the origin's loads (read-through). nil: loads are
	// returned but not written to the L2.
	Store Writer

	// Failing reports that the L2 is failing although it answered (the
	// breaker is not closed). nil: never.
	Failing func() bool

	// IsFailure reports whether an error from the next tier means the L2
	// could not answer. Other errors (a WRONGTYPE) are returned as they
	// are. nil: every error is a failure.
	IsFailure func(error) bool

	// Rate is the most misses handed to clients (cache-aside) or origin
	// loads (read-through) per second while the L2 is failing
	// (--origin-rate). 0: DefaultRate.
	Rate int

	// Queue is how many callers may wait behind the one taking the next
	// pacing slot (--origin-queue); any more are refused at once. The
	// longest wait is (Queue+1)/Rate. 0: none (the flag's default is
	// DefaultQueue).
	Queue int

	// FillWait is how long, after a cache-aside miss was handed to the
	// first caller, other callers missing the same key wait for its SET
	// (--fill-wait). 0: misses are not coalesced (the flag's default is
	// DefaultFillWait). Not used in read-through mode.
	FillWait time.Duration

	// CallTimeout bounds each call the Shield makes for several callers
	// at once, detached from their contexts: an origin load with its L2
	// write, a coalesced re-read. 0: DefaultCallTimeout.
	CallTimeout time.Duration

	// Clock is the time source. nil: the system clock.
	Clock Clock
}

// Defaults. DefaultQueue and DefaultFillWait are the flags' defaults; a zero
// Queue or FillWait in a Config means none.
const (
	DefaultRate        = 100
	DefaultQueue       = 10
	DefaultFillWait    = 50 * time.Millisecond
	DefaultCallTimeout = 10 * time.Second
)

// maxRate keeps ratelimit's interval between slots at least 1ns.
const maxRate = int(time.Second)

// Shield is the fallback below L1. It is safe for concurrent use.
type Shield struct {
	next        Getter
	origin      Origin
	store       Writer
	failingFn   func() bool
	isFailure   func(error) bool
	fillWait    atomic.Int64 // time.Duration; SetRate changes it
	callTimeout time.Duration
	clock       Clock

	limiter atomic.Pointer[ratelimit.Limiter] // SetRate swaps it
	pacing  chan struct{}                     // a slot per caller in or waiting for limiter.Take

	flights *flights
	m       metrics

	base   context.Context // canceled by Close
	cancel context.CancelFunc
	mu     sync.RWMutex // held to set closed, and to read it before wg.Add
	closed atomic.Bool
	wg     sync.WaitGroup
}

// New returns a Shield in front of next.
func New(next Getter, cfg Config) (*Shield, error) {
	switch {
	case next == nil:
		return nil, fmt.Errorf("%w: nil Getter", ErrInvalidConfig)
	case cfg.Rate < 0 || cfg.Rate > maxRate:
		return nil, fmt.Errorf("%w: Rate %d not in [0, %d]", ErrInvalidConfig, cfg.Rate, maxRate)
	case cfg.Queue < 0:
		return nil, fmt.Errorf("%w: negative Queue %d", ErrInvalidConfig, cfg.Queue)
	case cfg.FillWait < 0:
		return nil, fmt.Errorf("%w: negative FillWait %v", ErrInvalidConfig, cfg.FillWait)
	case cfg.CallTimeout < 0:
		return nil, fmt.Errorf("%w: negative CallTimeout %v", ErrInvalidConfig, cfg.CallTimeout)
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.Failing == nil {
		cfg.Failing = func() bool { return false }
	}
	if cfg.IsFailure == nil {
		cfg.IsFailure = func(error) bool { return true }
	}
	s := &Shield{
		next:        next,
		origin:      cfg.Origin,
		store:       cfg.Store,
		failingFn:   cfg.Failing,
		isFailure:   cfg.IsFailure,
		callTimeout: cfg.CallTimeout,
		clock:       cfg.Clock,
		pacing:      make(chan struct{}, cfg.Queue+1),
		flights:     newFlights(),
	}
	s.fillWait.Store(int64(cfg.FillWait))
	s.setRate(cfg.Rate)
	s.base, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

func (s *Shield) setRate(rate int) {
	l := ratelimit.New(rate, ratelimit.WithoutSlack, ratelimit.WithClock(s.clock))
	s.limiter.Store(&l)
}

// SetRate changes Rate and FillWait (as in Config) while the Shield runs,
// for a configuration reload. Callers already waiting for a slot finish
// with the old rate; Queue keeps the size New gave it.
func (s *Shield) SetRate(rate int, fillWait time.Duration) error {
	switch {
	case rate < 0 || rate > maxRate:
		return fmt.Errorf("%w: Rate %d not in [0, %d]", ErrInvalidConfig, rate, maxRate)
	case fillWait < 0:
		return fmt.Errorf("%w: negative FillWait %v", ErrInvalidConfig, fillWait)
	}
	if rate == 0 {
		rate = DefaultRate
	}
	s.setRate(rate)
	s.fillWait.Store(int64(fillWait))
	return nil
}

// systemClock is the default Clock.
type systemClock struct{}

func (systemClock) Now() time.Time        { return time.Now() }
func (systemClock) Sleep(d time.Duration) { time.Sleep(d) }

// Get returns key's value from the next tier or, when it has none, what the
// fallback decides (see the package documentation). hasStale reports that
// L1 holds a stale copy of key that it serves if Get returns an error; the
// Shield then never spends its origin budget on key. key is only read
// during the call.
//
// Errors: the next tier's own (a failure while hasStale, or an answer such
// as a WRONGTYPE); ctx's; ErrShed; an origin error wrapping ErrOrigin;
// ErrClosed.
func (s *Shield) Get(ctx context.Context, key []byte, hasStale bool) (Item, bool, error) {
	item, found, err := s.getNext(ctx, key)
	switch {
	case err == nil && found:
		return item, true, nil
	case err != nil && (ctx.Err() != nil || !s.isFailure(err)):
		return Item{}, false, err
	}
	failing := err != nil || s.failingFn()
	if failing && hasStale && (err != nil || !s.mayRefill(key)) {
		return s.noValue(ctx, true, true, err)
	}
	if s.closed.Load() {
		return Item{}, false, ErrClosed
	}
	if s.origin != nil {
		return s.readThrough(ctx, key, failing)
	}
	if s.fillWait.Load() == 0 {
		return s.noValue(ctx, hasStale, failing, err)
	}
	return s.cacheAside(ctx, key, hasStale, failing, err)
}

// mayRefillAny is mayRefill without a key: nobody waits for a slot.
func (s *Shield) mayRefillAny() bool { return len(s.pacing) == 0 }

// mayRefill reports whether a caller that L1 can answer with a stale
// copy, for a key the L2 lost (it answered a miss while the breaker is not
// closed: it restarted empty), may spend an origin slot to refill it: only
// if nobody waits for a slot and no load or fill of the key is under way,
// so such a caller waits at most one pacing interval. Otherwise it gets
// its stale copy at once. Without these refills a key L1 answers stale
// would never be written again, and the L2's hit rate, which closes the
// breaker, could not recover.
func (s *Shield) mayRefill(key []byte) bool {
	return s.mayRefillAny() && !s.flights.has(key)
}

// noValue answers a caller for whom there is no value: a miss while
// healthy; while failing, cause (or ErrShed) if L1 has a stale copy, else
// a miss if the origin shield admits the caller and ErrShed if not.
func (s *Shield) noValue(ctx context.Context, hasStale, failing bool, cause error) (Item, bool, error) {
	switch {
	case !failing:
	case hasStale && (cause != nil || !s.mayRefillAny()):
		s.m.staleErrors.Add(1)
		if cause != nil {
			return Item{}, false, cause
		}
		return Item{}, false, ErrShed
	default:
		if err := s.admitWait(ctx); err != nil {
			return Item{}, false, err
		}
	}
	s.m.misses.Add(1)
	return Item{}, false, nil
}

// readThrough joins or starts key's load and waits for it.
func (s *Shield) readThrough(ctx context.Context, key []byte, failing bool) (Item, bool, error) {
	f, leader := s.flights.join(key, true)
	if leader {
		if !s.spawn(func() { s.load(ctx, f, failing) }) {
			s.flights.remove(f)
			f.finish(closed, result{})
		}
	} else {
		s.m.coalesced.Add(1)
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return Item{}, false, ctx.Err()
	}
	switch f.out {
	case loaded:
		if !f.res.found && f.res.err == nil {
			s.m.misses.Add(1)
		}
		return f.res.item, f.res.found, f.res.err
	case shed:
		s.m.shed.Add(1)
		return Item{}, false, ErrShed
	default:
		return Item{}, false, ErrClosed
	}
}

// load runs f's origin load (after admission if failing), hands the result
// to f's waiters, then writes a found value to the L2.
func (s *Shield) load(parent context.Context, f *flight, failing bool) {
	defer s.flights.remove(f)
	if failing && !s.admit() {
		f.finish(shed, result{})
		return
	}
	ctx, cancel := s.detach(parent)
	defer cancel()
	key := []byte(f.key)
	s.m.originLoads.Add(1)
	item, found, err := s.loadOrigin(ctx, key)
	switch {
	case err != nil:
		s.m.originErrs.Add(1)
		if !errors.Is(err, ErrOrigin) {
			err = fmt.Errorf("%w: %w", ErrOrigin, err)
		}
		item, found = Item{}, false
	case !found:
		s.m.originMisses.Add(1)
		item = Item{}
	default:
		item.Origin = true
	}
	f.finish(loaded, result{item: item, found: found, err: err})
	if !found {
		return
	}
	if s.store == nil || f.wrote.Load() || (!item.Expires.IsZero() && !item.Expires.After(s.clock.Now())) {
		s.m.storeSkipped.Add(1)
		return
	}
	s.m.storeWrites.Add(1)
	if err := s.store.Set(ctx, key, item.Value, item.Expires); err != nil {
		s.m.storeErrs.Add(1)
	}
}

// cacheAside hands key's miss to the first caller and makes the others
// wait for its write.
func (s *Shield) cacheAside(ctx context.Context, key []byte, hasStale, failing bool, cause error) (Item, bool, error) {
	f, leader := s.flights.join(key, false)
	if leader {
		if failing {
			if err := s.admitWait(ctx); err != nil {
				s.flights.remove(f)
				if errors.Is(err, ErrShed) {
					f.finish(shed, result{})
				} else {
					f.finish(expired, result{}) // the leader left: its waiters try themselves
				}
				return Item{}, false, err
			}
		}
		f.arm(time.Duration(s.fillWait.Load()), func() {
			s.flights.remove(f)
			f.finish(expired, result{})
		})
		s.m.misses.Add(1)
		return Item{}, false, nil
	}

	s.m.coalesced.Add(1)
	timer := time.NewTimer(time.Duration(s.fillWait.Load()))
	defer timer.Stop()
	select {
	case <-f.done:
	case <-timer.C:
		s.m.fillWaitTimeouts.Add(1)
		return s.noValue(ctx, hasStale, failing || s.failingFn(), cause)
	case <-ctx.Done():
		return Item{}, false, ctx.Err()
	}
	switch f.out {
	case written:
		return s.reread(ctx, f, hasStale)
	case shed:
		s.m.shed.Add(1)
		return Item{}, false, ErrShed
	case expired:
		s.m.fillWaitTimeouts.Add(1)
		return s.noValue(ctx, hasStale, failing || s.failingFn(), cause)
	default:
		return Item{}, false, ErrClosed
	}
}

// reread answers a waiter of a written flight from the flight's one shared
// re-read of the next tier.
func (s *Shield) reread(ctx context.Context, f *flight, hasStale bool) (Item, bool, error) {
	c, first := f.reread()
	if first {
		started := s.spawn(func() {
			rctx, cancel := s.detach(ctx)
			defer cancel()
			item, found, err := s.getNext(rctx, []byte(f.key))
			c.res = result{item: item, found: found, err: err}
			close(c.done)
		})
		if !started {
			c.res = result{err: ErrClosed}
			close(c.done)
		}
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		return Item{}, false, ctx.Err()
	}
	r := c.res
	switch {
	case r.err == nil && r.found:
		s.m.filled.Add(1)
		return r.item, true, nil
	case errors.Is(r.err, ErrClosed):
		return Item{}, false, r.err
	case r.err != nil && !s.isFailure(r.err):
		return Item{}, false, r.err
	}
	return s.noValue(ctx, hasStale, r.err != nil || s.failingFn(), r.err)
}

// admit takes a pacing slot, blocking until it is due, or reports false at
// once if the queue is full.
func (s *Shield) admit() bool {
	select {
	case s.pacing <- struct{}{}:
	default:
		s.m.queueFull.Add(1)
		return false
	}
	(*s.limiter.Load()).Take()
	<-s.pacing
	s.m.admitted.Add(1)
	return true
}

// admitWait is admit for a caller: it returns ErrShed if the queue is full,
// and ctx's error if ctx ends before the slot is due (the slot is spent
// anyway).
func (s *Shield) admitWait(ctx context.Context) error {
	if ctx.Done() == nil {
		if !s.admit() {
			s.m.shed.Add(1)
			return ErrShed
		}
		return nil
	}
	select {
	case s.pacing <- struct{}{}:
	default:
		s.m.queueFull.Add(1)
		s.m.shed.Add(1)
		return ErrShed
	}
	due := make(chan struct{})
	if !s.spawn(func() {
		(*s.limiter.Load()).Take()
		<-s.pacing
		s.m.admitted.Add(1)
		close(due)
	}) {
		<-s.pacing
		return ErrClosed
	}
	select {
	case <-due:
		return nil
	case <-ctx.Done():
		s.m.abandoned.Add(1)
		return ctx.Err()
	}
}

// spawn runs fn in a goroutine that Close waits for, unless Close has run.
func (s *Shield) spawn(fn func()) bool {
	s.mu.RLock()
	if s.closed.Load() {
		s.mu.RUnlock()
		return false
	}
	s.wg.Add(1)
	s.mu.RUnlock()
	go func() {
		defer s.wg.Done()
		fn()
	}()
	return true
}

// detach returns a context with parent's values but not its cancellation,
// ended by CallTimeout or Close.
func (s *Shield) detach(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), s.callTimeout)
	stop := context.AfterFunc(s.base, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

// Written tells the Shield that a write to key reached (or was attempted
// on) the L2: the callers waiting for key's fill re-read it, and an origin
// load of key in progress is not written to the L2. key is only read during
// the call.
func (s *Shield) Written(key []byte) {
	if f := s.flights.take(key); f != nil {
		wake(f)
	}
}

// WrittenAll is Written for every key (after FLUSHALL, FLUSHDB, or a lost
// invalidation stream).
func (s *Shield) WrittenAll() {
	for _, f := range s.flights.takeAll() {
		wake(f)
	}
}

func wake(f *flight) {
	if f.load {
		f.wrote.Store(true)
		return
	}
	f.finish(written, result{})
}

// Stats returns a snapshot of the Shield's counters.
func (s *Shield) Stats() Stats {
	st := s.m.snapshot()
	st.Flights = s.flights.n.Load()
	return st
}

// Close wakes every waiter (Get returns ErrClosed where it would need the
// fallback from then on), cancels the origin loads in progress and waits
// for every goroutine the Shield started, at most one CallTimeout or
// (Queue+1)/Rate. It is safe to call more than once.
func (s *Shield) Close() {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		s.wg.Wait()
		return
	}
	s.closed.Store(true)
	s.mu.Unlock()
	for _, f := range s.flights.takeAll() {
		f.finish(closed, result{})
	}
	s.cancel()
	s.wg.Wait()
}
