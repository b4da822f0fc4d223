package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/proxy"
)

// DefaultAdminListen is the default --admin-listen.
const DefaultAdminListen = "127.0.0.1:9121"

// adminShutdownTimeout bounds how long stop waits for admin requests in
// flight (a pprof profile runs as long as it asks: it is cut short).
const adminShutdownTimeout = 2 * time.Second

// adminConfig configures the admin HTTP listener, on its own address,
// apart from RESP:
//
//	/metrics         Prometheus metrics, from a registry of its own (never
//	                 the global one): sidecache's, Go's and the process's
//	/healthz         200 "ok" while the process runs (liveness)
//	/readyz          200 "ready" while the RESP listener serves, 503 before
//	                 and from the start of shutdown (readiness). An L2
//	                 outage does not make it unready: stale answers and
//	                 the origin shield still serve.
//	/debug/pprof/*   net/http/pprof, only with --admin-pprof
type adminConfig struct {
	Listen string // --admin-listen; "" disables the listener
	Pprof  bool   // --admin-pprof
}

func (c *adminConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "admin-listen", DefaultAdminListen, "TCP address of the admin HTTP listener (/metrics, /healthz, /readyz); empty: none")
	fs.BoolVar(&c.Pprof, "admin-pprof", false, "serve /debug/pprof/ on the admin listener")
}

func (c *adminConfig) validate() error {
	if c.Listen == "" {
		if c.Pprof {
			return errors.New("--admin-pprof needs --admin-listen")
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("--admin-listen %q: want host:port (%v)", c.Listen, err)
	}
	return nil
}

// start registers the metrics of srv and the tiers and starts the admin
// listener, once the RESP listener is up; stop shuts it down (after the
// RESP server, whose Shutdown turns /readyz to 503 first).
func (c *adminConfig) start(cfg *config, log *zap.Logger, srv *proxy.Server, t *tiers) (stop func(), err error) {
	if c.Listen == "" {
		return func() {}, nil
	}
	reg, err := newRegistry(srv, t)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on --admin-listen %s: %w", c.Listen, syscallError(err))
	}
	hs := &http.Server{
		Handler:           adminHandler(reg, srv.Ready, c.Pprof, log),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          zap.NewStdLog(log.Named("admin")),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener stopped", zap.Error(err))
		}
	}()
	log.Info("admin listening", zap.String("addr", ln.Addr().String()), zap.Bool("pprof", c.Pprof))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), adminShutdownTimeout)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			hs.Close()
		}
		<-done
	}, nil
}

// newRegistry returns a registry of sidecache's metrics (each package's
// collectors, read from the tiers' Stats at scrape time), the Go runtime's
// and the process's. It also has the fallback time its L2 reads and
// origin loads into sidecache_request_duration_seconds.
func newRegistry(srv *proxy.Server, t *tiers) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	regs := []func(prometheus.Registerer) error{
		func(r prometheus.Registerer) error { return r.Register(collectors.NewGoCollector()) },
		func(r prometheus.Registerer) error {
			return r.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		},
		func(r prometheus.Registerer) error {
			return r.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "sidecache_memory_limit_bytes",
				Help: "The Go runtime's soft memory limit (GOMEMLIMIT, or the one sidecache set); 9223372036854775807 when there is none.",
			}, func() float64 { return float64(debug.SetMemoryLimit(-1)) }))
		},
		srv.RegisterMetrics,
		func(r prometheus.Registerer) error { return l2store.RegisterMetrics(r, t.store) },
	}
	if t.l1 != nil {
		regs = append(regs, t.l1.RegisterMetrics)
	}
	if t.brk != nil {
		regs = append(regs, t.brk.RegisterMetrics)
	}
	if t.shield != nil {
		regs = append(regs, t.shield.RegisterMetrics)
	}
	for _, register := range regs {
		if err := register(reg); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	if t.shield != nil {
		t.shield.ObserveDurations(srv.DurationObserver(proxy.TierL2), srv.DurationObserver(proxy.TierOrigin))
	}
	return reg, nil
}

// adminHandler routes the admin listener's paths. ready reports
// readiness; pprof adds /debug/pprof/.
func adminHandler(g prometheus.Gatherer, ready func() bool, withPprof bool, log *zap.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      zap.NewStdLog(log.Named("metrics")),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready")
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
