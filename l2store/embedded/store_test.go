package embedded

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/embedded/kv"
)

// fakeClock is a manually advanced clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.UnixMilli(1_700_000_000_000)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// nowMs is the fake clock's start in Unix ms, for EXAT/PXAT arguments.
const nowMs = 1_700_000_000_000

func newTestStore(t *testing.T, cfg Config) (*Store, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	if cfg.KV.Now == nil {
		cfg.KV.Now = clk.Now
	}
	cfg.KV.ExpireInterval = -1
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, clk
}

// args splits cmd on spaces; the token "" is an empty argument.
func args(cmd string) [][]byte {
	var out [][]byte
	for _, f := range strings.Fields(cmd) {
		if f == `""` {
			f = ""
		}
		out = append(out, []byte(f))
	}
	return out
}

func do(t *testing.T, s *Store, cmd string) l2store.Reply {
	t.Helper()
	r, err := s.Do(context.Background(), args(cmd))
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return r
}

// Reply shorthands for the tables.
var (
	ok    = l2store.OK
	null  = l2store.Null
	empty = l2store.EmptyBulk
)

func i(n int64) l2store.Reply              { return l2store.Int(n) }
func b(s string) l2store.Reply             { return l2store.BulkString(s) }
func e(s string) l2store.Reply             { return l2store.Error(s) }
func st(s string) l2store.Reply            { return l2store.Status(s) }
func arr(r ...l2store.Reply) l2store.Reply { return l2store.Array(r...) }

func sameReply(a, b l2store.Reply) bool {
	return bytes.Equal(a.AppendRESP(nil, 2), b.AppendRESP(nil, 2)) &&
		bytes.Equal(a.AppendRESP(nil, 3), b.AppendRESP(nil, 3))
}

// step is one command and its expected reply, or (when adv is set) a
// clock advance.
type step struct {
	cmd  string
	want l2store.Reply
	adv  time.Duration
}

func wait(d time.Duration) step { return step{adv: d} }

func runSteps(t *testing.T, s *Store, clk *fakeClock, steps []step) {
	t.Helper()
	for n, st := range steps {
		if st.cmd == "" {
			clk.Advance(st.adv)
			continue
		}
		if got := do(t, s, st.cmd); !sameReply(got, st.want) {
			t.Errorf("step %d: %s = %v, want %v", n, st.cmd, got, st.want)
		}
	}
}

