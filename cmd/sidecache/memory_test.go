package main

import (
	"errors"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"go.uber.org/zap"
)

func TestResolveMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	debug.SetMemoryLimit(600 << 20) // as the runtime does for GOMEMLIMIT=600MiB
	noEnv := func(string) (string, bool) { return "", false }
	env := func(name string) (string, bool) { return "600MiB", name == "GOMEMLIMIT" }
	cgroup := func() (uint64, error) { return 1 << 30, nil }
	noCgroup := func() (uint64, error) { return 0, memlimit.ErrNoLimit }
	gib := uint64(1 << 30)
	cgroupGiB := int64(cgroupRatio * float64(gib))
	for _, tc := range []struct {
		name      string
		flag      int64
		env       func(string) (string, bool)
		cgroup    func() (uint64, error)
		want      int64
		set       bool
		sourceHas string
	}{
		{"flag wins", 256 << 20, env, cgroup, 256 << 20, true, "--memory-limit"},
		{"GOMEMLIMIT over the cgroup", 0, env, cgroup, 600 << 20, false, "GOMEMLIMIT=600MiB"},
		{"cgroup times 0.9", 0, noEnv, cgroup, cgroupGiB, true, "cgroup memory limit 1gb x 0.9"},
		{"none", 0, noEnv, noCgroup, 0, false, "no GOMEMLIMIT and no cgroup"},
		{"cgroup error", 0, noEnv, func() (uint64, error) { return 0, memlimit.ErrNoCgroup }, 0, false, "not in cgroup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := resolveMemoryLimit(tc.flag, tc.env, tc.cgroup)
			if got.bytes != tc.want || got.set != tc.set || !strings.Contains(got.source, tc.sourceHas) {
				t.Errorf("got %+v, want %d bytes, set %v, source with %q", got, tc.want, tc.set, tc.sourceHas)
			}
		})
	}
}

func TestBudgetCheck(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		limit int64
		err   string // "" accepted
	}{
		{"defaults fit 1gb", nil, 1 << 30, ""},
		{"defaults do not fit 512mb", nil, 512 << 20,
			"--l1-max-bytes 64mb + --l2-max-bytes 256mb + headroom 376.5mb (64mb + 10000 --maxclients x 32kb) = 696.5mb > memory limit 512mb (test)"},
		{"fewer clients fit 512mb", []string{"--maxclients", "1000"}, 512 << 20, ""},
		{"remote L2 budget not counted", []string{"--l2", "redis://127.0.0.1:1", "--l1-max-bytes", "100mb"}, 512 << 20, ""},
		{"remote L2, L1 too big", []string{"--l2", "redis://127.0.0.1:1", "--l1-max-bytes", "500mb", "--maxclients", "100"}, 512 << 20,
			"--l1-max-bytes 500mb + headroom 67.1mb (64mb + 100 --maxclients x 32kb) = 567.1mb > memory limit 512mb (test)"},
		{"exactly fits", []string{"--l1-max-bytes", "0", "--l2-max-bytes", "100mb", "--maxclients", "1"}, 100<<20 + headroom(1), ""},
		{"one byte over", []string{"--l1-max-bytes", "1", "--l2-max-bytes", "100mb", "--maxclients", "1"}, 100<<20 + headroom(1), "> memory limit"},
		{"no limit", []string{"--l2-max-bytes", "100gb"}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConfig(tc.args, func(string) (string, bool) { return "", false })
			if err != nil {
				t.Fatal(err)
			}
			err = budgets(cfg).check(memoryLimit{bytes: tc.limit, source: "test"})
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, errMemoryBudget)):
				t.Errorf("got %v, want an errMemoryBudget containing %q", err, tc.err)
			case err != nil && !isConfigError(err):
				t.Errorf("%v is not a configuration error (exit status 2)", err)
			}
		})
	}
}

func TestMemoryFlags(t *testing.T) {
	cfg, err := parseConfig(nil, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if m := cfg.Memory; m.Limit != 0 || m.ClientOutputLimit != 64<<20 || m.ClientOutputTimeout != 30*time.Second {
		t.Errorf("defaults: %+v", m)
	}
	env := map[string]string{"SIDECACHE_MEMORY_LIMIT": "1gb", "SIDECACHE_CLIENT_OUTPUT_BUFFER_LIMIT": "0"}
	cfg, err = parseConfig([]string{"--client-output-timeout", "5s"}, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if m := cfg.Memory; m.Limit != 1<<30 || m.ClientOutputLimit != 0 || m.ClientOutputTimeout != 5*time.Second {
		t.Errorf("from flags and environment: %+v", m)
	}
	for _, args := range [][]string{{"--memory-limit", "-1"}, {"--client-output-timeout", "-1s"}, {"--client-output-buffer-limit", "x"}} {
		if _, err := parseConfig(args, func(string) (string, bool) { return "", false }); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// TestMemoryGuard runs the guard on a fake clock and fake readings: it
// reads at most every guardInterval and refuses while above the threshold.
func TestMemoryGuard(t *testing.T) {
	now := time.Unix(1000, 0)
	var live uint64
	reads := 0
	g := newMemoryGuard(100, func() uint64 { reads++; return live }, func() time.Time { return now }, zap.NewNop())
	for i, step := range []struct {
		advance time.Duration
		live    uint64
		want    bool
		reads   int
	}{
		{0, 50, false, 1},
		{10 * time.Millisecond, 150, false, 1}, // not read again yet
		{guardInterval, 150, true, 2},
		{time.Millisecond, 10, true, 2},
		{guardInterval, 100, false, 3}, // at the threshold: accepted
		{guardInterval, 101, true, 4},
	} {
		now = now.Add(step.advance)
		live = step.live
		if got := g.over(); got != step.want || reads != step.reads {
			t.Errorf("step %d: over %v after %d reads, want %v after %d", i, got, reads, step.want, step.reads)
		}
	}
}

func TestReadLiveMemory(t *testing.T) {
	ballast := make([]byte, 64<<20)
	for i := range ballast {
		ballast[i] = 1
	}
	debug.FreeOSMemory() // a collection: live is measured then
	got := readLiveMemory()
	if got < 64<<20 || got > 1<<30 {
		t.Errorf("readLiveMemory = %d with 64 MiB live", got)
	}
	_ = ballast[len(ballast)-1]
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{
		1 << 30: "1gb", 64 << 20: "64mb", 394788864: "376.5mb", 32 << 10: "32kb", 100: "100b", 3<<30 + 1<<20: "3073mb",
	} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
