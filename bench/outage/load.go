package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sidecache/sidecache/l2store"
)

// hotKey and coldKey name the keys of the two sets.
func hotKey(i int) string  { return fmt.Sprintf("hot:%06d", i) }
func coldKey(i int) string { return fmt.Sprintf("cold:%07d", i) }

// knownKey reports whether key is one of the scenario's (the HTTP origin
// answers 404 for any other).
func knownKey(key string) bool {
	return strings.HasPrefix(key, "hot:") || strings.HasPrefix(key, "cold:")
}

// valueFor returns the value of key: the key and a dot, repeated to size
// bytes. Every writer (warm-up, cache-aside fills, the HTTP origin) uses
// it, so a reader can tell a right value from a wrong one.
func valueFor(key string, size int) []byte {
	unit := key + "."
	b := make([]byte, size)
	for i := range b {
		b[i] = unit[i%len(unit)]
	}
	return b
}

// outcome is what one request got.
type outcome uint8

const (
	outValue    outcome = iota // a read: the key's value; a fill: OK
	outNil                     // a nil reply (a miss)
	outWrong                   // a value other than the key's, or an unexpected reply type
	outTryAgain                // an error reply starting "TRYAGAIN "
	outError                   // any other error reply
	outIOError                 // no reply: timeout, connection lost or refused
)

// isError reports whether o counts as an error: anything but the value or
// a miss.
func (o outcome) isError() bool { return o >= outWrong }

// classify returns the outcome of a GET (want is the key's value) or, with
// want nil, of a SET.
func classify(r l2store.Reply, err error, want []byte) outcome {
	switch {
	case err != nil:
		return outIOError
	case r.Kind == l2store.KindError && bytes.HasPrefix(r.Str, []byte("TRYAGAIN ")):
		return outTryAgain
	case r.Kind == l2store.KindError:
		return outError
	case want == nil && r.Kind == l2store.KindStatus && string(r.Str) == "OK":
		return outValue
	case want != nil && r.Kind == l2store.KindNull:
		return outNil
	case want != nil && r.Kind == l2store.KindBulk && bytes.Equal(r.Str, want):
		return outValue
	}
	return outWrong
}

// sample is one request of the load.
type sample struct {
	start time.Duration // since the load started
	lat   time.Duration // until the reply (or the error)
	hot   bool          // on a hot key
	fill  bool          // a cache-aside SET after a nil reply, not a read
	out   outcome
}

// load is the client side: conns workers, each with one RESP connection
// to sidecache and one request in flight.
type load struct {
	cfg      *config
	addr     string // sidecache's
	t0, end  time.Time
	coldNext atomic.Uint64 // the next cold key to read

	// Totals for the progress line.
	reads, errs, hotErrs atomic.Int64
}

// run runs the workers until l.end or ctx ends and returns their samples.
func (l *load) run(ctx context.Context) [][]sample {
	out := make([][]sample, l.cfg.conns)
	var wg sync.WaitGroup
	for i := range out {
		wg.Go(func() { out[i] = l.worker(ctx, i) })
	}
	wg.Wait()
	return out
}

// worker sends GETs on one connection, paced to its share of -rate (a
// worker that falls behind skips the slots it missed rather than
// bursting), and in cache-aside mode SETs the value of a key it got nil
// for. A connection that fails is closed and dialled again.
func (l *load) worker(ctx context.Context, id int) []sample {
	cfg := l.cfg
	rng := rand.New(rand.NewPCG(cfg.seed, uint64(id)))
	var interval time.Duration
	if cfg.rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(cfg.conns) / float64(cfg.rate))
	}
	next := l.t0.Add(interval * time.Duration(id) / time.Duration(cfg.conns))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	wait := func(d time.Duration) bool {
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		}
	}
	expect := 1024
	if cfg.rate > 0 {
		expect = int(cfg.duration/interval) + 16
	}
	samples := make([]sample, 0, expect)
	var c *respConn
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	for {
		if interval > 0 {
			if d := time.Until(next); d > 0 {
				if !wait(d) {
					return samples
				}
			} else if -d > interval {
				next = time.Now()
			}
			next = next.Add(interval)
		}
		start := time.Now()
		if ctx.Err() != nil || !start.Before(l.end) {
			return samples
		}
		hot := rng.Float64() < cfg.hotShare
		var key string
		if hot {
			key = hotKey(rng.IntN(cfg.hotKeys))
		} else {
			key = coldKey(int((l.coldNext.Add(1) - 1) % uint64(cfg.coldKeys)))
		}
		if c == nil {
			var err error
			if c, err = dialRESP(l.addr, cfg.timeout); err != nil {
				c = nil
				samples = append(samples, l.record(start, hot, false, outIOError))
				if !wait(10 * time.Millisecond) {
					return samples
				}
				continue
			}
		}
		want := valueFor(key, cfg.valueSize)
		r, err := c.do(start.Add(cfg.timeout), "GET", key)
		out := classify(r, err, want)
		samples = append(samples, l.record(start, hot, false, out))
		if out == outIOError {
			c.close()
			c = nil
			continue
		}
		if out == outNil && cfg.mode == modeCacheAside {
			// The application loads the value from its database and
			// fills the cache.
			fstart := time.Now()
			r, err := c.do(fstart.Add(cfg.timeout), "SET", key, string(want))
			out := classify(r, err, nil)
			samples = append(samples, l.record(fstart, hot, true, out))
			if out == outIOError {
				c.close()
				c = nil
			}
		}
	}
}

