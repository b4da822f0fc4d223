package fallback

import "sync/atomic"

// Stats is a snapshot of a Shield's counters. Counters only grow; Flights
// is a current value.
type Stats struct {
	Admitted  uint64 // pacing slots taken while failing: each one miss handed out or one origin load
	Shed      uint64 // Gets answered ErrShed: refused admission, or waiting on a refused leader
	QueueFull uint64 // admissions refused because Queue callers were already waiting
	Abandoned uint64 // callers whose ctx ended while waiting for a pacing slot (the slot is spent)

	StaleErrors uint64 // failing with a stale copy in L1: answered with an error at once
	Misses      uint64 // misses (found == false, nil error) handed to clients by the fallback

	Coalesced        uint64 // Gets that waited on another caller's flight (a fill or a load)
	Filled           uint64 // waiters that got the value of the re-read after Written
	FillWaitTimeouts uint64 // waiters whose FillWait ran out (or whose leader left) before a write

	OriginLoads  uint64 // origin loads started
	OriginMisses uint64 // loads that found no such key
	OriginErrors uint64 // loads that failed

	StoreWrites  uint64 // origin loads written to Config.Store
	StoreErrors  uint64 // of StoreWrites: the write failed
	StoreSkipped uint64 // found loads not written: no Store, not to be kept, or a write to the key raced

	Flights int64 // flights open now
}

// metrics holds the counters behind Stats.
type metrics struct {
	admitted, shed, queueFull, abandoned  atomic.Uint64
	staleErrors, misses                   atomic.Uint64
	coalesced, filled, fillWaitTimeouts   atomic.Uint64
	originLoads, originMisses, originErrs atomic.Uint64
	storeWrites, storeErrs, storeSkipped  atomic.Uint64
}

func (m *metrics) snapshot() Stats {
	return Stats{
		Admitted:         m.admitted.Load(),
		Shed:             m.shed.Load(),
		QueueFull:        m.queueFull.Load(),
		Abandoned:        m.abandoned.Load(),
		StaleErrors:      m.staleErrors.Load(),
		Misses:           m.misses.Load(),
		Coalesced:        m.coalesced.Load(),
		Filled:           m.filled.Load(),
		FillWaitTimeouts: m.fillWaitTimeouts.Load(),
		OriginLoads:      m.originLoads.Load(),
		OriginMisses:     m.originMisses.Load(),
		OriginErrors:     m.originErrs.Load(),
		StoreWrites:      m.storeWrites.Load(),
		StoreErrors:      m.storeErrs.Load(),
		StoreSkipped:     m.storeSkipped.Load(),
	}
}
