package test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/embedded"
)

// The differential tests run the same commands on the embedded store (in
// process) and on a real redis-server, and require byte-identical replies
// in RESP2 and in RESP3.

// TestDiffStore runs every script of testdata/diff.
func TestDiffStore(t *testing.T) {
	srv := StartRedisServer(t)
	scripts := LoadScripts(t, "testdata/diff/*.redis")
	arity := redisArity(t, srv.Dial(t), newStore(t).Commands())
	for _, proto := range []int{2, 3} {
		redis := dialProto(t, srv, proto)
		for _, s := range scripts {
			t.Run(fmt.Sprintf("resp%d/%s", proto, s.Name), func(t *testing.T) {
				flushAll(t, redis)
				CompareScript(t, s, redisDo(redis), storeDo(t, newStore(t), arity, proto))
			})
		}
	}
}

// TestDiffStoreRandom runs seeded random command sequences over a few
// keys, mixing valid and invalid arguments, on both targets. It covers
// combinations no one would write by hand; every command's reply is
// deterministic (no relative expiry times, whose TTLs depend on timing).
func TestDiffStoreRandom(t *testing.T) {
	srv := StartRedisServer(t)
	arity := redisArity(t, srv.Dial(t), newStore(t).Commands())
	n := 3000
	if testing.Short() {
		n = 300
	}
	for _, proto := range []int{2, 3} {
		redis := dialProto(t, srv, proto)
		t.Run(fmt.Sprintf("resp%d", proto), func(t *testing.T) {
			flushAll(t, redis)
			rng := rand.New(rand.NewPCG(uint64(proto), 42))
			s := &Script{Name: fmt.Sprintf("random(seed %d)", proto)}
			now := time.Now().Unix()
			for i := range n {
				args := randomCommand(rng, now)
				s.Cmds = append(s.Cmds, ScriptCmd{Line: i + 1, Text: quoteArgs(args), Args: args, Tolerance: -1})
			}
			CompareScript(t, s, redisDo(redis), storeDo(t, newStore(t), arity, proto))
		})
	}
}

func newStore(t *testing.T) *embedded.Store {
	t.Helper()
	s, err := embedded.New(embedded.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// dialProto connects to srv speaking RESP proto (2 or 3).
func dialProto(t *testing.T, srv *RedisServer, proto int) *RESPConn {
	t.Helper()
	c := srv.Dial(t)
	if proto == 3 {
		if _, err := c.DoStrings("HELLO", "3"); err != nil {
			t.Fatalf("HELLO 3: %v", err)
		}
	}
	return c
}

func flushAll(t *testing.T, c *RESPConn) {
	t.Helper()
	if r, err := c.DoStrings("FLUSHALL"); err != nil || string(r) != "+OK\r\n" {
		t.Fatalf("FLUSHALL: %q %v", r, err)
	}
}

func redisDo(c *RESPConn) DoFunc {
	return func(args [][]byte) ([]byte, error) { return c.Do(args...) }
}

// redisArity asks the server's COMMAND INFO for the arity of each command.
func redisArity(t *testing.T, c *RESPConn, names []string) map[string]int {
	t.Helper()
	args := []string{"COMMAND", "INFO"}
	raw, err := c.DoStrings(append(args, names...)...)
	if err != nil {
		t.Fatalf("COMMAND INFO: %v", err)
	}
	info, err := l2store.ReadReply(bufio.NewReader(bytes.NewReader(raw)), 1<<20)
	if err != nil || info.Kind != l2store.KindArray || len(info.Elems) != len(names) {
		t.Fatalf("COMMAND INFO: %v %v", info, err)
	}
	arity := make(map[string]int, len(names))
	for i, e := range info.Elems {
		if e.Kind != l2store.KindArray || len(e.Elems) < 2 || string(e.Elems[0].Str) != names[i] {
			t.Fatalf("COMMAND INFO %s: %v (is it a Redis 7.0 command?)", names[i], e)
		}
		arity[names[i]] = int(e.Elems[1].Int)
	}
	return arity
}

// storeDo runs commands on the embedded store the way the proxy will: it
// answers commands with the wrong number of arguments itself (checked
// against Redis's arity), and encodes replies for protocol proto. Do must
// still agree on those arity errors, as it guards its own inputs.
func storeDo(t *testing.T, s *embedded.Store, arity map[string]int, proto int) DoFunc {
	return func(args [][]byte) ([]byte, error) {
		name := strings.ToLower(string(args[0]))
		a, ok := arity[name]
		if !ok {
			return nil, fmt.Errorf("%s is not a command of the embedded store", name)
		}
		reply, err := s.Do(context.Background(), args)
		if err != nil {
			return nil, err
		}
		if (a > 0 && len(args) != a) || len(args) < -a {
			proxy := l2store.Errorf("ERR wrong number of arguments for '%s' command", name)
			if !bytes.Equal(reply.AppendRESP(nil, proto), proxy.AppendRESP(nil, proto)) {
				return nil, fmt.Errorf("Do's reply to a wrong number of arguments is %v, want %v", reply, proxy)
			}
			reply = proxy
		}
		return reply.AppendRESP(nil, proto), nil
	}
}

// quoteArgs formats args as a script line.
func quoteArgs(args [][]byte) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Quote(string(a)))
	}
	return b.String()
}

