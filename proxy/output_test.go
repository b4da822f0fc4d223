package proxy_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/proxy"
)

// pollFor calls cond every few milliseconds until it is true or timeout
// has passed, and reports whether it became true.
func pollFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// connectedClients reads connected_clients from INFO clients on c.
func connectedClients(t *testing.T, c *client) int {
	t.Helper()
	info := c.do("INFO", "clients")
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "connected_clients:"); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("connected_clients:%q", v)
			}
			return n
		}
	}
	t.Fatalf("no connected_clients in INFO clients: %q", info)
	return 0
}

// waitClosedByServer reads c until the server closes it, discarding the
// replies, and fails the test if it does not within timeout.
func waitClosedByServer(t *testing.T, c *client, timeout time.Duration) {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	_, err := io.Copy(io.Discard, c.conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server did not close the connection within %v", timeout)
	}
}

// TestClientOutputBounds drives clients that do not read their replies,
// or get replies bigger than the limit: each is disconnected with Redis's
// log line, while another client keeps being served. A client that reads
// gets replies adding up to far more than the limit.
func TestClientOutputBounds(t *testing.T) {
	const valueSize = 256 << 10
	big := strings.Repeat("v", valueSize)
	for _, tc := range []struct {
		name    string
		limit   int64
		timeout time.Duration
		key     string // the stalled client pipelines GETs of it
		read    bool   // the stalled client reads while waiting to be closed
	}{
		// One reply over the limit: closed at once, nothing sent.
		{name: "reply over the limit", limit: 128 << 10, key: "big", read: true},
		// The client stops reading: its flush blocks, and it is closed
		// once it has taken nothing for the timeout.
		{name: "stopped reading", timeout: 300 * time.Millisecond, key: "big"},
		{name: "stopped reading, limit too", limit: 1 << 20, timeout: 300 * time.Millisecond, key: "big"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.WarnLevel)
			cache := &fakeCache{values: map[string]string{"big": big, "small": "s"}}
			_, addr, _ := serveFake(t, cache, storeFunc(okStore), proxy.Config{
				ClientOutputBufferLimit: tc.limit,
				ClientOutputTimeout:     tc.timeout,
				Logger:                  zap.New(core),
			})
			other := dial(t, addr)
			if got := other.do("GET", "small"); got != "$1\r\ns\r\n" {
				t.Fatalf("GET small: %q", got)
			}

			stalled := dial(t, addr)
			var pipeline []byte
			for range 400 { // 100 MiB of replies
				pipeline = append(pipeline, "*2\r\n$3\r\nGET\r\n$"+strconv.Itoa(len(tc.key))+"\r\n"+tc.key+"\r\n"...)
			}
			go func() {
				// The server stops reading once its writes block: the
				// pipeline's end may never be taken.
				stalled.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
				stalled.conn.Write(pipeline)
			}()
			if tc.read {
				waitClosedByServer(t, stalled, 10*time.Second)
			}
			if !pollFor(10*time.Second, func() bool { return connectedClients(t, other) == 1 }) {
				t.Fatalf("connected_clients = %d, want 1: the stalled client was not closed", connectedClients(t, other))
			}
			if got := other.do("GET", "small"); got != "$1\r\ns\r\n" {
				t.Errorf("GET small after the close: %q", got)
			}
			if !pollFor(5*time.Second, func() bool {
				return logs.FilterMessage("closing client that reached max output buffer").Len() == 1
			}) {
				t.Errorf("log: %v, want one \"closing client that reached max output buffer\"", logs.All())
			}
			if !tc.read {
				waitClosedByServer(t, stalled, 10*time.Second)
			}
		})
	}

	t.Run("a reading client gets more than the limit", func(t *testing.T) {
		cache := &fakeCache{values: map[string]string{"big": big}}
		_, addr, _ := serveFake(t, cache, storeFunc(okStore), proxy.Config{
			ClientOutputBufferLimit: 1 << 20,
			ClientOutputTimeout:     time.Second,
		})
		c := dial(t, addr)
		const n = 40 // 10 MiB, ten times the limit
		go func() {
			for range n {
				c.send("GET", "big")
			}
		}()
		want := "$" + strconv.Itoa(valueSize) + "\r\n" + big + "\r\n"
		for i := range n {
			if got := c.read(); got != want {
				t.Fatalf("reply %d: %d bytes, want %d", i, len(got), len(want))
			}
		}
	})
}

