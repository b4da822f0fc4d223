// Package commands owns sidecache's copy of Redis 7.0.15's command table:
// every command and subcommand with its arity, flags, key positions, ACL
// categories, and the replies COMMAND INFO and COMMAND DOCS give for it.
//
// The table (table_gen.go) is generated from a live redis-server by
// ./internal/gen, which stores each command's INFO and DOCS replies as RESP3
// bytes without their subcommands part. The package builds a tree of Meta
// values from it at start-up. Lookups are case-insensitive and allocate
// nothing: the name is lower-cased into a stack buffer and looked up in a
// map. Replies are composed on demand: the stored bytes are parsed once per
// command, and the subcommands part is rebuilt from the tree through a
// supported(fullname) filter, so that COMMAND lists only what the proxy
// answers. Key extraction (Keys, COMMAND GETKEYS) follows Redis's
// getKeysFromCommandWithSpecs: key specs first, and Redis's per-command
// helpers where the specs are incomplete or their flags vary.
//
// Redis iterates its command dictionaries in hash order, which is seeded at
// random each time a server starts, so COMMAND, COMMAND INFO and COMMAND
// DOCS without arguments, COMMAND LIST and the subcommand lists have no
// fixed order in Redis. This package lists commands, and subcommands, sorted
// by name.
//
// Beyond Redis 7.0.15, the table has CLIENT SETINFO from Redis 7.2 (which
// go-redis v9 sends on every connection).
package commands

//go:generate go run ./internal/gen

import (
	"bytes"
	"strings"
	"sync"

	"github.com/sidecache/sidecache/l2store"
)

// Flags are a command's flags. COMMAND INFO shows them in Redis's spelling,
// given with each constant; MayReplicate and Protected are hidden there, as
// in Redis. Redis's sentinel-mode flags (sentinel, only_sentinel) are not
// recorded.
type Flags uint64

// The command flags of Redis 7.0.
const (
	Write           Flags = 1 << iota // write: may modify the dataset
	ReadOnly                          // readonly: reads keys, never writes
	DenyOOM                           // denyoom: may grow memory, refused when out of memory
	Module                            // module: a module command
	Admin                             // admin: administrative
	PubSub                            // pubsub: publish/subscribe
	NoScript                          // noscript: not allowed in scripts
	Blocking                          // blocking: may block the client
	Loading                           // loading: allowed while loading the dataset
	Stale                             // stale: allowed on a replica with stale data
	SkipMonitor                       // skip_monitor: not shown by MONITOR
	SkipSlowlog                       // skip_slowlog: not logged in the slow log
	Asking                            // asking: cluster ASKING
	Fast                              // fast: O(1) or O(log N)
	NoAuth                            // no_auth: allowed before authentication
	MayReplicate                      // may_replicate (hidden): may produce replication traffic
	NoMandatoryKeys                   // no_mandatory_keys: keys are optional
	Protected                         // protected (hidden): disabled unless enabled in the config
	NoAsyncLoading                    // no_async_loading: refused during async loading
	NoMulti                           // no_multi: not allowed in MULTI
	MovableKeys                       // movablekeys: first/last/step do not find all keys
	AllowBusy                         // allow_busy: allowed while a script is busy
)

// flagNames are the flags' names in Redis's spelling, in the order of
// Redis's addReplyFlagsForCommand.
var flagNames = []struct {
	flag Flags
	name string
}{
	{Write, "write"}, {ReadOnly, "readonly"}, {DenyOOM, "denyoom"}, {Module, "module"},
	{Admin, "admin"}, {PubSub, "pubsub"}, {NoScript, "noscript"}, {Blocking, "blocking"},
	{Loading, "loading"}, {Stale, "stale"}, {SkipMonitor, "skip_monitor"},
	{SkipSlowlog, "skip_slowlog"}, {Asking, "asking"}, {Fast, "fast"}, {NoAuth, "no_auth"},
	{MayReplicate, "may_replicate"}, {NoMandatoryKeys, "no_mandatory_keys"},
	{Protected, "protected"}, {NoAsyncLoading, "no_async_loading"}, {NoMulti, "no_multi"},
	{MovableKeys, "movablekeys"}, {AllowBusy, "allow_busy"},
}

// String returns the flags in Redis's spelling, separated by '|'.
func (f Flags) String() string {
	var names []string
	for _, n := range flagNames {
		if f&n.flag != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, "|")
}

// aclCategories are a command's ACL categories, as a bitset in the order of
// Redis's ACLCommandCategories.
type aclCategories uint32

const (
	aclKeyspace aclCategories = 1 << iota
	aclRead
	aclWrite
	aclSet
	aclSortedset
	aclList
	aclHash
	aclString
	aclBitmap
	aclHyperloglog
	aclGeo
	aclStream
	aclPubsub
	aclAdmin
	aclFast
	aclSlow
	aclBlocking
	aclDangerous
	aclConnection
	aclTransaction
	aclScripting
)

