package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sidecache/sidecache/l1"
	"github.com/sidecache/sidecache/l2store/embedded/kv"
	"github.com/sidecache/sidecache/l2store/remote"
	"github.com/sidecache/sidecache/proxy"
)

// config is sidecache's configuration: every field is a flag, and every
// flag but --version can also be given as an environment variable
// SIDECACHE_<NAME>, with the flag's dashes as underscores (--l1-max-bytes:
// SIDECACHE_L1_MAX_BYTES), and in the YAML file --config names (file.go).
// A flag on the command line wins over the environment, which wins over
// the file.
type config struct {
	ConfigFile             string
	Listen                 string
	L1MaxBytes             int64
	L1TTL                  time.Duration
	StaleFor               time.Duration
	StaleWhileRevalidate   time.Duration
	L2                     string
	L2MaxBytes             int64
	L2Policy               string
	L2DialTimeout          time.Duration
	L2ReadTimeout          time.Duration
	L2WriteTimeout         time.Duration
	L2PoolSize             int
	L2Tracking             string
	L2TLSCACert            string
	L2TLSCert              string
	L2TLSKey               string
	L2TLSServerName        string
	L2TLSInsecure          bool
	L2Timeout              time.Duration
	RetryBudget            float64
	BreakerWindow          time.Duration
	BreakerMinRequests     int
	BreakerErrorRatio      float64
	BreakerSlowCall        time.Duration
	BreakerSlowRatio       float64
	BreakerHitRateFloor    float64
	BreakerHitRateDrop     float64
	BreakerBaseline        time.Duration
	BreakerOpenFor         time.Duration
	BreakerProbes          int
	FillWait               time.Duration
	OriginRate             int
	OriginQueue            int
	OriginURL              string
	OriginTimeout          time.Duration
	OriginMaxBytes         int64
	MaxClients             int
	ProtoMaxBulkLen        int64
	MaxMultibulkLen        int64
	ClientQueryBufferLimit int64
	IdleTimeout            time.Duration
	RequirePass            string
	LogFormat              string
	LogLevel               string
	ShutdownTimeout        time.Duration
	Version                bool

	// Not flags: the running process's, for reloads (reload.go).
	level zap.AtomicLevel // the logger's level
	args  []string        // the command line, without the program name
	fs    *flag.FlagSet   // parseConfig's, whose values are c's fields

	Admin    adminConfig    // --admin-* (admin.go)
	Security securityConfig // protected mode, deny-list, TLS (security.go)
	Memory   memoryConfig   // memory limit and budgets (memory.go)
}

