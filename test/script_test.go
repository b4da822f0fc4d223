package test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sidecache/sidecache/l2store"
)

// A command script is a text file of Redis commands, one per line, run
// against two targets whose replies must agree (see CompareScript):
//
//	# a comment line
//	SET key value EX 100
//	SET "bin\x00key" "a value with spaces\r\n"
//	APPEND big {rep:100000:ab}
//	~2 TTL key
//
// Arguments are separated by spaces. An argument in double quotes is a Go
// string literal (strconv.Unquote), so it may hold spaces and any byte
// ("\x00\xff"); "" is the empty string. An argument {rep:N:s} is the string
// s repeated N times (s may not contain '}'). A line prefixed "~N " expects
// an integer reply and accepts any two within N of each other (for TTLs,
// which depend on when each target ran the command). Blank lines and lines
// starting with '#' are ignored.

// Script is a parsed command script.
type Script struct {
	Name string // file name, for messages
	Cmds []ScriptCmd
}

// ScriptCmd is one command of a script.
type ScriptCmd struct {
	Line      int      // 1-based line number in the file
	Text      string   // the line as written, without the ~N prefix
	Args      [][]byte // the command's arguments, args[0] its name
	Tolerance int64    // for ~N lines, N; otherwise -1 (exact match)
}

// errScript is wrapped by script syntax errors.
var errScript = errors.New("test: bad command script")

// ParseScript parses the script text data, named name in messages.
func ParseScript(name string, data []byte) (*Script, error) {
	s := &Script{Name: name}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		cmd := ScriptCmd{Line: n, Tolerance: -1}
		if strings.HasPrefix(trimmed, "~") {
			tol, rest, _ := strings.Cut(trimmed[1:], " ")
			v, err := strconv.ParseInt(tol, 10, 64)
			if err != nil || v < 0 {
				return nil, fmt.Errorf("%w: %s:%d: bad tolerance %q", errScript, name, n, tol)
			}
			cmd.Tolerance, trimmed = v, rest
		}
		args, err := splitArgs(trimmed)
		if err != nil {
			return nil, fmt.Errorf("%w: %s:%d: %v", errScript, name, n, err)
		}
		if len(args) == 0 {
			return nil, fmt.Errorf("%w: %s:%d: no command", errScript, name, n)
		}
		cmd.Text, cmd.Args = trimmed, args
		s.Cmds = append(s.Cmds, cmd)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errScript, name, err)
	}
	return s, nil
}

// splitArgs splits one script line into arguments.
func splitArgs(line string) ([][]byte, error) {
	var args [][]byte
	for {
		line = strings.TrimLeft(line, " ")
		if line == "" {
			return args, nil
		}
		var tok string
		if line[0] == '"' {
			end := closingQuote(line)
			if end < 0 {
				return nil, fmt.Errorf("unterminated quoted argument: %s", line)
			}
			s, err := strconv.Unquote(line[:end+1])
			if err != nil {
				return nil, fmt.Errorf("bad quoted argument %s: %v", line[:end+1], err)
			}
			if end+1 < len(line) && line[end+1] != ' ' {
				return nil, fmt.Errorf("quoted argument not followed by a space: %s", line)
			}
			args, line = append(args, []byte(s)), line[end+1:]
			continue
		}
		tok, line, _ = strings.Cut(line, " ")
		if strings.HasPrefix(tok, "{rep:") && strings.HasSuffix(tok, "}") {
			countStr, s, ok := strings.Cut(tok[len("{rep:"):len(tok)-1], ":")
			n, err := strconv.Atoi(countStr)
			if !ok || err != nil || n < 0 {
				return nil, fmt.Errorf("bad repeat %s", tok)
			}
			tok = strings.Repeat(s, n)
		}
		args = append(args, []byte(tok))
	}
}

