package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// adminAddr returns the address the process logged as "admin listening".
func adminAddr(t testing.TB, sc *Sidecache) string {
	t.Helper()
	sc2 := bufio.NewScanner(strings.NewReader(sc.Stderr()))
	for sc2.Scan() {
		var entry struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(sc2.Bytes(), &entry) == nil && entry.Msg == "admin listening" && entry.Addr != "" {
			return entry.Addr
		}
	}
	t.Fatalf("no \"admin listening\" line in the log:\n%s", sc.Stderr())
	return ""
}

// httpGet returns the status and body of GET http://addr/path.
func httpGet(t testing.TB, addr, path string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// scrape returns /metrics as "name{label="value",...}" -> value, labels
// sorted by name; histograms as name_count and name_sum.
func scrape(t testing.TB, addr string) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, addr, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: status %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	out := map[string]float64{}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			key := func(suffix string) string {
				if len(labels) == 0 {
					return name + suffix
				}
				return name + suffix + "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key("")] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key("")] = m.GetGauge().GetValue()
			case m.Untyped != nil:
				out[key("")] = m.GetUntyped().GetValue()
			case m.Histogram != nil:
				out[key("_count")] = float64(m.GetHistogram().GetSampleCount())
				out[key("_sum")] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

// sumRequests adds up sidecache_requests_total over every command for
// outcome.
func sumRequests(m map[string]float64, outcome string) float64 {
	var n float64
	for k, v := range m {
		if strings.HasPrefix(k, "sidecache_requests_total{") && strings.Contains(k, `outcome="`+outcome+`"`) {
			n += v
		}
	}
	return n
}

// metricsLoad drives a mix of commands from several connections: SETs,
// GETs of keys written (an L2 hit, then L1 hits) and of missing keys,
// MGETs, an error reply (INCR of a non-number) and an unknown command.
func metricsLoad(t *testing.T, addr string, clients, rounds int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for w := 0; w < clients; w++ {
		c := DialRESP(t, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				k := fmt.Sprintf("w%d:k%d", w, i)
				for _, args := range [][]string{
					{"SET", k, "value-" + k},
					{"GET", k}, {"GET", k}, {"GET", k + ":missing"},
					{"MGET", k, k + ":missing", "nokey"},
					{"INCR", k},
					{"NOSUCHCOMMAND", k},
				} {
					if _, err := c.DoStrings(args...); err != nil {
						errs <- fmt.Errorf("%v: %v", args, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestE2EMetrics drives load through the binary, with the embedded L2
// and with a real redis-server as the L2, then checks that /metrics and
// INFO report the same figures, and the admin endpoints' status codes:
// /healthz and /readyz 200 (and /readyz still 200 with the L2 killed),
// pprof 404 without --admin-pprof and 200 with it.
func TestE2EMetrics(t *testing.T) {
	for _, tt := range []struct {
		name   string
		remote bool
		pprof  bool
	}{
		{name: "embedded", pprof: true},
		{name: "remote", remote: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"--breaker-window", "10m"} // a window that does not roll during the test
			var rs *RedisServer
			if tt.remote {
				rs = StartRedisServer(t)
				args = append(args, "--l2", "redis://"+rs.Addr+"/0", "--l2-timeout", "200ms", "--breaker-min-requests", "5")
			}
			if tt.pprof {
				args = append(args, "--admin-pprof")
			}
			sc := StartSidecache(t, args...)
			admin := adminAddr(t, sc)

			if code, body := httpGet(t, admin, "/healthz"); code != 200 || body != "ok\n" {
				t.Errorf("/healthz: %d %q, want 200 \"ok\\n\"", code, body)
			}
			if err := pollUntil(10*time.Second, func() (bool, error) {
				code, _ := httpGet(t, admin, "/readyz")
				return code == 200, nil
			}); err != nil {
				t.Fatalf("/readyz never 200: %v", err)
			}
			wantPprof := 404
			if tt.pprof {
				wantPprof = 200
			}
			for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline"} {
				if code, _ := httpGet(t, admin, p); code != wantPprof {
					t.Errorf("%s: %d, want %d", p, code, wantPprof)
				}
			}

			const clients, rounds = 4, 100
			metricsLoad(t, sc.Addr, clients, rounds)

			// The load has stopped: scrape, then INFO, on a connection
			// open during both (INFO counts itself after it ran).
			c := sc.Dial(t)
			do(t, c, "PING")
			m := scrape(t, admin)
			info := infoFields(t, c, "everything")

			// The load's own figures. Of the two GETs after each SET, the
			// first reads the L2 and the second L1, unless the remote
			// L2's invalidation of this sidecache's own SET arrives
			// after the first GET's fill: the second reads the L2 too.
			n := float64(clients * rounds)
			stores := 2 * n // SET, INCR: NOSUCHCOMMAND is refused
			if tt.remote {
				stores = 3 * n // NOSUCHCOMMAND goes to the upstream
			}
			get := func(cmd, outcome string) float64 {
				return m[`sidecache_requests_total{command="`+cmd+`",outcome="`+outcome+`"}`]
			}
			for _, f := range []struct {
				what      string
				got, want float64
			}{
				{"set ok", get("set", "ok"), n},
				{"get l1_hit + l2_hit", get("get", "l1_hit") + get("get", "l2_hit"), 2 * n},
				{"get miss", get("get", "miss"), n},
				{"mget l1_hit + l2_hit", get("mget", "l1_hit") + get("mget", "l2_hit"), n},
				{"mget miss", get("mget", "miss"), 2 * n},
				{"incr error", get("incr", "error"), n},
				{"other error", get("other", "error"), n},
				{"ping ok", get("ping", "ok"), 1},
				{"connections", m["sidecache_connections"], clients + 1},
				{"l1 observations", m[`sidecache_request_duration_seconds_count{tier="l1"}`], sumRequests(m, "l1_hit") + sumRequests(m, "stale")},
				{"l2 observations", m[`sidecache_request_duration_seconds_count{tier="l2"}`], sumRequests(m, "l2_hit") + sumRequests(m, "miss")},
				{"store observations", m[`sidecache_request_duration_seconds_count{tier="store"}`], stores},
			} {
				if f.got != f.want {
					t.Errorf("%s: %v, want %v", f.what, f.got, f.want)
				}
			}
			if get("get", "l1_hit") < n/2 {
				t.Errorf("get l1_hit %v: fewer than half the second GETs answered from L1", get("get", "l1_hit"))
			}

			// Every figure INFO and /metrics share agrees.
			agree := func(field, metric string, tolerance float64) {
				t.Helper()
				iv, ok := info[field]
				if !ok {
					t.Errorf("INFO has no %s", field)
					return
				}
				v, err := strconv.ParseFloat(iv, 64)
				if err != nil {
					t.Errorf("INFO %s = %q: %v", field, iv, err)
					return
				}
				mv, ok := m[metric]
				if !ok {
					t.Errorf("/metrics has no %s", metric)
					return
				}
				if math.Abs(mv-v) > tolerance {
					t.Errorf("INFO %s = %v, /metrics %s = %v", field, v, metric, mv)
				}
			}
			for _, f := range []struct{ field, metric string }{
				{"l1_entries", "sidecache_l1_entries"},
				{"l1_bytes", "sidecache_l1_bytes"},
				{"l1_max_bytes", "sidecache_l1_max_bytes"},
				{"l1_evictions", "sidecache_l1_evictions_total"},
				{"l1_expirations", "sidecache_l1_expirations_total"},
				{"l1_stale_served", "sidecache_l1_stale_served_total"},
				{"l2_keys", "sidecache_l2_entries"},
				{"l2_used_bytes", "sidecache_l2_bytes"},
				{"l2_max_bytes", "sidecache_l2_max_bytes"},
				{"l2_evictions", "sidecache_l2_evictions_total"},
				{"l2_expirations", "sidecache_l2_expirations_total"},
				{"origin_admitted", "sidecache_origin_admitted_total"},
				{"origin_shed", "sidecache_origin_shed_total"},
				{"origin_loads", "sidecache_origin_loads_total"},
				{"origin_errors", "sidecache_origin_errors_total"},
				{"connected_clients", "sidecache_connections"},
				{"total_connections_received", "sidecache_connections_total"},
				{"rejected_connections", "sidecache_connections_rejected_total"},
				{"go_memory_limit", "sidecache_memory_limit_bytes"},
			} {
				agree(f.field, f.metric, 0)
			}
			if tt.remote {
				for _, f := range []struct{ field, metric string }{
					{"breaker_opens_errors", `sidecache_breaker_transitions_total{reason="errors",to="open"}`},
					{"breaker_opens_slow", `sidecache_breaker_transitions_total{reason="slow",to="open"}`},
					{"breaker_opens_hit_rate", `sidecache_breaker_transitions_total{reason="hit-rate",to="open"}`},
					{"breaker_half_opens", `sidecache_breaker_transitions_total{reason="open-for-elapsed",to="half-open"}`},
					{"breaker_closes", `sidecache_breaker_transitions_total{reason="probes-ok",to="closed"}`},
				} {
					agree(f.field, f.metric, 0)
				}
				// INFO rounds the rates to 4 decimals.
				agree("l2_hit_rate", "sidecache_l2_hit_ratio", 0.00005)
				agree("l2_hit_rate_baseline", "sidecache_l2_hit_ratio_baseline", 0.00005)
				if m["sidecache_breaker_state"] != 0 || info["breaker_state"] != "closed" {
					t.Errorf("breaker: metric %v, INFO %q; want closed", m["sidecache_breaker_state"], info["breaker_state"])
				}
			}
			for _, o := range []string{"l1_hit", "l2_hit", "stale", "miss", "origin", "shed", "error"} {
				if o == "error" {
					continue // reads_error + requests_error, below
				}
				v, _ := strconv.ParseFloat(info["reads_"+o], 64)
				if s := sumRequests(m, o); s != v {
					t.Errorf("INFO reads_%s = %v, /metrics outcome=%q adds up to %v", o, v, o, s)
				}
			}
			re, _ := strconv.ParseFloat(info["reads_error"], 64)
			qe, _ := strconv.ParseFloat(info["requests_error"], 64)
			if s := sumRequests(m, "error"); s != re+qe {
				t.Errorf("INFO reads_error %v + requests_error %v, /metrics outcome=\"error\" adds up to %v", re, qe, s)
			}
			if ok, _ := strconv.ParseFloat(info["requests_ok"], 64); ok != sumRequests(m, "ok") {
				t.Errorf("INFO requests_ok %v, /metrics outcome=\"ok\" adds up to %v", ok, sumRequests(m, "ok"))
			}
			for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes"} {
				if _, ok := m[name]; !ok {
					t.Errorf("/metrics has no %s (Go and process collectors)", name)
				}
			}

			if !tt.remote {
				return
			}
			// Kill the L2: reads fail and the breaker opens, and the pod
			// stays ready (stale answers and the origin shield still serve).
			rs.stop()
			if err := pollUntil(20*time.Second, func() (bool, error) {
				for i := 0; i < 10; i++ {
					c.DoStrings("GET", fmt.Sprintf("cold:%d", i))
				}
				return scrape(t, admin)["sidecache_breaker_state"] == 1, nil
			}); err != nil {
				t.Fatalf("breaker_state never 1 (open) with the L2 killed: %v", err)
			}
			if info := infoFields(t, c, "sidecache"); info["breaker_state"] != "open" {
				t.Errorf("INFO breaker_state %q while the metric says open", info["breaker_state"])
			}
			m = scrape(t, admin)
			if m[`sidecache_breaker_transitions_total{reason="errors",to="open"}`] < 1 {
				t.Errorf("no transition to open for errors counted: %v", m[`sidecache_breaker_transitions_total{reason="errors",to="open"}`])
			}
			for _, p := range []string{"/readyz", "/healthz"} {
				if code, _ := httpGet(t, admin, p); code != 200 {
					t.Errorf("%s with the L2 killed: %d, want 200", p, code)
				}
			}
		})
	}
}
