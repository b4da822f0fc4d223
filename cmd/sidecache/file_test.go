package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sidecache.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFile(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	tests := []struct {
		name    string
		file    string
		args    []string
		env     map[string]string
		check   func(*config) bool
		wantErr string
	}{
		{"settings", "l1-max-bytes: 8mb\nstale-for: 30m\norigin-rate: 7\nl2-tls-insecure-skip-verify: true\n", nil, nil, func(c *config) bool {
			return c.L1MaxBytes == 8<<20 && c.StaleFor == 30*time.Minute && c.OriginRate == 7 && c.L2TLSInsecure
		}, ""},
		{"empty file", "", nil, nil, func(c *config) bool { return c.L1MaxBytes == 64<<20 }, ""},
		{"flag wins over environment wins over file", "origin-rate: 7\nfill-wait: 1s\nl1-ttl: 1m\n",
			[]string{"--origin-rate", "9"}, map[string]string{"SIDECACHE_FILL_WAIT": "2s"}, func(c *config) bool {
				return c.OriginRate == 9 && c.FillWait == 2*time.Second && c.L1TTL == time.Minute
			}, ""},
		{"list as comma-separated", "l2: redis://h:1\nlisten: [\"127.0.0.1:0\"]\n", nil, nil, func(c *config) bool {
			return c.L2 == "redis://h:1" && c.Listen == "127.0.0.1:0"
		}, ""},
		{"unknown key", "l1-max-bytes: 8mb\nl1-maxbytes: 9mb\n", nil, nil, nil, `line 2: unknown setting "l1-maxbytes"`},
		{"bad value", "stale-for: soon\n", nil, nil, nil, `line 1: invalid value "soon" for stale-for`},
		{"set twice", "origin-rate: 1\norigin-rate: 2\n", nil, nil, nil, `line 2: "origin-rate" is set twice`},
		{"nested value", "breaker:\n  window: 1s\n", nil, nil, nil, `unknown setting "breaker"`},
		{"not a mapping", "- a\n- b\n", nil, nil, nil, "want a mapping"},
		{"invalid combination", "stale-for: 1m\nstale-while-revalidate: 1h\n", nil, nil, nil, "--stale-while-revalidate"},
		{"config key inside the file", "config: other.yaml\n", nil, nil, nil, `unknown setting "config"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.file)
			lookup := noEnv
			if tt.env != nil {
				lookup = func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			}
			c, err := parseConfig(append([]string{"--config", path}, tt.args...), lookup)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
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
	if _, err := parseConfig([]string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}, noEnv); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Errorf("missing file: %v", err)
	}
	// SIDECACHE_CONFIG names the file too.
	path := writeFile(t, "origin-rate: 3\n")
	c, err := parseConfig(nil, func(k string) (string, bool) { return path, k == "SIDECACHE_CONFIG" })
	if err != nil || c.OriginRate != 3 {
		t.Fatalf("SIDECACHE_CONFIG: %v, %+v", err, c)
	}
}

func TestEffectiveRedactsSecrets(t *testing.T) {
	c, err := parseConfig([]string{"--requirepass", "hunter2", "--l2", "redis://user:s3cret@h:1/0", "--origin-url", "http://u:p4ss@h/{key}"},
		func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, s := range c.effective() {
		all.WriteString(s.name + "=" + s.value + "\n")
	}
	for _, secret := range []string{"hunter2", "s3cret", "p4ss"} {
		if strings.Contains(all.String(), secret) {
			t.Errorf("effective configuration shows %q:\n%s", secret, all.String())
		}
	}
	if !strings.Contains(all.String(), "requirepass=(redacted)") || !strings.Contains(all.String(), "listen=127.0.0.1:6379") {
		t.Errorf("effective configuration:\n%s", all.String())
	}
}
