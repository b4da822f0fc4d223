package commands

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sidecache/sidecache/l2store"
)

func args(s ...string) [][]byte {
	a := make([][]byte, len(s))
	for i, x := range s {
		a[i] = []byte(x)
	}
	return a
}

func TestLookup(t *testing.T) {
	tests := []struct {
		name string
		want string // "" for nil
	}{
		{"get", "get"},
		{"GET", "get"},
		{"gEt", "get"},
		{"client", "client"},
		{"CLIENT", "client"},
		{"georadiusbymember_ro", "georadiusbymember_ro"},
		{"nosuch", ""},
		{"", ""},
		{"client|setname", ""}, // subcommands are not top-level names
		{"get\x00", ""},
		{strings.Repeat("g", 100), ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.name), func(t *testing.T) {
			got := Lookup([]byte(tt.name))
			if (got == nil) != (tt.want == "") || got != nil && got.Name != tt.want {
				t.Fatalf("Lookup(%q) = %v, want %q", tt.name, got, tt.want)
			}
		})
	}
}

func TestSubAndLookupFullName(t *testing.T) {
	client := Lookup([]byte("client"))
	if client == nil || client.Parent != nil {
		t.Fatal("no top-level client command")
	}
	tests := []struct {
		name string
		sub  func() *Meta
		want string
	}{
		{"Sub setname", func() *Meta { return client.Sub([]byte("setname")) }, "client|setname"},
		{"Sub SETNAME", func() *Meta { return client.Sub([]byte("SETNAME")) }, "client|setname"},
		{"Sub setinfo (7.2)", func() *Meta { return client.Sub([]byte("SetInfo")) }, "client|setinfo"},
		{"Sub nosuch", func() *Meta { return client.Sub([]byte("nosuch")) }, ""},
		{"Sub of get", func() *Meta { return Lookup([]byte("get")).Sub([]byte("x")) }, ""},
		{"full get", func() *Meta { return LookupFullName([]byte("GET")) }, "get"},
		{"full client|setname", func() *Meta { return LookupFullName([]byte("CLIENT|SETNAME")) }, "client|setname"},
		{"full client", func() *Meta { return LookupFullName([]byte("client")) }, "client"},
		{"full client|", func() *Meta { return LookupFullName([]byte("client|")) }, ""},
		{"full get|x", func() *Meta { return LookupFullName([]byte("get|x")) }, ""},
		{"full |get", func() *Meta { return LookupFullName([]byte("|get")) }, ""},
		{"full client|setname|x", func() *Meta { return LookupFullName([]byte("client|setname|x")) }, ""},
		{"Find client setname", func() *Meta { return Find(args("Client", "SetName", "x")) }, "client|setname"},
		{"Find client", func() *Meta { return Find(args("client")) }, "client"},
		{"Find get", func() *Meta { return Find(args("get", "setname")) }, "get"},
		{"Find client nosuch", func() *Meta { return Find(args("client", "nosuch")) }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.sub()
			if (got == nil) != (tt.want == "") || got != nil && got.Name != tt.want {
				t.Fatalf("got %v, want %q", got, tt.want)
			}
			if got != nil && strings.Contains(got.Name, "|") && (got.Parent == nil || got.Parent.Subcommands[got.Name[strings.IndexByte(got.Name, '|')+1:]] != got) {
				t.Fatalf("%s: parent links broken", got.Name)
			}
		})
	}
}

func TestZeroAllocs(t *testing.T) {
	upper, lower := []byte("ZUNIONSTORE"), []byte("get")
	client := Lookup([]byte("client"))
	sub := []byte("SETNAME")
	get := Lookup(lower)
	mset := Lookup([]byte("mset"))
	eval := Lookup([]byte("eval"))
	set := Lookup([]byte("set"))
	msetArgs := args("MSET", "k1", "v1", "k2", "v2", "k3", "v3")
	evalArgs := args("EVAL", "return 1", "2", "a", "b", "x")
	setArgs := args("SET", "k", "v", "GET")
	getArgs := args("GET", "k")
	dst := make([][]byte, 0, 16)
	tests := []struct {
		name string
		f    func()
	}{
		{"Lookup upper", func() { Lookup(upper) }},
		{"Lookup lower", func() { Lookup(lower) }},
		{"Sub", func() { client.Sub(sub) }},
		{"Find", func() { Find(msetArgs) }},
		{"Keys get", func() { get.Keys(dst[:0], getArgs) }},
		{"Keys mset", func() { mset.Keys(dst[:0], msetArgs) }},
		{"Keys eval", func() { eval.Keys(dst[:0], evalArgs) }},
		{"Keys set", func() { set.Keys(dst[:0], setArgs) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, tt.f); n != 0 {
				t.Fatalf("%v allocations, want 0", n)
			}
		})
	}
}

