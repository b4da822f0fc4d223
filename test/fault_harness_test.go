package test

// Harness of the fault tests (fault_test.go): a real redis-server as the
// L2, an in-process toxiproxy between it and the sidecache binary (so the
// tests can add latency, stop data, reset connections, or kill and restart
// the server behind a fixed address), an optional HTTP origin for
// read-through mode, a "database" for cache-aside clients, a load
// generator recording every reply, and a sampler of INFO sidecache.
//
// Key space: k:0 .. k:faultKeys-1 are in the database and loaded into the
// L2 before sidecache starts; k:0 .. k:faultHot-1 (the hot keys) are read
// through sidecache before the load starts, so L1 holds them. Cold reads
// walk the rest of the key space with a shared cursor, so each is an L1
// miss. New keys (new:N) are in the database but never in the L2 before a
// client reads them: the misses of a healthy system.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

const (
	// faultKeys is the size of the key space the database and the L2 hold.
	faultKeys = 100_000
	// faultHot is how many keys (k:0 ..) are read through sidecache before
	// the load starts.
	faultHot = 500

	// The sidecache settings of the fault tests. The origin shield admits
	// faultOriginRate misses per second; its queue makes the longest wait
	// for a slot (queue+1)/rate = 120ms, below the L2 timeout.
	faultOriginRate  = 50
	faultOriginQueue = 5
	faultRetryBudget = 0.1
	faultProbes      = 5
	faultMinRequests = 20
	faultL2Timeout   = 200 * time.Millisecond

	// faultWorkers is the number of load generator connections.
	faultWorkers = 8

	// faultRateTolerance is the tolerance of the rate limit checks (10%).
	faultRateTolerance = 0.10
	// faultRateAllowance is added to each rate check: the slot taken at
	// once by the first caller plus the callers queued behind it, and a few
	// for the scheduling jitter between a slot and its reply.
	faultRateAllowance = faultOriginQueue + 2
	// faultRetryCap is added to the retry budget checks: a few L2 reads
	// that are neither a client's L1 miss nor a retry (probes, the re-read
	// of a coalesced fill).
	faultRetryCap = 20
	// faultGoroutineMargin is how far the goroutine counts may end above
	// their value before the fault.
	faultGoroutineMargin = 10
)

// faultKey returns the i-th key of the key space.
func faultKey(i int) string { return "k:" + strconv.Itoa(i) }

// faultValue is the database's value of key.
func faultValue(key string) string { return "val-" + key }

// faultKnown reports whether the database (and the origin) has key.
func faultKnown(key string) bool {
	if strings.HasPrefix(key, "new:") {
		return true
	}
	n, err := strconv.Atoi(strings.TrimPrefix(key, "k:"))
	return err == nil && strings.HasPrefix(key, "k:") && n >= 0 && n < faultKeys
}

// The INFO sidecache fields the fault tests read (names fixed by issue 4).
var faultInfoFields = []string{
	"reads_l1_hit", "reads_l2_hit", "reads_stale", "reads_miss", "reads_origin", "reads_shed", "reads_error",
	"l1_stale_served", "breaker_state", "breaker_cause", "breaker_opens", "breaker_closes", "breaker_rejected",
	"l2_calls", "l2_reads", "breaker_reason", "l2_retries", "l2_failures", "l2_timeouts", "l2_slow",
	"origin_admitted", "origin_shed", "origin_loads", "origin_errors", "fill_coalesced", "fill_wait_timeouts",
	"process_goroutines",
}

// readOutcomeFields are the reads_* fields: every GET is counted in one.
var readOutcomeFields = []string{
	"reads_l1_hit", "reads_l2_hit", "reads_stale", "reads_miss", "reads_origin", "reads_shed", "reads_error",
}

// faultRig is one set of processes for a fault scenario.
type faultRig struct {
	t      *testing.T
	redis  *RedisServer
	proxy  *toxiproxy.Proxy
	sc     *Sidecache
	origin *faultOrigin // nil in cache-aside mode
	db     *faultDB
}

// rigOptions configures startFaultRig.
type rigOptions struct {
	// ReadThrough starts an HTTP origin and passes --origin-url.
	ReadThrough bool
	// Args are extra sidecache flags; they override the defaults.
	Args []string
}

