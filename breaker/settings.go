package breaker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"go.uber.org/zap"

	"github.com/sidecache/sidecache/l2store"
)

// ErrInvalidSettings is returned (wrapped) by New for Settings it cannot use.
var ErrInvalidSettings = errors.New("breaker: invalid settings")

// Off, given to a ratio, duration or budget that can be turned off
// (ErrorRatio, SlowCall, SlowRatio, HitRateDrop, RetryBudget), turns it off.
// Any negative value does the same. Zero selects the default.
const Off = -1

// Settings configures a Breaker. The zero value of every field selects its
// default; fields that can be turned off are turned off by a negative value
// (see Off).
type Settings struct {
	// Window is the span of the rolling window over which ratios are
	// judged. Default 10s.
	Window time.Duration
	// Buckets is how many buckets the window is cut into: outcomes age out
	// of the window one bucket (Window/Buckets) at a time. Default 10.
	Buckets int
	// MinRequests is how many calls (for the error and slow ratios) or
	// Gets (for the hit rate) the window must hold before a ratio is
	// judged, and how many Gets the baseline must weigh before it is used.
	// Default 20.
	MinRequests int

	// ErrorRatio trips the breaker when failures (errors that mean the L2
	// could not answer, and timeouts) / calls in the window reach it.
	// Default 0.5; negative: off.
	ErrorRatio float64

	// SlowCall is the latency at or above which a call is slow (measured
	// on Now). Default 100ms; negative: no call is slow.
	SlowCall time.Duration
	// SlowRatio trips the breaker when slow calls / calls in the window
	// reach it. Default 0.5; negative: off.
	SlowRatio float64

	// HitRateFloor trips the breaker when the window's L2 hit rate (found
	// / Gets) is below it. Default 0: off.
	HitRateFloor float64
	// HitRateDrop trips the breaker when the window's hit rate is below
	// HitRateDrop x the baseline hit rate. Default 0.5; negative: off.
	HitRateDrop float64
	// Baseline is the horizon of the baseline hit rate: an exponentially
	// decaying, get-weighted average, with this time constant, of the
	// buckets that left the window while the breaker was closed. A
	// baseline not refreshed for Baseline (the breaker stayed open or
	// half-open that long) is forgotten and learned again. Default 5m.
	Baseline time.Duration

	// OpenFor is how long the breaker stays open before it lets probes
	// through (half-open), measured on Now. Default 5s.
	OpenFor time.Duration
	// Probes is how many Gets half-open lets through. The breaker closes
	// when all of them succeed, none is slow, and at most
	// floor(Probes x (1 - threshold)) of them miss, where threshold is
	// max(HitRateFloor, HitRateDrop x baseline); otherwise it opens again.
	// Default 5.
	Probes int

	// Timeout is the most a Get waits for the L2 in total, its retry
	// included: Get gives next a context with this deadline (unless the
	// caller's is sooner). Call does not apply it. Default 500ms; negative:
	// no deadline of its own, for an L2 whose Get never waits (the
	// embedded store), which spares a context and its timer per Get.
	Timeout time.Duration
	// CallTimeout is the most a Call's caller waits. Past it the caller gets
	// an error wrapping ErrTimeout and the call counts as a timeout, while
	// fn finishes in its own goroutine (its result dropped): a pass-through
	// client such as go-redis's autopipeliner does not honour a
	// per-command deadline, and its own read timeout applies per round
	// trip, several of them for a new connection. Default 500ms; negative:
	// Call runs fn in the caller's goroutine and waits for it.
	CallTimeout time.Duration
	// RetryBudget is the fraction of Gets that may be retried: each Get let
	// through deposits RetryBudget in a bucket, a retry takes 1. Retries
	// happen only while closed. Default 0.1; negative: no retries.
	RetryBudget float64
	// RetryBurst caps the retry bucket (it starts full). Default 10.
	RetryBurst int

	// IsFailure reports whether an error from the L2 means it could not
	// answer. It is not asked about context.Canceled (never counted: the
	// client left) nor about context.DeadlineExceeded (always a failure: a
	// timeout). Default: every error except l2store.ReplyError and
	// l2store.ErrOOM, which are answers.
	IsFailure func(error) bool

	// Now returns the current time: window buckets, OpenFor and slow calls
	// are measured on it. Default time.Now.
	Now func() time.Time
	// Logger receives every state change. Default zap.NewNop().
	Logger *zap.Logger
}

