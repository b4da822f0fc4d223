package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// scenario holds the processes of one run; cleanup stops them.
type scenario struct {
	cfg            *config
	stdout, stderr io.Writer
	dir            string
	tempDir        bool // dir is removed by cleanup
	redis          *redisServer
	sc             *proc
	scAddr         string
	origin         *origin
}

func (s *scenario) logf(format string, args ...any) {
	fmt.Fprintf(s.stderr, "outage: "+format+"\n", args...)
}

// cleanup stops sidecache, then the redis-server and the origin, and
// removes the temporary directory.
func (s *scenario) cleanup() {
	if s.sc != nil {
		s.sc.stop(5 * time.Second)
	}
	if s.redis != nil && s.redis.p != nil {
		s.redis.p.stop(5 * time.Second)
	}
	if s.origin != nil {
		s.origin.close()
	}
	if s.tempDir {
		os.RemoveAll(s.dir)
	}
}

// run starts the processes, warms the keys, drives the load through the
// outage and prints the report.
func (s *scenario) run(ctx context.Context) error {
	cfg := s.cfg
	s.dir = cfg.workDir
	if s.dir == "" {
		d, err := os.MkdirTemp("", "sidecache-outage-")
		if err != nil {
			return err
		}
		s.dir, s.tempDir = d, true
	} else if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	bin := cfg.sidecacheBin
	if bin == "" {
		s.logf("building sidecache")
		var err error
		if bin, err = buildSidecache(ctx, s.dir); err != nil {
			return err
		}
	}
	var originURL string
	if cfg.mode == modeReadThrough {
		var err error
		if s.origin, err = startOrigin(cfg.valueSize, cfg.originMaxAge); err != nil {
			return err
		}
		originURL = s.origin.urlTemplate()
		s.logf("HTTP origin on %s", originURL)
	}
	flags := cfg.sidecacheFlags(originURL)
	missing, err := missingFlags(ctx, bin, flags)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s --help does not list %s: this build has not got the outage flags of issue 4 yet", bin, strings.Join(missing, ", "))
	}
	if s.redis, err = startRedis(ctx, cfg.redisServer, s.dir); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	s.logf("redis-server pid %d on %s", s.redis.p.cmd.Process.Pid, s.redis.addr())
	args := append([]string{"--listen", "127.0.0.1:0", "--log-format", "json", "--l2", "redis://" + s.redis.addr() + "/0"}, flags...)
	if s.sc, s.scAddr, err = startSidecache(ctx, bin, s.dir, args); err != nil {
		return fmt.Errorf("starting sidecache: %w", err)
	}
	s.logf("sidecache pid %d on %s with %s", s.sc.cmd.Process.Pid, s.scAddr, strings.Join(args, " "))
	s.logf("warming: %d cold keys into the redis-server, %d hot keys through sidecache", cfg.coldKeys, cfg.hotKeys)
	w, err := warm(cfg, s.redis.addr(), s.scAddr)
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	g0 := s.goroutines()
	load0 := loadAvg()
	s.logf("load: %v, redis-server SIGKILL at %v, restart at %v", cfg.duration, cfg.killAt, cfg.restoreAt)
	res, err := s.drive(ctx)
	if err != nil {
		return err
	}
	if !s.sc.alive() {
		return fmt.Errorf("sidecache exited during the run: %s", s.sc.tail(10))
	}
	// The clients' connections are closed; give sidecache a moment to end
	// their goroutines before counting.
	g1 := s.goroutines()
	pollUntil(ctx, s.sc, 5*time.Second, func() (bool, error) {
		g1 = s.goroutines()
		return g1 >= 0 && g1 <= g0, nil
	})
	f, err := os.Create(filepath.Join(s.dir, "info.tsv"))
	if err == nil {
		err = writeInfoTSV(f, cfg, res.snaps)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("writing info.tsv: %w", err)
	}
	rep := &report{
		cfg:   cfg,
		args:  args,
		run:   res,
		warm:  w,
		g0:    g0,
		g1:    g1,
		setup: describeSetup(cfg.redisServer, load0),
	}
	rep.write(s.stdout)
	return nil
}

// runResult is what drive recorded.
type runResult struct {
	samples   []sample
	snaps     []snapshot    // INFO sidecache at 0, 1, ... duration seconds
	killed    time.Duration // when the redis-server was sent SIGKILL
	restarted time.Duration // when it was started again
	ready     time.Duration // when it answered PING again
}