// startFaultRig starts redis-server with the key space loaded, toxiproxy in
// front of it, the origin if asked, and sidecache with fast breaker
// settings; then reads the hot keys through sidecache so that L1 holds
// them.
func startFaultRig(t *testing.T, o rigOptions) *faultRig {
	t.Helper()
	r := &faultRig{t: t, redis: StartRedisServer(t), db: &faultDB{}}
	r.proxy = startToxiproxy(t, r.redis.Addr)
	r.loadL2(0, faultKeys, 0)
	args := []string{
		"--l2", "redis://" + r.proxy.Listen,
		"--l1-ttl", "1s",
		"--l2-timeout", faultL2Timeout.String(),
		"--retry-budget", strconv.FormatFloat(faultRetryBudget, 'f', -1, 64),
		"--breaker-window", "2s",
		"--breaker-min-requests", strconv.Itoa(faultMinRequests),
		"--breaker-open-for", "1s",
		"--breaker-probes", strconv.Itoa(faultProbes),
		"--origin-rate", strconv.Itoa(faultOriginRate),
		"--origin-queue", strconv.Itoa(faultOriginQueue),
	}
	if o.ReadThrough {
		r.origin = startFaultOrigin(t)
		args = append(args, "--origin-url", r.origin.srv.URL+"/items/{key}")
	}
	r.sc = StartSidecache(t, append(args, o.Args...)...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sidecache's breaker log:\n%s", breakerLog(r.sc.Stderr()))
		}
	})
	f := r.info()
	for _, name := range faultInfoFields {
		if _, ok := f[name]; !ok {
			t.Fatalf("INFO sidecache has no field %s", name)
		}
	}
	r.warmHot()
	return r
}

// breakerLog returns the lines of a sidecache log about the breaker.
func breakerLog(stderr string) string {
	var b strings.Builder
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, `"msg":"breaker `) {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// startToxiproxy starts an in-process toxiproxy proxy on a free loopback
// port forwarding to upstream, stopped when the test ends.
func startToxiproxy(t testing.TB, upstream string) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "redis", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("starting toxiproxy: %v", err)
	}
	t.Cleanup(p.Stop)
	return p
}

// addToxic adds a toxic to the proxy's downstream (server to sidecache)
// direction: attrs are the toxic type's attributes, e.g. latency in ms.
func (r *faultRig) addToxic(name, typ string, attrs string) {
	r.t.Helper()
	body := fmt.Sprintf(`{"name":%q,"type":%q,"stream":"downstream","toxicity":1.0,"attributes":%s}`, name, typ, attrs)
	if _, err := r.proxy.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
		r.t.Fatalf("adding toxic %s: %v", body, err)
	}
}

// removeToxic removes the toxic called name.
func (r *faultRig) removeToxic(name string) {
	r.t.Helper()
	if err := r.proxy.Toxics.RemoveToxic(context.Background(), name); err != nil {
		r.t.Fatalf("removing toxic %s: %v", name, err)
	}
}

