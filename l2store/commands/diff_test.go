package commands

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/commands/internal/redisrun"
)

// The differential tests ask a real redis-server 7.0.15 and compare its
// replies with ours, in RESP2 and RESP3, byte for byte.
//
// Redis lists commands (COMMAND, COMMAND INFO and COMMAND DOCS without
// arguments, COMMAND LIST) and the subcommands of a command in the order of
// its hash tables, whose hash seed is random per process, so those replies
// are compared after sorting the lists by name (canonInfo, canonDocs,
// canonList); everything else in them still has to match exactly.
//
// CLIENT SETINFO, which the table adds from Redis 7.2, is left out of the
// comparison: supported70 is "every command Redis 7.0.15 has".

func supported70(name string) bool { return name != "client|setinfo" }

// redisConns starts a redis-server and returns a RESP2 and a RESP3
// connection to it, indexed by protocol version.
func redisConns(t *testing.T) map[int]*redisrun.Conn {
	t.Helper()
	dir, err := os.MkdirTemp("", "cmdtest") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	srv, err := redisrun.Start("redis-server", dir)
	if errors.Is(err, redisrun.ErrNoServer) && os.Getenv("SIDECACHE_ALLOW_SKIP") == "1" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	conns := map[int]*redisrun.Conn{}
	for _, proto := range []int{2, 3} {
		c, err := redisrun.Dial(srv.Sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		r, err := c.Do("HELLO", strconv.Itoa(proto))
		if err != nil || r.Reply.IsError() {
			t.Fatalf("HELLO %d: %v %v", proto, r.Reply, err)
		}
		if v := helloField(r.Reply, "version"); v != "7.0.15" {
			t.Fatalf("redis-server is version %q, want 7.0.15", v)
		}
		conns[proto] = c
	}
	return conns
}

func helloField(r l2store.Reply, key string) string {
	for i := 0; i+1 < len(r.Elems); i += 2 {
		if string(r.Elems[i].Str) == key {
			return string(r.Elems[i+1].Str)
		}
	}
	return ""
}

// diffCase is one command sent to Redis and our reply to it.
type diffCase struct {
	args [][]byte
	ours l2store.Reply
	// canon, if set, normalizes the order of lists Redis gives in hash
	// order; both replies are parsed, normalized and re-encoded.
	canon func(r l2store.Reply, proto int) l2store.Reply
}

func command(canon func(l2store.Reply, int) l2store.Reply, s ...string) diffCase {
	a := args(s...)
	return diffCase{args: a, ours: Command(a, supported70), canon: canon}
}

// runDiff sends every case to Redis in both protocols and compares.
func runDiff(t *testing.T, conns map[int]*redisrun.Conn, cases []diffCase) {
	t.Helper()
	for _, proto := range []int{2, 3} {
		calls := make([][][]byte, len(cases))
		for i, c := range cases {
			calls[i] = c.args
		}
		replies, err := conns[proto].Pipeline(calls)
		if err != nil {
			t.Fatal(err)
		}
		failures := 0
		for i, c := range cases {
			want, got := replies[i].Raw, c.ours.AppendRESP(nil, proto)
			if c.canon != nil {
				want = c.canon(replies[i].Reply, proto).AppendRESP(nil, proto)
				got = c.canon(parse(t, got), proto).AppendRESP(nil, proto)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("RESP%d %q:\n%s", proto, c.args, firstDiff(got, want))
				if failures++; failures > 20 {
					t.Fatal("too many differences")
				}
			}
		}
	}
}

func parse(t *testing.T, b []byte) l2store.Reply {
	r, err := l2store.ReadReply(bufio.NewReader(bytes.NewReader(b)), 1<<30)
	if err != nil {
		t.Fatalf("our reply does not parse: %v", err)
	}
	return r
}

// firstDiff describes where got and want first differ.
func firstDiff(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	from := max(0, i-80)
	return fmt.Sprintf("differ at byte %d (ours %d bytes, Redis %d bytes)\n ours:  %q\n redis: %q",
		i, len(got), len(want), got[from:min(len(got), i+80)], want[from:min(len(want), i+80)])
}

// canonList sorts an array of names.
func canonList(r l2store.Reply, _ int) l2store.Reply {
	elems := slices.Clone(r.Elems)
	slices.SortFunc(elems, func(a, b l2store.Reply) int { return bytes.Compare(a.Str, b.Str) })
	return l2store.Array(elems...)
}

// canonInfos sorts an array of COMMAND INFO replies, and their
// subcommands, by name.
func canonInfos(r l2store.Reply, proto int) l2store.Reply {
	elems := make([]l2store.Reply, len(r.Elems))
	for i, e := range r.Elems {
		elems[i] = canonInfo(e, proto)
	}
	slices.SortFunc(elems, func(a, b l2store.Reply) int { return compareName(a, b) })
	return l2store.Array(elems...)
}

func canonInfo(r l2store.Reply, proto int) l2store.Reply {
	if r.Kind == l2store.KindNull || len(r.Elems) != 10 || r.Elems[9].Kind != l2store.KindArray {
		return r
	}
	elems := slices.Clone(r.Elems)
	elems[9] = canonInfos(elems[9], proto)
	return l2store.Array(elems...)
}

func compareName(a, b l2store.Reply) int {
	if len(a.Elems) == 0 || len(b.Elems) == 0 {
		return len(a.Elems) - len(b.Elems)
	}
	return bytes.Compare(a.Elems[0].Str, b.Elems[0].Str)
}

// canonDocsMap sorts a map (a flat array in RESP2) from command names to
// COMMAND DOCS replies by name, and the subcommands in each.
func canonDocsMap(r l2store.Reply, proto int) l2store.Reply {
	type pair struct{ name, docs l2store.Reply }
	var pairs []pair
	for i := 0; i+1 < len(r.Elems); i += 2 {
		pairs = append(pairs, pair{r.Elems[i], canonDocs(r.Elems[i+1], proto)})
	}
	slices.SortFunc(pairs, func(a, b pair) int { return bytes.Compare(a.name.Str, b.name.Str) })
	out := l2store.Reply{Kind: r.Kind}
	for _, p := range pairs {
		out.Elems = append(out.Elems, p.name, p.docs)
	}
	return out
}

func canonDocs(r l2store.Reply, proto int) l2store.Reply {
	elems := slices.Clone(r.Elems)
	for i := 0; i+1 < len(elems); i += 2 {
		if elems[i].Kind == l2store.KindBulk && string(elems[i].Str) == "subcommands" {
			elems[i+1] = canonDocsMap(elems[i+1], proto)
		}
	}
	return l2store.Reply{Kind: r.Kind, Elems: elems}
}

func TestDiffInfoAndDocs(t *testing.T) {
	conns := redisConns(t)
	var cases []diffCase
	for _, e := range table {
		if !supported70(e.name) {
			continue
		}
		cases = append(cases,
			command(canonInfos, "COMMAND", "INFO", e.name),
			command(canonDocsMap, "COMMAND", "DOCS", e.name),
		)
		if m := LookupFullName([]byte(e.name)); m.Subcommands == nil {
			// No hash-ordered part: the bytes must match exactly.
			cases = append(cases,
				command(nil, "command", "info", strings.ToUpper(e.name)),
				command(nil, "Command", "Docs", strings.ToUpper(e.name)),
			)
		}
	}
	cases = append(cases,
		command(nil, "COMMAND", "INFO", "get", "nosuch", "set", "client|setname", "CLIENT|SETINFO"),
		command(nil, "COMMAND", "INFO", "client|", "get|x", "", "|get", "client|setname|x", "client|nosuch"),
		command(nil, "COMMAND", "DOCS", "get", "nosuch", "CLIENT|SETNAME", "set", "get"),
		command(nil, "COMMAND", "DOCS", "nosuch", "client|setinfo"),
		command(canonInfos, "COMMAND"),
		command(canonInfos, "COMMAND", "INFO"),
		command(canonDocsMap, "COMMAND", "DOCS"),
	)
	runDiff(t, conns, cases)
}

func TestDiffCountListHelp(t *testing.T) {
	conns := redisConns(t)
	cases := []diffCase{
		command(nil, "COMMAND", "COUNT"),
		command(nil, "command", "count"),
		command(nil, "COMMAND", "HELP"),
		command(nil, "command", "help"),
		command(nil, "CoMmAnD", "HeLp"),
		command(nil, "COMMAND", "nosuch"),
		command(nil, "COMMAND", "no\r\nsuch", "x"),
		command(nil, "COMMAND", strings.Repeat("x", 300)),
		command(nil, "COMMAND", "COUNT", "x"),
		command(nil, "COMMAND", "HELP", "x"),
		command(nil, "COMMAND", "GETKEYS"),
		command(nil, "COMMAND", "GETKEYSANDFLAGS", "get"),
		command(nil, "COMMAND", "LIST", "FILTERBY"),
		command(nil, "COMMAND", "LIST", "FILTERBY", "PATTERN"),
		command(nil, "COMMAND", "LIST", "FILTERBY", "PATTERN", "x", "y"),
		command(nil, "COMMAND", "LIST", "FILTERBY", "NAME", "x"),
		command(nil, "COMMAND", "LIST", "X", "Y", "Z"),
		command(nil, "COMMAND", "LIST", "FILTERBY", "MODULE", "x"),
		command(nil, "COMMAND", "LIST", "FILTERBY", "ACLCAT", "nosuch"),
		command(canonList, "COMMAND", "LIST"),
		command(canonList, "command", "list"),
		command(canonList, "COMMAND", "LIST", "filterby", "aclcat", "READ\x00x"),
	}
	for _, cat := range aclCategoryNames {
		cases = append(cases, command(canonList, "COMMAND", "LIST", "FILTERBY", "ACLCAT", strings.ToUpper(cat)))
	}
	for _, p := range []string{
		"*", "g*", "*|*", "client|*", "*get*", "?et", "[gs]et", "[^gs]et", "[a-c]*", "[c-a]*", "[A-C]*",
		"*[|]*", "*\\|*", "x*", "", "[", "[^", "[]", "[\\]]*", "\\", "get\\", "g*t", "*e*e*", "CLIENT*",
		"[a-]*", "[-a]*", "*_*", "*-*", "[\\|]", "co[a-z]mand|?nfo", "**", "*?", "?*?",
	} {
		cases = append(cases, command(canonList, "COMMAND", "LIST", "FILTERBY", "PATTERN", p))
	}
	runDiff(t, conns, cases)
}

// TestDiffGetKeys compares COMMAND GETKEYS and GETKEYSANDFLAGS for every
// command with generated arguments: argument counts around its arity,
// filled from sequences that exercise key counts, keywords (STORE, KEYS,
// STREAMS, GET...) and malformed numbers.
func TestDiffGetKeys(t *testing.T) {
	conns := redisConns(t)
	fillers := [][]string{
		{"k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8"},
		{"2", "k1", "k2", "k3", "k4", "k5", "k6", "k7"},
		{"k1", "2", "k2", "k3", "k4", "k5", "k6", "k7"},
		{"k1", "k2", "2", "k3", "k4", "k5", "k6", "k7"},
		{"k1", "0", "k2", "k3", "k4", "k5", "k6", "k7"},
		{"k1", "-1", "k2", "k3", "k4", "k5", "k6", "k7"},
		{"k1", "02", "k2", "k3", "k4", "k5", "k6", "k7"},
		{"k1", " 2", "k2", "k3", "k4", "k5", "k6", "k7"},
		{"k1", "3", "k2", "k3", "k4", "k5", "k6", "k7"},
		{"k1", "4294967298", "k2", "k3", "k4", "k5", "k6", "k7"},
		{"k1", "STORE", "k2", "GET", "k3", "LIMIT", "k4", "STORE", "k5"},
		{"k1", "BY", "store", "k2", "StOrE", "k3", "k4", "k5"},
		{"k1", "STREAMS", "k2", "k3", "i1", "i2", "i3", "i4"},
		{"COUNT", "1", "STREAMS", "k1", "k2", "0", "0", "x"},
		{"k1", "k2", "k3", "STREAMS", "k4", "k5", "0", "0"},
		{"h", "p", "", "0", "1", "COPY", "AUTH2", "u", "KEYS", "a", "b"},
		{"h", "p", "k", "0", "1", "AUTH", "KEYS", "KEYS", "a", "b"},
		{"k1", "m", "1", "km", "STORE", "d1", "STOREDIST", "d2", "x"},
		{"k1", "v", "EX", "10", "GET", "x", "y", "z"},
		{"k1", "GET", "u8", "0", "OVERFLOW", "SAT", "INCRBY", "u8", "0", "1"},
		{"k1", "SET", "u8", "0", "1", "x", "y", "z"},
		{"GROUP", "g", "c", "NOACK", "STREAMS", "k1", "0", "x"},
		{"ENCODING", "k1", "k2", "k3", "k4", "k5", "k6", "k7"},
	}
	var cases []diffCase
	for _, e := range table {
		if !supported70(e.name) {
			continue
		}
		base := strings.Split(strings.ToUpper(e.name), "|")
		n := max(e.arity, -e.arity)
		for extra := -1; extra <= 3; extra++ {
			argc := n + extra
			if argc < len(base) || argc-len(base) > 10 {
				continue
			}
			for _, f := range fillers {
				if argc-len(base) > len(f) {
					continue
				}
				call := append(slices.Clone(base), f[:argc-len(base)]...)
				cases = append(cases,
					command(nil, append([]string{"COMMAND", "GETKEYS"}, call...)...),
					command(nil, append([]string{"COMMAND", "GETKEYSANDFLAGS"}, call...)...),
				)
			}
		}
	}
	for _, call := range [][]string{
		{"nosuch", "k"}, {"client"}, {"client", "nosuch"}, {"client", "setname", "x"}, {"client", "setinfo", "a", "b"},
		{"get"}, {"GET", "k", "x"}, {"ping"}, {"object"}, {"object", "encoding"}, {"object", "encoding", "k"},
		{"eval", "s", "0"}, {"EVAL_RO", "s", "0"}, {"fcall", "f", "1", "k", "a"}, {"sintercard", "2", "a", "b", "LIMIT", "1"},
		{"zunionstore", "d", "0", "a"}, {"zunionstore", "d", "1", "a", "WEIGHTS", "2"},
		{"xreadgroup", "GROUP", "g", "c", "COUNT", "1", "BLOCK", "0", "NOACK", "STREAMS", "s1", "s2", ">", ">"},
		{"xread", "STREAMS", "s1", "s2", "0"}, {"xread", "BLOCK", "0", "STREAMS", "streams", "0"},
		{"migrate", "h", "p", "", "0", "1", "REPLACE", "KEYS", "a"}, {"migrate", "h", "p", "", "0", "1", "KEYS"},
		{"sort", "k", "LIMIT", "0", "1", "STORE"}, {"sort", "k", "store", "d", "by", "store"},
		{"georadiusbymember", "g", "m", "1", "km", "STORE"}, {"georadius", "g", "0", "0", "1", "km", "STOREDIST", "d"},
		{"lmpop", "1", "l", "LEFT"}, {"blmpop", "0", "2", "a", "b", "RIGHT", "COUNT", "1"}, {"bzmpop", "0", "1", "z", "MIN"},
		{"set", "k", "v", "GE"}, {"set", "k", "v", "get\x00x"}, {"bitfield", "k"}, {"bitfield_ro", "k", "GET", "u8", "0"},
		{"mset", "a", "1", "b"}, {"msetnx", "a", "1", "b", "2"}, {"del", "a", "b"}, {"lcs", "a", "b"},
		{"memory", "usage", "k"}, {"xinfo", "stream", "s", "FULL"}, {"pubsub", "channels"}, {"publish", "c", "m"},
		{"spublish", "c", "m"}, {"ssubscribe", "a", "b"}, {"sunsubscribe"}, {"restore", "k", "0", "x"},
	} {
		cases = append(cases,
			command(nil, append([]string{"COMMAND", "GETKEYS"}, call...)...),
			command(nil, append([]string{"COMMAND", "GETKEYSANDFLAGS"}, call...)...),
		)
	}
	t.Logf("%d GETKEYS cases", len(cases))
	runDiff(t, conns, cases)
}

// TestDiffCheck compares the errors of Check with Redis's for unknown
// commands, unknown subcommands and wrong argument counts. Only calls that
// Check rejects are sent, so Redis runs nothing.
func TestDiffCheck(t *testing.T) {
	conns := redisConns(t)
	var cases []diffCase
	add := func(s ...string) {
		a := args(s...)
		m, errReply := Check(a, supported70)
		if m != nil {
			t.Fatalf("Check(%q) accepted it; the test only sends rejected calls", s)
		}
		cases = append(cases, diffCase{args: a, ours: errReply})
	}
	for _, e := range table {
		if !supported70(e.name) {
			continue
		}
		base := strings.Split(strings.ToUpper(e.name), "|")
		var wrong []int
		if e.arity > 0 {
			wrong = []int{e.arity - 1, e.arity + 1}
		} else {
			wrong = []int{-e.arity - 1}
		}
		for _, argc := range wrong {
			if argc < len(base) {
				continue
			}
			call := slices.Clone(base)
			for i := len(base); i < argc; i++ {
				call = append(call, "a"+strconv.Itoa(i))
			}
			add(call...)
		}
		if m := LookupFullName([]byte(e.name)); m.Subcommands != nil {
			add(e.name, "nosuch", "x")
			add(strings.ToUpper(e.name), "no\r\nsuch\x00x")
			add(e.name, strings.Repeat("s", 300))
		}
	}
	add("nosuch")
	add("nosuch", "a", "b")
	add("no\r\nsuch", "a\nb", "c\r")
	add("no\x00such", "a\x00b", "c")
	add("client|setname", "x")
	add(strings.Repeat("x", 200), strings.Repeat("a", 100), strings.Repeat("b", 100), "c")
	add("x", strings.Repeat("a", 126), "b", "c")
	add("x", strings.Repeat("a", 125), "b", "c")
	add("x", strings.Repeat("a", 200))
	add("x", "", "", "")
	add("")
	runDiff(t, conns, cases)
}