// drive runs the load, the once-a-second INFO sampler and the outage
// (SIGKILL at -kill-at, restart at -restore-at) side by side.
func (s *scenario) drive(ctx context.Context) (*runResult, error) {
	cfg := s.cfg
	seconds := int(cfg.duration / time.Second)
	t0 := time.Now().Add(50 * time.Millisecond)
	l := &load{cfg: cfg, addr: s.scAddr, t0: t0, end: t0.Add(cfg.duration)}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg      sync.WaitGroup
		samples [][]sample
		snaps   []snapshot
	)
	wg.Go(func() { samples = l.run(lctx) })
	wg.Go(func() { snaps = s.sampleInfo(lctx, t0, seconds, l) })
	res := &runResult{}
	err := func() error {
		if !sleepUntil(lctx, t0.Add(cfg.killAt)) {
			return ctx.Err()
		}
		res.killed = time.Since(t0)
		s.redis.p.kill()
		s.logf("%.3f s: redis-server killed (SIGKILL), gone at %.3f s", res.killed.Seconds(), time.Since(t0).Seconds())
		if !sleepUntil(lctx, t0.Add(cfg.restoreAt)) {
			return ctx.Err()
		}
		res.restarted = time.Since(t0)
		if err := s.redis.start(lctx); err != nil {
			return fmt.Errorf("restarting redis-server on port %d: %w", s.redis.port, err)
		}
		res.ready = time.Since(t0)
		s.logf("%.3f s: redis-server started again, empty, pid %d, answering PING at %.3f s",
			res.restarted.Seconds(), s.redis.p.cmd.Process.Pid, res.ready.Seconds())
		return nil
	}()
	if err != nil {
		cancel()
	}
	wg.Wait()
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	n := 0
	for _, w := range samples {
		n += len(w)
	}
	res.samples = make([]sample, 0, n)
	for _, w := range samples {
		res.samples = append(res.samples, w...)
	}
	res.snaps = snaps
	return res, nil
}

// sleepUntil waits until t; false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// snapshot is INFO sidecache read at one second of the load.
type snapshot struct {
	fields      map[string]string // nil: INFO failed
	originLoads int64             // the HTTP origin's loads so far (read-through)
}

// sampleInfo reads INFO sidecache at t0, t0+1s, ... t0+seconds on a
// connection of its own (dialled again after a failure) and prints a
// progress line to stderr each second.
func (s *scenario) sampleInfo(ctx context.Context, t0 time.Time, seconds int, l *load) []snapshot {
	snaps := make([]snapshot, 0, seconds+1)
	var c *respConn
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	var reads, errs, hotErrs int64
	for k := 0; k <= seconds; k++ {
		if !sleepUntil(ctx, t0.Add(time.Duration(k)*time.Second)) {
			return snaps
		}
		var snap snapshot
		if s.origin != nil {
			snap.originLoads = s.origin.loads.Load()
		}
		if c == nil {
			c, _ = dialRESP(s.scAddr, 500*time.Millisecond)
		}
		if c != nil {
			f, err := c.info(time.Now().Add(900*time.Millisecond), "sidecache")
			if err != nil {
				c.close()
				c = nil
			}
			snap.fields = f
		}
		snaps = append(snaps, snap)
		if k == 0 {
			continue
		}
		r, e, h := l.reads.Load(), l.errs.Load(), l.hotErrs.Load()
		state := "-"
		if v, ok := snap.fields["breaker_state"]; ok {
			state = v
		}
		s.logf("second %2d %-7s %6d reads, %6d errors (%d on hot keys), breaker %s",
			k-1, phaseOf(time.Duration(k-1)*time.Second, s.cfg), r-reads, e-errs, h-hotErrs, state)
		reads, errs, hotErrs = r, e, h
	}
	return snaps
}

// goroutines returns sidecache's process_goroutines, -1 if unknown.
func (s *scenario) goroutines() int64 {
	c, err := dialRESP(s.scAddr, time.Second)
	if err != nil {
		return -1
	}
	defer c.close()
	f, err := c.info(time.Now().Add(time.Second), "sidecache")
	if err != nil {
		return -1
	}
	if n, ok := counter(f, "process_goroutines"); ok {
		return n
	}
	return -1
}