// loadL2 writes keys k:from .. k:to-1 with the database's values straight
// to redis, in MSET batches; with perSecond > 0 at most that many keys a
// second (a bounded-rate refill).
func (r *faultRig) loadL2(from, to int, perSecond int) {
	r.t.Helper()
	const batch = 1000
	c := r.redis.Dial(r.t)
	start := time.Now()
	for lo := from; lo < to; lo += batch {
		if perSecond > 0 {
			// Pace: the batch starting at lo may go once lo-from keys'
			// worth of time has passed.
			due := start.Add(time.Duration(float64(lo-from) / float64(perSecond) * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				time.Sleep(d) // pacing the writes, not waiting for a condition
			}
		}
		args := [][]byte{[]byte("MSET")}
		for i := lo; i < min(lo+batch, to); i++ {
			k := faultKey(i)
			args = append(args, []byte(k), []byte(faultValue(k)))
		}
		if got, err := c.Do(args...); err != nil || string(got) != "+OK\r\n" {
			r.t.Fatalf("MSET on redis: %q, %v", got, err)
		}
	}
	c.conn.Close()
}

// warmHot reads the hot keys through sidecache until L1 holds them all.
func (r *faultRig) warmHot() {
	r.t.Helper()
	c := r.sc.Dial(r.t)
	defer c.conn.Close()
	err := pollUntil(10*time.Second, func() (bool, error) {
		for i := range faultHot {
			k := faultKey(i)
			if err := c.Send([]byte("GET"), []byte(k)); err != nil {
				return false, err
			}
		}
		for i := range faultHot {
			got, err := c.Receive()
			if err != nil {
				return false, err
			}
			if want := bulkReply(faultValue(faultKey(i))); string(got) != want {
				return false, fmt.Errorf("warming: GET %s = %q, want %q", faultKey(i), got, want)
			}
		}
		// Reads made before tracking is up are served but not kept.
		return r.infoInt(r.info(), "l1_entries") >= faultHot, nil
	})
	if err != nil {
		r.t.Fatalf("L1 does not hold the %d hot keys: %v", faultHot, err)
	}
}

// killRedis kills the L2 server (SIGKILL): its data is gone.
func (r *faultRig) killRedis() { r.redis.kill() }

// restartRedis starts an empty redis-server on the killed one's port, the
// address toxiproxy forwards to.
func (r *faultRig) restartRedis() {
	r.t.Helper()
	bin := requireBinary(r.t, "redis-server")
	_, portText, _ := strings.Cut(r.redis.Addr, ":")
	port, _ := strconv.Atoi(portText)
	err := pollUntil(10*time.Second, func() (bool, error) {
		srv, err := startRedisServer(r.t, bin, port, nil)
		if err != nil {
			if strings.Contains(err.Error(), "Address already in use") {
				return false, nil
			}
			return false, err
		}
		r.redis = srv
		return true, nil
	})
	if err != nil {
		r.t.Fatalf("restarting redis-server on port %d: %v", port, err)
	}
}

// flushRedis runs FLUSHALL on the L2 server directly.
func (r *faultRig) flushRedis() {
	r.t.Helper()
	if _, err := redisCallString(r.redis.Addr, "FLUSHALL"); err != nil {
		r.t.Fatalf("FLUSHALL: %v", err)
	}
}

// redisGetCalls returns the calls of GET the L2 server has counted.
func (r *faultRig) redisGetCalls() int64 {
	r.t.Helper()
	n, _, err := redisGets(r.redis.Addr)
	if err != nil {
		r.t.Fatalf("%v", err)
	}
	return n
}

// redisGets returns the calls of GET the redis at addr has counted, and
// its run_id.
func redisGets(addr string) (int64, string, error) {
	f, err := infoFieldsAt(addr, "all")
	if err != nil {
		return 0, "", fmt.Errorf("INFO all: %w", err)
	}
	for _, kv := range strings.Split(f["cmdstat_get"], ",") {
		if v, ok := strings.CutPrefix(kv, "calls="); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, "", fmt.Errorf("cmdstat_get %q: %w", f["cmdstat_get"], err)
			}
			return n, f["run_id"], nil
		}
	}
	return 0, f["run_id"], nil // no GET yet
}

// info returns the fields of INFO sidecache.
func (r *faultRig) info() map[string]string {
	r.t.Helper()
	f, err := infoFieldsAt(r.sc.Addr, "sidecache")
	if err != nil {
		r.t.Fatalf("INFO sidecache: %v", err)
	}
	return f
}

// infoInt returns an integer field of f.
func (r *faultRig) infoInt(f map[string]string, name string) int64 {
	r.t.Helper()
	n, err := strconv.ParseInt(f[name], 10, 64)
	if err != nil {
		r.t.Fatalf("INFO sidecache %s = %q: %v", name, f[name], err)
	}
	return n
}

// waitInfo polls INFO sidecache until cond holds, failing the test after
// timeout with what was waited for and the last fields seen.
func (r *faultRig) waitInfo(timeout time.Duration, what string, cond func(f map[string]string) bool) map[string]string {
	r.t.Helper()
	var last map[string]string
	err := pollUntil(timeout, func() (bool, error) {
		last = r.info()
		return cond(last), nil
	})
	if err != nil {
		r.t.Fatalf("%s: %v; INFO sidecache: breaker_state=%s breaker_cause=%q breaker_opens=%s breaker_closes=%s",
			what, err, last["breaker_state"], last["breaker_cause"], last["breaker_opens"], last["breaker_closes"])
	}
	return last
}

// checkSidecacheGoroutines polls process_goroutines until it is within
// faultGoroutineMargin of before.
func (r *faultRig) checkSidecacheGoroutines(before int64) {
	r.t.Helper()
	var n int64
	err := pollUntil(15*time.Second, func() (bool, error) {
		n = r.infoInt(r.info(), "process_goroutines")
		return n <= before+faultGoroutineMargin, nil
	})
	if err != nil {
		r.t.Errorf("sidecache goroutines: %d after the fault, %d before (margin %d): a leak", n, before, faultGoroutineMargin)
		return
	}
	r.t.Logf("sidecache goroutines: %d before the load, %d after it", before, n)
}

