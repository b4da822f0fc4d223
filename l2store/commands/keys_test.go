package commands

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// These cases document Keys and KeyRefs without a server; the differential
// test checks many more calls against redis-server's COMMAND GETKEYS.
func TestKeyRefs(t *testing.T) {
	RO, RW, OW, RM := KeyRO, KeyRW, KeyOW, KeyRM
	acc, upd, ins, del := KeyAccess, KeyUpdate, KeyInsert, KeyDelete
	tests := []struct {
		call string
		refs []KeyRef
	}{
		{call: "GET k", refs: []KeyRef{{1, RO | acc}}},
		{call: "MSET a 1 b 2", refs: []KeyRef{{1, OW | upd}, {3, OW | upd}}},
		{call: "DEL a b c", refs: []KeyRef{{1, RM | del}, {2, RM | del}, {3, RM | del}}},
		{call: "SET k v", refs: []KeyRef{{1, OW | upd}}},
		{call: "SET k v EX 10 get", refs: []KeyRef{{1, RW | acc | upd}}},
		{call: "RPUSH l a", refs: []KeyRef{{1, RW | ins}}},
		{call: "COPY s d", refs: []KeyRef{{1, RO | acc}, {2, OW | upd}}},
		{call: "OBJECT ENCODING k", refs: []KeyRef{{2, RO}}},
		{call: "EVAL s 2 a b x", refs: []KeyRef{{3, RW | acc | upd}, {4, RW | acc | upd}}},
		{call: "EVAL s 0"},
		{call: "EVAL s 3 a b"}, // bad count: none, like Redis
		{call: "EVAL s 4294967298 a b x", refs: []KeyRef{{3, RW | acc | upd}, {4, RW | acc | upd}}}, // C int truncation
		{call: "ZUNIONSTORE d 2 a b WEIGHTS 1 2", refs: []KeyRef{{1, OW | upd}, {3, RO | acc}, {4, RO | acc}}},
		{call: "ZUNIONSTORE d 0 a", refs: nil},
		{call: "ZUNIONSTORE d 02 a b", refs: []KeyRef{{3, 0}, {4, 0}, {1, 0}}}, // specs refuse "02", atoi does not
		{call: "SORT k", refs: []KeyRef{{1, RO | acc}}},
		{call: "SORT k BY p STORE d1 LIMIT 0 1 STORE d2", refs: []KeyRef{{1, RO | acc}, {10, OW | upd}}},
		{call: "SORT k GET store", refs: []KeyRef{{1, RO | acc}}},
		{call: "XREAD COUNT 2 STREAMS s1 s2 0 0", refs: []KeyRef{{4, RO | acc}, {5, RO | acc}}},
		{call: "XREAD STREAMS s1 s2 0", refs: []KeyRef{{2, RO | acc}}}, // the key spec takes half the rest
		{call: "MIGRATE h p k 0 10", refs: []KeyRef{{3, RW | acc | del}}},
		{call: "MIGRATE h p \"\" 0 10 AUTH pw KEYS a b", refs: []KeyRef{{9, RW | acc | del}, {10, RW | acc | del}}},
		{call: "GEORADIUS g 0 0 1 km STORE d", refs: []KeyRef{{1, RO | acc}, {7, OW | upd}}},
		{call: "BITFIELD k GET u8 0", refs: []KeyRef{{1, RO | acc}}},
		{call: "BITFIELD k GET u8 0 SET u8 0 1", refs: []KeyRef{{1, RW | acc | upd}}},
		{call: "LMPOP 2 a b LEFT", refs: []KeyRef{{2, RW | acc | del}, {3, RW | acc | del}}},
		{call: "PING"},
		{call: "PUBLISH c m"},
	}
	for _, tt := range tests {
		t.Run(tt.call, func(t *testing.T) {
			a := args(strings.Fields(strings.ReplaceAll(tt.call, `""`, "\x01"))...)
			for i := range a {
				if string(a[i]) == "\x01" {
					a[i] = []byte{}
				}
			}
			m := Find(a)
			if m == nil {
				t.Fatalf("no command for %q", tt.call)
			}
			got := m.KeyRefs(nil, a)
			if !slices.Equal(got, tt.refs) {
				t.Fatalf("KeyRefs = %v, want %v", got, tt.refs)
			}
			keys := m.Keys(nil, a)
			if len(keys) != len(got) {
				t.Fatalf("Keys gave %d keys, KeyRefs %d", len(keys), len(got))
			}
			for i, r := range got {
				if string(keys[i]) != string(a[r.Pos]) {
					t.Fatalf("Keys[%d] = %q, want %q", i, keys[i], a[r.Pos])
				}
			}
		})
	}
}

func TestKeysAppends(t *testing.T) {
	dst := args("x")
	got := Lookup([]byte("mget")).Keys(dst, args("MGET", "a", "b"))
	if fmt.Sprintf("%q", got) != `["x" "a" "b"]` {
		t.Fatalf("Keys = %q", got)
	}
}

func TestAtoi(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"0", 0}, {"12", 12}, {"-3", -3}, {"+4", 4}, {" \t\n5", 5}, {"7abc", 7}, {"abc", 0},
		{"", 0}, {"2\x003", 2}, {"4294967298", 2}, {"2147483648", -2147483648},
		{"99999999999999999999999", -1}, // strtol saturates to LONG_MAX, whose low 32 bits are -1
		{"-99999999999999999999999", 0}, // LONG_MIN's low 32 bits are 0
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.in), func(t *testing.T) {
			if got := atoi([]byte(tt.in)); got != tt.want {
				t.Fatalf("atoi(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"*", "get", true},
		{"g*", "get", true},
		{"G*T", "get", true},
		{"*et", "get", true},
		{"?et", "get", true},
		{"??", "get", false},
		{"get", "getex", false},
		{"get*", "get", true},
		{"client|*", "client|setname", true},
		{"client\\|*", "client|setname", true},
		{"[gs]et", "set", true},
		{"[^gs]et", "set", false},
		{"[a-h]et", "get", true},
		{"[h-a]et", "get", true},  // reversed range
		{"[A-H]et", "get", true},  // case-insensitive
		{"[\\G]et", "get", false}, // escaped bytes in a set keep their case
		{"[\\g]et", "get", true},
		{"[ge", "get", false},
		{"[^", "g", true},    // unterminated negated set matches any byte
		{"g\\", "g\\", true}, // a trailing backslash matches itself
		{"g\\", "gx", false},
		{"g\\et", "get", true},
		{"a*a*a*a*a*a*a*b", strings.Repeat("a", 40), false},
		{"*|*", "get", false},
		{"", "get", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q~%q", tt.pattern, tt.s), func(t *testing.T) {
			if got := globMatch([]byte(tt.pattern), tt.s); got != tt.want {
				t.Fatalf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
			}
		})
	}
}