// closingQuote returns the index of the '"' that closes the quoted string
// at the start of s, or -1.
func closingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// LoadScripts parses every file matching pattern (e.g.
// "testdata/diff/*.redis"), failing the test if there is none.
func LoadScripts(t testing.TB, pattern string) []*Script {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts match %s (%v)", pattern, err)
	}
	var out []*Script
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ParseScript(filepath.Base(f), data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// DoFunc runs one command on a target and returns the raw RESP bytes of
// its reply.
type DoFunc func(args [][]byte) ([]byte, error)

// CompareScript runs every command of s on want (the reference, usually a
// real redis-server) and on got, in order, and reports each reply that
// differs with the script's file, line and command and both replies.
// Replies are compared byte for byte, except on ~N lines. It stops at the
// first error of either target (a broken connection makes every later
// reply meaningless).
func CompareScript(t testing.TB, s *Script, want, got DoFunc) {
	t.Helper()
	for _, c := range s.Cmds {
		w, err := want(c.Args)
		if err != nil {
			t.Fatalf("%s:%d: %s: reference target: %v", s.Name, c.Line, shorten(c.Text), err)
		}
		g, err := got(c.Args)
		if err != nil {
			t.Fatalf("%s:%d: %s: target under test: %v", s.Name, c.Line, shorten(c.Text), err)
		}
		if msg := compareReplies(w, g, c.Tolerance); msg != "" {
			t.Errorf("%s:%d: %s: %s\n  want %s\n  got  %s", s.Name, c.Line, shorten(c.Text), msg,
				shorten(strconv.Quote(string(w))), shorten(strconv.Quote(string(g))))
		}
	}
}

// compareReplies returns "" if got matches want, else what differs.
func compareReplies(want, got []byte, tolerance int64) string {
	if tolerance < 0 {
		if bytes.Equal(want, got) {
			return ""
		}
		return "replies differ"
	}
	w, errW := rawInt(want)
	g, errG := rawInt(got)
	if errW != nil || errG != nil {
		return "~N needs integer replies"
	}
	if d := w - g; d > tolerance || d < -tolerance {
		return fmt.Sprintf("integers differ by more than %d", tolerance)
	}
	return ""
}

// rawInt parses a raw RESP integer reply.
func rawInt(b []byte) (int64, error) {
	if len(b) < 4 || b[0] != ':' || !bytes.HasSuffix(b, []byte("\r\n")) {
		return 0, l2store.ErrProtocol
	}
	return strconv.ParseInt(string(b[1:len(b)-2]), 10, 64)
}

// shorten cuts long texts (megabyte values) for messages.
func shorten(s string) string {
	const max = 300
	if len(s) <= max {
		return s
	}
	return fmt.Sprintf("%s...(%d bytes)...%s", s[:max-60], len(s), s[len(s)-40:])
}

func TestParseScript(t *testing.T) {
	tests := []struct {
		name string
		line string
		want [][]byte
		tol  int64
		err  bool
	}{
		{"plain", "SET k v", [][]byte{[]byte("SET"), []byte("k"), []byte("v")}, -1, false},
		{"extra spaces", "  GET   k  ", [][]byte{[]byte("GET"), []byte("k")}, -1, false},
		{"quoted", `SET "a b" "\x00\xff\r\n"`, [][]byte{[]byte("SET"), []byte("a b"), []byte("\x00\xff\r\n")}, -1, false},
		{"empty quoted", `SET "" ""`, [][]byte{[]byte("SET"), {}, {}}, -1, false},
		{"escaped quote", `SET "a\"b" x`, [][]byte{[]byte("SET"), []byte(`a"b`), []byte("x")}, -1, false},
		{"repeat", "SET k {rep:3:ab}", [][]byte{[]byte("SET"), []byte("k"), []byte("ababab")}, -1, false},
		{"repeat zero", "SET k {rep:0:ab}", [][]byte{[]byte("SET"), []byte("k"), {}}, -1, false},
		{"tolerance", "~2 TTL k", [][]byte{[]byte("TTL"), []byte("k")}, 2, false},
		{"unterminated", `SET "abc`, nil, -1, true},
		{"bad escape", `SET "\q"`, nil, -1, true},
		{"quote glued", `SET "a"b`, nil, -1, true},
		{"bad repeat", "SET k {rep:x:ab}", nil, -1, true},
		{"bad tolerance", "~x TTL k", nil, -1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseScript("t.redis", []byte("# comment\n\n"+tt.line+"\n"))
			if tt.err {
				if err == nil {
					t.Fatalf("no error for %q", tt.line)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Cmds) != 1 {
				t.Fatalf("%d commands, want 1", len(s.Cmds))
			}
			c := s.Cmds[0]
			if c.Line != 3 || c.Tolerance != tt.tol || len(c.Args) != len(tt.want) {
				t.Fatalf("got %+v", c)
			}
			for i := range c.Args {
				if !bytes.Equal(c.Args[i], tt.want[i]) {
					t.Errorf("arg %d = %q, want %q", i, c.Args[i], tt.want[i])
				}
			}
		})
	}
}

func TestCompareReplies(t *testing.T) {
	tests := []struct {
		want, got string
		tol       int64
		ok        bool
	}{
		{"+OK\r\n", "+OK\r\n", -1, true},
		{"+OK\r\n", "$2\r\nOK\r\n", -1, false},
		{":100\r\n", ":99\r\n", -1, false},
		{":100\r\n", ":99\r\n", 1, true},
		{":100\r\n", ":98\r\n", 1, false},
		{":-1\r\n", ":1\r\n", 2, true},
		{"$1\r\n1\r\n", ":1\r\n", 5, false},
	}
	for _, tt := range tests {
		if msg := compareReplies([]byte(tt.want), []byte(tt.got), tt.tol); (msg == "") != tt.ok {
			t.Errorf("compareReplies(%q, %q, %d) = %q, want ok=%v", tt.want, tt.got, tt.tol, msg, tt.ok)
		}
	}
}