// aclCategoryNames are the category names, indexed by bit.
var aclCategoryNames = [...]string{
	"keyspace", "read", "write", "set", "sortedset", "list", "hash", "string",
	"bitmap", "hyperloglog", "geo", "stream", "pubsub", "admin", "fast", "slow",
	"blocking", "dangerous", "connection", "transaction", "scripting",
}

// aclCategoryByName returns the category named name (case-insensitive, like
// Redis's ACLGetCommandCategoryFlagByName), or 0.
func aclCategoryByName(name []byte) aclCategories {
	name = l2store.CString(name)
	for i, n := range aclCategoryNames {
		if equalFold(name, n) {
			return 1 << i
		}
	}
	return 0
}

// entry is one row of the generated table.
type entry struct {
	name              string // lower case; "parent|sub" for a subcommand
	arity             int
	flags             Flags
	first, last, step int
	acl               aclCategories
	specs             []keySpec
	info              string // RESP3 COMMAND INFO reply, without its subcommands element
	docs              string // RESP3 COMMAND DOCS reply, without its subcommands entry
}

// Meta describes one command or subcommand. Metas are shared and must not
// be modified.
type Meta struct {
	// Name is the full name in lower case: "get", or "client|setname" for
	// a subcommand.
	Name string
	// Arity is Redis's arity: the exact number of arguments (counting the
	// command name, and the subcommand name for a subcommand) if positive,
	// the minimum if negative.
	Arity int
	Flags Flags
	// FirstKey, LastKey and Step are Redis's legacy key range, as COMMAND
	// INFO gives it: positions in args, LastKey negative counting from the
	// end; all zero for a command without keys in fixed positions.
	FirstKey, LastKey, Step int
	// Parent is the container command of a subcommand, nil for a command.
	Parent *Meta
	// Subcommands maps lower-case subcommand names ("setname") to their
	// Metas; nil for a command without subcommands.
	Subcommands map[string]*Meta

	acl     aclCategories
	specs   []keySpec
	getkeys getKeys // Redis's getkeys_proc, if any
	subs    []*Meta // Subcommands sorted by name
	raw     *entry

	parseOnce sync.Once
	info      []l2store.Reply // INFO elements without the subcommands one
	docs      []l2store.Reply // DOCS map keys and values without subcommands
}

var (
	// commands maps lower-case command names to top-level commands.
	commands = map[string]*Meta{}
	// sorted lists the top-level commands by name.
	sorted []*Meta
	// commandMeta is COMMAND itself.
	commandMeta *Meta
)

func init() {
	for i := range table {
		e := &table[i]
		m := &Meta{
			Name: e.name, Arity: e.arity, Flags: e.flags,
			FirstKey: e.first, LastKey: e.last, Step: e.step,
			acl: e.acl, specs: e.specs, getkeys: nativeGetKeys[e.name], raw: e,
		}
		parent, sub, ok := strings.Cut(e.name, "|")
		if !ok {
			commands[e.name] = m
			sorted = append(sorted, m)
			continue
		}
		// The table is sorted by name, so a parent precedes its subcommands.
		p := commands[parent]
		if p == nil {
			panic("commands: subcommand " + e.name + " has no parent")
		}
		if p.Subcommands == nil {
			p.Subcommands = map[string]*Meta{}
		}
		m.Parent = p
		p.Subcommands[sub] = m
		p.subs = append(p.subs, m)
	}
	commandMeta = commands["command"]
}

// Lookup returns the command named name (case-insensitive), or nil. It
// finds top-level commands only: Sub finds subcommands, LookupFullName
// takes "parent|sub" names. It does not allocate.
func Lookup(name []byte) *Meta {
	return lookupIn(commands, name)
}

// Sub returns m's subcommand named name (case-insensitive), or nil. It does
// not allocate.
func (m *Meta) Sub(name []byte) *Meta {
	if m.Subcommands == nil {
		return nil
	}
	return lookupIn(m.Subcommands, name)
}

func lookupIn(names map[string]*Meta, name []byte) *Meta {
	if len(name) > maxNameLen {
		return nil
	}
	var buf [maxNameLen]byte
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return names[string(buf[:len(name)])]
}

// LookupFullName returns the command or subcommand with the full name
// name, such as "get" or "CLIENT|SETNAME" (case-insensitive), or nil, the
// way COMMAND INFO and COMMAND DOCS find their arguments.
func LookupFullName(name []byte) *Meta {
	parent, sub, ok := cutByte(name, '|')
	m := Lookup(parent)
	if !ok || m == nil {
		return m
	}
	if bytes.IndexByte(sub, '|') >= 0 {
		return nil // Redis supports one level of subcommands.
	}
	return m.Sub(sub)
}