// checkTestGoroutines registers, as the test's first cleanup (so it runs
// after every other), a check that the test process's goroutines return to
// their number now.
func checkTestGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		var n int
		err := pollUntil(10*time.Second, func() (bool, error) {
			n = runtime.NumGoroutine()
			return n <= before+2, nil
		})
		if err != nil {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("test process goroutines: %d after the test, %d before: a leak\n%s", n, before, shortenStack(buf))
		}
	})
}

// shortenStack keeps the start of a goroutine dump.
func shortenStack(b []byte) string {
	const max = 20000
	if len(b) > max {
		return string(b[:max]) + "\n..."
	}
	return string(b)
}

// faultOrigin is the read-through HTTP origin: 200 with the database's
// value and Cache-Control max-age=60 for a known key, 404 otherwise. It
// records the time of every load.
type faultOrigin struct {
	srv *httptest.Server

	mu    sync.Mutex
	loads []time.Time
	byKey map[string]int
}

func startFaultOrigin(t testing.TB) *faultOrigin {
	o := &faultOrigin{byKey: make(map[string]int)}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		key, ok := strings.CutPrefix(req.URL.Path, "/items/")
		o.mu.Lock()
		o.loads = append(o.loads, time.Now())
		o.byKey[key]++
		o.mu.Unlock()
		if !ok || !faultKnown(key) {
			http.NotFound(w, req)
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, faultValue(key))
	}))
	t.Cleanup(o.srv.Close)
	return o
}

// times returns the load times so far.
func (o *faultOrigin) times() []time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.loads)
}

// maxPerKey returns the largest number of loads of one key and that key.
func (o *faultOrigin) maxPerKey() (string, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var top string
	var n int
	for k, c := range o.byKey {
		if c > n {
			top, n = k, c
		}
	}
	return top, n
}

// faultDB is the cache-aside clients' database: it records the time of
// every read a client makes after sidecache handed it a miss.
type faultDB struct {
	mu    sync.Mutex
	reads []time.Time
}

func (d *faultDB) read(key string) string {
	d.mu.Lock()
	d.reads = append(d.reads, time.Now())
	d.mu.Unlock()
	return faultValue(key)
}

func (d *faultDB) times() []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.reads)
}

// keyClass is what a read's key is to sidecache.
type keyClass int

const (
	classHot  keyClass = iota // L1 holds it
	classCold                 // in the L2, not (yet) in L1
	classNew                  // in neither: a miss while healthy
	numClasses
)

var classNames = [numClasses]string{"hot", "cold", "new"}

// loadConfig configures a load generator.
type loadConfig struct {
	Workers int
	// HotPct and NewPct are the percentages of reads of hot and of new
	// keys; the rest are cold.
	HotPct, NewPct int
	// CacheAside: a client handed a miss reads the database and SETs the
	// key through sidecache (EX 300). Otherwise (read-through) a miss is
	// final.
	CacheAside bool
	// Retries is how many times a client repeats a GET answered with an
	// error reply (the incident's applications: 3).
	Retries int
	// StrictHot: every read of a hot key must return its value (the fault
	// loses no data). Otherwise a hot key may also be answered with a miss
	// (the L2 came back without it), but never with an error.
	StrictHot bool
}

// Reply outcomes the load generator counts.
const (
	outValue    = "value"
	outNil      = "nil"
	outTryAgain = "TRYAGAIN"
)

// loadGen drives GETs through sidecache from Workers connections until
// stopped, and records every reply.
type loadGen struct {
	cfg   loadConfig
	db    *faultDB
	conns []*RESPConn

	cursor  atomic.Int64 // next cold key, offset from faultHot
	newSeq  atomic.Int64 // next new key
	gets    atomic.Int64 // GETs sent
	stop    chan struct{}
	done    sync.WaitGroup
	started time.Time

	mu        sync.Mutex
	outcomes  [numClasses]map[string]int // outcome or error text -> count
	hotBad    []string                   // the first bad hot-key reads
	hotBadN   int
	hotBadNil int      // of hotBadN, reads of keys answered with a miss before
	wrong     []string // values that are not the key's value
	connErrs  []string
	setErrs   map[string]int
	hotNil    map[string]bool // hot keys answered with a miss (not StrictHot)
	giveUps   int             // reads still an error after every retry
	slowSets  []string        // SETs that took over a second
	latencies []time.Duration
}