func TestTTLTimelines(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
	}{
		{"set ex", []step{
			{cmd: "SET k v EX 10", want: ok},
			{cmd: "TTL k", want: i(10)},
			{cmd: "PTTL k", want: i(10000)},
			{cmd: "EXPIRETIME k", want: i(nowMs/1000 + 10)},
			{cmd: "PEXPIRETIME k", want: i(nowMs + 10000)},
			wait(9500 * time.Millisecond),
			{cmd: "TTL k", want: i(1)}, // 500ms rounds up
			{cmd: "PTTL k", want: i(500)},
			wait(499 * time.Millisecond),
			{cmd: "TTL k", want: i(0)},
			{cmd: "GET k", want: b("v")},
			wait(time.Millisecond),
			{cmd: "GET k", want: null},
			{cmd: "TTL k", want: i(-2)},
		}},
		{"set px", []step{
			{cmd: "SET k v PX 1500", want: ok},
			{cmd: "TTL k", want: i(2)},
			{cmd: "PTTL k", want: i(1500)},
			wait(1499 * time.Millisecond),
			{cmd: "EXISTS k", want: i(1)},
			wait(time.Millisecond),
			{cmd: "EXISTS k", want: i(0)},
		}},
		{"set exat pxat", []step{
			{cmd: fmt.Sprintf("SET k v EXAT %d", nowMs/1000+100), want: ok},
			{cmd: "PTTL k", want: i(100000)},
			{cmd: fmt.Sprintf("SET k v PXAT %d", nowMs+250), want: ok},
			{cmd: "PTTL k", want: i(250)},
			{cmd: fmt.Sprintf("SET k v PXAT %d", nowMs), want: ok}, // in the past: set, then gone
			{cmd: "GET k", want: null},
			{cmd: "SET k v EXAT 1", want: ok},
			{cmd: "EXISTS k", want: i(0)},
		}},
		{"set keepttl and plain set", []step{
			{cmd: "SET k v EX 100", want: ok},
			{cmd: "SET k w KEEPTTL", want: ok},
			{cmd: "TTL k", want: i(100)},
			{cmd: "GET k", want: b("w")},
			{cmd: "SET k x", want: ok},
			{cmd: "TTL k", want: i(-1)},
			{cmd: "SET n v KEEPTTL", want: ok}, // new key: no TTL to keep
			{cmd: "TTL n", want: i(-1)},
		}},
		{"set get nx xx", []step{
			{cmd: "SET k v NX GET", want: null},
			{cmd: "SET k w NX GET", want: b("v")},
			{cmd: "GET k", want: b("v")},
			{cmd: "SET k w XX GET EX 5", want: b("v")},
			{cmd: "TTL k", want: i(5)},
			{cmd: "SET m w XX", want: null},
			{cmd: "SET m w XX GET", want: null},
			{cmd: "EXISTS m", want: i(0)},
		}},
		{"setex psetex", []step{
			{cmd: "SETEX k 10 v", want: ok},
			{cmd: "TTL k", want: i(10)},
			{cmd: "PSETEX k 10 v", want: ok},
			{cmd: "PTTL k", want: i(10)},
			{cmd: "SETEX k 0 v", want: e("ERR invalid expire time in 'setex' command")},
			{cmd: "PSETEX k -5 v", want: e("ERR invalid expire time in 'psetex' command")},
			{cmd: "SETEX k 9223372036854776 v", want: e("ERR invalid expire time in 'setex' command")},
			{cmd: "PSETEX k 9223372036854775807 v", want: e("ERR invalid expire time in 'psetex' command")},
		}},
		{"getex", []step{
			{cmd: "SET k v", want: ok},
			{cmd: "GETEX k", want: b("v")},
			{cmd: "TTL k", want: i(-1)},
			{cmd: "GETEX k EX 10", want: b("v")},
			{cmd: "TTL k", want: i(10)},
			{cmd: "GETEX k PX 500", want: b("v")},
			{cmd: "PTTL k", want: i(500)},
			{cmd: fmt.Sprintf("GETEX k EXAT %d", nowMs/1000+60), want: b("v")},
			{cmd: "TTL k", want: i(60)},
			{cmd: fmt.Sprintf("GETEX k PXAT %d", nowMs+70), want: b("v")},
			{cmd: "PTTL k", want: i(70)},
			{cmd: "GETEX k PERSIST", want: b("v")},
			{cmd: "TTL k", want: i(-1)},
			{cmd: "GETEX k EX 0", want: e("ERR invalid expire time in 'getex' command")},
			{cmd: "GETEX nokey EX 0", want: null}, // the key is looked up first
			{cmd: "GETEX k EX 1 PX 1", want: e("ERR syntax error")},
			{cmd: "GETEX k KEEPTTL", want: e("ERR syntax error")},
			{cmd: "GETEX k PERSIST EX 1", want: e("ERR syntax error")},
			{cmd: fmt.Sprintf("GETEX k PXAT %d", nowMs), want: b("v")}, // now: deleted
			{cmd: "EXISTS k", want: i(0)},
		}},
		{"expire options", []step{
			{cmd: "SET k v", want: ok},
			{cmd: "EXPIRE k 100 XX", want: i(0)},
			{cmd: "EXPIRE k 100 GT", want: i(0)},
			{cmd: "EXPIRE k 100 LT", want: i(1)},
			{cmd: "EXPIRE k 50 NX", want: i(0)},
			{cmd: "EXPIRE k 200 LT", want: i(0)},
			{cmd: "EXPIRE k 200 GT", want: i(1)},
			{cmd: "TTL k", want: i(200)},
			{cmd: "PEXPIRE k 100000 XX LT", want: i(1)},
			{cmd: "TTL k", want: i(100)},
			{cmd: "EXPIRE k 100 GT", want: i(0)}, // equal is not greater
			{cmd: "EXPIRE k 100 LT", want: i(0)},
			{cmd: "PERSIST k", want: i(1)},
			{cmd: "PERSIST k", want: i(0)},
			{cmd: "EXPIRE k 50 NX", want: i(1)},
			{cmd: "EXPIRE k 1 NX XX", want: e("ERR NX and XX, GT or LT options at the same time are not compatible")},
			{cmd: "EXPIRE k 1 GT LT", want: e("ERR GT and LT options at the same time are not compatible")},
			{cmd: "EXPIRE k 1 FOO", want: e("ERR Unsupported option FOO")},
			{cmd: fmt.Sprintf("EXPIREAT k %d", nowMs/1000+30), want: i(1)},
			{cmd: "TTL k", want: i(30)},
			{cmd: fmt.Sprintf("PEXPIREAT k %d", nowMs+40), want: i(1)},
			{cmd: "PTTL k", want: i(40)},
			{cmd: "EXPIRE k 0", want: i(1)}, // in the past: deleted
			{cmd: "EXISTS k", want: i(0)},
			{cmd: "EXPIRE k 10", want: i(0)},
			{cmd: "EXPIRE k 9223372036854776", want: e("ERR invalid expire time in 'expire' command")},
			{cmd: "PEXPIRE k 9223372036854775807", want: e("ERR invalid expire time in 'pexpire' command")},
			{cmd: "EXPIRE k 1.5", want: e("ERR value is not an integer or out of range")},
		}},
		{"writes that keep or drop the ttl", []step{
			{cmd: "SET n 1 EX 100", want: ok},
			{cmd: "INCR n", want: i(2)},
			{cmd: "INCRBYFLOAT n 0.5", want: b("2.5")},
			{cmd: "APPEND n 0", want: i(4)},
			{cmd: "SETRANGE n 0 3", want: i(4)},
			{cmd: "TTL n", want: i(100)},
			{cmd: "GET n", want: b("3.50")},
			{cmd: "RENAME n m", want: ok},
			{cmd: "TTL m", want: i(100)},
			{cmd: "GETSET m x", want: b("3.50")},
			{cmd: "TTL m", want: i(-1)},
			{cmd: "SET m v EX 100", want: ok},
			{cmd: "MSET m w", want: ok},
			{cmd: "TTL m", want: i(-1)},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, clk := newTestStore(t, Config{})
			runSteps(t, s, clk, tt.steps)
		})
	}
}