func TestArityOK(t *testing.T) {
	tests := []struct {
		name string
		argc int
		want bool
	}{
		{"get", 2, true}, {"get", 1, false}, {"get", 3, false},
		{"set", 2, false}, {"set", 3, true}, {"set", 9, true},
		{"command", 1, true}, {"command", 5, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.name, tt.argc), func(t *testing.T) {
			if got := Lookup([]byte(tt.name)).ArityOK(tt.argc); got != tt.want {
				t.Fatalf("ArityOK(%d) = %v, want %v", tt.argc, got, tt.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	only := func(names ...string) func(string) bool {
		return func(n string) bool { return slices.Contains(names, n) }
	}
	tests := []struct {
		name      string
		args      [][]byte
		supported func(string) bool
		want      string // full name, or the error text
	}{
		{"ok", args("get", "k"), nil, "get"},
		{"subcommand", args("CLIENT", "SETNAME", "x"), nil, "client|setname"},
		{"container alone", args("client"), nil, "ERR wrong number of arguments for 'client' command"},
		{"arity", args("GET"), nil, "ERR wrong number of arguments for 'get' command"},
		{"sub arity", args("client", "setname"), nil, "ERR wrong number of arguments for 'client|setname' command"},
		{"unknown", args("nosuch", "a", "b"), nil, "ERR unknown command 'nosuch', with args beginning with: 'a' 'b' "},
		{"unknown no args", args("nosuch"), nil, "ERR unknown command 'nosuch', with args beginning with: "},
		{"unknown newlines", args("no\r\nsuch", "a\nb"), nil, "ERR unknown command 'no  such', with args beginning with: 'a b' "},
		{"unknown NUL", args("no\x00such", "a\x00b"), nil, "ERR unknown command 'no', with args beginning with: 'a' "},
		{"unknown long", args(strings.Repeat("x", 200), strings.Repeat("a", 100), strings.Repeat("b", 100), "c"), nil,
			"ERR unknown command '" + strings.Repeat("x", 128) + "', with args beginning with: '" +
				strings.Repeat("a", 100) + "' '" + strings.Repeat("b", 25) + "' "},
		{"unknown subcommand", args("client", "nosuch"), nil, "ERR unknown subcommand 'nosuch'. Try CLIENT HELP."},
		{"unknown subcommand case", args("cLiEnt", "nosuch"), nil, "ERR unknown subcommand 'nosuch'. Try CLIENT HELP."},
		{"unsupported", args("get", "k"), only("set"), "ERR unknown command 'get', with args beginning with: 'k' "},
		{"unsupported sub", args("client", "setname", "x"), only("client"), "ERR unknown subcommand 'setname'. Try CLIENT HELP."},
		{"supported sub", args("client", "setname", "x"), only("client", "client|setname"), "client|setname"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, errReply := Check(tt.args, tt.supported)
			got := ""
			if m != nil {
				got = m.Name
			} else {
				if errReply.Kind != l2store.KindError {
					t.Fatalf("nil command without an error reply: %v", errReply)
				}
				got = string(errReply.Str)
			}
			if got != tt.want {
				t.Fatalf("Check = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestTableMatchesInfo checks the Go values the generator wrote for each
// command against the COMMAND INFO reply stored beside them.
func TestTableMatchesInfo(t *testing.T) {
	hidden := MayReplicate | Protected
	for _, e := range table {
		t.Run(e.name, func(t *testing.T) {
			m := LookupFullName([]byte(e.name))
			if m == nil || m.Name != e.name {
				t.Fatalf("LookupFullName(%q) = %v", e.name, m)
			}
			info := m.Info(nil).Elems
			if string(info[0].Str) != e.name || int(info[1].Int) != m.Arity {
				t.Errorf("name/arity %s/%d, INFO says %s/%d", m.Name, m.Arity, info[0].Str, info[1].Int)
			}
			var flags []string
			for _, f := range info[2].Elems {
				flags = append(flags, string(f.Str))
			}
			if got, want := (m.Flags &^ hidden).String(), strings.Join(flags, "|"); got != want {
				t.Errorf("flags %q, INFO says %q", got, want)
			}
			if m.FirstKey != int(info[3].Int) || m.LastKey != int(info[4].Int) || m.Step != int(info[5].Int) {
				t.Errorf("key range %d,%d,%d, INFO says %v", m.FirstKey, m.LastKey, m.Step, info[3:6])
			}
			var cats []string
			for i, n := range aclCategoryNames {
				if m.acl&(1<<i) != 0 {
					cats = append(cats, "@"+n)
				}
			}
			var infoCats []string
			for _, c := range info[6].Elems {
				infoCats = append(infoCats, string(c.Str))
			}
			if !slices.Equal(cats, infoCats) {
				t.Errorf("ACL categories %v, INFO says %v", cats, infoCats)
			}
			if got, want := keySpecsReply(m.specs).String(), withoutNotes(info[8]).String(); got != want {
				t.Errorf("key specs\n%s\nINFO says\n%s", got, want)
			}
		})
	}
}

// keySpecsReply renders specs the way COMMAND INFO does, without notes.
func keySpecsReply(specs []keySpec) l2store.Reply {
	b, i := l2store.BulkString, l2store.Int
	m := l2store.Map
	set := l2store.Reply{Kind: l2store.KindSet}
	for _, s := range specs {
		var bs, fk l2store.Reply
		switch s.bs {
		case bsIndex:
			bs = m(b("type"), b("index"), b("spec"), m(b("index"), i(int64(s.index))))
		case bsKeyword:
			bs = m(b("type"), b("keyword"), b("spec"), m(b("keyword"), b(s.keyword), b("startfrom"), i(int64(s.startFrom))))
		default:
			bs = m(b("type"), b("unknown"), b("spec"), m())
		}
		switch s.fk {
		case fkRange:
			fk = m(b("type"), b("range"), b("spec"), m(b("lastkey"), i(int64(s.lastKey)), b("keystep"), i(int64(s.keyStep)), b("limit"), i(int64(s.limit))))
		case fkKeynum:
			fk = m(b("type"), b("keynum"), b("spec"), m(b("keynumidx"), i(int64(s.keynumIdx)), b("firstkey"), i(int64(s.firstKey)), b("keystep"), i(int64(s.keyStep))))
		default:
			fk = m(b("type"), b("unknown"), b("spec"), m())
		}
		set.Elems = append(set.Elems, m(b("flags"), keyFlagsReply(s.flags), b("begin_search"), bs, b("find_keys"), fk))
	}
	return set
}

// withoutNotes removes the notes of key specs from an INFO key-specs set.
func withoutNotes(specs l2store.Reply) l2store.Reply {
	out := l2store.Reply{Kind: specs.Kind}
	for _, s := range specs.Elems {
		var kv []l2store.Reply
		for i := 0; i < len(s.Elems); i += 2 {
			if string(s.Elems[i].Str) != "notes" {
				kv = append(kv, s.Elems[i], s.Elems[i+1])
			}
		}
		out.Elems = append(out.Elems, l2store.Map(kv...))
	}
	return out
}

func TestHiddenFlags(t *testing.T) {
	tests := []struct {
		name string
		flag Flags
		want bool
	}{
		{"eval", MayReplicate, true},
		{"publish", MayReplicate, true},
		{"eval_ro", MayReplicate, false},
		{"get", MayReplicate, false},
		{"debug", Protected, true},
		{"module|load", Protected, true},
		{"module|list", Protected, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := LookupFullName([]byte(tt.name)).Flags&tt.flag != 0; got != tt.want {
				t.Fatalf("%s has %v: %v, want %v", tt.name, tt.flag, got, tt.want)
			}
		})
	}
}
