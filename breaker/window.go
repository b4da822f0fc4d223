package breaker

import (
	"math"
	"time"
)

// counts are the measured outcomes of one bucket, or the window's totals.
type counts struct {
	calls    uint64 // calls that reached the L2 and were counted (not canceled)
	failures uint64 // calls whose error means the L2 could not answer, timeouts included
	timeouts uint64 // failures that were timeouts
	slow     uint64 // calls that took SlowCall or longer
	hits     uint64 // Gets that found their key
	misses   uint64 // Gets answered "no such key"
}

func (c *counts) add(o counts) {
	c.calls += o.calls
	c.failures += o.failures
	c.timeouts += o.timeouts
	c.slow += o.slow
	c.hits += o.hits
	c.misses += o.misses
}

func (c *counts) sub(o counts) {
	c.calls -= o.calls
	c.failures -= o.failures
	c.timeouts -= o.timeouts
	c.slow -= o.slow
	c.hits -= o.hits
	c.misses -= o.misses
}

// gets is how many Gets were answered with a hit or a miss.
func (c counts) gets() uint64 { return c.hits + c.misses }

// window is the rolling window of outcomes and the baseline hit rate: the
// unlocked core of a Breaker, used only while it is closed.
//
// The window is a ring of buckets, each width long; bucket number n covers
// [epoch + n*width, epoch + (n+1)*width). head is the number of the newest
// bucket. When time moves on, the buckets that fall out of the ring are
// folded into the baseline and subtracted from the totals. The baseline is
// a get-weighted hit rate whose weights decay by decay per bucket width:
// baseHits/baseGets with both sums multiplied by decay before each fold.
type window struct {
	buckets []counts
	width   time.Duration
	epoch   time.Time
	head    int64
	total   counts

	decay    float64 // exp(-width / Baseline)
	baseHits float64
	baseGets float64
}

func newWindow(size time.Duration, n int, baseline time.Duration, now time.Time) *window {
	width := size / time.Duration(n)
	return &window{
		buckets: make([]counts, n),
		width:   width,
		epoch:   now,
		decay:   math.Exp(-float64(width) / float64(baseline)),
	}
}

// reset empties the window without folding it into the baseline and starts
// it again at now.
func (w *window) reset(now time.Time) {
	clear(w.buckets)
	w.total = counts{}
	w.epoch = now
	w.head = 0
}

// forgetBaseline drops the baseline; it is learned again from scratch.
func (w *window) forgetBaseline() {
	w.baseHits, w.baseGets = 0, 0
}

// advance moves the window to now: every bucket that leaves the ring is
// folded into the baseline and emptied. A clock that goes back leaves the
// window where it is.
func (w *window) advance(now time.Time) {
	d := now.Sub(w.epoch)
	if d < 0 {
		return
	}
	n := int64(d / w.width)
	if n <= w.head {
		return
	}
	size := int64(len(w.buckets))
	steps := n - w.head
	for i := int64(1); i <= min(steps, size); i++ {
		slot := &w.buckets[(w.head+i)%size] // holds bucket head+i-size, leaving now
		w.baseHits = w.baseHits*w.decay + float64(slot.hits)
		w.baseGets = w.baseGets*w.decay + float64(slot.gets())
		w.total.sub(*slot)
		*slot = counts{}
	}
	if steps > size {
		// Buckets that came and went empty: only the decay.
		f := math.Pow(w.decay, float64(steps-size))
		w.baseHits *= f
		w.baseGets *= f
	}
	w.head = n
}

// record adds c to the bucket of now.
func (w *window) record(now time.Time, c counts) {
	w.advance(now)
	w.buckets[w.head%int64(len(w.buckets))].add(c)
	w.total.add(c)
}

// recent holds the outcomes of the last n calls and of the last n Gets
// made within the window. Judged on their own they catch a collapse that
// starts at full load (an L2 restarting empty, a server that stops
// answering) after n calls, rather than once it weighs half the window.
type recent struct {
	calls, gets ring
	c           counts // totals of the rings
}