// TestExpiredKeyInvisible checks that a key whose TTL has just passed is
// missing for every command, and that writes create it afresh without the
// old TTL.
func TestExpiredKeyInvisible(t *testing.T) {
	tests := []struct {
		cmd  string
		want l2store.Reply
		ttl  int64 // TTL k afterwards
	}{
		{"GET k", null, -2},
		{"GETDEL k", null, -2},
		{"GETEX k PERSIST", null, -2},
		{"MGET k", arr(null), -2},
		{"STRLEN k", i(0), -2},
		{"GETRANGE k 0 -1", empty, -2},
		{"SUBSTR k 0 -1", empty, -2},
		{"EXISTS k", i(0), -2},
		{"TOUCH k", i(0), -2},
		{"TYPE k", st("none"), -2},
		{"TTL k", i(-2), -2},
		{"PTTL k", i(-2), -2},
		{"EXPIRETIME k", i(-2), -2},
		{"PEXPIRETIME k", i(-2), -2},
		{"PERSIST k", i(0), -2},
		{"EXPIRE k 100", i(0), -2},
		{"DEL k", i(0), -2},
		{"UNLINK k", i(0), -2},
		{"RENAME k j", e("ERR no such key"), -2},
		{"RENAMENX k j", e("ERR no such key"), -2},
		{"SET k w XX", null, -2},
		{"SETNX k w", i(1), -1},
		{"SET k w NX GET", null, -1},
		{"SET k w KEEPTTL", ok, -1},
		{"MSETNX k w", i(1), -1},
		{"GETSET k w", null, -1},
		{"INCR k", i(1), -1},
		{"DECRBY k 5", i(-5), -1},
		{"INCRBYFLOAT k 1.5", b("1.5"), -1},
		{"APPEND k w", i(1), -1},
		{"SETRANGE k 2 w", i(3), -1},
		{"SETRANGE k 2 \"\"", i(0), -2},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			s, clk := newTestStore(t, Config{})
			do(t, s, "SET k value PX 100")
			clk.Advance(100 * time.Millisecond)
			got, err := s.Do(context.Background(), args(tt.cmd))
			if err != nil {
				t.Fatal(err)
			}
			if !sameReply(got, tt.want) {
				t.Errorf("%s = %v, want %v", tt.cmd, got, tt.want)
			}
			if got := do(t, s, "TTL k"); !sameReply(got, i(tt.ttl)) {
				t.Errorf("TTL after %s = %v, want %d", tt.cmd, got, tt.ttl)
			}
		})
	}
}

