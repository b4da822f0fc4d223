// Command gen writes table_gen.go, the command table of package commands,
// from a live Redis 7.0.15.
//
// It starts redis-server on a unix socket in a temporary directory (or
// connects to -addr), switches to RESP3 with HELLO 3, lists every command
// and subcommand with COMMAND LIST, and asks COMMAND INFO and COMMAND DOCS
// for each one by its full name ("get", "client|setname"). For every command
// it records the name, arity, flags, legacy key range, ACL categories and key
// specs as Go values, and the INFO and DOCS replies re-encoded as RESP3 with
// their subcommands part removed (the package composes that part at reply
// time, so that it can leave out unsupported subcommands).
//
// Two things COMMAND INFO does not show are added by hand from Redis
// 7.0.15's src/commands.c: the hidden flags may_replicate and protected
// (hiddenFlags below). One command Redis 7.0.15 lacks is added by hand too:
// CLIENT SETINFO from Redis 7.2 (see setinfo), which go-redis v9 sends on
// every new connection.
//
// Run it through go generate in the package directory:
//
//	//go:generate go run ./internal/gen
//
// The output depends only on the server's command table, so rerunning it
// against Redis 7.0.15 reproduces table_gen.go byte for byte.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/format"
	"log"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/commands/internal/redisrun"
)

// wantVersion is the Redis version whose command table we mirror.
const wantVersion = "7.0.15"

func main() {
	addr := flag.String("addr", "", "address of a running Redis "+wantVersion+
		" (host:port, or a path for a unix socket); empty starts -server")
	server := flag.String("server", "redis-server", "redis-server binary to start when -addr is empty")
	out := flag.String("o", "table_gen.go", "output file")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("gen: ")

	src, err := generate(*addr, *server)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, src, 0o644); err != nil {
		log.Fatal(err)
	}
}