// startLoad dials the workers' connections and starts them.
func startLoad(t *testing.T, sc *Sidecache, db *faultDB, cfg loadConfig) *loadGen {
	t.Helper()
	g := &loadGen{cfg: cfg, db: db, stop: make(chan struct{}), setErrs: map[string]int{}, hotNil: map[string]bool{}}
	for i := range g.outcomes {
		g.outcomes[i] = map[string]int{}
	}
	for range cfg.Workers {
		c := sc.Dial(t)
		c.Timeout = 5 * time.Second
		g.conns = append(g.conns, c)
	}
	g.started = time.Now()
	for i, c := range g.conns {
		g.done.Go(func() { g.worker(uint64(i), c) })
	}
	// Stop the workers even if the test fails before calling Stop.
	t.Cleanup(g.Stop)
	return g
}

// Stop stops the workers, waits for them and closes their connections. It
// may be called more than once.
func (g *loadGen) Stop() {
	select {
	case <-g.stop:
	default:
		close(g.stop)
	}
	g.done.Wait()
	for _, c := range g.conns {
		c.conn.Close()
	}
}

func (g *loadGen) pick(rng *rand.Rand) (keyClass, string) {
	switch p := rng.IntN(100); {
	case p < g.cfg.HotPct:
		return classHot, faultKey(rng.IntN(faultHot))
	case p < g.cfg.HotPct+g.cfg.NewPct:
		return classNew, "new:" + strconv.FormatInt(g.newSeq.Add(1), 10)
	default:
		n := g.cursor.Add(1) % (faultKeys - faultHot)
		return classCold, faultKey(faultHot + int(n))
	}
}

func (g *loadGen) worker(id uint64, c *RESPConn) {
	rng := rand.New(rand.NewPCG(id, uint64(g.started.UnixNano())))
	var lat []time.Duration
	defer func() {
		g.mu.Lock()
		g.latencies = append(g.latencies, lat...)
		g.mu.Unlock()
	}()
	for {
		select {
		case <-g.stop:
			return
		default:
		}
		class, key := g.pick(rng)
		var out string
		for attempt := 0; ; attempt++ {
			start := time.Now()
			reply, err := c.DoStrings("GET", key)
			g.gets.Add(1)
			if err != nil {
				g.mu.Lock()
				g.connErrs = append(g.connErrs, fmt.Sprintf("GET %s: %v", key, err))
				g.mu.Unlock()
				return // the connection is out of step; the test fails on connErrs
			}
			lat = append(lat, time.Since(start))
			out = g.record(class, key, reply)
			if !isErrorOutcome(out) || attempt >= g.cfg.Retries {
				break
			}
		}
		if isErrorOutcome(out) && g.cfg.Retries > 0 {
			g.mu.Lock()
			g.giveUps++
			g.mu.Unlock()
		}
		if out == outNil && g.cfg.CacheAside {
			v := g.db.read(key)
			setStart := time.Now()
			reply, err := c.DoStrings("SET", key, v, "EX", "300")
			if d := time.Since(setStart); d > time.Second {
				g.mu.Lock()
				g.slowSets = append(g.slowSets, fmt.Sprintf("SET %s took %v (reply %q)", key, d.Round(time.Millisecond), reply))
				g.mu.Unlock()
			}
			if err != nil {
				g.mu.Lock()
				g.connErrs = append(g.connErrs, fmt.Sprintf("SET %s: %v", key, err))
				g.mu.Unlock()
				return
			}
			if string(reply) != "+OK\r\n" {
				g.mu.Lock()
				g.setErrs[strings.TrimSpace(string(reply))]++
				g.mu.Unlock()
			}
		}
	}
}

// isErrorOutcome reports whether out is an error reply.
func isErrorOutcome(out string) bool { return out != outValue && out != outNil }

