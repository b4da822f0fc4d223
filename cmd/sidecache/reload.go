package main

import (
	"fmt"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sidecache/sidecache/proxy"
)

// reloadable are the settings SIGHUP applies to a running sidecache: the
// log level, the client limit, L1's freshness and stale windows, the
// breaker's thresholds and the origin shield's rate. A change to any other
// setting is logged as needing a restart, and not applied.
var reloadable = map[string]bool{
	"log-level":              true,
	"maxclients":             true,
	"l1-ttl":                 true,
	"stale-for":              true,
	"stale-while-revalidate": true,
	"retry-budget":           true,
	"breaker-error-ratio":    true,
	"breaker-slow-call":      true,
	"breaker-slow-ratio":     true,
	"breaker-hit-rate-floor": true,
	"breaker-hit-rate-drop":  true,
	"breaker-open-for":       true,
	"origin-rate":            true,
	"fill-wait":              true,
}

// logConfiguration logs the effective configuration at start, secrets
// redacted.
func logConfiguration(log *zap.Logger, cfg *config) {
	eff := cfg.effective()
	fields := make([]zap.Field, 0, len(eff))
	for _, s := range eff {
		fields = append(fields, zap.String(s.name, s.value))
	}
	log.Info("configuration", fields...)
}

// reload reads the configuration again (the same command line, the
// environment, the --config file as it is now) and applies what changed
// and may change while running (reloadable) to cfg and the tiers. It logs
// what changed, and what would need a restart. A configuration that does
// not parse is logged and changes nothing.
func reload(cfg *config, lookup func(string) (string, bool), t *tiers, srv *proxy.Server, log *zap.Logger) {
	next, err := parseConfig(cfg.args, lookup)
	if err != nil {
		log.Error("configuration reload failed; nothing changed", zap.Error(err))
		return
	}
	old := map[string]string{}
	for _, s := range cfg.effective() {
		old[s.name] = s.value
	}
	var applied, restart []string
	for _, s := range next.effective() {
		if old[s.name] == s.value {
			continue
		}
		change := fmt.Sprintf("%s: %s -> %s", s.name, old[s.name], s.value)
		if reloadable[s.name] {
			applied = append(applied, change)
		} else {
			restart = append(restart, change)
		}
	}
	if len(applied) > 0 {
		trial := *cfg
		trial.copyReloadable(next)
		if err := budgets(&trial).check(memoryLimit{bytes: cfg.Memory.limit, source: cfg.Memory.source}); err != nil {
			log.Error("configuration reload failed; nothing changed", zap.Error(err))
			return
		}
		if err := t.reload(&trial); err != nil {
			log.Error("configuration reload failed; nothing changed", zap.Error(err))
			return
		}
		if err := srv.SetMaxClients(trial.MaxClients); err != nil {
			log.Error("configuration reload: maxclients not changed", zap.Error(err))
		}
		lvl, _ := zapcore.ParseLevel(next.LogLevel) // validated by parseConfig
		cfg.level.SetLevel(lvl)
		cfg.copyReloadable(next)
	}
	log.Info("configuration reloaded", zap.Int("changed", len(applied)), zap.String("applied", strings.Join(applied, "; ")))
	if len(restart) > 0 {
		log.Warn("configuration changes that need a restart were not applied", zap.String("settings", strings.Join(restart, "; ")))
	}
}

// copyReloadable copies the reloadable settings of next into c.
func (c *config) copyReloadable(next *config) {
	c.LogLevel, c.MaxClients = next.LogLevel, next.MaxClients
	c.L1TTL, c.StaleFor, c.StaleWhileRevalidate = next.L1TTL, next.StaleFor, next.StaleWhileRevalidate
	c.RetryBudget = next.RetryBudget
	c.BreakerErrorRatio, c.BreakerSlowCall, c.BreakerSlowRatio = next.BreakerErrorRatio, next.BreakerSlowCall, next.BreakerSlowRatio
	c.BreakerHitRateFloor, c.BreakerHitRateDrop, c.BreakerOpenFor = next.BreakerHitRateFloor, next.BreakerHitRateDrop, next.BreakerOpenFor
	c.OriginRate, c.FillWait = next.OriginRate, next.FillWait
}
