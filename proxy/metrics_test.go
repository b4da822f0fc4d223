package proxy_test

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidecache/sidecache/fallback"
	"github.com/sidecache/sidecache/l1"
	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/proxy"
)

// keyCache is an L1 whose answers are set per key: a value (a hit), an
// error, or nothing (a miss).
type keyCache struct {
	mu     sync.Mutex
	values map[string]string
	errs   map[string]error
	next   map[string]bool // keys whose value comes from the next tier (l2_hit)
}

func (c *keyCache) Lookup(_ context.Context, key []byte) (l1.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.errs[string(key)]; err != nil {
		return l1.Result{}, err
	}
	v, ok := c.values[string(key)]
	switch {
	case !ok:
		return l1.Result{Outcome: l1.Miss}, nil
	case c.next[string(key)]:
		return l1.Result{Value: []byte(v), Outcome: l1.Next}, nil
	}
	return l1.Result{Value: []byte(v), Outcome: l1.Hit}, nil
}

func (c *keyCache) Invalidate([]byte) {}
func (c *keyCache) Flush()            {}
func (c *keyCache) Stats() l1.Stats   { return l1.Stats{} }

// multiStore is a storeFunc that also runs pipelines (proxy.MultiStore),
// counting the batches.
type multiStore struct {
	storeFunc
	batches atomic.Int64
}

