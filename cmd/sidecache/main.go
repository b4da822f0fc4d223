// Command sidecache is a per-pod caching proxy that answers Redis clients
// from an in-process L1 over an L2 store (by default an embedded,
// memory-bounded, multi-threaded store).
//
// It wires the tiers together, top to bottom: proxy -> l1 -> l2store.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sidecache/sidecache/breaker"
	"github.com/sidecache/sidecache/fallback"
	"github.com/sidecache/sidecache/l1"
	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/embedded"
	"github.com/sidecache/sidecache/l2store/embedded/kv"
	"github.com/sidecache/sidecache/l2store/remote"
	"github.com/sidecache/sidecache/proxy"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg, err := parseConfig(args, os.LookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		usage(os.Stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sidecache: %v\n", err)
		return 2
	}
	if cfg.Version {
		fmt.Println("sidecache", version)
		return 0
	}
	level := zap.NewAtomicLevel()
	log, err := newLogger(cfg.LogFormat, cfg.LogLevel, level)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sidecache: %v\n", err)
		return 2
	}
	defer log.Sync()
	cfg.level = level
	cfg.args = args
	// go-redis logs its pool's failed dials itself: once per attempt while
	// the L2 is down. The breaker and the tracker report outages; keep
	// go-redis's lines for --log-level debug.
	redis.SetLogger(goRedisLogger{log.Named("go-redis")})
	if err := serve(cfg, log); err != nil {
		fmt.Fprintf(os.Stderr, "sidecache: %v\n", err)
		if isConfigError(err) {
			return 2
		}
		return 1
	}
	return 0
}

// isConfigError reports whether err is a tier's rejection of its
// configuration, which the flags set: a bad flag, like a parse error.
func isConfigError(err error) bool {
	return errors.Is(err, l1.ErrInvalidConfig) || errors.Is(err, embedded.ErrConfig) ||
		errors.Is(err, remote.ErrConfig) || errors.Is(err, proxy.ErrConfig) ||
		errors.Is(err, breaker.ErrInvalidSettings) || errors.Is(err, fallback.ErrInvalidConfig) ||
		errors.Is(err, errMemoryBudget)
}

// store is the L2 as serve uses it.
type store interface {
	l2store.Store
	proxy.Store
}

