package test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sidecache/sidecache/l2store"
)

// The remote differential tests run sidecache in front of one
// redis-server (A, its remote L2) and compare every reply it gives with
// the reply a second, identically configured redis-server (B) gives to
// the same command sent straight to it. Every command sidecache does not
// answer itself is passed through to A, so the replies must agree byte
// for byte, in RESP2 and RESP3, one command at a time and pipelined, with
// L1 on (GET and MGET served from L1, which writes must invalidate) and
// off.
//
// The scripts are testdata/diff/remote/*.redis, in the format of
// script_test.go, with two line prefixes added here for the replies
// whose order a Redis hashtable decides. Redis seeds its hash function
// with random bytes at start, so two servers iterate the same hashtable
// (a set of strings, a big hash, the keyspace) in different orders:
//
//	@unordered SMEMBERS s      every aggregate in the reply is compared as a multiset
//	@pairs HGETALL big         the same, with the elements taken two by two
//	                           (field and value), for RESP2's flat arrays
//
// Everything else, including the replies of listpack and intset
// encodings, whose order is their insertion or numeric order, is
// compared byte for byte.

// remoteRedisArgs is the configuration of both redis-servers: one
// database, as sidecache has (so SELECT, MOVE, SWAPDB and COPY ... DB
// fail alike), and DEBUG DIGEST for the harness (never in scripts).
var remoteRedisArgs = []string{"--databases", "1", "--enable-debug-command", "local"}

// cmpMode says how a script line's replies are compared.
type cmpMode uint8

const (
	cmpExact     cmpMode = iota // byte for byte (or within ~N)
	cmpUnordered                // aggregates as multisets
	cmpPairs                    // aggregates as multisets of consecutive pairs
)

// remoteScript is a script with the comparison mode of each line.
type remoteScript struct {
	*Script
	modes map[int]cmpMode // by line number; absent: cmpExact
}

func (s *remoteScript) mode(c ScriptCmd) cmpMode { return s.modes[c.Line] }

// remoteMarkers are the line prefixes of remote scripts.
var remoteMarkers = []struct {
	prefix string
	mode   cmpMode
}{
	{"@unordered ", cmpUnordered},
	{"@pairs ", cmpPairs},
}