// record returns the sample of a request started at start and answered
// now, and counts a read for the progress line.
func (l *load) record(start time.Time, hot, fill bool, out outcome) sample {
	s := sample{start: start.Sub(l.t0), lat: time.Since(start), hot: hot, fill: fill, out: out}
	if !fill {
		l.reads.Add(1)
		if out.isError() {
			l.errs.Add(1)
			if hot {
				l.hotErrs.Add(1)
			}
		}
	}
	return s
}

// warmResult is what the warm-up found.
type warmResult struct {
	hotL1Hits int // L1 hits of the second read pass over the hot keys; -1: INFO has no l1_hits
}

// warm writes the cold keys straight into the redis-server at redisAddr
// (so only the L2 has them), writes the hot keys through sidecache at
// scAddr and reads them twice through it: the first pass fills L1, the
// second must be all L1 hits, which INFO's l1_hits shows.
func warm(cfg *config, redisAddr, scAddr string) (warmResult, error) {
	const batch = 1000
	deadline := time.Now().Add(time.Minute)
	fill := func(addr string, n int, key func(int) string, op string) error {
		c, err := dialRESP(addr, time.Second)
		if err != nil {
			return err
		}
		defer c.close()
		for lo := 0; lo < n; lo += batch {
			cmds := make([][]string, 0, batch)
			for i := lo; i < min(lo+batch, n); i++ {
				k := key(i)
				if op == "SET" {
					cmds = append(cmds, []string{"SET", k, string(valueFor(k, cfg.valueSize))})
				} else {
					cmds = append(cmds, []string{"GET", k})
				}
			}
			replies, err := c.pipeline(deadline, cmds)
			if err != nil {
				return fmt.Errorf("%s on %s: %w", op, addr, err)
			}
			for i, r := range replies {
				var want []byte
				if op == "GET" {
					want = valueFor(cmds[i][1], cfg.valueSize)
				}
				if classify(r, nil, want) != outValue {
					return fmt.Errorf("%s %s on %s: unexpected reply %+v", op, cmds[i][1], addr, r)
				}
			}
		}
		return nil
	}
	if err := fill(redisAddr, cfg.coldKeys, coldKey, "SET"); err != nil {
		return warmResult{}, err
	}
	if err := fill(scAddr, cfg.hotKeys, hotKey, "SET"); err != nil {
		return warmResult{}, err
	}
	if err := fill(scAddr, cfg.hotKeys, hotKey, "GET"); err != nil {
		return warmResult{}, err
	}
	hits := func() (int64, bool) {
		c, err := dialRESP(scAddr, time.Second)
		if err != nil {
			return 0, false
		}
		defer c.close()
		f, err := c.info(deadline, "sidecache")
		if err != nil {
			return 0, false
		}
		return counter(f, "l1_hits")
	}
	h0, ok0 := hits()
	if err := fill(scAddr, cfg.hotKeys, hotKey, "GET"); err != nil {
		return warmResult{}, err
	}
	h1, ok1 := hits()
	if !ok0 || !ok1 {
		return warmResult{hotL1Hits: -1}, nil
	}
	return warmResult{hotL1Hits: int(h1 - h0)}, nil
}
