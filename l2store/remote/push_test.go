package remote

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidecache/sidecache/l2store"
)

// pushTracked returns the server's clients with tracking on, checking
// that they are the push mode's: RESP3, no redirection.
func pushTracked(tb testing.TB, admin *trkConn) []trkClient {
	tb.Helper()
	tracked := admin.tracked()
	for _, c := range tracked {
		if c["resp"] != "3" || c["redir"] != "0" && c["redir"] != "-1" {
			tb.Fatalf("tracked client is not a RESP3 push connection: %v", c)
		}
	}
	return tracked
}

// TestPushInvalidates reads keys through Get and writes them on another
// connection: the push connection reports each write.
func TestPushInvalidates(t *testing.T) {
	for _, a := range []struct {
		name  string
		args  []string
		url   string
		admin []string
	}{
		{name: "no password", url: "%s"},
		{name: "password and db", args: []string{"--requirepass", "sekret"}, url: ":sekret@%s/3", admin: []string{"sekret"}},
	} {
		t.Run(a.name, func(t *testing.T) {
			srv := trkStartRedis(t, a.args...)
			url := "redis://" + fmt.Sprintf(a.url, srv.Addr)
			db := "0"
			if i := strings.LastIndexByte(url, '/'); i > len("redis://") {
				db = url[i+1:]
			}
			s := trkNewStore(t, Config{URL: url, Tracking: TrackingPush})
			if got := s.TrackingStatus(); got != TrackingStatusPush {
				t.Fatalf("TrackingStatus = %q, want %q", got, TrackingStatusPush)
			}
			if _, _, _, ok := trkNode(s, srv.Addr); ok {
				t.Fatal("push mode started a REDIRECT tracker")
			}
			admin := trkDial(t, srv.Addr, a.admin...)
			admin.ok("SELECT", db)
			if n := len(pushTracked(t, admin)); n != 1 {
				t.Fatalf("%d tracked clients after New, want the push connection", n)
			}
			for _, w := range []struct {
				name  string
				write []string
				flush bool
			}{
				{name: "SET", write: []string{"SET", "k", "new"}},
				{name: "DEL", write: []string{"DEL", "k"}},
				{name: "EXPIRE", write: []string{"EXPIRE", "k", "100"}},
				{name: "FLUSHALL", write: []string{"FLUSHALL"}, flush: true},
				{name: "FLUSHDB", write: []string{"FLUSHDB"}, flush: true},
			} {
				t.Run(w.name, func(t *testing.T) {
					admin.ok("SET", "k", "v")
					if item := trkGet(t, s, "k"); string(item.Value) != "v" || !item.Expires.IsZero() {
						t.Fatalf("Get = %q expires %v, want \"v\" and no expiry", item.Value, item.Expires)
					}
					trkDrain(s)
					admin.ok(w.write...)
					if w.flush {
						trkNext(t, s, w.name, isFlush)
					} else {
						trkNext(t, s, w.name, hasKey("k"))
					}
				})
			}
		})
	}
}

// TestPushGet: values, TTLs, missing keys and error replies.
func TestPushGet(t *testing.T) {
	srv := trkStartRedis(t)
	s := trkNewStore(t, Config{URL: "redis://" + srv.Addr, Tracking: TrackingPush})
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s.now = func() time.Time { return start }
	admin := trkDial(t, srv.Addr)
	admin.ok("SET", "plain", "v")
	admin.ok("SET", "ttl", "w", "EX", "100")
	admin.ok("SET", "empty", "")
	admin.ok("RPUSH", "list", "x")
	ctx, cancel := context.WithTimeout(context.Background(), trkWait)
	defer cancel()
	for _, tc := range []struct {
		key     string
		found   bool
		value   string
		err     string // prefix of a ReplyError
		minTTL  time.Duration
		maxTTL  time.Duration
		noExpir bool
	}{
		{key: "plain", found: true, value: "v", noExpir: true},
		{key: "empty", found: true, value: "", noExpir: true},
		{key: "ttl", found: true, value: "w", minTTL: 90 * time.Second, maxTTL: 100 * time.Second},
		{key: "missing"},
		{key: "list", err: "WRONGTYPE"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			item, found, err := s.Get(ctx, []byte(tc.key))
			if tc.err != "" {
				var re l2store.ReplyError
				if !errors.As(err, &re) || !strings.HasPrefix(string(re), tc.err) {
					t.Fatalf("Get: %v, want a ReplyError %s...", err, tc.err)
				}
				return
			}
			if err != nil || found != tc.found {
				t.Fatalf("Get = %v, %v, want found %v", found, err, tc.found)
			}
			if !found {
				return
			}
			if string(item.Value) != tc.value {
				t.Errorf("value %q, want %q", item.Value, tc.value)
			}
			switch {
			case tc.noExpir && !item.Expires.IsZero():
				t.Errorf("expires %v, want none", item.Expires)
			case !tc.noExpir && (item.Expires.Before(start.Add(tc.minTTL)) || item.Expires.After(start.Add(tc.maxTTL))):
				t.Errorf("expires %v, want %v to %v after %v", item.Expires, tc.minTTL, tc.maxTTL, start)
			}
		})
	}
	// The error reply did not break the connection: still one, tracked.
	if n := len(pushTracked(t, admin)); n != 1 || s.TrackingStatus() != TrackingStatusPush {
		t.Errorf("after the replies: %d tracked clients, status %q", n, s.TrackingStatus())
	}
}

