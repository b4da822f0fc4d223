package main

import (
	"context"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/sidecache/sidecache/breaker"
	"github.com/sidecache/sidecache/fallback"
	"github.com/sidecache/sidecache/l1"
	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/remote"
	"github.com/sidecache/sidecache/proxy"
)

// tiers is the read path below the proxy, wired top to bottom:
// l1 -> (fallback's shield, which asks) breaker -> l2store, and on a miss
// or failure the fallback: coalescing, the origin shield, the origin.
type tiers struct {
	l1     *l1.Cache        // nil: L1 off
	shield *fallback.Shield // nil with L1 off
	brk    *breaker.Breaker // nil for the embedded L2, which cannot fail apart from the process
	store  proxy.Store      // the L2 as the proxy runs commands on it (through brk)
	origin *fallback.HTTPOrigin
}

// reload applies cfg's reloadable settings (reload.go) to the running
// tiers.
func (t *tiers) reload(cfg *config) error {
	if t.l1 != nil {
		if err := t.l1.SetTimes(cfg.L1TTL, cfg.StaleFor, cfg.StaleWhileRevalidate); err != nil {
			return err
		}
	}
	if t.brk != nil {
		if err := t.brk.Reconfigure(breakerSettings(cfg)); err != nil {
			return err
		}
	}
	if t.shield != nil {
		if err := t.shield.SetRate(cfg.OriginRate, cfg.FillWait); err != nil {
			return err
		}
	}
	return nil
}

// breakerSettings maps the flags onto the breaker's Settings.
func breakerSettings(cfg *config) breaker.Settings {
	return breaker.Settings{
		Window:       cfg.BreakerWindow,
		MinRequests:  cfg.BreakerMinRequests,
		ErrorRatio:   offIfZero(cfg.BreakerErrorRatio),
		SlowCall:     cfg.BreakerSlowCall,
		SlowRatio:    offIfZero(cfg.BreakerSlowRatio),
		HitRateFloor: cfg.BreakerHitRateFloor,
		HitRateDrop:  offIfZero(cfg.BreakerHitRateDrop),
		Baseline:     cfg.BreakerBaseline,
		OpenFor:      cfg.BreakerOpenFor,
		Probes:       cfg.BreakerProbes,
		Timeout:      cfg.L2Timeout,
		CallTimeout:  cfg.L2Timeout,
		RetryBudget:  offIfZero(cfg.RetryBudget),
	}
}

// offIfZero maps a flag's 0 ("off") to the breaker's Off: a zero Setting
// selects its default.
func offIfZero(f float64) float64 {
	if f == 0 {
		return breaker.Off
	}
	return f
}

// newTiers builds L1, the breaker (remote L2 only) and the fallback over st.
func newTiers(cfg *config, st store, log *zap.Logger) (*tiers, error) {
	t := &tiers{store: st}
	get := breaker.GetterFunc(st.Get)
	if rs, ok := st.(*remote.Store); ok {
		bs := breakerSettings(cfg)
		bs.Logger = log.Named("breaker")
		brk, err := breaker.New(get, bs)
		if err != nil {
			return nil, err
		}
		t.brk = brk
		t.store = &guardedStore{Store: rs, brk: brk}
		get = breaker.GetterFunc(brk.Get)
	}
	if cfg.L1MaxBytes == 0 {
		return t, nil
	}
	fcfg := fallback.Config{
		Store:     storeWriter{t.store},
		IsFailure: breaker.DefaultIsFailure,
		Rate:      cfg.OriginRate,
		Queue:     cfg.OriginQueue,
		FillWait:  cfg.FillWait,
	}
	if t.brk != nil {
		fcfg.Failing = t.brk.Degraded
	}
	if cfg.OriginURL != "" {
		o, err := fallback.NewHTTPOrigin(fallback.HTTPConfig{URL: cfg.OriginURL, Timeout: cfg.OriginTimeout, MaxBytes: cfg.OriginMaxBytes})
		if err != nil {
			return nil, err
		}
		t.origin, fcfg.Origin = o, o
	}
	shield, err := fallback.New(fallback.GetterFunc(func(ctx context.Context, key []byte) (fallback.Item, bool, error) {
		item, found, err := get.Get(ctx, key)
		return fallback.Item{Value: item.Value, Expires: item.Expires}, found, err
	}), fcfg)
	if err != nil {
		return nil, err
	}
	t.shield = shield
	c, err := l1.New(l1.GetterFunc(func(ctx context.Context, key []byte, hasStale bool) (l1.Item, bool, error) {
		item, found, err := shield.Get(ctx, key, hasStale)
		return l1.Item{Value: item.Value, Expires: item.Expires, Origin: item.Origin}, found, err
	}), l1.Config{
		MaxBytes:             cfg.L1MaxBytes,
		TTL:                  cfg.L1TTL,
		StaleFor:             cfg.StaleFor,
		StaleWhileRevalidate: cfg.StaleWhileRevalidate,
		Failed:               breaker.DefaultIsFailure,
	})
	if err != nil {
		shield.Close()
		return nil, err
	}
	t.l1 = c
	return t, nil
}