func generate(addr, server string) ([]byte, error) {
	if addr == "" {
		dir, err := os.MkdirTemp("", "sidecache-gen-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		srv, err := redisrun.Start(server, dir)
		if err != nil {
			return nil, err
		}
		defer srv.Stop()
		addr = srv.Sock
	}
	conn, err := redisrun.Dial(addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	c := client{conn}

	hello, err := c.do("HELLO", "3")
	if err != nil {
		return nil, fmt.Errorf("HELLO 3: %w", err)
	}
	if v := mapGet(hello, "version"); string(v.Str) != wantVersion {
		return nil, fmt.Errorf("server is Redis %q, want %s", v.Str, wantVersion)
	}

	list, err := c.do("COMMAND", "LIST")
	if err != nil {
		return nil, fmt.Errorf("COMMAND LIST: %w", err)
	}
	var names []string
	for _, e := range list.Elems {
		names = append(names, string(e.Str))
	}
	slices.Sort(names)

	var cmds []*command
	for _, name := range names {
		info, err := c.do("COMMAND", "INFO", name)
		if err != nil {
			return nil, fmt.Errorf("COMMAND INFO %s: %w", name, err)
		}
		docs, err := c.do("COMMAND", "DOCS", name)
		if err != nil {
			return nil, fmt.Errorf("COMMAND DOCS %s: %w", name, err)
		}
		if len(info.Elems) != 1 || len(docs.Elems) != 2 || string(docs.Elems[0].Str) != name {
			return nil, fmt.Errorf("%s: unexpected COMMAND INFO/DOCS reply shape", name)
		}
		cmd, err := parseCommand(name, info.Elems[0], docs.Elems[1])
		if err != nil {
			return nil, err
		}
		cmds = append(cmds, cmd)
	}
	if err := checkSubcommands(cmds); err != nil {
		return nil, err
	}
	for _, cmd := range cmds {
		cmd.flags = append(cmd.flags, hiddenFlags[cmd.name]...)
	}

	added, err := setinfo()
	if err != nil {
		return nil, err
	}
	cmds = append(cmds, added)
	slices.SortFunc(cmds, func(a, b *command) int { return strings.Compare(a.name, b.name) })
	return emit(cmds)
}

// hiddenFlags lists the flags Redis 7.0.15 sets on commands but leaves out
// of COMMAND INFO ("hidden on purpose" in addReplyFlagsForCommand), taken
// from src/commands.c. The sentinel-mode flags (SENTINEL, ONLY_SENTINEL)
// are not kept: sidecache never runs as a sentinel.
var hiddenFlags = map[string][]string{
	"eval":          {"may_replicate"},
	"evalsha":       {"may_replicate"},
	"fcall":         {"may_replicate"},
	"pfcount":       {"may_replicate"},
	"publish":       {"may_replicate"},
	"spublish":      {"may_replicate"},
	"debug":         {"protected"},
	"module|load":   {"protected"},
	"module|loadex": {"protected"},
	"module|unload": {"protected"},
}

// Go names of the command flags, in Redis's spelling. They must match the
// Flags constants of package commands (a test there checks this).
var flagNames = map[string]string{
	"write":             "Write",
	"readonly":          "ReadOnly",
	"denyoom":           "DenyOOM",
	"module":            "Module",
	"admin":             "Admin",
	"pubsub":            "PubSub",
	"noscript":          "NoScript",
	"blocking":          "Blocking",
	"loading":           "Loading",
	"stale":             "Stale",
	"skip_monitor":      "SkipMonitor",
	"skip_slowlog":      "SkipSlowlog",
	"asking":            "Asking",
	"fast":              "Fast",
	"no_auth":           "NoAuth",
	"may_replicate":     "MayReplicate",
	"no_mandatory_keys": "NoMandatoryKeys",
	"protected":         "Protected",
	"no_async_loading":  "NoAsyncLoading",
	"no_multi":          "NoMulti",
	"movablekeys":       "MovableKeys",
	"allow_busy":        "AllowBusy",
}

// Go names of the key-spec flags.
var keyFlagNames = map[string]string{
	"RO":             "KeyRO",
	"RW":             "KeyRW",
	"OW":             "KeyOW",
	"RM":             "KeyRM",
	"access":         "KeyAccess",
	"update":         "KeyUpdate",
	"insert":         "KeyInsert",
	"delete":         "KeyDelete",
	"not_key":        "KeyNotKey",
	"incomplete":     "KeyIncomplete",
	"variable_flags": "KeyVariableFlags",
}

// aclCategories are Redis 7.0.15's ACL categories (acl.c).
var aclCategories = []string{
	"keyspace", "read", "write", "set", "sortedset", "list", "hash", "string",
	"bitmap", "hyperloglog", "geo", "stream", "pubsub", "admin", "fast", "slow",
	"blocking", "dangerous", "connection", "transaction", "scripting",
}

// command is what we keep of one command or subcommand.
type command struct {
	name               string
	arity              int64
	flags              []string // Redis spelling
	first, last, step  int64
	acl                []string // without the '@'
	specs              []keySpec
	info               l2store.Reply // without the subcommands element
	docs               l2store.Reply // without the subcommands entry
	infoSubs, docsSubs []string      // subcommand names found in the full replies
}

type keySpec struct {
	flags     []string
	bs        string // "index", "keyword", "unknown"
	index     int64
	keyword   string
	startFrom int64
	fk        string // "range", "keynum", "unknown"
	lastKey   int64
	keyStep   int64
	limit     int64
	keynumIdx int64
	firstKey  int64
}

// parseCommand reads one command's INFO (a 10-element array) and DOCS (a
// map) replies.
func parseCommand(name string, info, docs l2store.Reply) (*command, error) {
	bad := func(what string) error { return fmt.Errorf("%s: unexpected %s", name, what) }
	if info.Kind != l2store.KindArray || len(info.Elems) != 10 {
		return nil, bad("COMMAND INFO shape")
	}
	e := info.Elems
	if string(e[0].Str) != name {
		return nil, bad("name in COMMAND INFO")
	}
	cmd := &command{
		name:  name,
		arity: e[1].Int,
		first: e[3].Int,
		last:  e[4].Int,
		step:  e[5].Int,
	}
	for _, f := range e[2].Elems {
		if _, ok := flagNames[string(f.Str)]; !ok {
			return nil, bad("flag " + string(f.Str))
		}
		cmd.flags = append(cmd.flags, string(f.Str))
	}
	for _, c := range e[6].Elems {
		cat, ok := strings.CutPrefix(string(c.Str), "@")
		if !ok || !slices.Contains(aclCategories, cat) {
			return nil, bad("ACL category " + string(c.Str))
		}
		cmd.acl = append(cmd.acl, cat)
	}
	for _, s := range e[8].Elems {
		spec, err := parseKeySpec(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		cmd.specs = append(cmd.specs, spec)
	}
	// Element 9 is the subcommands: an empty set for a command without
	// any, else an array of their INFO replies.
	for _, s := range e[9].Elems {
		cmd.infoSubs = append(cmd.infoSubs, string(s.Elems[0].Str))
	}
	cmd.info = l2store.Array(slices.Clone(e[:9])...)

	if docs.Kind != l2store.KindMap {
		return nil, bad("COMMAND DOCS shape")
	}
	var kv []l2store.Reply
	for i := 0; i < len(docs.Elems); i += 2 {
		if string(docs.Elems[i].Str) == "subcommands" {
			sub := docs.Elems[i+1]
			for j := 0; j < len(sub.Elems); j += 2 {
				cmd.docsSubs = append(cmd.docsSubs, string(sub.Elems[j].Str))
			}
			if i != len(docs.Elems)-2 {
				return nil, bad("position of subcommands in COMMAND DOCS")
			}
			continue
		}
		kv = append(kv, docs.Elems[i], docs.Elems[i+1])
	}
	cmd.docs = l2store.Map(kv...)
	return cmd, nil
}

func parseKeySpec(r l2store.Reply) (keySpec, error) {
	var s keySpec
	if r.Kind != l2store.KindMap {
		return s, errors.New("key spec is not a map")
	}
	for _, f := range mapGet(r, "flags").Elems {
		if _, ok := keyFlagNames[string(f.Str)]; !ok {
			return s, fmt.Errorf("unknown key-spec flag %q", f.Str)
		}
		s.flags = append(s.flags, string(f.Str))
	}
	bs := mapGet(r, "begin_search")
	bspec := mapGet(bs, "spec")
	switch s.bs = string(mapGet(bs, "type").Str); s.bs {
	case "index":
		s.index = mapGet(bspec, "index").Int
	case "keyword":
		s.keyword = string(mapGet(bspec, "keyword").Str)
		s.startFrom = mapGet(bspec, "startfrom").Int
	case "unknown":
	default:
		return s, fmt.Errorf("unknown begin_search type %q", s.bs)
	}
	fk := mapGet(r, "find_keys")
	fspec := mapGet(fk, "spec")
	switch s.fk = string(mapGet(fk, "type").Str); s.fk {
	case "range":
		s.lastKey = mapGet(fspec, "lastkey").Int
		s.keyStep = mapGet(fspec, "keystep").Int
		s.limit = mapGet(fspec, "limit").Int
	case "keynum":
		s.keynumIdx = mapGet(fspec, "keynumidx").Int
		s.firstKey = mapGet(fspec, "firstkey").Int
		s.keyStep = mapGet(fspec, "keystep").Int
	case "unknown":
	default:
		return s, fmt.Errorf("unknown find_keys type %q", s.fk)
	}
	return s, nil
}

// checkSubcommands verifies that the subcommands nested in each parent's
// INFO and DOCS replies are exactly the commands COMMAND LIST named with
// the parent's prefix, since the package rebuilds those parts from the
// table.
func checkSubcommands(cmds []*command) error {
	subs := map[string][]string{}
	for _, c := range cmds {
		if parent, _, ok := strings.Cut(c.name, "|"); ok {
			subs[parent] = append(subs[parent], c.name)
		}
	}
	for _, c := range cmds {
		want := subs[c.name]
		slices.Sort(want)
		a, b := slices.Sorted(slices.Values(c.infoSubs)), slices.Sorted(slices.Values(c.docsSubs))
		if !slices.Equal(a, want) || !slices.Equal(b, want) {
			return fmt.Errorf("%s: subcommands in INFO %v and DOCS %v, COMMAND LIST has %v", c.name, a, b, want)
		}
	}
	return nil
}

// setinfo returns CLIENT SETINFO as Redis 7.2 declares it
// (src/commands/client-setinfo.json in 7.2): arity 4, flags noscript,
// loading and stale, ACL category connection (and slow, as it is not fast),
// no keys, arguments <LIB-NAME libname | LIB-VER libver>. Its INFO and DOCS
// replies use Redis 7.0.15's layout (7.2 adds a display_text field to
// arguments, which 7.0 clients do not expect).
func setinfo() (*command, error) {
	bulk := l2store.BulkString
	status := l2store.Status
	set := func(elems ...l2store.Reply) l2store.Reply {
		return l2store.Reply{Kind: l2store.KindSet, Elems: elems}
	}
	info := l2store.Array(
		bulk("client|setinfo"),
		l2store.Int(4),
		set(status("noscript"), status("loading"), status("stale")),
		l2store.Int(0), l2store.Int(0), l2store.Int(0),
		set(status("@slow"), status("@connection")),
		set(), // tips
		set(), // key specs
	)
	arg := func(name, token string) l2store.Reply {
		return l2store.Map(bulk("name"), bulk(name), bulk("type"), bulk("string"), bulk("token"), bulk(token))
	}
	docs := l2store.Map(
		bulk("summary"), bulk("Sets information specific to the client or connection."),
		bulk("since"), bulk("7.2.0"),
		bulk("group"), bulk("connection"),
		bulk("complexity"), bulk("O(1)"),
		bulk("arguments"), l2store.Array(l2store.Map(
			bulk("name"), bulk("attr"),
			bulk("type"), bulk("oneof"),
			bulk("arguments"), l2store.Array(arg("libname", "lib-name"), arg("libver", "lib-ver")),
		)),
	)
	return &command{
		name:  "client|setinfo",
		arity: 4,
		flags: []string{"noscript", "loading", "stale"},
		acl:   []string{"slow", "connection"},
		info:  info,
		docs:  docs,
	}, nil
}

func emit(cmds []*command) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("// Code generated by go run ./internal/gen from Redis " + wantVersion + "; DO NOT EDIT.\n\n")
	b.WriteString("package commands\n\n")
	maxName := 0
	for _, c := range cmds {
		_, sub, ok := strings.Cut(c.name, "|")
		if !ok {
			sub = c.name
		}
		maxName = max(maxName, len(sub))
	}
	fmt.Fprintf(&b, "// maxNameLen is the length of the longest command or subcommand name.\nconst maxNameLen = %d\n\n", maxName)
	b.WriteString("// table holds every command and subcommand, sorted by full name.\nvar table = [...]entry{\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, "{\nname: %q,\narity: %d,\n", c.name, c.arity)
		fmt.Fprintf(&b, "flags: %s,\n", orExpr(c.flags, func(s string) string { return flagNames[s] }))
		fmt.Fprintf(&b, "first: %d,\nlast: %d,\nstep: %d,\n", c.first, c.last, c.step)
		fmt.Fprintf(&b, "acl: %s,\n", orExpr(c.acl, func(s string) string {
			return "acl" + strings.ToUpper(s[:1]) + s[1:]
		}))
		if len(c.specs) > 0 {
			b.WriteString("specs: []keySpec{\n")
			for _, s := range c.specs {
				b.WriteString(specLiteral(s))
			}
			b.WriteString("},\n")
		}
		b.WriteString("info: " + respLiteral(c.info) + ",\n")
		b.WriteString("docs: " + respLiteral(c.docs) + ",\n")
		b.WriteString("},\n")
	}
	b.WriteString("}\n")
	src, err := format.Source(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("formatting output: %w", err)
	}
	return src, nil
}

func orExpr(names []string, goName func(string) string) string {
	if len(names) == 0 {
		return "0"
	}
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = goName(n)
	}
	return strings.Join(parts, " | ")
}

func specLiteral(s keySpec) string {
	var f []string
	f = append(f, "flags: "+orExpr(s.flags, func(n string) string { return keyFlagNames[n] }))
	switch s.bs {
	case "index":
		f = append(f, "bs: bsIndex", fmt.Sprintf("index: %d", s.index))
	case "keyword":
		f = append(f, "bs: bsKeyword", fmt.Sprintf("keyword: %q", s.keyword), fmt.Sprintf("startFrom: %d", s.startFrom))
	default:
		f = append(f, "bs: bsUnknown")
	}
	switch s.fk {
	case "range":
		f = append(f, "fk: fkRange", fmt.Sprintf("lastKey: %d", s.lastKey), fmt.Sprintf("keyStep: %d", s.keyStep), fmt.Sprintf("limit: %d", s.limit))
	case "keynum":
		f = append(f, "fk: fkKeynum", fmt.Sprintf("keynumIdx: %d", s.keynumIdx), fmt.Sprintf("firstKey: %d", s.firstKey), fmt.Sprintf("keyStep: %d", s.keyStep))
	default:
		f = append(f, "fk: fkUnknown")
	}
	return "{" + strings.Join(f, ", ") + "},\n"
}

// respLiteral renders r's RESP3 encoding as a Go string expression, one
// line per element of the top-level aggregate.
func respLiteral(r l2store.Reply) string {
	var head []byte
	switch r.Kind {
	case l2store.KindArray:
		head = []byte("*" + strconv.Itoa(len(r.Elems)) + "\r\n")
	case l2store.KindMap:
		head = []byte("%" + strconv.Itoa(len(r.Elems)/2) + "\r\n")
	default:
		panic("respLiteral: not an array or map")
	}
	parts := []string{strconv.Quote(string(head))}
	step := 1
	if r.Kind == l2store.KindMap {
		step = 2
	}
	for i := 0; i < len(r.Elems); i += step {
		var p []byte
		for _, e := range r.Elems[i : i+step] {
			p = e.AppendRESP(p, 3)
		}
		parts = append(parts, strconv.Quote(string(p)))
	}
	return strings.Join(parts, " +\n")
}

// mapGet returns the value for key in a RESP3 map reply, or a null reply.
func mapGet(m l2store.Reply, key string) l2store.Reply {
	for i := 0; i+1 < len(m.Elems); i += 2 {
		if string(m.Elems[i].Str) == key {
			return m.Elems[i+1]
		}
	}
	return l2store.Null
}

type client struct{ conn *redisrun.Conn }

// do sends one command and returns its reply; an error reply is a Go error.
func (c client) do(args ...string) (l2store.Reply, error) {
	r, err := c.conn.Do(args...)
	if err != nil {
		return l2store.Reply{}, err
	}
	if r.Reply.IsError() {
		return l2store.Reply{}, fmt.Errorf("server replied %s", r.Reply.Str)
	}
	return r.Reply, nil
}
