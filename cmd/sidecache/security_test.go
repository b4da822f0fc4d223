package main

import (
	"errors"
	"slices"
	"testing"

	"github.com/sidecache/sidecache/proxy"
)

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{proxy.DefaultAddr, true},
		{"127.0.0.1:0", true},
		{"127.1.2.3:6379", true},
		{"[::1]:6379", true},
		{"localhost:6379", true},
		{"LocalHost:6379", true},
		{"0.0.0.0:6379", false},
		{":6379", false},
		{"[::]:6379", false},
		{"10.0.0.5:6379", false},
		{"example.com:6379", false},
		{"no-port", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := isLoopback(tt.addr); got != tt.want {
				t.Errorf("isLoopback(%q) = %v, want %v", tt.addr, got, tt.want)
			}
		})
	}
}

// TestSecurityFlags: protected mode, and which deny-list reaches the
// proxy (the default with a remote L2 only; an explicit list always).
func TestSecurityFlags(t *testing.T) {
	env := func(kv ...string) func(string) (string, bool) {
		return func(name string) (string, bool) {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == name {
					return kv[i+1], true
				}
			}
			return "", false
		}
	}
	def := proxy.DefaultDenyCommandNames()
	tests := []struct {
		name      string
		args      []string
		env       func(string) (string, bool)
		protected bool // refused by protected mode
		deny      []string
		allow     []string
	}{
		{"defaults", nil, env(), false, nil, nil},
		{"remote L2", []string{"--l2", "redis://127.0.0.1:1"}, env(), false, def, nil},
		{"remote L2, allow", []string{"--l2", "redis://127.0.0.1:1", "--allow-commands", "FlushAll"}, env(), false, def, []string{"flushall"}},
		{"explicit, embedded", []string{"--deny-commands", " flushdb ,Config|Set,"}, env(), false, []string{"flushdb", "config|set"}, nil},
		{"explicit empty, remote", []string{"--l2", "redis://127.0.0.1:1", "--deny-commands", ""}, env(), false, nil, nil},
		{"environment", nil, env("SIDECACHE_DENY_COMMANDS", "keys"), false, []string{"keys"}, nil},
		{"network, no password", []string{"--listen", "0.0.0.0:6379"}, env(), true, nil, nil},
		{"network, password", []string{"--listen", "0.0.0.0:6379", "--requirepass", "x"}, env(), false, nil, nil},
		{"network, password from the environment", []string{"--listen", "0.0.0.0:6379"}, env("SIDECACHE_REQUIREPASS", "x"), false, nil, nil},
		{"network, protected-mode no", []string{"--listen", "0.0.0.0:6379", "--protected-mode", "NO"}, env(), false, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfig(tt.args, tt.env)
			if tt.protected {
				if !errors.Is(err, errProtectedMode) {
					t.Fatalf("parseConfig: %v, want protected mode's refusal", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var pc proxy.Config
			if err := cfg.Security.apply(&pc); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(pc.DenyCommands, tt.deny) || !slices.Equal(pc.AllowCommands, tt.allow) {
				t.Errorf("DenyCommands %q, AllowCommands %q; want %q, %q", pc.DenyCommands, pc.AllowCommands, tt.deny, tt.allow)
			}
			if pc.TLS != nil {
				t.Errorf("TLS on without --tls-cert-file")
			}
		})
	}
}
