// Command sidecache is a per-pod caching proxy that answers Redis clients
// from an in-process L1 over an L2 store (by default an embedded,
// memory-bounded, multi-threaded store).
//
// It wires the tiers together, top to bottom: proxy -> l1 -> l2store.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sidecache/sidecache/l1"
	"github.com/sidecache/sidecache/l2store/embedded"
	"github.com/sidecache/sidecache/l2store/embedded/kv"
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
	log, err := newLogger(cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sidecache: %v\n", err)
		return 2
	}
	defer log.Sync()
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
	return errors.Is(err, l1.ErrInvalidConfig) || errors.Is(err, embedded.ErrConfig) || errors.Is(err, proxy.ErrConfig)
}

// serve builds the tiers, listens, and serves until SIGINT or SIGTERM.
func serve(cfg *config, log *zap.Logger) error {
	policy, err := kv.ParsePolicy(cfg.L2Policy)
	if err != nil {
		return err
	}
	store, err := embedded.New(embedded.Config{
		KV:              kv.Config{MaxBytes: cfg.L2MaxBytes, Policy: policy},
		ProtoMaxBulkLen: cfg.ProtoMaxBulkLen,
	})
	if err != nil {
		return err
	}
	defer store.Close()
	cache, err := l1.New(l1.GetterFunc(func(ctx context.Context, key []byte) (l1.Item, bool, error) {
		item, found, err := store.Get(ctx, key)
		return l1.Item(item), found, err
	}), l1.Config{MaxBytes: cfg.L1MaxBytes, TTL: cfg.L1TTL})
	if err != nil {
		return err
	}
	srv, err := proxy.New(cache, store, proxy.Config{
		Addr:                   cfg.Listen,
		MaxClients:             cfg.MaxClients,
		ProtoMaxBulkLen:        cfg.ProtoMaxBulkLen,
		MaxMultibulkLen:        cfg.MaxMultibulkLen,
		ClientQueryBufferLimit: cfg.ClientQueryBufferLimit,
		IdleTimeout:            cfg.IdleTimeout,
		RequirePass:            cfg.RequirePass,
		Version:                version,
		Logger:                 log,
		Settings: []proxy.Setting{
			{Name: "maxmemory", Value: strconv.FormatInt(cfg.L2MaxBytes, 10)},
			{Name: "maxmemory-policy", Value: cfg.L2Policy},
			{Name: "sidecache-l1-max-bytes", Value: strconv.FormatInt(cfg.L1MaxBytes, 10)},
			{Name: "sidecache-l1-ttl", Value: cfg.L1TTL.String()},
		},
	})
	if err != nil {
		return err
	}
	ln, err := srv.Listen()
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", cfg.Listen, syscallError(err))
	}
	log.Info("sidecache starting",
		zap.String("version", version),
		zap.String("listen", cfg.Listen),
		zap.Int64("l1_max_bytes", cfg.L1MaxBytes),
		zap.Duration("l1_ttl", cfg.L1TTL),
		zap.String("l2", "embedded"),
		zap.Int64("l2_max_bytes", cfg.L2MaxBytes),
		zap.String("l2_policy", cfg.L2Policy),
		zap.Int("maxclients", cfg.MaxClients),
		zap.Bool("requirepass", cfg.RequirePass != ""),
	)
	log.Info("listening", zap.String("addr", ln.Addr().String()))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		log.Error("sidecache stopped", zap.Error(err))
		return err
	case <-ctx.Done():
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

func newLogger(format, level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Encoding = format
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.EncoderConfig.EncodeDuration = zapcore.StringDurationEncoder
	if format == "console" {
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
	}
	zc.DisableStacktrace = true
	return zc.Build()
}