// record classifies one GET reply, counts it and checks it: a value must
// be the key's value, and a hot key (L1 holds it, fresh or stale) must get
// its value, or with StrictHot off a miss, never an error.
func (g *loadGen) record(class keyClass, key string, reply []byte) string {
	var out string
	switch s := string(reply); {
	case s == "$-1\r\n" || s == "_\r\n":
		out = outNil
	case strings.HasPrefix(s, "$"):
		out = outValue
		if want := bulkReply(faultValue(key)); s != want {
			g.mu.Lock()
			if len(g.wrong) < 10 {
				g.wrong = append(g.wrong, fmt.Sprintf("GET %s = %q, want %q", key, s, want))
			}
			g.mu.Unlock()
		}
	case strings.HasPrefix(s, "-TRYAGAIN "):
		out = outTryAgain
	case strings.HasPrefix(s, "-"):
		out = strings.TrimSpace(s[1:])
	default:
		out = "unexpected reply " + strconv.Quote(s)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.outcomes[class][out]++
	if class == classHot && out != outValue {
		switch {
		case out == outNil && !g.cfg.StrictHot:
			// The L2 came back without the key and said so.
			g.hotNil[key] = true
		default:
			g.hotBadN++
			if g.hotNil[key] {
				g.hotBadNil++
			}
			if len(g.hotBad) < 10 {
				g.hotBad = append(g.hotBad, fmt.Sprintf("GET %s (held by L1) at +%v = %q",
					key, time.Since(g.started).Round(time.Millisecond), reply))
			}
		}
	}
	return out
}

// summary describes the replies for the test log.
func (g *loadGen) summary() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%d GETs in %v", g.gets.Load(), time.Since(g.started).Round(time.Millisecond))
	for c := range numClasses {
		fmt.Fprintf(&b, "; %s: %v", classNames[c], g.outcomes[c])
	}
	if len(g.setErrs) > 0 {
		fmt.Fprintf(&b, "; SET errors: %v", g.setErrs)
	}
	if len(g.connErrs) > 0 {
		fmt.Fprintf(&b, "; %d connections failed: %v", len(g.connErrs), g.connErrs)
	}
	if len(g.slowSets) > 0 {
		fmt.Fprintf(&b, "; %d SETs took over a second: %v", len(g.slowSets), g.slowSets)
	}
	if g.cfg.Retries > 0 {
		fmt.Fprintf(&b, "; gave up after %d retries: %d", g.cfg.Retries, g.giveUps)
	}
	if len(g.hotNil) > 0 {
		fmt.Fprintf(&b, "; hot keys answered with a miss: %d", len(g.hotNil))
	}
	lat := slices.Clone(g.latencies)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if n := len(lat); n > 0 {
		fmt.Fprintf(&b, "; latency p50 %v p99 %v max %v (not asserted)", lat[n/2], lat[n*99/100], lat[n-1])
	}
	return b.String()
}

// check fails the test for connection errors, wrong values and hot-key
// reads that did not get their value.
func (g *loadGen) check(t *testing.T) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.connErrs) > 0 {
		t.Errorf("%d client connections failed: %v", len(g.connErrs), g.connErrs)
	}
	if len(g.wrong) > 0 {
		t.Errorf("wrong values: %v", g.wrong)
	}
	if g.hotBadN > 0 {
		t.Errorf("%d reads of keys L1 held (fresh or stale) got no value (%d of them of keys answered with a miss earlier); first: %v",
			g.hotBadN, g.hotBadNil, g.hotBad)
	}
	if g.outcomes[classHot][outValue] == 0 {
		t.Errorf("no hot key was read: the check of keys L1 holds proved nothing")
	}
}

// count returns how many replies of class had outcome out.
func (g *loadGen) count(class keyClass, out string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.outcomes[class][out]
}

// infoSample is one INFO sidecache reading.
type infoSample struct {
	at time.Time
	f  map[string]string
	// redisGets is redis's count of GETs taken just after f (sampler
	// only), or -1 when redis did not answer.
	redisGets int64
	// redisRunID identifies the redis process counting redisGets.
	redisRunID string
}

func (s infoSample) int(name string) int64 {
	n, _ := strconv.ParseInt(s.f[name], 10, 64)
	return n
}

// reads returns the sum of the reads_* counters.
func (s infoSample) reads() int64 {
	var n int64
	for _, name := range readOutcomeFields {
		n += s.int(name)
	}
	return n
}

// sampler reads INFO sidecache, and redis's GET count, every few tens of
// milliseconds.
type sampler struct {
	addr      string
	redisAddr string
	stop      chan struct{}
	done      chan struct{}

	mu      sync.Mutex
	samples []infoSample
	errs    []error
}

