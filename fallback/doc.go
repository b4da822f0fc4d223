// Package fallback is what sidecache does when the L2 has no answer for an
// L1 miss: it coalesces concurrent misses on one key, limits how many
// misses (or origin loads) pass while the L2 is failing, and optionally
// reads through to an HTTP origin.
//
// The package owns the flights (the per-key record of a miss being filled
// or loaded), the pacing queue of the origin shield and, in read-through
// mode, the write of an origin load into the L2. It owns no data: values
// come from the next tier (the breaker in front of the L2) or the Origin,
// and are handed back as return values. L1 calls Shield.Get on each of its
// misses; the proxy calls Written after every write to a key and
// WrittenAll after a flush.
//
// # Algorithm
//
// Get(ctx, key, hasStale):
//
//  1. Ask the next tier. A value is returned as is; so is an error that
//     Config.IsFailure says is an answer (a WRONGTYPE), and any error once
//     ctx has ended (the caller left).
//  2. The L2 is failing if it returned an error or Config.Failing reports
//     it (the breaker is not closed). If the L2 failed and hasStale: return
//     its error at once; L1 serves its stale copy and no origin budget is
//     spent. If it answered a miss while failing (it restarted empty) and
//     hasStale: go on as below to refill the key only if nobody waits for a
//     rate-limiter slot and no flight of the key is open (mayRefill), else
//     ErrShed at once. Without such refills a key L1 answers stale is never
//     written again and the L2's hit rate cannot recover.
//  3. Read-through (Config.Origin set): one load per key at a time. The
//     first caller starts a flight, and the load runs in a goroutine
//     detached from every caller's context (bounded by Config.CallTimeout
//     and Close), so a caller that leaves fails nobody else; every caller,
//     the first included, waits for the flight or for its own ctx. If the
//     first caller found the L2 failing, the load is first admitted by the
//     rate limiter, and if it is not, every caller of the flight gets
//     ErrShed. A found load is returned with Origin set, then written to
//     Config.Store (best effort, counted) unless it is not to be kept
//     (Expires not after now) or Written(key) was called during the load.
//     Loads while healthy are coalesced but not rate-limited.
//  4. Cache-aside (no Origin), Config.FillWait > 0: the first caller, the
//     leader, gets the miss (found == false, nil error) and is expected to
//     read its database and SET the key; when failing only if the rate
//     limiter admits it, else ErrShed for it and for every caller waiting on
//     it. The flight stays open until Written(key) or FillWait after the
//     miss was handed out. Callers arriving meanwhile (followers) wait for
//     it, each at most FillWait and its ctx. After Written, one coalesced
//     re-read of the next tier serves all of them: a value is returned (as
//     Stats.Filled); anything else is handled as in 5. A follower whose wait
//     runs out (Stats.FillWaitTimeouts) is handled as in 5.
//  5. No value: healthy, a miss. Failing with hasStale, an error at once
//     (as in 2, refills aside). Failing without, the caller goes through admission itself:
//     admitted, a miss; refused, ErrShed. So while the L2 fails, every miss
//     handed to a client and every origin load has passed the limiter.
//
// With FillWait == 0 cache-aside misses are not coalesced: every caller is
// handled as in 5.
//
// Flights live in a map sharded by a seeded hash of the key, one mutex per
// shard; the shard lock is held only to find, insert or remove a flight.
// Written is a single atomic load when no flight is open.
//
// # Admission
//
// The origin shield is go.uber.org/ratelimit without slack (Config.Rate per
// second, paced: one slot every 1/Rate) behind a bounded queue: one caller
// takes the next slot and at most Config.Queue more wait behind it; a
// caller that finds them all taken is refused at once (Stats.QueueFull).
// ratelimit's Take cannot be cancelled, so a caller with a cancellable ctx
// waits for its slot in a goroutine and leaves when its ctx ends; the slot
// is spent anyway (Stats.Abandoned). The longest wait for a slot is
// (Queue+1)/Rate: keep it below the L2 timeout.
package fallback
