package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1048576", 1 << 20, true},
		{"64mb", 64 << 20, true},
		{"64MB", 64 << 20, true},
		{"1gb", 1 << 30, true},
		{"1kb", 1024, true},
		{"1k", 1000, true},
		{"2m", 2e6, true},
		{"3g", 3e9, true},
		{"10b", 10, true},
		{"", 0, false},
		{"-1", 0, false},
		{"1.5gb", 0, false},
		{"mb", 0, false},
		{"1tb", 0, false},
		{"99999999999999gb", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseConfig(t *testing.T) {
	env := func(kv ...string) func(string) (string, bool) {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	tests := []struct {
		name    string
		args    []string
		env     func(string) (string, bool)
		check   func(*config) bool
		wantErr string
	}{
		{"defaults", nil, env(), func(c *config) bool {
			return c.Listen == "127.0.0.1:6379" && c.L1MaxBytes == 64<<20 && c.L1TTL == 10*time.Second &&
				c.L2MaxBytes == 256<<20 && c.L2Policy == "allkeys-lru" && c.MaxClients == 10000
		}, ""},
		{"flags", []string{"--listen", "127.0.0.1:0", "--l1-max-bytes", "1mb", "--l2-policy", "noeviction"}, env(), func(c *config) bool {
			return c.Listen == "127.0.0.1:0" && c.L1MaxBytes == 1<<20 && c.L2Policy == "noeviction"
		}, ""},
		{"environment", nil, env("SIDECACHE_L2_MAX_BYTES", "8mb", "SIDECACHE_IDLE_TIMEOUT", "5s"), func(c *config) bool {
			return c.L2MaxBytes == 8<<20 && c.IdleTimeout == 5*time.Second
		}, ""},
		{"flag wins over environment", []string{"--l2-max-bytes", "16mb"}, env("SIDECACHE_L2_MAX_BYTES", "8mb"), func(c *config) bool {
			return c.L2MaxBytes == 16<<20
		}, ""},
		{"SIDECACHE_VERSION is not a flag", nil, env("SIDECACHE_VERSION", "1.2.3"), func(c *config) bool { return !c.Version }, ""},
		{"bad environment value", nil, env("SIDECACHE_L1_MAX_BYTES", "abc"), nil, "SIDECACHE_L1_MAX_BYTES"},
		{"unknown flag", []string{"--nope"}, env(), nil, "-nope"},
		{"stray argument", []string{"extra"}, env(), nil, `unexpected argument "extra"`},
		{"bad policy", []string{"--l2-policy", "lfu"}, env(), nil, "--l2-policy"},
		{"remote L2 from the environment", []string{"--l2-pool-size", "7"}, env("SIDECACHE_L2", "redis://h:1/2", "SIDECACHE_L2_TRACKING", "off"), func(c *config) bool {
			return c.L2 == "redis://h:1/2" && c.L2Tracking == "off" && c.L2PoolSize == 7
		}, ""},
		{"L1 off", []string{"--l1-max-bytes", "0"}, env(), func(c *config) bool { return c.L1MaxBytes == 0 }, ""},
		{"negative L1", []string{"--l1-max-bytes", "-1"}, env(), nil, "-l1-max-bytes"},
		{"negative pool", []string{"--l2-pool-size", "-1"}, env(), nil, "--l2-pool-size"},
		{"TLS cert without key", []string{"--l2-tls-cert", "c.pem"}, env(), nil, "--l2-tls-key"},
		{"bad log format", []string{"--log-format", "xml"}, env(), nil, "--log-format"},
		{"tiny bulk length", []string{"--proto-max-bulk-len", "100"}, env(), nil, "--proto-max-bulk-len 100"},
		{"zero args limit", []string{"--max-multibulk-len", "0"}, env(), nil, "--max-multibulk-len 0"},
		{"negative idle timeout", []string{"--idle-timeout", "-1s"}, env(), nil, "--idle-timeout"},
		{"failure defaults", nil, env(), func(c *config) bool {
			return c.StaleFor == 10*time.Minute && c.StaleWhileRevalidate == 0 && c.L2Timeout == 500*time.Millisecond &&
				c.RetryBudget == 0.1 && c.BreakerWindow == 10*time.Second && c.BreakerMinRequests == 20 &&
				c.BreakerErrorRatio == 0.5 && c.BreakerHitRateDrop == 0.5 && c.BreakerOpenFor == 5*time.Second &&
				c.BreakerProbes == 5 && c.FillWait == 50*time.Millisecond && c.OriginRate == 100 && c.OriginQueue == 10 &&
				c.OriginURL == "" && c.OriginMaxBytes == 8<<20
		}, ""},
		{"failure flags and environment", []string{"--stale-for", "1h", "--stale-while-revalidate", "1m", "--breaker-hit-rate-drop", "0"},
			env("SIDECACHE_ORIGIN_RATE", "7", "SIDECACHE_ORIGIN_URL", "http://h/{key}", "SIDECACHE_FILL_WAIT", "0"), func(c *config) bool {
				return c.StaleFor == time.Hour && c.StaleWhileRevalidate == time.Minute && c.BreakerHitRateDrop == 0 &&
					c.OriginRate == 7 && c.OriginURL == "http://h/{key}" && c.FillWait == 0
			}, ""},
		{"revalidate beyond stale", []string{"--stale-for", "1m", "--stale-while-revalidate", "2m"}, env(), nil, "--stale-while-revalidate"},
		{"negative stale", []string{"--stale-for", "-1s"}, env(), nil, "--stale-for"},
		{"zero L2 timeout", []string{"--l2-timeout", "0"}, env(), nil, "--l2-timeout"},
		{"retry budget above 1", []string{"--retry-budget", "2"}, env(), nil, "--retry-budget"},
		{"error ratio above 1", []string{"--breaker-error-ratio", "1.5"}, env(), nil, "--breaker-error-ratio"},
		{"no probes", []string{"--breaker-probes", "0"}, env(), nil, "--breaker-probes"},
		{"zero origin rate", []string{"--origin-rate", "0"}, env(), nil, "--origin-rate"},
		{"negative fill wait", []string{"--fill-wait", "-1ms"}, env(), nil, "--fill-wait"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error %q is more than one line", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("config %+v", c)
			}
		})
	}
}