// startSampler starts sampling the sidecache at addr and the redis at
// redisAddr (an address that stays the same across restarts).
func startSampler(t *testing.T, addr, redisAddr string) *sampler {
	s := &sampler{addr: addr, redisAddr: redisAddr, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			at := time.Now()
			f, err := infoFieldsAt(addr, "sidecache")
			gets, runID, rerr := redisGets(redisAddr)
			if rerr != nil {
				gets = -1
			}
			s.mu.Lock()
			if err != nil {
				s.errs = append(s.errs, err)
			} else {
				s.samples = append(s.samples, infoSample{at: at, f: f, redisGets: gets, redisRunID: runID})
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { s.Stop() })
	return s
}

// Stop stops the sampler after one last sample and returns the samples.
func (s *sampler) Stop() []infoSample {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.samples)
}

func (s *sampler) errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.errs)
}

// failRun is a stretch of consecutive samples in which the breaker was
// not closed and did not close: from and to are its first and last sample.
type failRun struct {
	from, to infoSample
	samples  []infoSample // from .. to
}

func (r failRun) dur() time.Duration { return r.to.at.Sub(r.from.at) }

// failingRuns returns the stretches of samples with the breaker not closed.
// A breaker_closes change starts a new stretch: it closed in between.
func failingRuns(samples []infoSample) []failRun {
	var runs []failRun
	var cur *failRun
	for _, s := range samples {
		if s.f["breaker_state"] == "closed" {
			cur = nil
			continue
		}
		if cur != nil && s.int("breaker_closes") == cur.to.int("breaker_closes") {
			cur.to = s
			cur.samples = append(cur.samples, s)
			continue
		}
		runs = append(runs, failRun{from: s, to: s, samples: []infoSample{s}})
		cur = &runs[len(runs)-1]
	}
	return runs
}

// countIn returns how many of times fall in [from, to].
func countIn(times []time.Time, from, to time.Time) int {
	n := 0
	for _, at := range times {
		if !at.Before(from) && !at.After(to) {
			n++
		}
	}
	return n
}

// rateLimit returns the most events a limiter of faultOriginRate per second
// may pass in d, with the tolerance and allowance.
func rateLimit(d time.Duration) float64 {
	return (1+faultRateTolerance)*faultOriginRate*d.Seconds() + faultRateAllowance
}

// checkPacing checks that, while the breaker was not closed, the events
// counted (origin loads or database reads, by time, and the sidecache
// counter field, by sample) stayed within the origin rate limit, over each
// stretch and over every one-second window inside one. It returns the
// number of events counted while failing and the total failing time.
func checkPacing(t *testing.T, runs []failRun, what string, times []time.Time, field string) (int, time.Duration) {
	t.Helper()
	total, totalDur := 0, time.Duration(0)
	for _, run := range runs {
		d := run.dur()
		if d <= 0 {
			continue
		}
		n := countIn(times, run.from.at, run.to.at)
		total += n
		totalDur += d
		if float64(n) > rateLimit(d) {
			t.Errorf("%s while the breaker was not closed: %d in %v, above --origin-rate %d/s (+%.0f%%, +%d)",
				what, n, d.Round(time.Millisecond), faultOriginRate, faultRateTolerance*100, faultRateAllowance)
		}
		for w := run.from.at; !w.Add(time.Second).After(run.to.at); w = w.Add(100 * time.Millisecond) {
			if n := countIn(times, w, w.Add(time.Second)); float64(n) > rateLimit(time.Second) {
				t.Errorf("%s in the second from +%v of a failing stretch: %d, above --origin-rate %d/s (+%.0f%%, +%d)",
					what, w.Sub(run.from.at).Round(time.Millisecond), n, faultOriginRate, faultRateTolerance*100, faultRateAllowance)
				break
			}
		}
		if field != "" {
			if n := run.to.int(field) - run.from.int(field); float64(n) > rateLimit(d) {
				t.Errorf("INFO %s grew by %d in %v while the breaker was not closed: above --origin-rate %d/s (+%.0f%%, +%d)",
					field, n, d.Round(time.Millisecond), faultOriginRate, faultRateTolerance*100, faultRateAllowance)
			}
		}
	}
	return total, totalDur
}

