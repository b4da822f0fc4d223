// Command outage measures what sidecache's clients see when its L2 dies:
// it drives steady read load through sidecache in front of a redis-server,
// kills the redis-server (SIGKILL) part-way through, restarts it empty on
// the same port, and prints one Markdown row per second (throughput,
// errors, stale answers, origin fallbacks, shed reads, p99 latency of all
// reads and of hot-key reads, the breaker's state), then one row per phase
// and the goals of the issue: p99 of hot-key reads served from L1 during
// the outage under 1 ms, and no error for a hot key.
//
// It owns every process of the scenario: it builds sidecache (unless
// -sidecache-bin names one), starts a redis-server without persistence on
// a free loopback port, starts sidecache with --l2 redis://that-port and
// settings suited to the scenario, and in -mode read-through an HTTP
// origin of its own. All of them are stopped when it returns, also on
// SIGINT or SIGTERM.
//
// Algorithm: write the cold keys straight into the redis-server (L2 only),
// write the hot keys through sidecache and read them twice through it
// (the second pass must be L1 hits). Then -conns connections, each a raw
// RESP connection with one request in flight, send GETs paced to -rate
// reads per second in all (0: as fast as replies come back) for
// -duration: a -hot-share of them on a hot key chosen at random, the rest
// on the next cold key in turn, so a cold key is read at most once and
// every cold read is an L1 miss. In -mode cache-aside a client that gets a
// nil reply loads the value itself and SETs it through sidecache, as an
// application would; a TRYAGAIN reply is not filled, as its text asks. At
// -kill-at the redis-server gets SIGKILL; at -restore-at it is started
// again, empty, on the same port. Every read is recorded (start, latency,
// hot or cold, outcome) and INFO sidecache is read once a second; the
// tables are computed from both when the load ends.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// config holds the flags.
type config struct {
	sidecacheBin  string
	redisServer   string
	workDir       string
	mode          string // modeCacheAside or modeReadThrough
	duration      time.Duration
	killAt        time.Duration
	restoreAt     time.Duration
	conns         int
	rate          int
	hotKeys       int
	coldKeys      int
	hotShare      float64
	valueSize     int
	timeout       time.Duration
	seed          uint64
	l1TTL         time.Duration
	staleFor      time.Duration
	swr           time.Duration
	openFor       time.Duration
	originRate    int
	originQueue   int
	originMaxAge  time.Duration
	sidecacheArgs string
}

const (
	modeCacheAside  = "cache-aside"
	modeReadThrough = "read-through"
)

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("outage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.sidecacheBin, "sidecache-bin", "", "a built sidecache binary; empty: go build ./cmd/sidecache of the module in the current directory")
	fs.StringVar(&c.redisServer, "redis-server", "redis-server", "the redis-server binary")
	fs.StringVar(&c.workDir, "workdir", "", "directory for the logs and the built binary, kept; empty: a temporary directory, removed on exit")
	fs.StringVar(&c.mode, "mode", modeCacheAside, "cache-aside (a nil reply is loaded and SET by the client) or read-through (sidecache loads misses from an HTTP origin this program serves)")
	fs.DurationVar(&c.duration, "duration", 30*time.Second, "how long the load runs (whole seconds)")
	fs.DurationVar(&c.killAt, "kill-at", 10*time.Second, "when (from the start of the load) the redis-server gets SIGKILL (whole seconds)")
	fs.DurationVar(&c.restoreAt, "restore-at", 20*time.Second, "when the redis-server is started again, empty, on the same port (whole seconds)")
	fs.IntVar(&c.conns, "conns", 64, "client connections, one request in flight on each")
	fs.IntVar(&c.rate, "rate", 4000, "target reads per second over all connections; 0: closed loop (each connection sends its next read when the last is answered)")
	fs.IntVar(&c.hotKeys, "hot-keys", 1000, "hot keys: written and read through sidecache before the load, so L1 holds them")
	fs.IntVar(&c.coldKeys, "cold-keys", 50000, "cold keys: written straight into the redis-server (L2 only), read in turn, so each is read at most once unless the load needs more")
	fs.Float64Var(&c.hotShare, "hot-share", 0.8, "fraction of reads on hot keys")
	fs.IntVar(&c.valueSize, "value-size", 128, "value bytes")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "the longest a client waits for one reply before counting an error and reconnecting")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the hot-key choices")
	fs.DurationVar(&c.l1TTL, "l1-ttl", 2*time.Second, "sidecache --l1-ttl")
	fs.DurationVar(&c.staleFor, "stale-for", 10*time.Minute, "sidecache --stale-for")
	fs.DurationVar(&c.swr, "stale-while-revalidate", 0, "sidecache --stale-while-revalidate (0: off)")
	fs.DurationVar(&c.openFor, "breaker-open-for", 2*time.Second, "sidecache --breaker-open-for")
	fs.IntVar(&c.originRate, "origin-rate", 100, "sidecache --origin-rate")
	fs.IntVar(&c.originQueue, "origin-queue", 10, "sidecache --origin-queue")
	fs.DurationVar(&c.originMaxAge, "origin-max-age", time.Minute, "read-through: the Cache-Control max-age the HTTP origin sends")
	fs.StringVar(&c.sidecacheArgs, "sidecache-args", "", "more sidecache flags, split on spaces (they come last, so they win)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./bench/outage [flags]\n\n"+
			"Drives steady GET load through sidecache, kills its L2 redis-server for a while, restarts it empty,\n"+
			"and prints one row per second and the outage goals. See bench/README.md.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return c, c.validate()
}