// envPrefix prefixes the environment variable of every flag.
const envPrefix = "SIDECACHE_"

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// flagSet defines the flags, storing into c.
func flagSet(c *config) *flag.FlagSet {
	fs := flag.NewFlagSet("sidecache", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&c.ConfigFile, "config", "", "YAML file of settings (flag names without dashes: values); flags and the environment win over it; SIGHUP reloads it")
	fs.StringVar(&c.Listen, "listen", proxy.DefaultAddr, "TCP address for Redis clients")
	sizeVar(fs, &c.L1MaxBytes, "l1-max-bytes", l1.DefaultMaxBytes, "memory bound of the in-process L1, counting keys, values and per-entry overhead (e.g. 64mb); 0 turns L1 off")
	fs.DurationVar(&c.L1TTL, "l1-ttl", l1.DefaultTTL, "longest time L1 serves a value before asking L2 again")
	fs.StringVar(&c.L2, "l2", "", "remote L2 URL: redis://[user:pass@]host:port[/db], rediss://..., redis+sentinel://host:port[,host:port]/master[/db], redis+cluster://host:port[,host:port]; empty: the embedded L2")
	fs.DurationVar(&c.L2DialTimeout, "l2-dial-timeout", remote.DefaultDialTimeout, "remote L2: how long to wait to connect to a node")
	fs.DurationVar(&c.L2ReadTimeout, "l2-read-timeout", remote.DefaultReadTimeout, "remote L2: how long to wait for a reply (blocking commands wait as long as they ask)")
	fs.DurationVar(&c.L2WriteTimeout, "l2-write-timeout", remote.DefaultWriteTimeout, "remote L2: how long to wait to send a command")
	fs.IntVar(&c.L2PoolSize, "l2-pool-size", 0, "remote L2: most pooled connections per node and protocol; 0: 10 per CPU")
	fs.StringVar(&c.L2Tracking, "l2-tracking", string(remote.TrackingAuto), "remote L2: how L1 learns of writes made elsewhere: auto (CLIENT TRACKING where the upstream offers it, else the --l1-ttl cap), redirect, push (RESP3 tracking on connections of its own, e.g. Dragonfly), or off")
	fs.StringVar(&c.L2TLSCACert, "l2-tls-ca-cert", "", "remote L2 over TLS (rediss://): PEM file of the CAs to trust; empty: the system's")
	fs.StringVar(&c.L2TLSCert, "l2-tls-cert", "", "remote L2 over TLS: PEM client certificate, with --l2-tls-key")
	fs.StringVar(&c.L2TLSKey, "l2-tls-key", "", "remote L2 over TLS: PEM client key")
	fs.StringVar(&c.L2TLSServerName, "l2-tls-server-name", "", "remote L2 over TLS: the name to verify in the server's certificate; empty: the URL's host")
	fs.BoolVar(&c.L2TLSInsecure, "l2-tls-insecure-skip-verify", false, "remote L2 over TLS: do not verify the server's certificate (testing only)")
	fs.DurationVar(&c.StaleFor, "stale-for", 10*time.Minute, "how long L1 keeps an entry after its freshness ends, to answer with while the L2 fails (stale-if-error); 0 off")
	fs.DurationVar(&c.StaleWhileRevalidate, "stale-while-revalidate", 0, "answer a read this long after freshness ends from L1 at once while one background read refreshes it; 0 off")
	fs.DurationVar(&c.L2Timeout, "l2-timeout", 500*time.Millisecond, "remote L2: the most a client waits for the L2 on one command (a read through L1 with its retry, a write, any pass-through command; blocking commands and transactions excepted)")
	fs.Float64Var(&c.RetryBudget, "retry-budget", 0.1, "retries of failed L2 reads, as a fraction of L2 reads; never while the breaker is open; 0 off")
	fs.DurationVar(&c.BreakerWindow, "breaker-window", 10*time.Second, "rolling window over which the breaker judges the L2")
	fs.IntVar(&c.BreakerMinRequests, "breaker-min-requests", 20, "L2 calls in the window before the breaker judges any ratio")
	fs.Float64Var(&c.BreakerErrorRatio, "breaker-error-ratio", 0.5, "open when this fraction of L2 calls fail or time out")
	fs.DurationVar(&c.BreakerSlowCall, "breaker-slow-call", 100*time.Millisecond, "an L2 call slower than this is slow")
	fs.Float64Var(&c.BreakerSlowRatio, "breaker-slow-ratio", 0.5, "open when this fraction of L2 calls are slow")
	fs.Float64Var(&c.BreakerHitRateFloor, "breaker-hit-rate-floor", 0, "open when the L2 hit rate of L1 misses falls below this; 0 off")
	fs.Float64Var(&c.BreakerHitRateDrop, "breaker-hit-rate-drop", 0.5, "open when the L2 hit rate falls below this fraction of its baseline; 0 off")
	fs.DurationVar(&c.BreakerBaseline, "breaker-baseline", 5*time.Minute, "horizon of the L2 hit-rate baseline")
	fs.DurationVar(&c.BreakerOpenFor, "breaker-open-for", 5*time.Second, "how long the breaker stays open before probing the L2")
	fs.IntVar(&c.BreakerProbes, "breaker-probes", 5, "L2 calls let through while half-open; all must succeed (and hit) to close")
	fs.DurationVar(&c.FillWait, "fill-wait", 50*time.Millisecond, "concurrent misses on one key wait this long for the first one's SET; 0 off")
	fs.IntVar(&c.OriginRate, "origin-rate", 100, "while the breaker is not closed, most misses per second handed to clients (or origin loads)")
	fs.IntVar(&c.OriginQueue, "origin-queue", 10, "most reads waiting for an origin slot; beyond it, stale or TRYAGAIN at once")
	fs.StringVar(&c.OriginURL, "origin-url", "", "read-through HTTP origin, a URL with {key} (e.g. http://db-api:8080/items/{key}); empty: cache-aside, clients read their database on a miss")
	fs.DurationVar(&c.OriginTimeout, "origin-timeout", time.Second, "how long one origin load may take")
	sizeVar(fs, &c.OriginMaxBytes, "origin-max-bytes", 8<<20, "largest value an origin load may return")
	sizeVar(fs, &c.L2MaxBytes, "l2-max-bytes", kv.DefaultMaxBytes, "memory bound of the embedded L2, entries and indexes (Redis maxmemory)")
	fs.StringVar(&c.L2Policy, "l2-policy", "allkeys-lru", "what the embedded L2 does when full: allkeys-lru (evict) or noeviction (writes get -OOM)")
	fs.IntVar(&c.MaxClients, "maxclients", proxy.DefaultMaxClients, "most simultaneous client connections (Redis maxclients)")
	sizeVar(fs, &c.ProtoMaxBulkLen, "proto-max-bulk-len", proxy.DefaultProtoMaxBulkLen, "longest single argument (Redis proto-max-bulk-len)")
	fs.Int64Var(&c.MaxMultibulkLen, "max-multibulk-len", proxy.DefaultMaxMultibulkLen, "most arguments in one command")
	sizeVar(fs, &c.ClientQueryBufferLimit, "client-query-buffer-limit", proxy.DefaultClientQueryBufferLimit, "largest pending command of one client (Redis client-query-buffer-limit)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 0, "close client connections idle this long; 0 never (Redis timeout)")
	fs.StringVar(&c.RequirePass, "requirepass", "", "password clients must AUTH with; empty: none (Redis requirepass)")
	fs.StringVar(&c.LogFormat, "log-format", "console", "log encoding: console or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "on SIGTERM, how long to let connections finish before closing them")
	fs.BoolVar(&c.Version, "version", false, "print the version and exit")
	c.Admin.flags(fs)
	c.Security.flags(fs)
	c.Memory.flags(fs)
	return fs
}

// parseConfig reads the flags in args (without the program name) and the
// environment through lookup (os.LookupEnv in main).
func parseConfig(args []string, lookup func(string) (string, bool)) (*config, error) {
	c := &config{}
	fs := flagSet(c)
	c.fs = fs
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%v (see sidecache -help)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see sidecache -help)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || envErr != nil || f.Name == "version" {
			return
		}
		if v, ok := lookup(envName(f.Name)); ok {
			set[f.Name] = true
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("invalid value %q for environment variable %s: %v", v, envName(f.Name), err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if c.ConfigFile != "" {
		if err := applyConfigFile(c.ConfigFile, fs, set); err != nil {
			return nil, err
		}
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	for _, v := range []func() error{c.Admin.validate, c.Security.validate, c.Memory.validate} {
		if err := v(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// validate checks each flag on its own; the tiers' constructors check how
// they combine (see serve).
func (c *config) validate() error {
	switch {
	case c.L1MaxBytes < 0:
		return fmt.Errorf("--l1-max-bytes %d: must not be negative", c.L1MaxBytes)
	case c.L1TTL <= 0:
		return fmt.Errorf("--l1-ttl %v: must be positive", c.L1TTL)
	case c.L2MaxBytes <= 0:
		return fmt.Errorf("--l2-max-bytes %d: must be positive", c.L2MaxBytes)
	case c.L2Policy != "allkeys-lru" && c.L2Policy != "noeviction":
		return fmt.Errorf("--l2-policy %q: want allkeys-lru or noeviction", c.L2Policy)
	case c.MaxClients < 1:
		return fmt.Errorf("--maxclients %d: must be at least 1", c.MaxClients)
	case c.ProtoMaxBulkLen < proxy.MinProtoMaxBulkLen:
		return fmt.Errorf("--proto-max-bulk-len %d: must be at least %d", c.ProtoMaxBulkLen, proxy.MinProtoMaxBulkLen)
	case c.MaxMultibulkLen < 1 || c.MaxMultibulkLen > math.MaxInt32:
		return fmt.Errorf("--max-multibulk-len %d: must be between 1 and %d", c.MaxMultibulkLen, math.MaxInt32)
	case c.ClientQueryBufferLimit < proxy.MinClientQueryBufferLimit:
		return fmt.Errorf("--client-query-buffer-limit %d: must be at least %d (1mb)", c.ClientQueryBufferLimit, proxy.MinClientQueryBufferLimit)
	case c.IdleTimeout < 0:
		return fmt.Errorf("--idle-timeout %v: must not be negative", c.IdleTimeout)
	case c.L2PoolSize < 0:
		return fmt.Errorf("--l2-pool-size %d: must not be negative", c.L2PoolSize)
	case (c.L2TLSCert == "") != (c.L2TLSKey == ""):
		return fmt.Errorf("--l2-tls-cert and --l2-tls-key go together")
	case c.StaleFor < 0:
		return fmt.Errorf("--stale-for %v: must not be negative", c.StaleFor)
	case c.StaleWhileRevalidate < 0 || c.StaleWhileRevalidate > c.StaleFor:
		return fmt.Errorf("--stale-while-revalidate %v: must be between 0 and --stale-for (%v)", c.StaleWhileRevalidate, c.StaleFor)
	case c.L2Timeout <= 0:
		return fmt.Errorf("--l2-timeout %v: must be positive", c.L2Timeout)
	case c.RetryBudget < 0 || c.RetryBudget > 1:
		return fmt.Errorf("--retry-budget %v: must be between 0 and 1", c.RetryBudget)
	case c.BreakerWindow <= 0 || c.BreakerOpenFor <= 0 || c.BreakerBaseline <= 0 || c.BreakerSlowCall <= 0:
		return fmt.Errorf("--breaker-window, --breaker-open-for, --breaker-baseline and --breaker-slow-call must be positive")
	case c.BreakerMinRequests < 1:
		return fmt.Errorf("--breaker-min-requests %d: must be at least 1", c.BreakerMinRequests)
	case c.BreakerProbes < 1:
		return fmt.Errorf("--breaker-probes %d: must be at least 1", c.BreakerProbes)
	case !isFraction(c.BreakerErrorRatio) || !isFraction(c.BreakerSlowRatio) || !isFraction(c.BreakerHitRateFloor) || !isFraction(c.BreakerHitRateDrop):
		return fmt.Errorf("--breaker-error-ratio, --breaker-slow-ratio, --breaker-hit-rate-floor and --breaker-hit-rate-drop must be between 0 and 1")
	case c.FillWait < 0:
		return fmt.Errorf("--fill-wait %v: must not be negative", c.FillWait)
	case c.OriginRate < 1:
		return fmt.Errorf("--origin-rate %d: must be at least 1", c.OriginRate)
	case c.OriginQueue < 0:
		return fmt.Errorf("--origin-queue %d: must not be negative", c.OriginQueue)
	case c.OriginTimeout <= 0:
		return fmt.Errorf("--origin-timeout %v: must be positive", c.OriginTimeout)
	case c.OriginMaxBytes <= 0:
		return fmt.Errorf("--origin-max-bytes %d: must be positive", c.OriginMaxBytes)
	case c.LogFormat != "console" && c.LogFormat != "json":
		return fmt.Errorf("--log-format %q: want console or json", c.LogFormat)
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("--shutdown-timeout %v: must not be negative", c.ShutdownTimeout)
	}
	return nil
}

func isFraction(f float64) bool { return f >= 0 && f <= 1 }

// usage prints the flags and their environment variables.
func usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: sidecache [flags]\n\nEvery flag can also be set as an environment variable SIDECACHE_<FLAG>, e.g. --l1-max-bytes as %s;\na flag on the command line wins. Sizes take Redis's units: 1048576, 64mb, 1gb.\n\n", envName("l1-max-bytes"))
	flagSet(&config{}).VisitAll(func(f *flag.Flag) {
		if f.Name == "version" {
			fmt.Fprintf(w, "  --%s\n        %s\n", f.Name, f.Usage)
			return
		}
		fmt.Fprintf(w, "  --%s (%s, default %q)\n        %s\n", f.Name, envName(f.Name), f.DefValue, f.Usage)
	})
}

// sizeValue is a byte size flag accepting Redis's memory units: a plain
// number of bytes, or a number with k, kb, m, mb, g, gb (k = 1000,
// kb = 1024, and so on), in any case.
type sizeValue struct{ p *int64 }

func sizeVar(fs *flag.FlagSet, p *int64, name string, def int64, usage string) {
	*p = def
	fs.Var(sizeValue{p}, name, usage)
}

func (v sizeValue) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.FormatInt(*v.p, 10)
}

func (v sizeValue) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*v.p = n
	return nil
}

// parseSize parses a byte size with Redis's units (memtoull).
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mul    float64
	}{
		{"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30},
		{"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"b", 1},
	}
	lower := strings.ToLower(strings.TrimSpace(s))
	mul := 1.0
	for _, u := range units {
		if strings.HasSuffix(lower, u.suffix) {
			lower, mul = strings.TrimSuffix(lower, u.suffix), u.mul
			break
		}
	}
	n, err := strconv.ParseUint(lower, 10, 64)
	if err != nil || float64(n)*mul > math.MaxInt64 {
		return 0, fmt.Errorf("%q is not a size (e.g. 1048576, 64mb, 1gb)", s)
	}
	return int64(float64(n) * mul), nil
}