// TestPushConcurrent: concurrent Gets on one connection each get their
// own replies (the reader's FIFO), with writes being reported meanwhile.
func TestPushConcurrent(t *testing.T) {
	srv := trkStartRedis(t)
	s := trkNewStore(t, Config{URL: "redis://" + srv.Addr, Tracking: TrackingPush})
	admin := trkDial(t, srv.Addr)
	const workers, keys, rounds = 8, 20, 10
	for i := range keys {
		admin.ok("SET", fmt.Sprint("key", i), fmt.Sprint("value", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), trkWait)
	defer cancel()
	stop := make(chan struct{})
	var drained sync.WaitGroup
	drained.Add(1)
	go func() { // the consumer the Store expects
		defer drained.Done()
		for {
			select {
			case <-s.Invalidations():
			case <-stop:
				return
			}
		}
	}()
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds * keys {
				i := (w + r) % keys
				item, found, err := s.Get(ctx, []byte(fmt.Sprint("key", i)))
				if err != nil || !found || string(item.Value) != fmt.Sprint("value", i) {
					errs <- fmt.Errorf("Get(key%d) = %q, %v, %v", i, item.Value, found, err)
					return
				}
			}
		}()
	}
	for i := range keys {
		admin.ok("SET", fmt.Sprint("other", i), "x") // untracked keys: no push
		admin.ok("SET", fmt.Sprint("key", i), fmt.Sprint("value", i))
	}
	wg.Wait()
	close(stop)
	drained.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := s.TrackingStatus(); got != TrackingStatusPush {
		t.Errorf("TrackingStatus = %q", got)
	}
}

// TestPushConnKilled kills the push connection: L1 is flushed, the status
// is broken until a Get dials a new connection, and writes are reported
// again.
func TestPushConnKilled(t *testing.T) {
	srv := trkStartRedis(t)
	s := trkNewStore(t, Config{URL: "redis://" + srv.Addr, Tracking: TrackingPush})
	admin := trkDial(t, srv.Addr)
	admin.ok("SET", "k", "v")
	trkGet(t, s, "k")
	tracked := pushTracked(t, admin)
	if len(tracked) != 1 {
		t.Fatalf("%d tracked clients, want 1", len(tracked))
	}
	trkDrain(s)
	admin.ok("CLIENT", "KILL", "ID", tracked[0]["id"])
	trkNext(t, s, "flush after the push connection was killed", isFlush)
	if got := s.TrackingStatus(); got != TrackingStatusBroken {
		t.Errorf("TrackingStatus = %q after the kill, want %q", got, TrackingStatusBroken)
	}
	if item := trkGet(t, s, "k"); string(item.Value) != "v" || !item.Expires.IsZero() {
		t.Fatalf("Get on a new connection = %q expires %v, want \"v\" kept", item.Value, item.Expires)
	}
	if got := s.TrackingStatus(); got != TrackingStatusPush {
		t.Errorf("TrackingStatus = %q after reconnecting, want %q", got, TrackingStatusPush)
	}
	if n := len(pushTracked(t, admin)); n != 1 {
		t.Errorf("%d tracked clients after reconnecting, want 1", n)
	}
	trkDrain(s)
	admin.ok("SET", "k", "w")
	trkNext(t, s, "SET after reconnecting", hasKey("k"))
}

// fakeHello is a HELLO reply for trkFake that go-redis and Dedicated
// accept.
const fakeHello = "*2\r\n$6\r\nserver\r\n$5\r\nredis\r\n"

