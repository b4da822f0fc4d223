package breaker

import (
	"fmt"
	"time"
)

// Reason classifies why the breaker opened.
type Reason int

// Reasons for opening.
const (
	ReasonNone    Reason = iota // never opened
	ReasonErrors                // errors and timeouts (ErrorRatio, or a probe failed)
	ReasonSlow                  // slow calls (SlowRatio, or a probe was slow)
	ReasonHitRate               // hit-rate collapse (HitRateFloor, HitRateDrop, or the probes missed)
)

// String returns "none", "errors", "slow" or "hit-rate".
func (r Reason) String() string {
	switch r {
	case ReasonErrors:
		return "errors"
	case ReasonSlow:
		return "slow"
	case ReasonHitRate:
		return "hit-rate"
	default:
		return "none"
	}
}

// causeKind is what made a state change.
type causeKind int

const (
	causeUnknown      causeKind = iota
	causeErrorRatio             // closed -> open
	causeSlowRatio              // closed -> open
	causeHitRateFloor           // closed -> open
	causeHitRateDrop            // closed -> open
	causeOpenElapsed            // open -> half-open
	causeProbeFailed            // half-open -> open
	causeProbeSlow              // half-open -> open
	causeProbeMisses            // half-open -> open
	causeProbesOK               // half-open -> closed
)

// cause records the figures behind a state change. It is filled in under
// the Breaker's lock and formatted outside it.
type cause struct {
	kind      causeKind
	n         uint64        // calls or Gets judged
	count     uint64        // timeouts (error ratio), hits (probes)
	ratio     float64       // measured ratio or hit rate
	limit     float64       // the threshold it crossed
	drop      float64       // HitRateDrop (hit-rate drop)
	baseline  float64       // baseline hit rate (hit-rate drop)
	d         time.Duration // SlowCall, OpenFor, or a probe's latency
	slowCall  time.Duration // SlowCall (slow probe)
	misses    int           // probes that missed
	allowed   int           // misses allowed among the probes
	err       error         // a failed probe's error
	timeout   bool          // the failed probe timed out
	threshold float64       // hit rate the probes had to show
}

func (c cause) reason() Reason {
	switch c.kind {
	case causeErrorRatio, causeProbeFailed:
		return ReasonErrors
	case causeSlowRatio, causeProbeSlow:
		return ReasonSlow
	case causeHitRateFloor, causeHitRateDrop, causeProbeMisses:
		return ReasonHitRate
	default:
		return ReasonNone
	}
}

// String is the cause as logged, e.g. "error ratio 0.62 >= 0.50 over 120
// calls".
func (c cause) String() string {
	switch c.kind {
	case causeErrorRatio:
		s := fmt.Sprintf("error ratio %.2f >= %.2f over %d calls", c.ratio, c.limit, c.n)
		if c.count > 0 {
			s += fmt.Sprintf(" (%d timeouts)", c.count)
		}
		return s
	case causeSlowRatio:
		return fmt.Sprintf("slow-call ratio %.2f >= %.2f over %d calls (slow: %v or more)", c.ratio, c.limit, c.n, c.d)
	case causeHitRateFloor:
		return fmt.Sprintf("hit rate %.2f < floor %.2f over %d gets", c.ratio, c.limit, c.n)
	case causeHitRateDrop:
		return fmt.Sprintf("hit rate %.2f < %.2f (%g x baseline %.2f) over %d gets", c.ratio, c.limit, c.drop, c.baseline, c.n)
	case causeOpenElapsed:
		return fmt.Sprintf("open for %v elapsed", c.d)
	case causeProbeFailed:
		if c.timeout {
			return fmt.Sprintf("probe timed out: %v", c.err)
		}
		return fmt.Sprintf("probe failed: %v", c.err)
	case causeProbeSlow:
		return fmt.Sprintf("probe took %v >= %v", c.d, c.slowCall)
	case causeProbeMisses:
		return fmt.Sprintf("probes missed %d times, at most %d of %d may (hit rate %.2f needed)", c.misses, c.allowed, c.n, c.threshold)
	case causeProbesOK:
		return fmt.Sprintf("%d probes succeeded, %d/%d hits", c.n, c.count, c.n)
	default:
		return "unknown"
	}
}