// ring is a FIFO of up to len(at) outcomes with the time each was made.
type ring struct {
	at    []int64 // UnixNano
	flags []uint8 // recentFailure | recentSlow for calls, recentHit for Gets
	head  int     // slot of the oldest
	n     int     // outcomes held
}

const (
	recentFailure = 1 << iota
	recentSlow
	recentHit
)

func newRecent(n int) *recent {
	return &recent{
		calls: ring{at: make([]int64, n), flags: make([]uint8, n)},
		gets:  ring{at: make([]int64, n), flags: make([]uint8, n)},
	}
}

// push appends an outcome, and returns the one it pushed out (ok).
func (r *ring) push(at int64, f uint8) (old uint8, ok bool) {
	if r.n == len(r.at) {
		old, ok = r.flags[r.head], true
		r.head = (r.head + 1) % len(r.at)
		r.n--
	}
	i := (r.head + r.n) % len(r.at)
	r.at[i], r.flags[i] = at, f
	r.n++
	return old, ok
}

// pop removes and returns the oldest outcome if it was made at or before
// the instant cutoff.
func (r *ring) pop(cutoff int64) (f uint8, ok bool) {
	if r.n == 0 || r.at[r.head] > cutoff {
		return 0, false
	}
	f = r.flags[r.head]
	r.head = (r.head + 1) % len(r.at)
	r.n--
	return f, true
}

func (c *counts) subFlags(call, get uint8, isCall, isGet bool) {
	if isCall {
		c.failures -= uint64(call & recentFailure)
		c.slow -= uint64(call&recentSlow) >> 1
	}
	if isGet {
		if get&recentHit != 0 {
			c.hits--
		} else {
			c.misses--
		}
	}
}

// add records one counted call's outcome c, made at now.
func (r *recent) add(now time.Time, c counts) {
	if c.calls == 0 {
		return
	}
	at := now.UnixNano()
	var f uint8
	if c.failures > 0 {
		f |= recentFailure
	}
	if c.slow > 0 {
		f |= recentSlow
	}
	if old, ok := r.calls.push(at, f); ok {
		r.c.subFlags(old, 0, true, false)
	}
	r.c.failures += c.failures
	r.c.slow += c.slow
	if c.gets() > 0 {
		g := uint8(0)
		if c.hits > 0 {
			g = recentHit
		}
		if old, ok := r.gets.push(at, g); ok {
			r.c.subFlags(0, old, false, true)
		}
		r.c.hits += c.hits
		r.c.misses += c.misses
	}
	r.c.calls = uint64(r.calls.n)
}

// expire forgets the outcomes made window or longer before now.
func (r *recent) expire(now time.Time, window time.Duration) {
	before := now.Add(-window).UnixNano()
	for {
		f, ok := r.calls.pop(before)
		if !ok {
			break
		}
		r.c.subFlags(f, 0, true, false)
	}
	for {
		f, ok := r.gets.pop(before)
		if !ok {
			break
		}
		r.c.subFlags(0, f, false, true)
	}
	r.c.calls = uint64(r.calls.n)
}

// reset empties the rings.
func (r *recent) reset() {
	r.calls.head, r.calls.n, r.gets.head, r.gets.n = 0, 0, 0, 0
	r.c = counts{}
}

// hitRate is the window's hit rate, 0 without Gets.
func (w *window) hitRate() float64 {
	if g := w.total.gets(); g > 0 {
		return float64(w.total.hits) / float64(g)
	}
	return 0
}

// baseline returns the baseline hit rate and the (decayed) number of Gets
// it weighs.
func (w *window) baseline() (rate, weight float64) {
	if w.baseGets <= 0 {
		return 0, 0
	}
	return w.baseHits / w.baseGets, w.baseGets
}