func TestGet(t *testing.T) {
	s, clk := newTestStore(t, Config{})
	ctx := context.Background()
	if _, found, err := s.Get(ctx, []byte("k")); found || err != nil {
		t.Fatalf("Get(missing) = found %v, err %v", found, err)
	}
	do(t, s, "SET k value")
	item, found, err := s.Get(ctx, []byte("k"))
	if !found || err != nil || string(item.Value) != "value" || !item.Expires.IsZero() {
		t.Fatalf("Get = %q %v found %v err %v", item.Value, item.Expires, found, err)
	}
	item.Value[0] = 'X' // the caller owns the copy
	if got := do(t, s, "GET k"); !sameReply(got, b("value")) {
		t.Errorf("value changed through Get's result: %v", got)
	}
	do(t, s, "PEXPIRE k 1500")
	item, _, _ = s.Get(ctx, []byte("k"))
	if want := time.UnixMilli(nowMs + 1500); !item.Expires.Equal(want) {
		t.Errorf("Expires = %v, want %v", item.Expires, want)
	}
	clk.Advance(1500 * time.Millisecond)
	if _, found, _ := s.Get(ctx, []byte("k")); found {
		t.Error("expired key found")
	}
}

func TestRepliesDoNotAliasMemory(t *testing.T) {
	s, _ := newTestStore(t, Config{})
	do(t, s, "SET k abcdef")
	for _, cmd := range []string{"GET k", "GETEX k", "GETRANGE k 0 -1", "SET k abcdef GET", "GETSET k abcdef"} {
		r := do(t, s, cmd)
		for j := range r.Str {
			r.Str[j] = 'X'
		}
		if got := do(t, s, "GET k"); !sameReply(got, b("abcdef")) {
			t.Fatalf("after scribbling over the reply of %s: GET = %v", cmd, got)
		}
	}
	r := do(t, s, "MGET k")
	r.Elems[0].Str[0] = 'X'
	if got := do(t, s, "GET k"); !sameReply(got, b("abcdef")) {
		t.Fatalf("after scribbling over the reply of MGET: GET = %v", got)
	}
}