// Find returns the command that args invoke, the way Redis looks up a
// command to run: args[0] names the command; if it has subcommands and
// args has a second element, that names the subcommand. It returns nil for
// an unknown command or subcommand.
func Find(args [][]byte) *Meta {
	if len(args) == 0 {
		return nil
	}
	m := Lookup(args[0])
	if m == nil || m.Subcommands == nil || len(args) == 1 {
		return m
	}
	return m.Sub(args[1])
}

// Check finds the command that args invoke (see Find) and checks its
// arity. It returns the command, or nil and the error reply Redis gives:
// an unknown command, an unknown subcommand, or a wrong number of
// arguments. Commands for which supported(fullname) is false are unknown;
// a nil supported accepts every command in the table.
func Check(args [][]byte, supported func(fullname string) bool) (*Meta, l2store.Reply) {
	if supported == nil {
		supported = all
	}
	if len(args) == 0 {
		return nil, UnknownCommand(args)
	}
	m := Lookup(args[0])
	if m == nil || !supported(m.Name) {
		return nil, UnknownCommand(args)
	}
	if m.Subcommands != nil && len(args) > 1 {
		m = m.Sub(args[1])
		if m == nil || !supported(m.Name) {
			return nil, UnknownSubcommand(args)
		}
	}
	if !m.ArityOK(len(args)) {
		return nil, WrongArity(m)
	}
	return m, l2store.Reply{}
}

// ArityOK reports whether argc arguments (counting the command name) fit
// m's arity: exactly Arity if it is positive, at least -Arity if negative.
func (m *Meta) ArityOK(argc int) bool {
	if m.Arity > 0 {
		return argc == m.Arity
	}
	return argc >= -m.Arity
}

// UnknownCommand returns Redis's error for an unknown command args[0].
func UnknownCommand(args [][]byte) l2store.Reply {
	var name []byte
	if len(args) > 0 {
		name = args[0]
	}
	b := []byte("ERR unknown command '")
	b = appendCString(b, name, 128)
	b = append(b, "', with args beginning with: "...)
	// Redis quotes arguments while the quoted list is under 128 bytes,
	// each cut to the room left.
	start := len(b)
	for i := 1; i < len(args) && len(b)-start < 128; i++ {
		room := 128 - (len(b) - start)
		b = append(b, '\'')
		b = appendCString(b, args[i], room)
		b = append(b, "' "...)
	}
	return l2store.Reply{Kind: l2store.KindError, Str: noNewlines(b)}
}

// UnknownSubcommand returns Redis's error for an unknown subcommand
// args[1] of the container command args[0].
func UnknownSubcommand(args [][]byte) l2store.Reply {
	b := []byte("ERR unknown subcommand '")
	if len(args) > 1 {
		b = appendCString(b, args[1], 128)
	}
	b = append(b, "'. Try "...)
	if len(args) > 0 {
		b = appendUpper(b, l2store.CString(args[0]))
	}
	b = append(b, " HELP."...)
	return l2store.Reply{Kind: l2store.KindError, Str: noNewlines(b)}
}

// WrongArity returns Redis's error for a call of m with the wrong number of
// arguments. For EXEC, Redis also discards the transaction and says so.
func WrongArity(m *Meta) l2store.Reply {
	msg := "wrong number of arguments for '" + m.Name + "' command"
	if m.Name == "exec" {
		return l2store.Error("EXECABORT Transaction discarded because of: " + msg)
	}
	return l2store.Error("ERR " + msg)
}

func all(string) bool { return true }

// appendCString appends at most max bytes of l2store.CString(s), like printf's
// "%.*s".
func appendCString(dst, s []byte, max int) []byte {
	s = l2store.CString(s)
	if len(s) > max {
		s = s[:max]
	}
	return append(dst, s...)
}

func appendUpper(dst, s []byte) []byte {
	for _, c := range s {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// noNewlines replaces CR and LF by spaces, as Redis does in errors that
// quote arguments.
func noNewlines(b []byte) []byte {
	for i, c := range b {
		if c == '\r' || c == '\n' {
			b[i] = ' '
		}
	}
	return b
}

// equalFold reports whether b equals s ignoring ASCII case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func cutByte(b []byte, sep byte) (before, after []byte, found bool) {
	for i, c := range b {
		if c == sep {
			return b[:i], b[i+1:], true
		}
	}
	return b, nil, false
}

// Names returns the full names of every command and subcommand in the
// table ("get", "client|setname"), sorted.
func Names() []string {
	names := make([]string, len(table))
	for i := range table {
		names[i] = table[i].name
	}
	return names
}
