package main

import (
	"io"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sidecache/sidecache/proxy"
)

func TestAdminFlags(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantAddr  string
		wantPprof bool
		wantErr   string
	}{
		{name: "defaults", wantAddr: DefaultAdminListen},
		{name: "flags", args: []string{"--admin-listen", "0.0.0.0:9999", "--admin-pprof"}, wantAddr: "0.0.0.0:9999", wantPprof: true},
		{name: "disabled", args: []string{"--admin-listen", ""}, wantAddr: ""},
		{name: "environment", env: map[string]string{"SIDECACHE_ADMIN_LISTEN": "127.0.0.1:0", "SIDECACHE_ADMIN_PPROF": "true"}, wantAddr: "127.0.0.1:0", wantPprof: true},
		{name: "no port", args: []string{"--admin-listen", "localhost"}, wantErr: "--admin-listen"},
		{name: "pprof without listener", args: []string{"--admin-listen", "", "--admin-pprof"}, wantErr: "--admin-pprof"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lookup := noEnv
			if tt.env != nil {
				lookup = func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			}
			cfg, err := parseConfig(tt.args, lookup)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Admin.Listen != tt.wantAddr || cfg.Admin.Pprof != tt.wantPprof {
				t.Errorf("admin %+v, want listen %q pprof %v", cfg.Admin, tt.wantAddr, tt.wantPprof)
			}
		})
	}
}

func TestAdminHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sidecache_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	var ready atomic.Bool
	tests := []struct {
		name     string
		pprof    bool
		ready    bool
		method   string
		path     string
		wantCode int
		wantBody string // a substring
	}{
		{name: "healthz", path: "/healthz", wantCode: 200, wantBody: "ok\n"},
		{name: "healthz while not ready", path: "/healthz", ready: false, wantCode: 200, wantBody: "ok\n"},
		{name: "readyz ready", path: "/readyz", ready: true, wantCode: 200, wantBody: "ready\n"},
		{name: "readyz not ready", path: "/readyz", ready: false, wantCode: 503, wantBody: "not ready\n"},
		{name: "metrics", path: "/metrics", wantCode: 200, wantBody: "sidecache_test_total 3\n"},
		{name: "metrics POST", method: "POST", path: "/metrics", wantCode: 405},
		{name: "pprof off", path: "/debug/pprof/", wantCode: 404},
		{name: "pprof cmdline off", path: "/debug/pprof/cmdline", wantCode: 404},
		{name: "pprof on", pprof: true, path: "/debug/pprof/", wantCode: 200, wantBody: "goroutine"},
		{name: "pprof cmdline on", pprof: true, path: "/debug/pprof/cmdline", wantCode: 200},
		{name: "unknown path", path: "/nothing", wantCode: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready.Store(tt.ready)
			h := adminHandler(reg, ready.Load, tt.pprof, zap.NewNop())
			method := tt.method
			if method == "" {
				method = "GET"
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(method, tt.path, nil))
			body, _ := io.ReadAll(rec.Result().Body)
			if rec.Code != tt.wantCode {
				t.Errorf("status %d, want %d", rec.Code, tt.wantCode)
			}
			if !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("body %q does not contain %q", body, tt.wantBody)
			}
		})
	}
}

// TestRegistryNames builds the tiers as serve does, embedded and with L1
// off, and checks the registry exports the metric names the Helm chart's
// alerts use (and no breaker for the embedded L2, which has none).
func TestRegistryNames(t *testing.T) {
	always := []string{
		"sidecache_l2_bytes", "sidecache_l2_max_bytes", "sidecache_l2_entries", "sidecache_l2_evictions_total", "sidecache_l2_expirations_total",
		"sidecache_connections", "sidecache_connections_rejected_total", "sidecache_connections_total",
		"sidecache_memory_limit_bytes", "go_goroutines", "go_gc_duration_seconds", "process_resident_memory_bytes",
	}
	withL1 := []string{
		"sidecache_l1_bytes", "sidecache_l1_max_bytes", "sidecache_l1_entries", "sidecache_l1_evictions_total",
		"sidecache_l1_expirations_total", "sidecache_l1_stale_served_total", "sidecache_requests_total",
		"sidecache_origin_admitted_total", "sidecache_origin_shed_total", "sidecache_origin_loads_total", "sidecache_origin_errors_total",
		"sidecache_request_duration_seconds",
	}
	tests := []struct {
		name    string
		args    []string
		want    []string
		wantNot []string
	}{
		{name: "embedded", want: append(append([]string{}, always...), withL1...), wantNot: []string{"sidecache_breaker_state"}},
		{name: "l1 off", args: []string{"--l1-max-bytes", "0"}, want: always, wantNot: append([]string{"sidecache_breaker_state"}, withL1[:6]...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfig(append([]string{"--listen", "127.0.0.1:0", "--l2-max-bytes", "16mb"}, tt.args...), func(string) (string, bool) { return "", false })
			if err != nil {
				t.Fatal(err)
			}
			st, _, err := newStore(cfg, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			tr, err := newTiers(cfg, st, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			defer tr.close()
			srv, err := proxy.New(tr.cache(), tr.store, proxy.Config{Addr: "127.0.0.1:0"})
			if err != nil {
				t.Fatal(err)
			}
			reg, err := newRegistry(srv, tr)
			if err != nil {
				t.Fatal(err)
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			have := map[string]bool{}
			for _, mf := range mfs {
				have[mf.GetName()] = true
			}
			for _, n := range tt.want {
				if !have[n] {
					t.Errorf("%s not exported", n)
				}
			}
			for _, n := range tt.wantNot {
				if have[n] {
					t.Errorf("%s exported", n)
				}
			}
		})
	}
}