func TestOOMNoEviction(t *testing.T) {
	// One shard of 1 MiB holds one 600 KiB value but not two.
	s, _ := newTestStore(t, Config{KV: kv.Config{MaxBytes: 1 << 20, Shards: 1, Policy: kv.NoEviction}})
	ctx := context.Background()
	big := strings.Repeat("x", 600<<10)
	do(t, s, "SET a "+big)
	do(t, s, "SET n 10")
	before := snapshot(t, s, "a", "n", "b", "c")

	failing := [][][]byte{
		args("SET b " + big),
		args("SET a " + big + big),
		args("MSET b 1 c " + big),
		args("MSETNX b 1 c " + big),
		args("APPEND a " + big),
		args("SETRANGE a 600000 " + big),
		args("SETRANGE c 600000 x"),
		args("SETRANGE c 100000000 x"), // larger than the whole bound: fails before allocating
		args("GETSET b " + big),
		args("SET b " + big + " GET"),
	}
	for _, a := range failing {
		t.Run(string(a[0]), func(t *testing.T) {
			r, err := s.Do(ctx, a)
			if !errors.Is(err, l2store.ErrOOM) {
				t.Fatalf("%s: reply %.100v, err %v; want ErrOOM", a[0], r, err)
			}
			if after := snapshot(t, s, "a", "n", "b", "c"); !reflect.DeepEqual(before, after) {
				t.Fatalf("failed %s changed the data:\nbefore %v\nafter  %v", a[0], before, after)
			}
		})
	}
	// After a delete there is room again.
	do(t, s, "DEL a")
	if got := do(t, s, "SET b "+big); !sameReply(got, ok) {
		t.Errorf("SET after DEL = %v", got)
	}
}

// snapshot returns the length and digest of the value of every key, and
// its TTL, for before/after comparisons.
func snapshot(t *testing.T, s *Store, keys ...string) []string {
	t.Helper()
	var out []string
	for _, k := range keys {
		v := do(t, s, "GET "+k)
		out = append(out, fmt.Sprintf("%s: kind %d len %d sha %x ttl %v",
			k, v.Kind, len(v.Str), sha256.Sum256(v.Str), do(t, s, "PTTL "+k)))
	}
	return out
}

func TestRenameWhenFull(t *testing.T) {
	// One shard, room for one big value under noeviction: RENAME copies
	// the value, so it gets OOM and both keys stay as they were, rather
	// than risk losing the value.
	s, _ := newTestStore(t, Config{KV: kv.Config{MaxBytes: 1 << 20, Shards: 1, Policy: kv.NoEviction}})
	big := strings.Repeat("x", 600<<10)
	do(t, s, "SET b "+big+" EX 100")
	if _, err := s.Do(context.Background(), args("RENAME b a")); !errors.Is(err, l2store.ErrOOM) {
		t.Fatalf("RENAME with no room for a copy: err %v, want ErrOOM", err)
	}
	if got := do(t, s, "EXISTS a"); !sameReply(got, i(0)) {
		t.Errorf("EXISTS a = %v", got)
	}
	// A destination name too long to fit: nothing changes.
	long := strings.Repeat("k", 500<<10)
	_, err := s.Do(context.Background(), args("RENAME b "+long))
	if !errors.Is(err, l2store.ErrOOM) {
		t.Fatalf("RENAME to a long key: err %v, want ErrOOM", err)
	}
	if got := do(t, s, "GET b"); !sameReply(got, b(big)) {
		t.Errorf("after failed RENAME: GET b = %v", got)
	}
	if got := do(t, s, "TTL b"); !sameReply(got, i(100)) {
		t.Errorf("after failed RENAME: TTL b = %v", got)
	}
}

func TestMSETNXAtomic(t *testing.T) {
	s, _ := newTestStore(t, Config{})
	runSteps(t, s, nil, []step{
		{cmd: "SET b old", want: ok},
		{cmd: "MSETNX a 1 b 2 c 3", want: i(0)},
		{cmd: "MGET a b c", want: arr(null, b("old"), null)},
		{cmd: "MSETNX a 1 c 3 a 4", want: i(1)},
		{cmd: "MGET a b c", want: arr(b("4"), b("old"), b("3"))},
	})
}

