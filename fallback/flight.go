package fallback

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// outcome is how a flight ended.
type outcome uint8

const (
	pending outcome = iota
	loaded          // read-through: res holds the load's result
	written         // cache-aside: Written(key) or WrittenAll; waiters re-read
	expired         // cache-aside: FillWait passed with no write, or the leader left
	shed            // the leader was not admitted: ErrShed for every waiter
	closed          // Close ran
)

// result is what a call to the next tier or the origin returned.
type result struct {
	item  Item
	found bool
	err   error
}

// call is one result shared by several waiters: done is closed once res is
// set, and res is not written after.
type call struct {
	done chan struct{}
	res  result
}

// flight is one key's miss being filled (cache-aside) or loaded
// (read-through). done is closed by the first finish; out and res are
// written before and never after, so a waiter reads them after <-done
// without the lock.
type flight struct {
	key  string
	load bool // read-through
	done chan struct{}

	// wrote is set by Written during a load: its result must not be
	// written to the L2 over the newer value.
	wrote atomic.Bool

	mu    sync.Mutex
	out   outcome
	res   result
	timer *time.Timer // cache-aside: ends the flight FillWait after the miss
	rr    *call       // cache-aside: the coalesced re-read after Written
}

// finish ends f with o and r and wakes its waiters. It reports whether this
// call ended it (false: it had ended already, and nothing changes).
func (f *flight) finish(o outcome, r result) bool {
	f.mu.Lock()
	if f.out != pending {
		f.mu.Unlock()
		return false
	}
	f.out, f.res = o, r
	t := f.timer
	f.timer = nil
	f.mu.Unlock()
	if t != nil {
		t.Stop()
	}
	close(f.done)
	return true
}

// arm calls fn after d unless f has ended by then (or already has).
func (f *flight) arm(d time.Duration, fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.out == pending {
		f.timer = time.AfterFunc(d, fn)
	}
}

// reread returns f's shared re-read, and whether the caller must start it.
func (f *flight) reread() (c *call, first bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rr == nil {
		f.rr = &call{done: make(chan struct{})}
		first = true
	}
	return f.rr, first
}

const flightShards = 64 // a power of two

// flightShardState is one shard of the flight map.
type flightShardState struct {
	mu sync.Mutex
	m  map[string]*flight
}

// flightShard pads a shard to 128 bytes so that neighbouring shards' locks
// do not share a cache line.
type flightShard struct {
	flightShardState
	_ [128 - unsafe.Sizeof(flightShardState{})%128]byte
}

// flights is the sharded map of open flights.
type flights struct {
	seed   maphash.Seed
	n      atomic.Int64 // flights in the map
	shards [flightShards]flightShard
}

func newFlights() *flights {
	fs := &flights{seed: maphash.MakeSeed()}
	for i := range fs.shards {
		fs.shards[i].m = make(map[string]*flight)
	}
	return fs
}

func (fs *flights) shard(key []byte) *flightShard {
	return &fs.shards[maphash.Bytes(fs.seed, key)&(flightShards-1)]
}

// shardOf is shard for a key held as a string (maphash.String hashes as
// maphash.Bytes does).
func (fs *flights) shardOf(key string) *flightShard {
	return &fs.shards[maphash.String(fs.seed, key)&(flightShards-1)]
}

// join returns key's open flight, or opens one (leader == true).
func (fs *flights) join(key []byte, load bool) (f *flight, leader bool) {
	sh := fs.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if f := sh.m[string(key)]; f != nil {
		return f, false
	}
	f = &flight{key: string(key), load: load, done: make(chan struct{})}
	sh.m[f.key] = f
	fs.n.Add(1)
	return f, true
}

// remove removes f if it is still key's flight.
func (fs *flights) remove(f *flight) {
	sh := fs.shardOf(f.key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m[f.key] == f {
		delete(sh.m, f.key)
		fs.n.Add(-1)
	}
}

// has reports whether key has an open flight.
func (fs *flights) has(key []byte) bool {
	if fs.n.Load() == 0 {
		return false
	}
	sh := fs.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[string(key)] != nil
}

// take removes and returns key's flight, or nil.
func (fs *flights) take(key []byte) *flight {
	if fs.n.Load() == 0 {
		return nil
	}
	sh := fs.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	f := sh.m[string(key)]
	if f != nil {
		delete(sh.m, f.key)
		fs.n.Add(-1)
	}
	return f
}

// takeAll removes and returns every flight.
func (fs *flights) takeAll() []*flight {
	if fs.n.Load() == 0 {
		return nil
	}
	var out []*flight
	for i := range fs.shards {
		sh := &fs.shards[i]
		sh.mu.Lock()
		for k, f := range sh.m {
			out = append(out, f)
			delete(sh.m, k)
			fs.n.Add(-1)
		}
		sh.mu.Unlock()
	}
	return out
}
