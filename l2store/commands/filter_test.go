package commands

import (
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sidecache/sidecache/l2store"
)

// names returns the bulk strings of an array reply.
func names(r l2store.Reply) []string {
	var out []string
	for _, e := range r.Elems {
		out = append(out, string(e.Str))
	}
	return out
}

// mapKeys returns the keys of a map reply.
func mapKeys(r l2store.Reply) []string {
	var out []string
	for i := 0; i < len(r.Elems); i += 2 {
		out = append(out, string(r.Elems[i].Str))
	}
	return out
}

func mapValue(r l2store.Reply, key string) (l2store.Reply, bool) {
	for i := 0; i < len(r.Elems); i += 2 {
		if string(r.Elems[i].Str) == key {
			return r.Elems[i+1], true
		}
	}
	return l2store.Reply{}, false
}

func TestCommandFiltered(t *testing.T) {
	set := map[string]bool{}
	for _, n := range []string{
		"get", "set", "client", "client|setname", "client|getname",
		"command", "command|count", "command|list", "command|info", "command|docs", "command|getkeys",
		"object|encoding", // its container is not supported: never listed
	} {
		set[n] = true
	}
	supported := func(n string) bool { return set[n] }
	cmd := func(s ...string) l2store.Reply { return Command(args(append([]string{"COMMAND"}, s...)...), supported) }

	tests := []struct {
		name  string
		reply l2store.Reply
		check func(t *testing.T, r l2store.Reply)
	}{
		{"COUNT", cmd("COUNT"), func(t *testing.T, r l2store.Reply) {
			if r.Kind != l2store.KindInt || r.Int != 4 {
				t.Fatalf("got %v, want 4", r)
			}
		}},
		{"LIST", cmd("LIST"), wantNames("client", "client|getname", "client|setname",
			"command", "command|count", "command|docs", "command|getkeys", "command|info", "command|list",
			"get", "set")},
		{"LIST pattern", cmd("list", "filterby", "pattern", "c*|*e*"), wantNames("client|getname", "client|setname",
			"command|getkeys")},
		{"LIST aclcat", cmd("LIST", "FILTERBY", "ACLCAT", "STRING"), wantNames("get", "set")},
		{"LIST aclcat unknown", cmd("LIST", "FILTERBY", "ACLCAT", "nosuch"), wantNames()},
		{"LIST module", cmd("LIST", "FILTERBY", "MODULE", "x"), wantNames()},
		{"LIST syntax", cmd("LIST", "FILTERBY", "PATTERN"), wantError("ERR syntax error")},
		{"LIST bad filter", cmd("LIST", "FILTERBY", "NAME", "x"), wantError("ERR syntax error")},
		{"all", cmd(), func(t *testing.T, r l2store.Reply) {
			var got []string
			for _, e := range r.Elems {
				got = append(got, string(e.Elems[0].Str))
			}
			if want := []string{"client", "command", "get", "set"}; !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
		}},
		{"INFO filters subcommands", cmd("INFO", "client", "mget", "client|setname", "client|kill", "object|encoding"),
			func(t *testing.T, r l2store.Reply) {
				if len(r.Elems) != 5 || r.Elems[1].Kind != l2store.KindNull || r.Elems[3].Kind != l2store.KindNull ||
					r.Elems[4].Kind != l2store.KindNull {
					t.Fatalf("got %v", r)
				}
				subs := r.Elems[0].Elems[9]
				if subs.Kind != l2store.KindArray || len(subs.Elems) != 2 ||
					string(subs.Elems[0].Elems[0].Str) != "client|getname" || string(subs.Elems[1].Elems[0].Str) != "client|setname" {
					t.Fatalf("client's subcommands: %v", subs)
				}
				if sub := r.Elems[2].Elems[9]; sub.Kind != l2store.KindSet || len(sub.Elems) != 0 {
					t.Fatalf("client|setname's subcommands: %v", sub)
				}
			}},
		{"DOCS filters subcommands", cmd("DOCS", "client", "mget", "nosuch"), func(t *testing.T, r l2store.Reply) {
			if got := mapKeys(r); !slices.Equal(got, []string{"client"}) {
				t.Fatalf("keys %v", got)
			}
			subs, ok := mapValue(r.Elems[1], "subcommands")
			if !ok || !slices.Equal(mapKeys(subs), []string{"client|getname", "client|setname"}) {
				t.Fatalf("client's subcommands: %v", subs)
			}
		}},
		{"DOCS all", cmd("DOCS"), func(t *testing.T, r l2store.Reply) {
			if got := mapKeys(r); !slices.Equal(got, []string{"client", "command", "get", "set"}) {
				t.Fatalf("keys %v", got)
			}
		}},
		{"GETKEYS", cmd("GETKEYS", "get", "k"), wantNames("k")},
		{"GETKEYS unsupported", cmd("GETKEYS", "mget", "k"), wantError("ERR Invalid command specified")},
		{"GETKEYS sub of unsupported", cmd("GETKEYS", "object", "encoding", "k"), wantError("ERR Invalid command specified")},
		{"unsupported subcommand", cmd("GETKEYSANDFLAGS", "get", "k"),
			wantError("ERR unknown subcommand 'GETKEYSANDFLAGS'. Try COMMAND HELP.")},
		{"arity", cmd("COUNT", "x"), wantError("ERR wrong number of arguments for 'command|count' command")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.check(t, tt.reply) })
	}
}