// cache returns the read path as the proxy uses it, or nil with L1 off.
func (t *tiers) cache() proxy.Cache {
	if t.l1 == nil {
		return nil
	}
	return readPath{t.l1, t.shield}
}

// close stops what the tiers run in the background, top down.
func (t *tiers) close() {
	if t.l1 != nil {
		t.l1.Close()
	}
	if t.shield != nil {
		t.shield.Close()
	}
}

// invalidate applies a remote L2's report that keys changed elsewhere.
// It makes their L1 entries stale rather than dropping them (and an
// upstream flush or a lost tracking connection, every entry): a stale copy
// is only ever served while the L2 fails, and an L2 restarting empty is
// exactly when it is needed. The report also follows this sidecache's own
// writes (an origin load written back, a client's SET): the client's own
// writes have dropped their keys from L1 already (readPath.Invalidate).
func (t *tiers) invalidate(inv remote.Invalidation) {
	if inv.Flush {
		t.l1.ExpireAll()
		t.shield.WrittenAll()
	}
	for _, k := range inv.Keys {
		t.l1.Expire(k)
		t.shield.Written(k)
	}
}

// info reports the breaker's and the fallback's state for INFO sidecache.
func (t *tiers) info() []proxy.Setting {
	var out []proxy.Setting
	add := func(name string, v any) {
		var s string
		switch v := v.(type) {
		case string:
			s = v
		case uint64:
			s = strconv.FormatUint(v, 10)
		case int64:
			s = strconv.FormatInt(v, 10)
		case float64:
			s = strconv.FormatFloat(v, 'f', 4, 64)
		}
		out = append(out, proxy.Setting{Name: name, Value: s})
	}
	if t.brk != nil {
		b := t.brk.Stats()
		add("breaker_state", b.State)
		add("breaker_reason", b.Reason.String())
		add("breaker_cause", b.Cause)
		add("breaker_opens", b.Transitions.Open)
		add("breaker_opens_errors", b.Opens.Errors)
		add("breaker_opens_slow", b.Opens.Slow)
		add("breaker_opens_hit_rate", b.Opens.HitRate)
		add("breaker_half_opens", b.Transitions.HalfOpen)
		add("breaker_closes", b.Transitions.Closed)
		add("breaker_rejected", b.Rejected)
		add("l2_calls", b.Calls)
		add("l2_reads", b.Reads)
		add("l2_retries", b.Retries)
		add("l2_failures", b.Failures)
		add("l2_timeouts", b.Timeouts)
		add("l2_slow", b.Slow)
		add("l2_hits", b.Hits)
		add("l2_misses", b.Misses)
		add("l2_hit_rate", b.HitRate)
		add("l2_hit_rate_baseline", b.Baseline)
	}
	if t.shield != nil {
		f := t.shield.Stats()
		add("origin_admitted", f.Admitted)
		add("origin_shed", f.Shed)
		add("origin_loads", f.OriginLoads)
		add("origin_errors", f.OriginErrors)
		add("fill_coalesced", f.Coalesced)
		add("fill_wait_timeouts", f.FillWaitTimeouts)
	}
	return out
}

// readPath is the proxy's Cache: L1, whose writes also wake the misses
// waiting in the fallback for a client's SET.
type readPath struct {
	*l1.Cache
	shield *fallback.Shield
}

func (r readPath) Invalidate(key []byte) {
	r.Cache.Invalidate(key)
	r.shield.Written(key)
}

func (r readPath) Flush() {
	r.Cache.Flush()
	r.shield.WrittenAll()
}

// guardedStore runs the proxy's commands on a remote L2 through the
// breaker: refused at once while it is open for errors or latency,
// measured otherwise. Its other methods (dedicated connections, command
// metadata) are the store's own.
type guardedStore struct {
	*remote.Store
	brk *breaker.Breaker
}

func (g *guardedStore) Do(ctx context.Context, args [][]byte) (l2store.Reply, error) {
	return breaker.Call(g.brk, ctx, func(ctx context.Context) (l2store.Reply, error) {
		return g.Store.Do(ctx, args)
	})
}

func (g *guardedStore) DoMulti(ctx context.Context, cmds [][][]byte) ([]l2store.Reply, error) {
	return breaker.Call(g.brk, ctx, func(ctx context.Context) ([]l2store.Reply, error) {
		return g.Store.DoMulti(ctx, cmds)
	})
}

// storeWriter writes the fallback's origin loads to the L2 (through the
// breaker for a remote one), with the origin's expiry.
type storeWriter struct{ st proxy.Store }

func (w storeWriter) Set(ctx context.Context, key, value []byte, expires time.Time) error {
	args := [][]byte{[]byte("SET"), key, value}
	if !expires.IsZero() {
		ms := time.Until(expires).Milliseconds()
		if ms <= 0 {
			return nil // already stale: not worth keeping
		}
		args = append(args, []byte("PX"), strconv.AppendInt(nil, ms, 10))
	}
	_, err := w.st.Do(ctx, args)
	return err
}
