package test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// plainBuild is the sidecache binary built without the race detector, for
// the tests that measure memory: the race detector's shadow memory
// multiplies RSS.
var plainBuild struct {
	once sync.Once
	bin  string
	err  error
}

// startPlainSidecache is StartSidecache with a binary built without the
// race detector, also when the tests run with -race.
func startPlainSidecache(t *testing.T, args ...string) *Sidecache {
	t.Helper()
	if !raceEnabled {
		return StartSidecache(t, args...)
	}
	b := &plainBuild
	b.once.Do(func() {
		dir := SidecacheBinary(t) // builds the -race binary, and its directory
		b.bin = filepath.Join(filepath.Dir(dir), "sidecache-norace")
		cmd := exec.Command(goTool(), "build", "-o", b.bin, "./cmd/sidecache")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return startSidecacheBin(t, b.bin, nil, args...)
}

// The headroom cmd/sidecache reserves besides the budgets (memory.go):
// 64 MiB plus 32 KiB per --maxclients.
func stormHeadroom(maxClients int64) int64 { return 64<<20 + maxClients*32<<10 }

// rss returns the process's resident set size (VmRSS).
func (s *Sidecache) rss() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", s.cmd.Process.Pid)
}

// rssSampler samples a process's RSS every 20 ms until stop, keeping the
// highest.
type rssSampler struct {
	max  atomic.Int64
	n    atomic.Int64
	err  atomic.Pointer[error]
	stop chan struct{}
	done chan struct{}
}

func sampleRSS(sc *Sidecache) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			r, err := sc.rss()
			if err != nil {
				s.err.Store(&err)
				return
			}
			s.n.Add(1)
			if r > s.max.Load() {
				s.max.Store(r)
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) finish(t *testing.T) (max int64, samples int64) {
	t.Helper()
	close(s.stop)
	<-s.done
	if err := s.err.Load(); err != nil {
		t.Fatalf("sampling RSS: %v", *err)
	}
	return s.max.Load(), s.n.Load()
}

// TestE2EWriteStorm drives the seed incident's write storm through the
// binary: 300 connections send 128-byte SETs of distinct keys as fast as
// they can (pipelines of 32) for 3 to 12 seconds, until twice the L2
// budget is written, against --l2-max-bytes 32mb and
// --l1-max-bytes 8mb, with the memory limit set to budgets plus headroom.
// The process's RSS, sampled every 20 ms, must stay within the budgets
// plus the documented headroom; with noeviction, the writes beyond the
// budget get -OOM and the process stays up.
func TestE2EWriteStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("write storm: 10 s")
	}
	const (
		conns      = 300
		maxClients = 400
		l1Max      = 8 << 20
		l2Max      = 32 << 20
		depth      = 32
		minRun     = 3 * time.Second
		maxRun     = 12 * time.Second
		perSet     = 160 // bytes a SET of a 128-byte value writes, roughly
	)
	bound := l1Max + l2Max + stormHeadroom(maxClients)
	for _, policy := range []string{"allkeys-lru", "noeviction"} {
		t.Run(policy, func(t *testing.T) {
			sc := startPlainSidecache(t, "--l1-max-bytes", "8mb", "--l2-max-bytes", "32mb", "--l2-policy", policy,
				"--maxclients", strconv.Itoa(maxClients), "--memory-limit", strconv.FormatInt(bound, 10))
			if !strings.Contains(sc.Stderr(), `"limit_source":"--memory-limit"`) {
				t.Errorf("the memory limit and its source are not logged:\n%s", sc.Stderr())
			}
			sampler := sampleRSS(sc)
			value := strings.Repeat("w", 128)
			var oks, ooms, others atomic.Int64
			var wg sync.WaitGroup
			// Run for minRun, and on until twice the L2 budget has been
			// written (the race-enabled test client is slower), at most
			// maxRun.
			start := time.Now()
			running := func() bool {
				el := time.Since(start)
				return el < minRun || el < maxRun && (oks.Load()+ooms.Load())*perSet < 2*l2Max
			}
			for w := range conns {
				conn, err := net.DialTimeout("tcp", sc.Addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close() })
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := bufio.NewReaderSize(conn, 4096)
					rng := rand.New(rand.NewPCG(uint64(w), 1))
					var buf []byte
					for running() {
						buf = buf[:0]
						for range depth {
							key := "storm:" + strconv.FormatUint(rng.Uint64(), 36)
							buf = AppendCommand(buf, []byte("SET"), []byte(key), []byte(value))
						}
						conn.SetDeadline(time.Now().Add(10 * time.Second))
						if _, err := conn.Write(buf); err != nil {
							others.Add(1)
							return
						}
						for range depth {
							line, err := r.ReadString('\n')
							switch {
							case err != nil:
								others.Add(1)
								return
							case line == "+OK\r\n":
								oks.Add(1)
							case strings.HasPrefix(line, "-OOM"):
								ooms.Add(1)
							default:
								others.Add(1)
							}
						}
					}
				}()
			}
			wg.Wait()
			max, samples := sampler.finish(t)
			t.Logf("%s: %d SETs OK, %d -OOM, %d other; peak RSS %.1f MiB over %d samples; bound %.1f MiB (budgets %d MiB + headroom %.1f MiB)",
				policy, oks.Load(), ooms.Load(), others.Load(), float64(max)/(1<<20), samples,
				float64(bound)/(1<<20), (l1Max+l2Max)>>20, float64(stormHeadroom(maxClients))/(1<<20))
			if others.Load() != 0 {
				t.Errorf("%d replies were neither +OK nor -OOM, or connections failed", others.Load())
			}
			if max > bound {
				t.Errorf("peak RSS %d bytes > budgets + headroom %d bytes", max, bound)
			}
			written := (oks.Load() + ooms.Load()) * perSet
			if written < 2*l2Max {
				t.Errorf("only %d SETs were answered: the storm did not exceed the L2 budget", oks.Load()+ooms.Load())
			}
			if policy == "noeviction" && ooms.Load() == 0 {
				t.Error("noeviction: no SET got -OOM although the storm exceeded the budget")
			}
			c := sc.Dial(t)
			mustReply(t, c, "+PONG\r\n", "PING")
			if used := infoInt(t, c, "sidecache", "l2_used_bytes"); used > l2Max {
				t.Errorf("l2_used_bytes = %d > %d", used, l2Max)
			}
		})
	}
}

