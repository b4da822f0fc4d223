// Package breaker guards every call sidecache makes to its L2 store: it
// bounds how long a client waits for the L2, refuses calls at once while the
// L2 is sick, and tells the fallback tier (Degraded) to ration misses.
//
// The package owns the breaker's state, the rolling window of outcomes it
// judges, the baseline hit rate and the retry budget. It does not own the
// L2 (the Getter, or the function given to Call), nor what becomes of a
// refused call (the fallback serves a stale value or sheds).
//
// # Algorithm
//
// The states are gobreaker v2's closed, open and half-open, and gobreaker's
// TwoStepCircuitBreaker makes the transitions; this package measures the
// outcomes and decides.
//
// Closed: every call goes through. Get gives the L2 a context bounded by
// Timeout (a real-time deadline) and classifies the outcome: an answer (a
// value, a miss, or an error reply such as WRONGTYPE; see IsFailure), a
// failure (the L2 could not answer), a timeout (also a failure), or
// canceled (the client left: counted in Stats, never judged). The latency,
// measured on the injected clock Now, makes a call slow at SlowCall or more.
// Outcomes go into a rolling window of Buckets buckets spanning Window on
// Now, which is judged after each one: the calls, once there are
// MinRequests of them, against ErrorRatio and SlowRatio; then the Gets,
// once there are MinRequests of them, by their hit rate (found / Gets)
// against HitRateFloor and HitRateDrop x baseline. The baseline is a
// get-weighted hit rate of the buckets that have left the window while
// closed, their weights decaying as exp(-age/Baseline); it counts once it
// weighs MinRequests Gets. The last MinRequests calls and Gets within
// the window are also judged alone (two small rings), so a collapse that
// starts at full load opens the breaker after MinRequests calls rather than
// once it weighs half the window. A failed Get is retried once, within the same
// deadline, if the breaker is still closed and the retry budget holds a
// token: each Get let through adds RetryBudget tokens, up to RetryBurst,
// and a retry takes one. While closed gobreaker is not called per request:
// when the window trips, the breaker asks gobreaker for one request and
// reports it failed, and ReadyToTrip (always true) opens it.
//
// Call runs its function in a goroutine and returns at CallTimeout if it
// has not finished (a timeout): go-redis's autopipeliner does not honour a
// per-command deadline.
//
// Open: Gets are refused at once with an error wrapping ErrOpen that
// carries the cause, without calling the L2, and so are Calls (writes,
// other commands). The window is emptied, the baseline frozen. Unless the
// breaker opened because the hit rate collapsed: the L2 answers then (its
// hits are answers, writes are how it refills, and the fallback rations
// the misses, as Degraded says), so Gets and Calls go through, not as
// probes, and are judged for errors and latency as while closed; if they
// trip, the opening's reason becomes errors (or latency) and calls are
// refused from then on.
//
// Half-open: once OpenFor has passed on Now, the next Get calls gobreaker's
// Allow, which moves to half-open and admits Probes probes; further Gets
// are refused while all of them are out (let through, not as probes, after
// an opening for the hit rate). A failed or slow probe opens the
// breaker again, and so does a miss beyond floor(Probes x (1 - threshold))
// where threshold is max(HitRateFloor, HitRateDrop x baseline), whatever
// the reason it opened (an L2 that restarts fails first and then comes back
// empty). When all Probes probes have succeeded gobreaker closes the
// breaker and the window starts empty. A baseline not refreshed for
// Baseline (the breaker stayed away from closed that long) is forgotten:
// a hit rate that stays low that long is the new normal, not an incident
// to keep the breaker open for.
//
// The clock: gobreaker reads time.Now and has no clock option. Its Timeout
// (the open period) is set to 1ns and the breaker keeps its own openUntil
// on Now: while open it refuses calls itself and calls Allow only once
// openUntil has passed, at which point gobreaker finds its 1ns long gone
// and moves to half-open. gobreaker's only other look at its clock is in a
// probe's done callback, which the breaker never calls for a probe of an
// earlier state; with Interval 0 it has nothing timed to do while closed.
//
// Locking: one mutex, held for a short step before and after each L2 call,
// never during it. gobreaker is only called with it held, so its
// OnStateChange (run under gobreaker's own lock) just records the change,
// and the change is logged with zap, Warn when opening and Info otherwise,
// with its cause, after the mutex is released. Degraded reads an atomic.
package breaker