// TestMSETNXConcurrent races writers of overlapping key sets: each key set
// must be written entirely by one of them.
func TestMSETNXConcurrent(t *testing.T) {
	s, _ := newTestStore(t, Config{KV: kv.Config{Shards: 16}})
	const writers, keys = 8, 20
	var wg sync.WaitGroup
	wins := make([]int64, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := [][]byte{[]byte("MSETNX")}
			for k := range keys {
				a = append(a, fmt.Appendf(nil, "key%d", k), fmt.Appendf(nil, "%d", w))
			}
			r, err := s.Do(context.Background(), a)
			if err != nil {
				t.Error(err)
				return
			}
			wins[w] = r.Int
		}()
	}
	wg.Wait()
	winner := slices.Index(wins, 1)
	if winner < 0 || slices.Index(wins[winner+1:], 1) >= 0 {
		t.Fatalf("wins = %v, want exactly one 1", wins)
	}
	for k := range keys {
		if got := do(t, s, fmt.Sprintf("GET key%d", k)); !sameReply(got, b(fmt.Sprint(winner))) {
			t.Errorf("key%d = %v, want %d", k, got, winner)
		}
	}
}

func TestIncrConcurrent(t *testing.T) {
	s, _ := newTestStore(t, Config{})
	const goroutines, n = 4, 500
	var wg sync.WaitGroup
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				if _, err := s.Do(context.Background(), args("INCR c")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := do(t, s, "GET c"); !sameReply(got, b(fmt.Sprint(goroutines*n))) {
		t.Errorf("GET c = %v, want %d", got, goroutines*n)
	}
}

func TestCommands(t *testing.T) {
	want := strings.Fields(`get set setex psetex setnx getset getdel getex mget mset msetnx
		append strlen incr incrby decr decrby incrbyfloat getrange substr setrange
		del unlink exists expire pexpire expireat pexpireat ttl pttl expiretime pexpiretime
		persist type touch rename renamenx dbsize flushdb flushall`)
	slices.Sort(want)
	s, _ := newTestStore(t, Config{})
	if got := s.Commands(); !slices.Equal(got, want) {
		t.Errorf("Commands() = %v\nwant %v", got, want)
	}
}

func TestDispatchErrors(t *testing.T) {
	s, _ := newTestStore(t, Config{})
	tests := []struct {
		args [][]byte
		want l2store.Reply
	}{
		{args("get"), e("ERR wrong number of arguments for 'get' command")},
		{args("GET a b"), e("ERR wrong number of arguments for 'get' command")},
		{args("set a"), e("ERR wrong number of arguments for 'set' command")},
		{args("mset a b c"), e("ERR wrong number of arguments for 'mset' command")},
		{args("dbsize x"), e("ERR wrong number of arguments for 'dbsize' command")},
		{args("FLUSHALL ASYNC x"), e("ERR syntax error")},
		{args("FLUSHDB lazy"), e("ERR syntax error")},
		{args("hset k f v"), e("ERR unknown command 'hset', with args beginning with: 'k' 'f' 'v' ")},
		{[][]byte{[]byte("no\r\npe"), []byte("a\nb")}, e("ERR unknown command 'no  pe', with args beginning with: 'a b' ")},
		{[][]byte{[]byte(strings.Repeat("x", 200))}, e("ERR unknown command '" + strings.Repeat("x", 128) + "', with args beginning with: ")},
		{[][]byte{[]byte("x"), []byte(strings.Repeat("a", 100)), []byte(strings.Repeat("b", 100)), []byte("c")},
			e("ERR unknown command 'x', with args beginning with: '" + strings.Repeat("a", 100) + "' '" + strings.Repeat("b", 25) + "' ")},
		{nil, e("ERR unknown command '', with args beginning with: ")},
	}
	for _, tt := range tests {
		got, err := s.Do(context.Background(), tt.args)
		if err != nil || !sameReply(got, tt.want) {
			t.Errorf("Do(%q) = %v, %v; want %v", tt.args, got, err, tt.want)
		}
	}
}

// TestDoNeverPanics runs every command with every number of arguments up
// to 7, drawn from values that exercise the parsers.
func TestDoNeverPanics(t *testing.T) {
	s, _ := newTestStore(t, Config{KV: kv.Config{MaxBytes: 1 << 20}, ProtoMaxBulkLen: 1 << 16})
	tokens := [][]byte{nil, []byte("k"), []byte("0"), []byte("-1"), []byte("9223372036854775807"),
		[]byte("-9223372036854775808"), []byte("1.5"), []byte("inf"), []byte("nx"), []byte("EX"),
		[]byte("pxat"), []byte("get"), []byte("keepttl"), []byte("persist"), []byte("gt"), []byte("\x00")}
	for _, name := range s.Commands() {
		for n := range 8 {
			for seed := range 30 {
				a := [][]byte{[]byte(name)}
				for j := range n {
					a = append(a, tokens[(seed*7+j*13+n)%len(tokens)])
				}
				if _, err := s.Do(context.Background(), a); err != nil && !errors.Is(err, l2store.ErrOOM) {
					t.Errorf("Do(%q): %v", a, err)
				}
			}
		}
	}
}

func FuzzDo(f *testing.F) {
	f.Add("SET", "k", "v", "EX", "10")
	f.Add("INCRBYFLOAT", "k", "0x1p3", "", "")
	f.Add("GETRANGE", "k", "-9223372036854775808", "9223372036854775807", "")
	f.Add("SETRANGE", "k", "100", "x", "")
	s, err := New(Config{KV: kv.Config{MaxBytes: 1 << 20, ExpireInterval: -1}, ProtoMaxBulkLen: 1 << 16})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name, a1, a2, a3, a4 string) {
		for n := 1; n <= 5; n++ {
			a := [][]byte{[]byte(name), []byte(a1), []byte(a2), []byte(a3), []byte(a4)}[:n]
			if _, err := s.Do(context.Background(), a); err != nil && !errors.Is(err, l2store.ErrOOM) {
				t.Fatal(err)
			}
		}
	})
}

