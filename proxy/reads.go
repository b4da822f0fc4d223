package proxy

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/sidecache/sidecache/breaker"
	"github.com/sidecache/sidecache/fallback"
	"github.com/sidecache/sidecache/l1"
	"github.com/sidecache/sidecache/l2store"
)

// readOutcome is where the answer to one key read through L1 (a GET, or
// one key of an MGET) came from. INFO sidecache reports each as reads_*.
type readOutcome uint8

const (
	readL1Hit  readOutcome = iota // fresh in L1
	readL2Hit                     // from the L2
	readStale                     // a stale L1 copy: the L2 failed, or a refresh runs
	readMiss                      // no value: the client reads its database
	readOrigin                    // loaded from the read-through origin
	readShed                      // refused: no stale copy, origin rate limit reached
	readError                     // any other error
	numReadOutcomes
)

var readOutcomeNames = [numReadOutcomes]string{
	"reads_l1_hit", "reads_l2_hit", "reads_stale", "reads_miss", "reads_origin", "reads_shed", "reads_error",
}

// readCmd is the command of a read through L1: the metrics count GET's
// reads and MGET's apart.
type readCmd uint8

const (
	readGet readCmd = iota
	readMGet
	numReadCmds
)

var readCmdNames = [numReadCmds]string{"get", "mget"}

// readCounters counts reads by command and outcome.
type readCounters [numReadCmds][numReadOutcomes]atomic.Uint64

func (rc *readCounters) add(o *readCounters) {
	for i := range rc {
		for j := range rc[i] {
			rc[i][j].Add(o[i][j].Load())
		}
	}
}

func (rc *readCounters) reset() {
	for i := range rc {
		for j := range rc[i] {
			rc[i][j].Store(0)
		}
	}
}

// outcome returns the reads of outcome o, GET's and MGET's.
func (rc *readCounters) outcome(o readOutcome) uint64 {
	return rc[readGet][o].Load() + rc[readMGet][o].Load()
}

// hits and misses are Redis's keyspace_hits and keyspace_misses: a read
// answered with a value, and one answered with none.
func (rc *readCounters) hits() uint64 {
	return rc.outcome(readL1Hit) + rc.outcome(readL2Hit) + rc.outcome(readStale) + rc.outcome(readOrigin)
}

func (rc *readCounters) misses() uint64 { return rc.outcome(readMiss) + rc.outcome(readShed) }

// outcomeOf classifies a read through the cache.
func outcomeOf(r l1.Result, err error) readOutcome {
	switch {
	case errors.Is(err, fallback.ErrShed):
		return readShed
	case err != nil:
		return readError
	}
	switch r.Outcome {
	case l1.Hit:
		return readL1Hit
	case l1.Stale, l1.Revalidating:
		return readStale
	case l1.Next:
		if r.Origin {
			return readOrigin
		}
		return readL2Hit
	}
	return readMiss
}

// Error replies for the tiers' refusals. Both use Redis's TRYAGAIN code:
// nothing was done, the client may retry later; a shed read is a miss the
// client must not fill from its database.
const (
	errTextShed = "TRYAGAIN sidecache: L2 unavailable and origin rate limit reached; treat as a miss and do not fill from the database"
	errTextOpen = "TRYAGAIN sidecache: L2 circuit breaker is open"
)

// tierErrorText is the reply text of the errors of the tiers below the
// proxy that are not the L2's own replies, or "" for an unexpected error.
func tierErrorText(err error) string {
	switch {
	case errors.Is(err, fallback.ErrShed):
		return errTextShed
	case errors.Is(err, breaker.ErrOpen):
		return errTextOpen
	case errors.Is(err, breaker.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return "ERR sidecache: L2 timeout"
	case errors.Is(err, l2store.ErrUnavailable), errors.Is(err, l2store.ErrClosed):
		return "ERR sidecache: " + err.Error()
	}
	return ""
}