// checkPerSecond checks that no one-second window within [from, to] holds
// more of times than --origin-rate allows, and returns the largest count.
func checkPerSecond(t *testing.T, what string, times []time.Time, from, to time.Time, extra int) int {
	t.Helper()
	top, topAt := 0, from
	for w := from; !w.Add(time.Second).After(to); w = w.Add(100 * time.Millisecond) {
		if n := countIn(times, w, w.Add(time.Second)); n > top {
			top, topAt = n, w
		}
	}
	if float64(top) > rateLimit(time.Second)+float64(extra) {
		t.Errorf("%s: %d in the second from +%v, above --origin-rate %d/s (+%.0f%%, +%d, +%d)",
			what, top, topAt.Sub(from).Round(time.Millisecond), faultOriginRate, faultRateTolerance*100, faultRateAllowance, extra)
	}
	return top
}

// checkNoL2WhileOpen checks that within each failing stretch the L2 got at
// most the half-open probes (--breaker-probes per half-open period, one
// more period than reopenings) plus the reads in flight when it opened
// (one per worker, and a retry each). Both sidecache's l2_reads and,
// where the same redis process answered at both ends, redis's own GET
// count are checked. Time the breaker spent open for a hit-rate collapse
// is left out: the L2 answers then, and reads go on (its hits are
// answers; the misses are rationed).
func checkNoL2WhileOpen(t *testing.T, runs []failRun, workers int) {
	t.Helper()
	for _, run := range runs {
		opens := run.to.int("breaker_opens") - run.from.int("breaker_opens")
		limit := faultProbes*(opens+1) + 2*int64(workers)
		var reads, gets int64
		var judged time.Duration
		for i := 1; i < len(run.samples); i++ {
			a, b := run.samples[i-1], run.samples[i]
			if a.f["breaker_reason"] == "hit-rate" || b.f["breaker_reason"] == "hit-rate" {
				continue
			}
			judged += b.at.Sub(a.at)
			reads += b.int("l2_reads") - a.int("l2_reads")
			if a.redisGets >= 0 && b.redisGets >= 0 && a.redisRunID == b.redisRunID {
				gets += b.redisGets - a.redisGets
			}
		}
		if gets > limit {
			t.Errorf("redis counted %d GETs while the breaker was open or half-open for errors or latency (%v of %v, %d reopenings), want at most %d (probes and reads in flight)",
				gets, judged.Round(time.Millisecond), run.dur().Round(time.Millisecond), opens, limit)
		}
		if reads > limit {
			t.Errorf("INFO l2_reads (L2 reads, retries included) grew by %d while the breaker was open or half-open for errors or latency (%v of %v, %d reopenings), want at most %d (probes and reads in flight)",
				reads, judged.Round(time.Millisecond), run.dur().Round(time.Millisecond), opens, limit)
		}
	}
}

// checkRetryBudget checks that the L2 got at most one read per client read
// that missed L1, plus the retry budget: l2_reads <= misses*(1+budget)+cap,
// and that l2_retries stayed within the budget. If redisGets >= 0 (the
// same server ran throughout), the server's own count of GETs is held to
// the same bound.
func checkRetryBudget(t *testing.T, first, last infoSample, redisGets int64) {
	t.Helper()
	reads := last.reads() - first.reads()
	missedL1 := reads - (last.int("reads_l1_hit") - first.int("reads_l1_hit"))
	calls := last.int("l2_reads") - first.int("l2_reads")
	retries := last.int("l2_retries") - first.int("l2_retries")
	limit := float64(missedL1)*(1+faultRetryBudget) + faultRetryCap
	t.Logf("reads %d, missed L1 %d, l2_reads %d, l2_retries %d, redis GETs %d", reads, missedL1, calls, retries, redisGets)
	if float64(calls) > limit {
		t.Errorf("l2_reads grew by %d for %d client reads that missed L1: above the retry budget %.2f (limit %.0f)",
			calls, missedL1, faultRetryBudget, limit)
	}
	if float64(retries) > faultRetryBudget*float64(calls)+faultRetryCap {
		t.Errorf("l2_retries grew by %d for %d L2 reads: above --retry-budget %.2f", retries, calls, faultRetryBudget)
	}
	if redisGets >= 0 && float64(redisGets) > limit {
		t.Errorf("redis counted %d GETs for %d client reads that missed L1: above the retry budget %.2f (limit %.0f)",
			redisGets, missedL1, faultRetryBudget, limit)
	}
}

// checkReadsCounted checks that sidecache counted every GET of the load in
// one reads_* outcome.
func checkReadsCounted(t *testing.T, first, last infoSample, g *loadGen) {
	t.Helper()
	if got, sent := last.reads()-first.reads(), g.gets.Load(); got != sent {
		t.Errorf("reads_* grew by %d for %d GETs sent", got, sent)
	}
}