func (c *config) validate() error {
	whole := func(name string, d time.Duration) error {
		if d <= 0 || d%time.Second != 0 {
			return fmt.Errorf("-%s %v: want a positive whole number of seconds", name, d)
		}
		return nil
	}
	for _, e := range []error{whole("duration", c.duration), whole("kill-at", c.killAt), whole("restore-at", c.restoreAt)} {
		if e != nil {
			return e
		}
	}
	switch {
	case c.mode != modeCacheAside && c.mode != modeReadThrough:
		return fmt.Errorf("-mode %q: want %s or %s", c.mode, modeCacheAside, modeReadThrough)
	case !(c.killAt < c.restoreAt && c.restoreAt < c.duration):
		return fmt.Errorf("want -kill-at < -restore-at < -duration, have %v, %v, %v", c.killAt, c.restoreAt, c.duration)
	case c.conns < 1:
		return fmt.Errorf("-conns %d: want at least 1", c.conns)
	case c.rate < 0:
		return fmt.Errorf("-rate %d: want 0 (closed loop) or more", c.rate)
	case c.hotKeys < 1 || c.coldKeys < 1:
		return fmt.Errorf("-hot-keys %d, -cold-keys %d: want at least 1 of each", c.hotKeys, c.coldKeys)
	case c.hotShare < 0 || c.hotShare > 1:
		return fmt.Errorf("-hot-share %v: want a fraction in [0, 1]", c.hotShare)
	case c.valueSize < 1:
		return fmt.Errorf("-value-size %d: want at least 1", c.valueSize)
	case c.timeout <= 0 || c.timeout > time.Hour:
		return fmt.Errorf("-timeout %v: want a positive duration of at most 1h", c.timeout)
	}
	return nil
}

// sidecacheFlags returns sidecache's flags for the scenario, besides
// --listen, --log-format and --l2. origin is the read-through URL
// template, empty in cache-aside mode.
func (c *config) sidecacheFlags(origin string) []string {
	f := []string{
		"--l1-ttl", c.l1TTL.String(),
		"--stale-for", c.staleFor.String(),
		"--breaker-open-for", c.openFor.String(),
		"--origin-rate", fmt.Sprint(c.originRate),
		"--origin-queue", fmt.Sprint(c.originQueue),
	}
	if c.swr > 0 {
		f = append(f, "--stale-while-revalidate", c.swr.String())
	}
	if origin != "" {
		f = append(f, "--origin-url", origin)
	}
	return append(f, strings.Fields(c.sidecacheArgs)...)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the scenario and returns the exit status: 0 when the tables
// were printed (goals met or not), 1 when the scenario could not run, 2 on
// bad flags, 130 when interrupted.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "outage: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s := &scenario{cfg: cfg, stdout: stdout, stderr: stderr}
	err = s.run(ctx)
	s.cleanup()
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(stderr, "outage: interrupted; every process it started is stopped")
		return 130
	case err != nil:
		fmt.Fprintf(stderr, "outage: error: %v\n", err)
		return 1
	}
	return 0
}