// TestE2EClientOutputBuffer: a client pipelines GETs of a 1 MiB value
// without reading its replies. It is disconnected with Redis's log line,
// another client keeps being served meanwhile, and RSS stays within the
// budgets plus headroom.
func TestE2EClientOutputBuffer(t *testing.T) {
	const maxClients = 100
	bound := 8<<20 + 16<<20 + stormHeadroom(maxClients)
	sc := startPlainSidecache(t, "--l1-max-bytes", "8mb", "--l2-max-bytes", "16mb", "--maxclients", strconv.Itoa(maxClients),
		"--memory-limit", strconv.FormatInt(bound, 10), "--client-output-timeout", "1s")
	sampler := sampleRSS(sc)
	other := sc.Dial(t)
	big := strings.Repeat("b", 1<<20)
	mustReply(t, other, "+OK\r\n", "SET", "big", big)

	stalled, err := net.DialTimeout("tcp", sc.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	var pipeline []byte
	for range 2000 { // 2 GiB of replies
		pipeline = AppendCommand(pipeline, []byte("GET"), []byte("big"))
	}
	go func() {
		stalled.SetWriteDeadline(time.Now().Add(20 * time.Second))
		stalled.Write(pipeline) // blocks once sidecache stops reading
	}()
	// Until it is disconnected, another client is served.
	pings := 0
	if err := pollUntil(20*time.Second, func() (bool, error) {
		mustReply(t, other, "+PONG\r\n", "PING")
		pings++
		return strings.Contains(sc.Stderr(), "closing client that reached max output buffer"), nil
	}); err != nil {
		t.Fatalf("the stalled client was not disconnected (%v); stderr:\n%s", err, sc.Stderr())
	}
	t.Logf("%d PINGs answered while the client was stalled", pings)
	if err := pollUntil(10*time.Second, func() (bool, error) {
		return infoInt(t, other, "clients", "connected_clients") == 1, nil
	}); err != nil {
		t.Errorf("connected_clients did not fall to 1: %v", err)
	}
	if got := do(t, other, "STRLEN", "big"); string(got) != ":1048576\r\n" {
		t.Errorf("STRLEN big after the disconnect: %q", got)
	}
	max, _ := sampler.finish(t)
	t.Logf("peak RSS %.1f MiB, bound %.1f MiB", float64(max)/(1<<20), float64(bound)/(1<<20))
	if max > bound {
		t.Errorf("peak RSS %d > budgets + headroom %d", max, bound)
	}
}

// TestE2EMemoryBudgetRefused: budgets plus headroom over the memory limit
// make sidecache exit with status 2 and one line naming the numbers; the
// limit's source is logged (flag, GOMEMLIMIT).
func TestE2EMemoryBudgetRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"flag", nil, []string{"--memory-limit", "256mb"},
			"sidecache: memory budgets exceed the memory limit: --l1-max-bytes 64mb + --l2-max-bytes 256mb + headroom 376.5mb (64mb + 10000 --maxclients x 32kb) = 696.5mb > memory limit 256mb (--memory-limit); lower the budgets or --maxclients, or raise the limit\n"},
		{"GOMEMLIMIT", []string{"GOMEMLIMIT=200MiB"}, []string{"--maxclients", "100", "--l1-max-bytes", "100mb", "--l2-max-bytes", "64mb"},
			"sidecache: memory budgets exceed the memory limit: --l1-max-bytes 100mb + --l2-max-bytes 64mb + headroom 67.1mb (64mb + 100 --maxclients x 32kb) = 231.1mb > memory limit 200mb (GOMEMLIMIT=200MiB); lower the budgets or --maxclients, or raise the limit\n"},
		{"environment", []string{"SIDECACHE_MEMORY_LIMIT=300mb"}, nil, "> memory limit 300mb (--memory-limit)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := RunSidecache(t, tc.env, 20*time.Second, append([]string{"--listen", "127.0.0.1:0", "--log-format", "json"}, tc.args...)...)
			if code != 2 {
				t.Errorf("exit status %d, want 2", code)
			}
			var last string
			if lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n"); len(lines) > 0 {
				last = lines[len(lines)-1] + "\n"
			}
			if !strings.Contains(last, tc.want) {
				t.Errorf("last line of stderr:\n%s\nwant it to contain:\n%s", last, tc.want)
			}
		})
	}
	sc := StartSidecacheEnv(t, []string{"GOMEMLIMIT=1GiB"})
	mustReply(t, sc.Dial(t), "+PONG\r\n", "PING") // serving: SIGTERM is handled
	if !strings.Contains(sc.Stderr(), `"limit_bytes":1073741824,"limit_source":"GOMEMLIMIT=1GiB"`) {
		t.Errorf("the GOMEMLIMIT limit is not logged:\n%s", sc.Stderr())
	}
}