// TestOverMemoryRefusesWrites checks the guard: while Config.OverMemory
// says so, commands that may grow memory get Redis's -OOM error without
// reaching the store; reads and deletes go on.
func TestOverMemoryRefusesWrites(t *testing.T) {
	var over atomic.Bool
	var storeCalls atomic.Int64
	store := storeFunc(func(ctx context.Context, args [][]byte) (l2store.Reply, error) {
		storeCalls.Add(1)
		return okStore(ctx, args)
	})
	cache := &fakeCache{values: map[string]string{"k": "v"}}
	_, addr, _ := serveFake(t, cache, store, proxy.Config{OverMemory: over.Load})
	c := dial(t, addr)
	const oom = "-OOM command not allowed when used memory > 'maxmemory'.\r\n"
	for _, tc := range []struct {
		over      bool
		args      []string
		want      string
		reachesL2 bool
	}{
		{false, []string{"SET", "k", "v"}, "+OK\r\n", true},
		{true, []string{"SET", "k", "v"}, oom, false},
		{true, []string{"APPEND", "k", "v"}, oom, false},
		{true, []string{"LPUSH", "l", "v"}, oom, false},
		{true, []string{"GET", "k"}, "$1\r\nv\r\n", false}, // L1
		{true, []string{"DEL", "k"}, "+OK\r\n", true},      // frees memory
		{true, []string{"EXPIRE", "k", "10"}, "+OK\r\n", true},
		{false, []string{"SET", "k", "v"}, "+OK\r\n", true},
	} {
		t.Run(strings.Join(tc.args, " ")+" over="+strconv.FormatBool(tc.over), func(t *testing.T) {
			over.Store(tc.over)
			before := storeCalls.Load()
			if got := c.do(tc.args...); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if reached := storeCalls.Load() > before; reached != tc.reachesL2 {
				t.Errorf("reached the store: %v, want %v", reached, tc.reachesL2)
			}
		})
	}
	// In a pipeline too.
	over.Store(true)
	c.send("SET", "a", "1")
	c.send("GET", "k")
	c.send("SET", "b", "2")
	for i, want := range []string{oom, "$1\r\nv\r\n", oom} {
		if got := c.read(); got != want {
			t.Errorf("pipelined reply %d: %q, want %q", i, got, want)
		}
	}
}

func TestOutputConfigValidation(t *testing.T) {
	for _, cfg := range []proxy.Config{
		{ClientOutputBufferLimit: -1},
		{ClientOutputTimeout: -time.Second},
	} {
		if _, err := proxy.New(&fakeCache{}, storeFunc(okStore), cfg); !errors.Is(err, proxy.ErrConfig) {
			t.Errorf("New(%+v): %v, want ErrConfig", cfg, err)
		}
	}
}

// TestOverMemoryInTransaction: on a pinned connection (a remote L2's
// transaction, after WATCH), while the process is short of memory, a
// command that may grow memory gets -OOM, and inside MULTI so does any
// command but EXEC, DISCARD, QUIT and RESET, as in Redis 7.0's
// processCommand; the transaction fails with EXECABORT and nothing reaches
// the upstream.
func TestOverMemoryInTransaction(t *testing.T) {
	var over atomic.Bool
	e := newPinEnvConfig(t, proxy.Config{OverMemory: over.Load})
	c := rdial(t, e.proxy)
	const oom = "-OOM command not allowed when used memory > 'maxmemory'.\r\n"
	over.Store(true)
	for _, step := range []struct {
		args []string
		want string
	}{
		{[]string{"MULTI"}, "+OK\r\n"},
		{[]string{"SET", "oomk", "v"}, oom},
		{[]string{"INCR", "oomn"}, oom},
		{[]string{"GET", "oomk"}, oom},
		{[]string{"EXEC"}, "-EXECABORT Transaction discarded because of previous errors.\r\n"},
		{[]string{"WATCH", "oomk"}, "+OK\r\n"},
		{[]string{"SET", "oomk", "v"}, oom},
		{[]string{"GET", "oomk"}, "$-1\r\n"}, // after WATCH, outside MULTI: reads go on
		{[]string{"UNWATCH"}, "+OK\r\n"},
	} {
		if got := c.do(step.args...); got != step.want {
			t.Fatalf("%q = %q, want %q", step.args, got, step.want)
		}
	}
	if got := e.admin.do("EXISTS", "oomk", "oomn"); got != ":0\r\n" {
		t.Fatalf("upstream EXISTS = %q: a refused command reached it", got)
	}
	over.Store(false)
	for _, step := range []struct {
		args []string
		want string
	}{
		{[]string{"MULTI"}, "+OK\r\n"},
		{[]string{"SET", "oomk", "v"}, "+QUEUED\r\n"},
		{[]string{"EXEC"}, "*1\r\n+OK\r\n"},
	} {
		if got := c.do(step.args...); got != step.want {
			t.Fatalf("%q = %q, want %q", step.args, got, step.want)
		}
	}
}