// newStore builds the L2: the embedded store, or the remote one --l2 names.
func newStore(cfg *config, log *zap.Logger) (store, []proxy.Setting, error) {
	if cfg.L2 == "" {
		policy, err := kv.ParsePolicy(cfg.L2Policy)
		if err != nil {
			return nil, nil, err
		}
		st, err := embedded.New(embedded.Config{
			KV:              kv.Config{MaxBytes: cfg.L2MaxBytes, Policy: policy},
			ProtoMaxBulkLen: cfg.ProtoMaxBulkLen,
		})
		return st, []proxy.Setting{
			{Name: "maxmemory", Value: strconv.FormatInt(cfg.L2MaxBytes, 10)},
			{Name: "maxmemory-policy", Value: cfg.L2Policy},
		}, err
	}
	tlsCfg, err := l2TLSConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	tracking := remote.TrackingMode(cfg.L2Tracking)
	if cfg.L1MaxBytes == 0 {
		tracking = remote.TrackingOff // no L1 to keep coherent
	}
	rcfg := remote.Config{
		URL:          cfg.L2,
		DialTimeout:  cfg.L2DialTimeout,
		ReadTimeout:  cfg.L2ReadTimeout,
		WriteTimeout: cfg.L2WriteTimeout,
		PoolSize:     cfg.L2PoolSize,
		TLS:          tlsCfg,
		Tracking:     tracking,
		Logger:       log.Named("l2"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.L2DialTimeout+cfg.L2ReadTimeout)
	defer cancel()
	st, err := remote.New(ctx, rcfg)
	if err != nil {
		return nil, nil, err
	}
	return st, []proxy.Setting{{Name: "sidecache-l2", Value: rcfg.Redacted()}}, nil
}

// applyInvalidations applies what the remote L2 reports written
// elsewhere (tiers.invalidate), until stop is closed.
func applyInvalidations(in <-chan remote.Invalidation, t *tiers, stop <-chan struct{}) {
	for {
		select {
		case inv := <-in:
			t.invalidate(inv)
		case <-stop:
			return
		}
	}
}

// l2TLSConfig builds the TLS settings of a remote L2 from the flags, or
// nil for the defaults.
func l2TLSConfig(cfg *config) (*tls.Config, error) {
	if cfg.L2TLSCACert == "" && cfg.L2TLSCert == "" && cfg.L2TLSServerName == "" && !cfg.L2TLSInsecure {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.L2TLSServerName, InsecureSkipVerify: cfg.L2TLSInsecure}
	if cfg.L2TLSCACert != "" {
		pem, err := os.ReadFile(cfg.L2TLSCACert)
		if err != nil {
			return nil, fmt.Errorf("%w: --l2-tls-ca-cert: %v", remote.ErrConfig, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: --l2-tls-ca-cert %s: no PEM certificate in it", remote.ErrConfig, cfg.L2TLSCACert)
		}
	}
	if cfg.L2TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.L2TLSCert, cfg.L2TLSKey)
		if err != nil {
			return nil, fmt.Errorf("%w: --l2-tls-cert/--l2-tls-key: %v", remote.ErrConfig, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// serve builds the tiers, listens, and serves until SIGINT or SIGTERM.
func serve(cfg *config, log *zap.Logger) error {
	if err := cfg.Memory.setup(cfg, log); err != nil {
		return err
	}
	st, settings, err := newStore(cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	t, err := newTiers(cfg, st, log)
	if err != nil {
		return err
	}
	defer t.close()
	if rs, ok := st.(*remote.Store); ok && t.l1 != nil {
		stop := make(chan struct{})
		defer close(stop)
		go applyInvalidations(rs.Invalidations(), t, stop)
	}
	pcfg := proxy.Config{
		Addr:                   cfg.Listen,
		MaxClients:             cfg.MaxClients,
		ProtoMaxBulkLen:        cfg.ProtoMaxBulkLen,
		MaxMultibulkLen:        cfg.MaxMultibulkLen,
		ClientQueryBufferLimit: cfg.ClientQueryBufferLimit,
		IdleTimeout:            cfg.IdleTimeout,
		RequirePass:            cfg.RequirePass,
		Version:                version,
		Logger:                 log,
		Info:                   t.info,
		Settings: append(settings,
			proxy.Setting{Name: "sidecache-l1-max-bytes", Value: strconv.FormatInt(cfg.L1MaxBytes, 10)},
			proxy.Setting{Name: "sidecache-l1-ttl", Value: cfg.L1TTL.String()},
		),
	}
	for _, apply := range []func(*proxy.Config) error{cfg.Security.apply, cfg.Memory.apply} {
		if err := apply(&pcfg); err != nil {
			return err
		}
	}
	srv, err := proxy.New(t.cache(), t.store, pcfg)
	if err != nil {
		return err
	}
	ln, err := srv.Listen()
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", cfg.Listen, syscallError(err))
	}
	stopAdmin, err := cfg.Admin.start(cfg, log, srv, t)
	if err != nil {
		return err
	}
	defer stopAdmin()
	log.Info("sidecache starting",
		zap.String("version", version),
		zap.String("listen", cfg.Listen),
		zap.Int64("l1_max_bytes", cfg.L1MaxBytes),
		zap.Duration("l1_ttl", cfg.L1TTL),
		zap.Duration("stale_for", cfg.StaleFor),
		zap.String("origin", originName(cfg)),
		zap.String("l2", l2Name(cfg)),
		zap.Int("maxclients", cfg.MaxClients),
		zap.Bool("requirepass", cfg.RequirePass != ""),
		zap.Object("memory", &cfg.Memory), // the limit and its source (memory.go)
	)
	logConfiguration(log, cfg)
	log.Info("listening", zap.String("addr", ln.Addr().String()))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
wait:
	for {
		select {
		case err := <-served:
			log.Error("sidecache stopped", zap.Error(err))
			return err
		case <-hup:
			reload(cfg, os.LookupEnv, t, srv, log)
		case <-ctx.Done():
			break wait
		}
	}
	stop()
	log.Info("shutting down", zap.Duration("timeout", cfg.ShutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("connections still open at the shutdown timeout were closed", zap.Error(err))
	}
	if err := <-served; err != nil && !errors.Is(err, proxy.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

// l2Name describes the L2 for the log, without secrets.
func l2Name(cfg *config) string {
	if cfg.L2 == "" {
		return fmt.Sprintf("embedded (max %d bytes, %s)", cfg.L2MaxBytes, cfg.L2Policy)
	}
	return remote.Config{URL: cfg.L2}.Redacted()
}

// originName describes the fallback for the log.
func originName(cfg *config) string {
	if cfg.OriginURL == "" {
		return "none (cache-aside)"
	}
	return cfg.OriginURL
}

// syscallError reduces a listen error to its cause, e.g. "address already
// in use", dropping the "listen tcp addr: bind:" prefixes.
func syscallError(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// newLogger builds the logger; its level is atomic, so a reload (SIGHUP)
// can change it.
func newLogger(format, level string, atomic zap.AtomicLevel) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	atomic.SetLevel(lvl)
	zc := zap.NewProductionConfig()
	zc.Level = atomic
	zc.Encoding = format
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.EncoderConfig.EncodeDuration = zapcore.StringDurationEncoder
	if format == "console" {
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
	}
	zc.DisableStacktrace = true
	return zc.Build()
}

// goRedisLogger writes go-redis's log lines at Debug.
type goRedisLogger struct{ log *zap.Logger }

func (l goRedisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := l.log.Check(zapcore.DebugLevel, ""); ce != nil {
		ce.Message = fmt.Sprintf(format, v...)
		ce.Write()
	}
}