func TestContainerWithoutSupportedSubcommands(t *testing.T) {
	only := func(n string) bool { return n == "client" }
	m := Lookup([]byte("client"))
	if got := string(m.Info(only).Elems[9].AppendRESP(nil, 3)); got != "*0\r\n" {
		t.Fatalf("INFO subcommands = %q, want an empty array", got)
	}
	subs, ok := mapValue(m.Docs(only), "subcommands")
	if !ok || string(subs.AppendRESP(nil, 3)) != "%0\r\n" {
		t.Fatalf("DOCS subcommands = %v, %v; want an empty map", subs, ok)
	}
}

func TestHelp(t *testing.T) {
	r := Command(args("command", "help"), nil)
	if len(r.Elems) != 21 || string(r.Elems[0].Str) != "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:" ||
		string(r.Elems[20].Str) != "    Prints this help." {
		t.Fatalf("got %v", r)
	}
}

func wantNames(want ...string) func(*testing.T, l2store.Reply) {
	return func(t *testing.T, r l2store.Reply) {
		t.Helper()
		if r.Kind != l2store.KindArray || !slices.Equal(names(r), want) {
			t.Fatalf("got %v, want %s", r, strings.Join(want, " "))
		}
	}
}

func wantError(msg string) func(*testing.T, l2store.Reply) {
	return func(t *testing.T, r l2store.Reply) {
		t.Helper()
		if r.Kind != l2store.KindError || string(r.Str) != msg {
			t.Fatalf("got %v, want error %q", r, msg)
		}
	}
}

// TestConcurrentReplies builds replies from many goroutines at once; run
// with -race, it checks the lazy parsing of the stored replies.
func TestConcurrentReplies(t *testing.T) {
	want := string(Command(args("COMMAND", "DOCS"), nil).AppendRESP(nil, 3))
	// Fresh Metas, so that parsing happens under concurrency: rebuild
	// the parse state of every command.
	for _, m := range sorted {
		resetParsed(m)
	}
	done := make(chan string)
	for range 8 {
		go func() { done <- string(Command(args("COMMAND", "DOCS"), nil).AppendRESP(nil, 3)) }()
	}
	for range 8 {
		if got := <-done; got != want {
			t.Fatal("concurrent COMMAND DOCS differs")
		}
	}
}

func resetParsed(m *Meta) {
	m.parseOnce = sync.Once{}
	m.info, m.docs = nil, nil
	for _, s := range m.subs {
		resetParsed(s)
	}
}