// randomCommand returns a random command over a few keys. now is the Unix
// time in seconds when the test started: absolute expiry times are drawn
// around it, far enough that none passes while the test runs unless it is
// meant to be in the past.
func randomCommand(rng *rand.Rand, now int64) [][]byte {
	pick := func(s ...string) string { return s[rng.IntN(len(s))] }
	key := func() string { return pick("a", "b", "c", "n", "f", "") }
	integer := func() string {
		return pick("0", "1", "-1", "7", "-100", "1000000", "9223372036854775807", "-9223372036854775808",
			"9223372036854775806", "-9223372036854775807", "01", "+1", " 1", "1.0", "abc", "",
			strconv.Itoa(rng.IntN(40)-20), strconv.FormatInt(rng.Int64(), 10))
	}
	float := func() string {
		return pick("0.1", "-0.1", "1e3", "1.5e-7", "3.0e3", "5.0e-5", "0x1p3", "inf", "-inf", "nan",
			"1e4932", "-1e4932", "1e-5000", "1e4933", " 1", "1 ", ".5", "5.", "+1", "-0", "abc", "",
			strconv.FormatFloat(rng.NormFloat64()*1000, 'g', -1, 64),
			strconv.FormatFloat(rng.Float64(), 'f', rng.IntN(20), 64),
			strconv.FormatFloat(rng.ExpFloat64(), 'e', rng.IntN(25), 64))
	}
	value := func() string {
		return pick("v", "", "10", "-5", "3.5", "1e2", "hello world", "\x00\xff\r\n", "9223372036854775807", integer(), float())
	}
	// Absolute times: in the past, or at least an hour ahead.
	exAt := func() string {
		return pick("1", "0", "-1", strconv.FormatInt(now-10, 10), strconv.FormatInt(now+3600+rng.Int64N(3600), 10),
			"9223372036854775807", "9223372036854775", "9223372036854776")
	}
	pxAt := func() string {
		return pick("1", "0", strconv.FormatInt(now*1000-10, 10), strconv.FormatInt(now*1000+3600_000+rng.Int64N(3600_000), 10),
			"9223372036854775807", "-9223372036854775808")
	}
	// Relative times whose result does not depend on the clock: invalid,
	// overflowing (9223372036854776 only in seconds), or not positive
	// (an error for SET, deleting the key for EXPIRE).
	rel := func() string { return pick("0", "-1", "-100", "9223372036854775807", "x", "") }
	relSec := func() string { return pick(rel(), "9223372036854776", "-9223372036854776") }
	setOpts := func() []string {
		var opts []string
		for range rng.IntN(4) {
			switch rng.IntN(11) {
			case 0:
				opts = append(opts, pick("NX", "nx", "nX\x00junk"))
			case 1:
				opts = append(opts, pick("XX", "xx"))
			case 2:
				opts = append(opts, pick("GET", "get"))
			case 3:
				opts = append(opts, pick("KEEPTTL", "keepttl"))
			case 4:
				opts = append(opts, pick("PX", "px"), rel())
			case 9:
				opts = append(opts, pick("EX", "ex"), relSec())
			case 5:
				opts = append(opts, "EXAT", exAt())
			case 6:
				opts = append(opts, "PXAT", pxAt())
			case 7:
				opts = append(opts, pick("PERSIST", "FOO", ""))
			case 8:
				opts = append(opts, pick("EX", "EXAT", "PXAT")) // missing value
			default:
				opts = append(opts, pick("EXAT", "PXAT"), pick(exAt(), "abc", "1.5"))
			}
		}
		return opts
	}
	var cmd []string
	switch rng.IntN(24) {
	case 0:
		cmd = append([]string{"SET", key(), value()}, setOpts()...)
	case 1:
		cmd = []string{"GET", key()}
	case 2:
		cmd = []string{pick("INCR", "DECR"), key()}
	case 3:
		cmd = []string{pick("INCRBY", "DECRBY"), key(), integer()}
	case 4:
		cmd = []string{"INCRBYFLOAT", key(), float()}
	case 5:
		cmd = []string{"APPEND", key(), value()}
	case 6:
		cmd = []string{pick("GETRANGE", "SUBSTR"), key(), integer(), integer()}
	case 7:
		cmd = []string{"SETRANGE", key(), pick("0", "1", "3", "10", "-1", "x", strconv.Itoa(rng.IntN(30))), value()}
	case 8:
		cmd = []string{pick("EXPIREAT", "PEXPIREAT"), key(), pick(exAt(), pxAt())}
		for range rng.IntN(3) {
			cmd = append(cmd, pick("NX", "XX", "GT", "LT", "gt", "FOO"))
		}
	case 9:
		cmd = []string{"PEXPIRE", key(), rel()}
		if rng.IntN(2) == 0 {
			cmd = []string{"EXPIRE", key(), relSec()}
		}
		for range rng.IntN(3) {
			cmd = append(cmd, pick("NX", "XX", "GT", "LT"))
		}
	case 10:
		cmd = []string{pick("EXPIRETIME", "PEXPIRETIME", "PERSIST", "TYPE", "STRLEN", "GETDEL"), key()}
	case 11:
		cmd = append([]string{"GETEX", key()}, setOpts()...)
	case 12:
		cmd = []string{"MSET", key(), value(), key(), value()}
	case 13:
		cmd = []string{"MSETNX", key(), value(), key(), value()}
	case 14:
		cmd = []string{"MGET", key(), key(), key()}
	case 15:
		cmd = []string{pick("DEL", "UNLINK", "EXISTS", "TOUCH"), key(), key()}
	case 16:
		cmd = []string{pick("RENAME", "RENAMENX"), key(), key()}
	case 17:
		cmd = []string{"SETNX", key(), value()}
	case 18:
		cmd = []string{"GETSET", key(), value()}
	case 19:
		cmd = []string{pick("SETEX", "PSETEX"), key(), rel(), value()}
		if cmd[0] == "SETEX" {
			cmd[2] = relSec()
		}
	case 20:
		cmd = []string{"SET", key(), pick("0", "1", "12", "1.5", "-3", "x")}
	case 21:
		cmd = []string{"INCRBYFLOAT", key(), float()}
	case 22:
		cmd = append([]string{"SET", key(), value()}, pick("EXAT", "PXAT"), exAt())
	default:
		cmd = []string{"GET", key()}
	}
	out := make([][]byte, len(cmd))
	for i, a := range cmd {
		out[i] = []byte(a)
	}
	return out
}