func (m *multiStore) DoMulti(ctx context.Context, cmds [][][]byte) ([]l2store.Reply, error) {
	m.batches.Add(1)
	out := make([]l2store.Reply, len(cmds))
	for i, args := range cmds {
		r, err := m.storeFunc(ctx, args)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

// testStore answers SET with OK, INCR with an error reply, and anything
// else with an unknown-command error.
func testStore(_ context.Context, args [][]byte) (l2store.Reply, error) {
	switch strings.ToUpper(string(args[0])) {
	case "SET":
		return l2store.OK, nil
	case "INCR":
		return l2store.Error("ERR value is not an integer or out of range"), nil
	}
	return l2store.Error("ERR unknown command"), nil
}

// tickClock is a clock that moves 1ms each time it is read.
type tickClock struct{ n atomic.Int64 }

func (c *tickClock) now() time.Time {
	return time.Unix(1700000000, 0).Add(time.Duration(c.n.Add(1)) * time.Millisecond)
}

// gather returns every sample of reg as "name{label="value",...}" (labels
// sorted by name) -> value; a histogram gives name_count and name_sum.
func gather(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			key := func(suffix string) string {
				if len(labels) == 0 {
					return mf.GetName() + suffix
				}
				return mf.GetName() + suffix + "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key("")] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key("")] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[key("_count")] = float64(m.GetHistogram().GetSampleCount())
				out[key("_sum")] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

// infoSidecache returns INFO sidecache's fields.
func infoSidecache(t *testing.T, c *client) map[string]string {
	t.Helper()
	raw := c.do("INFO", "sidecache")
	fields := map[string]string{}
	for _, line := range strings.Split(raw, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(k, "=") {
			fields[k] = v
		}
	}
	return fields
}

func TestRequestMetrics(t *testing.T) {
	cache := &keyCache{
		values: map[string]string{"a": "1", "n": "2"},
		next:   map[string]bool{"n": true},
		errs:   map[string]error{"shed": fmt.Errorf("x: %w", fallback.ErrShed)},
	}
	clock := &tickClock{}
	srv, addr, _ := serveFake(t, cache, storeFunc(testStore), proxy.Config{Now: clock.now})
	reg := prometheus.NewRegistry()
	if err := srv.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterMetrics(prometheus.NewRegistry()); err != nil {
		t.Fatalf("RegisterMetrics on a second registry: %v", err)
	}
	c := dial(t, addr)
	for _, cmd := range []struct {
		args []string
		want string
	}{
		{[]string{"GET", "a"}, "$1\r\n1\r\n"},                       // get l1_hit
		{[]string{"GET", "b"}, "_\r\n"},                             // get miss
		{[]string{"GET", "n"}, "$1\r\n2\r\n"},                       // get l2_hit
		{[]string{"GET", "shed"}, "-TRYAGAIN"},                      // get shed
		{[]string{"MGET", "a", "b", "c"}, "*3\r\n$1\r\n1\r\n_\r\n"}, // mget l1_hit, miss x2
		{[]string{"GET"}, "-ERR wrong number of arguments"},         // get error (arity)
		{[]string{"SET", "x", "1"}, "+OK\r\n"},                      // set ok
		{[]string{"SET", "y", "1"}, "+OK\r\n"},                      // set ok
		{[]string{"INCR", "x"}, "-ERR value is not an integer"},     // incr error
		{[]string{"NOSUCHCMD"}, "-ERR unknown command"},             // other error
		{[]string{"PING"}, "+PONG\r\n"},                             // ping ok
		{[]string{"CLIENT", "SETNAME", "a b"}, "-ERR"},              // client|setname error
	} {
		if got := c.do(cmd.args...); !strings.HasPrefix(got, cmd.want) {
			t.Fatalf("%q: %q, want %q...", cmd.args, got, cmd.want)
		}
	}

	got := gather(t, reg)
	want := map[string]float64{
		`sidecache_requests_total{command="get",outcome="l1_hit"}`:           1,
		`sidecache_requests_total{command="get",outcome="miss"}`:             1,
		`sidecache_requests_total{command="get",outcome="l2_hit"}`:           1,
		`sidecache_requests_total{command="get",outcome="shed"}`:             1,
		`sidecache_requests_total{command="get",outcome="stale"}`:            0,
		`sidecache_requests_total{command="get",outcome="error"}`:            1,
		`sidecache_requests_total{command="mget",outcome="l1_hit"}`:          1,
		`sidecache_requests_total{command="mget",outcome="miss"}`:            2,
		`sidecache_requests_total{command="set",outcome="ok"}`:               2,
		`sidecache_requests_total{command="incr",outcome="error"}`:           1,
		`sidecache_requests_total{command="other",outcome="error"}`:          1,
		`sidecache_requests_total{command="ping",outcome="ok"}`:              1,
		`sidecache_requests_total{command="client|setname",outcome="error"}`: 1,
		`sidecache_connections`:                                  1,
		`sidecache_connections_total`:                            1,
		`sidecache_connections_rejected_total`:                   0,
		`sidecache_request_duration_seconds_count{tier="l1"}`:    2, // GET a, MGET's a
		`sidecache_request_duration_seconds_sum{tier="l1"}`:      0.002,
		`sidecache_request_duration_seconds_count{tier="store"}`: 4, // SET, SET, INCR, NOSUCHCMD
		`sidecache_request_duration_seconds_sum{tier="store"}`:   0.004,
	}
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s missing", k)
			continue
		}
		if diff := g - v; diff > 1e-9 || diff < -1e-9 {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
	for _, k := range []string{`sidecache_requests_total{command="set",outcome="error"}`, `sidecache_requests_total{command="ping",outcome="error"}`} {
		if _, ok := got[k]; ok {
			t.Errorf("%s exported, want only series that counted something", k)
		}
	}

	// INFO reports the same counts (it counts itself after it ran).
	info := infoSidecache(t, c)
	sum := func(outcome string) float64 {
		var n float64
		for k, v := range got {
			if strings.HasPrefix(k, "sidecache_requests_total{") && strings.Contains(k, `outcome="`+outcome+`"`) {
				n += v
			}
		}
		return n
	}
	for _, f := range []struct{ field, outcome string }{
		{"reads_l1_hit", "l1_hit"}, {"reads_l2_hit", "l2_hit"}, {"reads_miss", "miss"}, {"reads_shed", "shed"},
		{"reads_stale", "stale"}, {"reads_origin", "origin"}, {"requests_ok", "ok"},
	} {
		if n, _ := strconv.ParseFloat(info[f.field], 64); n != sum(f.outcome) {
			t.Errorf("INFO %s:%s, metrics outcome=%q add up to %v", f.field, info[f.field], f.outcome, sum(f.outcome))
		}
	}
	// outcome="error" mixes reads (reads_error) and other commands
	// (requests_error).
	re, _ := strconv.ParseFloat(info["reads_error"], 64)
	qe, _ := strconv.ParseFloat(info["requests_error"], 64)
	if re+qe != sum("error") {
		t.Errorf("INFO reads_error %v + requests_error %v, metrics outcome=\"error\" add up to %v", re, qe, sum("error"))
	}

	// CONFIG RESETSTAT zeroes the counters, as Redis's commandstats.
	if got := c.do("CONFIG", "RESETSTAT"); got != "+OK\r\n" {
		t.Fatalf("CONFIG RESETSTAT: %q", got)
	}
	got = gather(t, reg)
	if v := got[`sidecache_requests_total{command="get",outcome="l1_hit"}`]; v != 0 {
		t.Errorf("after CONFIG RESETSTAT, get l1_hit = %v", v)
	}
	if _, ok := got[`sidecache_requests_total{command="set",outcome="ok"}`]; ok {
		t.Error("after CONFIG RESETSTAT, set ok still exported")
	}
}

// TestPipelineMetrics: a pipelined batch of store commands counts each
// command by its own reply, and is timed once.
func TestPipelineMetrics(t *testing.T) {
	store := &multiStore{storeFunc: testStore}
	srv, addr, _ := serveFake(t, &keyCache{values: map[string]string{"a": "1"}}, store, proxy.Config{})
	reg := prometheus.NewRegistry()
	if err := srv.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr)
	// One write, so the proxy reads the commands as one pipeline.
	var b strings.Builder
	for _, args := range [][]string{{"SET", "a", "1"}, {"INCR", "a"}, {"SET", "b", "2"}, {"GET", "a"}} {
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	if _, err := c.conn.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"+OK", "-ERR value", "+OK", "$1\r\n1"} {
		if got := c.read(); !strings.HasPrefix(got, want) {
			t.Fatalf("reply %q, want %q...", got, want)
		}
	}
	got := gather(t, reg)
	for k, v := range map[string]float64{
		`sidecache_requests_total{command="set",outcome="ok"}`:     2,
		`sidecache_requests_total{command="incr",outcome="error"}`: 1,
		`sidecache_requests_total{command="get",outcome="l1_hit"}`: 1,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	// Whether the commands arrived as one batch is up to TCP: a batch is
	// one store observation, a lone command one.
	n := got[`sidecache_request_duration_seconds_count{tier="store"}`]
	switch batches := store.batches.Load(); {
	case batches == 1 && n != 1, batches == 0 && n != 3, batches > 1:
		t.Errorf("%d batches, %v store observations", batches, n)
	}
	if store.batches.Load() == 0 {
		t.Log("the commands did not arrive as one pipeline; the batch count was not checked")
	}
}

func TestReady(t *testing.T) {
	srv, err := proxy.New(&keyCache{}, storeFunc(testStore), proxy.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Ready() {
		t.Error("Ready before Serve")
	}
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	deadline := time.Now().Add(10 * time.Second)
	for !srv.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("not Ready 10s after Serve")
		}
		time.Sleep(time.Millisecond)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if srv.Ready() {
		t.Error("Ready after Shutdown")
	}
	<-served
}