// TestPushUntracked: an upstream without RESP3 or refusing CLIENT
// TRACKING is read untracked: values are served already expired.
func TestPushUntracked(t *testing.T) {
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		replies map[string]string
	}{
		{"no HELLO", nil},
		{"CLIENT TRACKING refused", map[string]string{"HELLO": fakeHello, "CLIENT TRACKING": "-ERR syntax error\r\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := trkFake(t, tc.replies)
			s := trkNewStore(t, Config{URL: "redis://" + addr, Tracking: TrackingPush})
			if got := s.TrackingStatus(); got != TrackingStatusBroken {
				t.Errorf("TrackingStatus = %q, want %q", got, TrackingStatusBroken)
			}
			s.now = func() time.Time { return start }
			if item := trkGet(t, s, "foo"); string(item.Value) != "bar" || !item.Expires.Equal(start) {
				t.Errorf("Get = %q expires %v, want \"bar\" expiring at once (%v)", item.Value, item.Expires, start)
			}
		})
	}
	t.Run("fake tracking accepted", func(t *testing.T) {
		// The same fake accepting tracking: the Get goes through the push
		// connection and is kept (the fake's PTTL: 5s).
		addr := trkFake(t, map[string]string{"HELLO": fakeHello})
		s := trkNewStore(t, Config{URL: "redis://" + addr, Tracking: TrackingPush})
		if got := s.TrackingStatus(); got != TrackingStatusPush {
			t.Errorf("TrackingStatus = %q, want %q", got, TrackingStatusPush)
		}
		s.now = func() time.Time { return start }
		if item := trkGet(t, s, "foo"); string(item.Value) != "bar" || !item.Expires.Equal(start.Add(5*time.Second)) {
			t.Errorf("Get = %q expires %v, want \"bar\" expiring at %v", item.Value, item.Expires, start.Add(5*time.Second))
		}
	})
}

// TestAutoFallsBackToPush: in auto mode, an upstream that refuses
// CLIENT TRACKING ... REDIRECT but tracks the reading connection (as
// Dragonfly does) gets push mode, not the TTL cap.
func TestAutoFallsBackToPush(t *testing.T) {
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	addr := trkFake(t, map[string]string{"HELLO": fakeHello, "CLIENT TRACKING REDIRECT": "-ERR syntax error\r\n"})
	s := trkNewStore(t, Config{URL: "redis://" + addr, Tracking: TrackingAuto})
	if got := s.TrackingStatus(); got != TrackingStatusPush {
		t.Fatalf("TrackingStatus = %q, want %q", got, TrackingStatusPush)
	}
	s.now = func() time.Time { return start }
	if item := trkGet(t, s, "foo"); string(item.Value) != "bar" || !item.Expires.Equal(start.Add(5*time.Second)) {
		t.Errorf("Get = %q expires %v, want \"bar\" kept until %v", item.Value, item.Expires, start.Add(5*time.Second))
	}
}

// TestPushClose: Close ends the push connection and its goroutines, and
// closes Invalidations; Get after Close fails.
func TestPushClose(t *testing.T) {
	srv := trkStartRedis(t)
	admin := trkDial(t, srv.Addr)
	admin.ok("SET", "k", "v")
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), trkWait)
	defer cancel()
	s, err := New(ctx, Config{URL: "redis://" + srv.Addr, Tracking: TrackingPush})
	if err != nil {
		t.Fatal(err)
	}
	trkGet(t, s, "k")
	admin.ok("SET", "k", "w")
	trkNext(t, s, "SET before Close", hasKey("k"))
	s.Close()
	for range s.Invalidations() {
	}
	if _, _, err := s.Get(ctx, []byte("k")); !errors.Is(err, l2store.ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	trkPoll(t, "connections closed", func() bool { return len(admin.clients()) == 1 })
	var now int
	if err := trkPollErr(trkWait, func() (bool, error) {
		now = runtime.NumGoroutine()
		return now <= before, nil
	}); err != nil {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Close, %d before New: %v\n%s", now, before, err, buf[:runtime.Stack(buf, true)])
	}
}

func TestParsePush(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string
		want Invalidation
		ok   bool
		err  bool
	}{
		{name: "keys", raw: ">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$2\r\nbc\r\n", want: Invalidation{Keys: [][]byte{[]byte("a"), []byte("bc")}}, ok: true},
		{name: "flush", raw: ">2\r\n$10\r\ninvalidate\r\n_\r\n", want: Invalidation{Flush: true}, ok: true},
		{name: "RESP2-style null", raw: ">2\r\n$10\r\ninvalidate\r\n*-1\r\n", want: Invalidation{Flush: true}, ok: true},
		{name: "no keys", raw: ">2\r\n$10\r\ninvalidate\r\n*0\r\n"},
		{name: "other push", raw: ">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n"},
		{name: "bad key", raw: ">2\r\n$10\r\ninvalidate\r\n*1\r\n:1\r\n", err: true},
		{name: "bad payload", raw: ">2\r\n$10\r\ninvalidate\r\n:1\r\n", err: true},
		{name: "truncated", raw: ">2\r\n$10\r\ninvalidate\r\n*1\r\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv, ok, err := parsePush([]byte(tc.raw))
			if (err != nil) != tc.err || ok != tc.ok {
				t.Fatalf("parsePush = %+v, %v, %v; want ok %v, error %v", inv, ok, err, tc.ok, tc.err)
			}
			if ok && (inv.Flush != tc.want.Flush || fmt.Sprint(inv.Keys) != fmt.Sprint(tc.want.Keys)) {
				t.Errorf("parsePush = %+v, want %+v", inv, tc.want)
			}
		})
	}
}