// parseRemoteScript strips the @ markers, remembering them by line, and
// parses the rest with ParseScript.
func parseRemoteScript(name string, data []byte) (*remoteScript, error) {
	lines := strings.Split(string(data), "\n")
	modes := make(map[int]cmpMode)
	for i, line := range lines {
		trimmed := strings.TrimLeft(line, " \t")
		if !strings.HasPrefix(trimmed, "@") {
			continue
		}
		found := false
		for _, m := range remoteMarkers {
			if rest, ok := strings.CutPrefix(trimmed, m.prefix); ok {
				lines[i], modes[i+1], found = rest, m.mode, true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("%w: %s:%d: unknown marker in %q", errScript, name, i+1, line)
		}
	}
	s, err := ParseScript(name, []byte(strings.Join(lines, "\n")))
	if err != nil {
		return nil, err
	}
	return &remoteScript{Script: s, modes: modes}, nil
}

// loadRemoteScripts parses every file matching pattern.
func loadRemoteScripts(t testing.TB, pattern string) []*remoteScript {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts match %s (%v)", pattern, err)
	}
	var out []*remoteScript
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s, err := parseRemoteScript(filepath.Base(f), data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// compareRemote returns "" if got matches want under mode and tolerance
// (see compareReplies), else what differs.
func compareRemote(want, got []byte, mode cmpMode, tolerance int64) string {
	if mode == cmpExact {
		return compareReplies(want, got, tolerance)
	}
	if bytes.Equal(want, got) {
		return ""
	}
	w, errW := canonicalReply(want, mode == cmpPairs)
	g, errG := canonicalReply(got, mode == cmpPairs)
	switch {
	case errW != nil:
		return fmt.Sprintf("reference reply: %v", errW)
	case errG != nil:
		return fmt.Sprintf("reply under test: %v", errG)
	case !bytes.Equal(w, g):
		return "replies differ (as multisets)"
	}
	return ""
}

// canonicalReply re-encodes a raw reply with the elements of every
// aggregate sorted (bytewise, after sorting their own elements), so two
// replies that differ only in the order of their aggregates' elements
// become equal. Maps are sorted by key-value pair; with pairs, so are
// arrays of even length (RESP2's flat field-value arrays).
func canonicalReply(raw []byte, pairs bool) ([]byte, error) {
	out, rest, err := canonicalNode(raw, pairs, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("%w: %d bytes after the reply", l2store.ErrProtocol, len(rest))
	}
	return out, nil
}

// canonicalNode canonicalizes the reply at the start of b and returns it
// with the bytes after it.
func canonicalNode(b []byte, pairs bool, depth int) (out, rest []byte, err error) {
	if depth > 32 {
		return nil, nil, fmt.Errorf("%w: nested too deep", l2store.ErrProtocol)
	}
	end := bytes.Index(b, []byte("\r\n"))
	if end < 1 {
		return nil, nil, fmt.Errorf("%w: no line", l2store.ErrProtocol)
	}
	line, rest := b[:end+2], b[end+2:]
	switch line[0] {
	case '+', '-', ':', ',', '(', '_', '#':
		return line, rest, nil
	case '$', '=', '!':
		n, err := strconv.Atoi(string(line[1:end]))
		if err != nil || n < -1 || n+2 > len(rest) {
			return nil, nil, fmt.Errorf("%w: bad bulk %q", l2store.ErrProtocol, line)
		}
		if n < 0 {
			return line, rest, nil
		}
		return b[:len(line)+n+2], rest[n+2:], nil
	case '*', '~', '>', '%':
		n, err := strconv.Atoi(string(line[1:end]))
		if err != nil || n < -1 {
			return nil, nil, fmt.Errorf("%w: bad count %q", l2store.ErrProtocol, line)
		}
		group := 1
		if line[0] == '%' {
			n, group = n*2, 2
		} else if pairs && n%2 == 0 && line[0] != '~' {
			group = 2
		}
		elems := make([][]byte, 0, max(n, 0))
		for range n {
			var e []byte
			if e, rest, err = canonicalNode(rest, pairs, depth+1); err != nil {
				return nil, nil, err
			}
			elems = append(elems, e)
		}
		groups := make([][]byte, 0, len(elems)/group)
		for i := 0; i+group <= len(elems); i += group {
			groups = append(groups, bytes.Join(elems[i:i+group], nil))
		}
		slices.SortFunc(groups, bytes.Compare)
		return append(slices.Clip(line), bytes.Join(groups, nil)...), rest, nil
	}
	return nil, nil, fmt.Errorf("%w: cannot compare type %q as a multiset", l2store.ErrProtocol, line[0])
}

// remoteTarget is one side of a comparison: a connection and a name.
type remoteTarget struct {
	name string
	conn *RESPConn
}

// maxDiffs bounds the differences reported for one script; beyond it the
// rest of the script is not worth reading.
const maxDiffs = 20

// runRemoteSeq sends the commands of s one at a time to want and to got,
// in turn, and compares the replies.
func runRemoteSeq(t *testing.T, s *remoteScript, want, got remoteTarget) {
	t.Helper()
	diffs := 0
	for _, c := range s.Cmds {
		w, err := want.conn.Do(c.Args...)
		if err != nil {
			t.Fatalf("%s:%d: %s: %s: %v", s.Name, c.Line, shorten(c.Text), want.name, err)
		}
		g, err := got.conn.Do(c.Args...)
		if err != nil {
			t.Fatalf("%s:%d: %s: %s: %v", s.Name, c.Line, shorten(c.Text), got.name, err)
		}
		if reportDiff(t, s, c, w, g, want.name, got.name) {
			if diffs++; diffs >= maxDiffs {
				t.Fatalf("%s: %d differences; stopping", s.Name, diffs)
			}
		}
	}
}

// runRemotePipeline sends all the commands of s as one pipeline to want,
// then to got, and compares the replies.
func runRemotePipeline(t *testing.T, s *remoteScript, want, got remoteTarget) {
	t.Helper()
	w := pipelineScript(t, s, want)
	g := pipelineScript(t, s, got)
	diffs := 0
	for i, c := range s.Cmds {
		if reportDiff(t, s, c, w[i], g[i], want.name, got.name) {
			if diffs++; diffs >= maxDiffs {
				t.Fatalf("%s: %d differences; stopping", s.Name, diffs)
			}
		}
	}
}

// pipelineScript writes every command of s in one write (from another
// goroutine, so replies are read while a big pipeline is still being
// written) and reads one reply per command.
func pipelineScript(t *testing.T, s *remoteScript, tg remoteTarget) [][]byte {
	t.Helper()
	var buf []byte
	for _, c := range s.Cmds {
		buf = AppendCommand(buf, c.Args...)
	}
	c := tg.conn
	c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.conn.Write(buf)
		werr <- err
	}()
	replies := make([][]byte, len(s.Cmds))
	for i, cmd := range s.Cmds {
		r, err := l2store.ReadRaw(c.r, nil, maxTestReply)
		if err != nil {
			t.Fatalf("%s: pipeline: %s: reading the reply to line %d (%s): %v",
				s.Name, tg.name, cmd.Line, shorten(cmd.Text), err)
		}
		replies[i] = r
	}
	if err := <-werr; err != nil {
		t.Fatalf("%s: pipeline: %s: write: %v", s.Name, tg.name, err)
	}
	return replies
}

// reportDiff reports (and returns true) if the replies w and g to c
// differ under the line's comparison mode.
func reportDiff(t *testing.T, s *remoteScript, c ScriptCmd, w, g []byte, wantName, gotName string) bool {
	t.Helper()
	msg := compareRemote(w, g, s.mode(c), c.Tolerance)
	if msg == "" {
		return false
	}
	t.Errorf("%s:%d: %s: %s\n  %-9s %s\n  %-9s %s", s.Name, c.Line, shorten(c.Text), msg,
		wantName, shorten(strconv.Quote(string(w))), gotName, shorten(strconv.Quote(string(g))))
	return true
}

// resetRemote empties the keyspace, the script cache and the functions
// through c, failing the test on any reply but OK.
func resetRemote(t *testing.T, tg remoteTarget) {
	t.Helper()
	for _, cmd := range [][]string{{"FLUSHALL"}, {"SCRIPT", "FLUSH"}, {"FUNCTION", "FLUSH"}} {
		if r := do(t, tg.conn, cmd...); string(r) != "+OK\r\n" {
			t.Fatalf("%s: %s: %q", tg.name, strings.Join(cmd, " "), r)
		}
	}
}

// helloCompare switches both connections to RESP3 and compares the HELLO
// replies field by field, except the connection id, which differs.
func helloCompare(t *testing.T, want, got remoteTarget) {
	t.Helper()
	fields := func(tg remoteTarget) map[string]string {
		r := parseReply(t, do(t, tg.conn, "HELLO", "3"))
		if r.Kind != l2store.KindMap || len(r.Elems)%2 != 0 {
			t.Fatalf("%s: HELLO 3: %v", tg.name, r)
		}
		m := make(map[string]string)
		for i := 0; i < len(r.Elems); i += 2 {
			m[string(r.Elems[i].Str)] = string(r.Elems[i+1].AppendRESP(nil, 3))
		}
		if _, ok := m["id"]; !ok {
			t.Errorf("%s: HELLO 3 has no id: %v", tg.name, r)
		}
		delete(m, "id")
		return m
	}
	w, g := fields(want), fields(got)
	for k, v := range w {
		if g[k] != v {
			t.Errorf("HELLO 3 field %q: %s %q, %s %q", k, want.name, v, got.name, g[k])
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			t.Errorf("HELLO 3 field %q: only in %s's reply", k, got.name)
		}
	}
}

// debugDigest returns DEBUG DIGEST of srv, a hash of its whole dataset
// that does not depend on the order of hashtables.
func debugDigest(t *testing.T, srv *RedisServer) string {
	t.Helper()
	r := do(t, srv.Dial(t), "DEBUG", "DIGEST")
	if len(r) == 0 || r[0] != '+' {
		t.Fatalf("DEBUG DIGEST: %q", r)
	}
	return string(r)
}

// TestRemoteDiff runs every remote script through sidecache (with L1 and
// without) in front of redis-server A and straight on redis-server B,
// comparing replies. A control run first compares A and B directly, so a
// script whose replies vary between two servers is reported as such and
// not blamed on sidecache. After each script run through sidecache, A
// and B must hold the same dataset (DEBUG DIGEST).
func TestRemoteDiff(t *testing.T) {
	scripts := loadRemoteScripts(t, "testdata/diff/remote/*.redis")
	a := StartRedisServer(t, remoteRedisArgs...)
	b := StartRedisServer(t, remoteRedisArgs...)
	total := 0
	for _, s := range scripts {
		total += len(s.Cmds)
	}
	t.Logf("%d scripts, %d commands", len(scripts), total)

	t.Run("control", func(t *testing.T) {
		for _, proto := range []int{2, 3} {
			for _, s := range scripts {
				t.Run(fmt.Sprintf("resp%d/%s", proto, s.Name), func(t *testing.T) {
					want := remoteTarget{"redis-B", b.Dial(t)}
					got := remoteTarget{"redis-A", a.Dial(t)}
					if proto == 3 {
						helloCompare(t, want, got)
					}
					resetRemote(t, want)
					resetRemote(t, got)
					runRemoteSeq(t, s, want, got)
				})
			}
		}
	})
	if t.Failed() {
		t.Fatal("the scripts do not give the same replies on two redis-servers; fix them first")
	}

	l1Modes := []struct {
		name string
		args []string
	}{
		{"l1", nil},
		{"nol1", []string{"--l1-max-bytes", "0"}},
	}
	runs := []struct {
		name string
		run  func(*testing.T, *remoteScript, remoteTarget, remoteTarget)
	}{
		{"seq", runRemoteSeq},
		{"pipeline", runRemotePipeline},
	}
	for _, l1 := range l1Modes {
		t.Run(l1.name, func(t *testing.T) {
			sc := StartSidecache(t, append([]string{"--l2", "redis://" + a.Addr + "/0", "--deny-commands", ""}, l1.args...)...) // the scripts run FLUSHALL, DEBUG and the like
			for _, proto := range []int{2, 3} {
				for _, run := range runs {
					for _, s := range scripts {
						t.Run(fmt.Sprintf("resp%d/%s/%s", proto, run.name, s.Name), func(t *testing.T) {
							want := remoteTarget{"redis", b.Dial(t)}
							got := remoteTarget{"sidecache", sc.Dial(t)}
							if proto == 3 {
								helloCompare(t, want, got)
							}
							resetRemote(t, want)
							resetRemote(t, got)
							run.run(t, s, want, got)
							if da, db := debugDigest(t, a), debugDigest(t, b); da != db {
								t.Errorf("%s: after the script, sidecache's upstream holds other data than redis: DEBUG DIGEST %q, want %q", s.Name, da, db)
							}
						})
					}
				}
			}
			info := infoFields(t, sc.Dial(t), "sidecache")
			if info["l2_kind"] != "remote" {
				t.Errorf("INFO sidecache l2_kind = %q, want remote", info["l2_kind"])
			}
			hits, _ := strconv.ParseInt(info["l1_hits"], 10, 64)
			switch {
			case l1.args == nil && (info["l1_enabled"] != "1" || hits == 0):
				t.Errorf("L1 on: l1_enabled = %q, l1_hits = %q; the scripts should have read through L1", info["l1_enabled"], info["l1_hits"])
			case l1.args != nil && info["l1_enabled"] != "0":
				t.Errorf("L1 off: l1_enabled = %q", info["l1_enabled"])
			}
		})
	}
}

// TestRemoteDiffMarkers checks the parsing of the @ markers.
func TestRemoteDiffMarkers(t *testing.T) {
	src := "# c\nSMEMBERS s\n@unordered SMEMBERS s\n  @pairs HGETALL h\n~1 TTL k\n"
	s, err := parseRemoteScript("t.redis", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		line int
		text string
		mode cmpMode
		tol  int64
	}{
		{2, "SMEMBERS s", cmpExact, -1},
		{3, "SMEMBERS s", cmpUnordered, -1},
		{4, "HGETALL h", cmpPairs, -1},
		{5, "TTL k", cmpExact, 1},
	}
	if len(s.Cmds) != len(want) {
		t.Fatalf("%d commands, want %d", len(s.Cmds), len(want))
	}
	for i, w := range want {
		c := s.Cmds[i]
		if c.Line != w.line || c.Text != w.text || s.mode(c) != w.mode || c.Tolerance != w.tol {
			t.Errorf("command %d: line %d %q mode %d tolerance %d; want %+v", i, c.Line, c.Text, s.mode(c), c.Tolerance, w)
		}
	}
	for _, bad := range []string{"@sorted SMEMBERS s\n", "@unordered\n", "@pairs \"x\n"} {
		if _, err := parseRemoteScript("t.redis", []byte(bad)); err == nil {
			t.Errorf("no error for %q", bad)
		}
	}
}

// TestRemoteDiffCompare checks the multiset comparisons: same elements in
// another order match, anything else does not.
func TestRemoteDiffCompare(t *testing.T) {
	tests := []struct {
		name      string
		want, got string
		mode      cmpMode
		ok        bool
	}{
		{"exact equal", "*2\r\n$1\r\na\r\n$1\r\nb\r\n", "*2\r\n$1\r\na\r\n$1\r\nb\r\n", cmpExact, true},
		{"exact order", "*2\r\n$1\r\na\r\n$1\r\nb\r\n", "*2\r\n$1\r\nb\r\n$1\r\na\r\n", cmpExact, false},
		{"unordered order", "*2\r\n$1\r\na\r\n$1\r\nb\r\n", "*2\r\n$1\r\nb\r\n$1\r\na\r\n", cmpUnordered, true},
		{"unordered other element", "*2\r\n$1\r\na\r\n$1\r\nb\r\n", "*2\r\n$1\r\na\r\n$1\r\nc\r\n", cmpUnordered, false},
		{"unordered duplicate", "*2\r\n$1\r\na\r\n$1\r\nb\r\n", "*2\r\n$1\r\na\r\n$1\r\na\r\n", cmpUnordered, false},
		{"unordered count", "*1\r\n$1\r\na\r\n", "*2\r\n$1\r\na\r\n$1\r\na\r\n", cmpUnordered, false},
		{"unordered type", "*1\r\n$1\r\n1\r\n", "*1\r\n:1\r\n", cmpUnordered, false},
		{"unordered set type", "~2\r\n$1\r\na\r\n$1\r\nb\r\n", "~2\r\n$1\r\nb\r\n$1\r\na\r\n", cmpUnordered, true},
		{"unordered array vs set", "*2\r\n$1\r\na\r\n$1\r\nb\r\n", "~2\r\n$1\r\nb\r\n$1\r\na\r\n", cmpUnordered, false},
		{"unordered nested scan", "*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n", "*2\r\n$1\r\n0\r\n*2\r\n$1\r\nb\r\n$1\r\na\r\n", cmpUnordered, true},
		{"unordered nested cursor", "*2\r\n$1\r\n0\r\n*1\r\n$1\r\na\r\n", "*2\r\n$1\r\n5\r\n*1\r\n$1\r\na\r\n", cmpUnordered, false},
		{"map pairs", "%2\r\n$1\r\nf\r\n$1\r\n1\r\n$1\r\ng\r\n$1\r\n2\r\n", "%2\r\n$1\r\ng\r\n$1\r\n2\r\n$1\r\nf\r\n$1\r\n1\r\n", cmpUnordered, true},
		{"map values swapped", "%2\r\n$1\r\nf\r\n$1\r\n1\r\n$1\r\ng\r\n$1\r\n2\r\n", "%2\r\n$1\r\nf\r\n$1\r\n2\r\n$1\r\ng\r\n$1\r\n1\r\n", cmpUnordered, false},
		{"flat pairs", "*4\r\n$1\r\nf\r\n$1\r\n1\r\n$1\r\ng\r\n$1\r\n2\r\n", "*4\r\n$1\r\ng\r\n$1\r\n2\r\n$1\r\nf\r\n$1\r\n1\r\n", cmpPairs, true},
		{"flat pairs values swapped", "*4\r\n$1\r\nf\r\n$1\r\n1\r\n$1\r\ng\r\n$1\r\n2\r\n", "*4\r\n$1\r\nf\r\n$1\r\n2\r\n$1\r\ng\r\n$1\r\n1\r\n", cmpPairs, false},
		{"bulk with CRLF inside", "*2\r\n$4\r\na\r\nb\r\n$1\r\nc\r\n", "*2\r\n$1\r\nc\r\n$4\r\na\r\nb\r\n", cmpUnordered, true},
		{"error", "-ERR x\r\n", "-ERR y\r\n", cmpUnordered, false},
		{"not RESP", "*2\r\n$1\r\na\r\n$1\r\nb\r\n", "*2\r\n$1\r\nb\r\n$9\r\na\r\n", cmpUnordered, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := compareRemote([]byte(tt.want), []byte(tt.got), tt.mode, -1)
			if (msg == "") != tt.ok {
				t.Errorf("compareRemote(%q, %q, %d) = %q, want ok=%v", tt.want, tt.got, tt.mode, msg, tt.ok)
			}
		})
	}
}
