package breaker

import (
	"time"

	"github.com/sony/gobreaker/v2"
)

// ByReason counts openings by their reason.
type ByReason struct {
	Errors  uint64 // errors and timeouts
	Slow    uint64 // slow calls
	HitRate uint64 // hit-rate collapse
}

// ByState counts state changes by the state entered.
type ByState struct {
	Closed   uint64
	Open     uint64
	HalfOpen uint64
}

// Stats is a snapshot of a Breaker. Counters only grow.
type Stats struct {
	// State is "closed", "open" or "half-open". An open breaker whose
	// OpenFor has passed stays "open" until a Get comes to probe.
	State string
	// Reason and Cause are those of the last opening (ReasonNone and ""
	// if it never opened); Cause reads e.g. "error ratio 0.62 >= 0.50
	// over 120 calls".
	Reason Reason
	Cause  string
	// OpenUntil is when an open breaker lets probes through (on
	// Settings.Now); the zero Time if it never opened.
	OpenUntil time.Time

	Opens       ByReason // openings, from closed or half-open
	Transitions ByState  // state changes, by the state entered

	Calls    uint64 // calls that reached the L2: Gets, their retries, and Calls
	Reads    uint64 // the Gets among them, retries included
	Rejected uint64 // calls refused with ErrOpen
	Retries  uint64 // Get retries
	Failures uint64 // calls the L2 could not answer, timeouts included
	Timeouts uint64 // failures that were timeouts
	Slow     uint64 // calls that took SlowCall or longer
	Hits     uint64 // Gets that found their key
	Misses   uint64 // Gets answered "no such key"
	Canceled uint64 // calls whose client left (context.Canceled): not judged

	// The rolling window (closed state only; empty otherwise).
	WindowCalls uint64
	WindowGets  uint64
	HitRate     float64 // hits / Gets in the window; 0 without Gets

	// Baseline is the baseline hit rate; BaselineReady reports that it
	// weighs MinRequests Gets and is used by HitRateDrop.
	Baseline      float64
	BaselineReady bool
}

// Stats returns a snapshot of b's state and counters.
func (b *Breaker) Stats() Stats {
	b.mu.Lock()
	st := gobreaker.State(b.state.Load())
	now := b.s.Now()
	if st == gobreaker.StateClosed {
		b.win.advance(now)
	}
	last := b.last
	s := Stats{
		State:       st.String(),
		Reason:      last.reason(),
		OpenUntil:   b.openUntil,
		Opens:       b.c.opens,
		Transitions: b.c.transitions,
		Calls:       b.c.calls,
		Reads:       b.c.reads,
		Rejected:    b.c.rejected,
		Retries:     b.c.retries,
		Failures:    b.c.failures,
		Timeouts:    b.c.timeouts,
		Slow:        b.c.slow,
		Hits:        b.c.hits,
		Misses:      b.c.misses,
		Canceled:    b.c.canceled,
		WindowCalls: b.win.total.calls,
		WindowGets:  b.win.total.gets(),
		HitRate:     b.win.hitRate(),
	}
	s.Baseline, s.BaselineReady = b.baseline(now)
	if !s.BaselineReady {
		s.Baseline, _ = b.win.baseline()
	}
	b.mu.Unlock()
	if last.kind != causeUnknown {
		s.Cause = last.String()
	}
	return s
}