func TestStatsAndClose(t *testing.T) {
	s, _ := newTestStore(t, Config{KV: kv.Config{MaxBytes: 1 << 20, Policy: kv.NoEviction}})
	do(t, s, "MSET a 1 b 2")
	do(t, s, "EXPIRE a 10")
	st := s.Stats()
	if st.Kind != "embedded" || st.Policy != "noeviction" || st.Keys != 2 || st.Expires != 1 || st.MaxBytes != 1<<20 || st.UsedBytes <= 0 {
		t.Errorf("Stats() = %+v", st)
	}
	if got := do(t, s, "DBSIZE"); !sameReply(got, i(2)) {
		t.Errorf("DBSIZE = %v", got)
	}
	if got := do(t, s, "FLUSHALL SYNC"); !sameReply(got, ok) {
		t.Errorf("FLUSHALL = %v", got)
	}
	if got := do(t, s, "DBSIZE"); !sameReply(got, i(0)) {
		t.Errorf("DBSIZE after FLUSHALL = %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Do(ctx, args("GET a")); !errors.Is(err, context.Canceled) {
		t.Errorf("Do with a canceled context: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Do(context.Background(), args("GET a")); !errors.Is(err, l2store.ErrClosed) {
		t.Errorf("Do after Close: %v", err)
	}
	if _, _, err := s.Get(context.Background(), []byte("a")); !errors.Is(err, l2store.ErrClosed) {
		t.Errorf("Get after Close: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{ProtoMaxBulkLen: -1},
		{KV: kv.Config{MaxBytes: -1}},
		{KV: kv.Config{Shards: 3}},
	} {
		if s, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, %v; want ErrConfig", cfg, s, err)
		}
	}
}