// Defaults of Settings' zero fields.
const (
	DefaultWindow      = 10 * time.Second
	DefaultBuckets     = 10
	DefaultMinRequests = 20
	DefaultErrorRatio  = 0.5
	DefaultSlowCall    = 100 * time.Millisecond
	DefaultSlowRatio   = 0.5
	DefaultHitRateDrop = 0.5
	DefaultBaseline    = 5 * time.Minute
	DefaultOpenFor     = 5 * time.Second
	DefaultProbes      = 5
	DefaultTimeout     = 500 * time.Millisecond
	DefaultCallTimeout = 500 * time.Millisecond
	DefaultRetryBudget = 0.1
	DefaultRetryBurst  = 10
)

// maxProbes bounds Probes (gobreaker counts them in a uint32).
const maxProbes = 1 << 16

// withDefaults validates s and returns it with its zero fields set to their
// defaults. Disabled ratios and durations stay negative.
func (s Settings) withDefaults() (Settings, error) {
	bad := func(format string, args ...any) (Settings, error) {
		return Settings{}, fmt.Errorf("%w: "+format, append([]any{ErrInvalidSettings}, args...)...)
	}
	durations := []struct {
		name   string
		v      *time.Duration
		def    time.Duration
		canOff bool
	}{
		{"Window", &s.Window, DefaultWindow, false},
		{"SlowCall", &s.SlowCall, DefaultSlowCall, true},
		{"Baseline", &s.Baseline, DefaultBaseline, false},
		{"OpenFor", &s.OpenFor, DefaultOpenFor, false},
		{"Timeout", &s.Timeout, DefaultTimeout, true},
		{"CallTimeout", &s.CallTimeout, DefaultCallTimeout, true},
	}
	for _, d := range durations {
		switch {
		case *d.v < 0 && !d.canOff:
			return bad("negative %s %v", d.name, *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	ratios := []struct {
		name   string
		v      *float64
		def    float64
		canOff bool
	}{
		{"ErrorRatio", &s.ErrorRatio, DefaultErrorRatio, true},
		{"SlowRatio", &s.SlowRatio, DefaultSlowRatio, true},
		{"HitRateFloor", &s.HitRateFloor, 0, false},
		{"HitRateDrop", &s.HitRateDrop, DefaultHitRateDrop, true},
		{"RetryBudget", &s.RetryBudget, DefaultRetryBudget, true},
	}
	for _, r := range ratios {
		switch {
		case math.IsNaN(*r.v) || *r.v > 1:
			return bad("%s %v is not a fraction in [0, 1]", r.name, *r.v)
		case *r.v < 0 && !r.canOff:
			return bad("negative %s %v", r.name, *r.v)
		case *r.v == 0:
			*r.v = r.def
		}
	}
	ints := []struct {
		name string
		v    *int
		def  int
	}{
		{"Buckets", &s.Buckets, DefaultBuckets},
		{"MinRequests", &s.MinRequests, DefaultMinRequests},
		{"Probes", &s.Probes, DefaultProbes},
		{"RetryBurst", &s.RetryBurst, DefaultRetryBurst},
	}
	for _, n := range ints {
		switch {
		case *n.v < 0:
			return bad("negative %s %d", n.name, *n.v)
		case *n.v == 0:
			*n.v = n.def
		}
	}
	if s.Probes > maxProbes {
		return bad("Probes %d exceeds %d", s.Probes, maxProbes)
	}
	if s.Window/time.Duration(s.Buckets) <= 0 {
		return bad("Window %v is shorter than %d Buckets of 1ns", s.Window, s.Buckets)
	}
	if s.IsFailure == nil {
		s.IsFailure = DefaultIsFailure
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Logger == nil {
		s.Logger = zap.NewNop()
	}
	return s, nil
}

// DefaultIsFailure is the default Settings.IsFailure: every error is a
// failure except the L2's answers, l2store.ReplyError (e.g. WRONGTYPE) and
// l2store.ErrOOM. (context.Canceled never reaches IsFailure.)
func DefaultIsFailure(err error) bool {
	var reply l2store.ReplyError
	return !errors.As(err, &reply) && !errors.Is(err, l2store.ErrOOM) && !errors.Is(err, context.Canceled)
}
