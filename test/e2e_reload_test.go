package test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestConfigFileAndReload: settings come from a YAML file, the effective
// configuration is logged at start with secrets redacted, and SIGHUP
// applies what may change while running and reports the rest.
func TestConfigFileAndReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sidecache.yaml")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("origin-rate: 5\nl1-ttl: 10s\nrequirepass: hunter2\nmaxclients: 100\nl1-max-bytes: 8mb\n")
	sc := StartSidecache(t, "--config", path)
	c := sc.Dial(t)
	mustReply(t, c, "+OK\r\n", "AUTH", "hunter2") // the file's password is in force
	if got := string(do(t, c, "CONFIG", "GET", "maxclients")); !strings.Contains(got, "100") {
		t.Fatalf("CONFIG GET maxclients = %q, want the file's 100", got)
	}
	waitLog := func(what string) string {
		t.Helper()
		var line string
		if err := pollUntil(10*time.Second, func() (bool, error) {
			for _, l := range strings.Split(sc.Stderr(), "\n") {
				if strings.Contains(l, what) {
					line = l
					return true, nil
				}
			}
			return false, nil
		}); err != nil {
			t.Fatalf("no log line with %q: %v\n%s", what, err, sc.Stderr())
		}
		return line
	}
	start := waitLog(`"msg":"configuration"`)
	if !strings.Contains(start, `"origin-rate":"5"`) || !strings.Contains(start, `"requirepass":"(redacted)"`) {
		t.Errorf("start configuration line: %s", start)
	}

	// A reloadable change, and one that needs a restart.
	write("origin-rate: 9\nl1-ttl: 2s\nrequirepass: hunter2\nmaxclients: 200\nlog-level: debug\nl1-max-bytes: 16mb\n")
	if err := sc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	applied := waitLog(`"msg":"configuration reloaded"`)
	for _, want := range []string{"origin-rate: 5 -> 9", "l1-ttl: 10s -> 2s", "log-level: info -> debug", "maxclients: 100 -> 200"} {
		if !strings.Contains(applied, want) {
			t.Errorf("reload line lacks %q: %s", want, applied)
		}
	}
	restart := waitLog(`need a restart`)
	if !strings.Contains(restart, "l1-max-bytes: 8388608 -> 16777216") {
		t.Errorf("restart line: %s", restart)
	}
	if got := string(do(t, c, "CONFIG", "GET", "maxclients")); !strings.Contains(got, "200") {
		t.Errorf("CONFIG GET maxclients after the reload = %q, want 200", got)
	}
	if got := string(do(t, c, "CONFIG", "GET", "sidecache-l1-max-bytes")); !strings.Contains(got, "8388608") {
		t.Errorf("CONFIG GET sidecache-l1-max-bytes after the reload = %q, want 8388608 still", got)
	}

	// A file that no longer parses changes nothing and says why.
	write("origin-rate: many\n")
	if err := sc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	failed := waitLog(`configuration reload failed`)
	if !strings.Contains(failed, "origin-rate") {
		t.Errorf("failed reload line: %s", failed)
	}
	mustReply(t, c, "+PONG\r\n", "PING")
	if strings.Contains(sc.Stderr(), "hunter2") {
		t.Errorf("the password appears in the log")
	}
}

// TestConfigFileUnknownKey: a file with a setting sidecache does not know
// stops it at start, naming the setting.
func TestConfigFileUnknownKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte("l1-ttl: 1s\nl1-tll: 2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := RunSidecache(t, nil, 10*time.Second, "--config", path)
	if code != 2 || !strings.Contains(stderr, `unknown setting "l1-tll"`) || !strings.Contains(stderr, "line 2") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}
