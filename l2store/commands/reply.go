package commands

import (
	"bufio"
	"strings"

	"github.com/sidecache/sidecache/l2store"
)

// parse reads m's stored INFO and DOCS replies, once.
func (m *Meta) parse() {
	m.parseOnce.Do(func() {
		m.info = mustParse(m.raw.info).Elems
		m.docs = mustParse(m.raw.docs).Elems
	})
}

func mustParse(raw string) l2store.Reply {
	r, err := l2store.ReadReply(bufio.NewReaderSize(strings.NewReader(raw), 4096), int64(len(raw)))
	if err != nil {
		panic("commands: bad stored reply: " + err.Error())
	}
	return r
}

// Info returns m's COMMAND INFO reply, listing only the subcommands for
// which supported(fullname) is true (all of them if supported is nil). The
// reply shares memory with the table and must not be modified.
func (m *Meta) Info(supported func(fullname string) bool) l2store.Reply {
	if supported == nil {
		supported = all
	}
	m.parse()
	elems := make([]l2store.Reply, len(m.info), len(m.info)+1)
	copy(elems, m.info)
	// Redis gives an empty set for a command without subcommands, and an
	// array of their INFO replies otherwise.
	subs := l2store.Reply{Kind: l2store.KindSet}
	if m.Subcommands != nil {
		subs = l2store.Array()
		for _, s := range m.subs {
			if supported(s.Name) {
				subs.Elems = append(subs.Elems, s.Info(supported))
			}
		}
	}
	return l2store.Array(append(elems, subs)...)
}

// Docs returns m's COMMAND DOCS reply (the value part of the map COMMAND
// DOCS gives), listing only the subcommands for which supported(fullname)
// is true (all of them if supported is nil). The reply shares memory with
// the table and must not be modified.
func (m *Meta) Docs(supported func(fullname string) bool) l2store.Reply {
	if supported == nil {
		supported = all
	}
	m.parse()
	if m.Subcommands == nil {
		return l2store.Reply{Kind: l2store.KindMap, Elems: m.docs}
	}
	elems := make([]l2store.Reply, len(m.docs), len(m.docs)+2)
	copy(elems, m.docs)
	subs := l2store.Map()
	for _, s := range m.subs {
		if supported(s.Name) {
			subs.Elems = append(subs.Elems, l2store.BulkString(s.Name), s.Docs(supported))
		}
	}
	return l2store.Map(append(elems, l2store.BulkString("subcommands"), subs)...)
}

// Command answers the COMMAND command: args[0] is "COMMAND" (in any case),
// args[1] the subcommand if any. It lists only the commands for which
// supported(fullname) is true (every command in the table if supported is
// nil); a subcommand is listed only if its container is too. Unsupported
// commands are unknown to COMMAND INFO, DOCS and GETKEYS, and unsupported
// subcommands of COMMAND itself are unknown subcommands. Errors are Redis's
// own, as error replies.
//
// COMMAND HELP and the argument checks answer exactly as Redis 7.0.15.
// Listings are sorted by name where Redis uses hash order (see the package
// documentation).
func Command(args [][]byte, supported func(fullname string) bool) l2store.Reply {
	if supported == nil {
		supported = all
	}
	if len(args) < 2 {
		return infoAll(supported)
	}
	sub := commandMeta.Sub(args[1])
	if sub == nil || !supported(sub.Name) {
		return UnknownSubcommand(args)
	}
	if !sub.ArityOK(len(args)) {
		return WrongArity(sub)
	}
	switch sub.Name {
	case "command|count":
		n := 0
		for _, m := range sorted {
			if supported(m.Name) {
				n++
			}
		}
		return l2store.Int(int64(n))
	case "command|list":
		return list(args, supported)
	case "command|info":
		if len(args) == 2 {
			return infoAll(supported)
		}
		elems := make([]l2store.Reply, 0, len(args)-2)
		for _, name := range args[2:] {
			if m := lookupSupported(name, supported); m != nil {
				elems = append(elems, m.Info(supported))
			} else {
				elems = append(elems, l2store.Null)
			}
		}
		return l2store.Array(elems...)
	case "command|docs":
		var elems []l2store.Reply
		if len(args) == 2 {
			for _, m := range sorted {
				if supported(m.Name) {
					elems = append(elems, l2store.BulkString(m.Name), m.Docs(supported))
				}
			}
		} else {
			for _, name := range args[2:] {
				if m := lookupSupported(name, supported); m != nil {
					elems = append(elems, l2store.BulkString(m.Name), m.Docs(supported))
				}
			}
		}
		return l2store.Map(elems...)
	case "command|getkeys":
		return getKeysReply(args[2:], supported, false)
	case "command|getkeysandflags":
		return getKeysReply(args[2:], supported, true)
	case "command|help":
		return help(args[0])
	}
	// A subcommand of COMMAND this function does not know: only possible
	// if the table grows one.
	return UnknownSubcommand(args)
}

// infoAll is COMMAND and COMMAND INFO without arguments.
func infoAll(supported func(string) bool) l2store.Reply {
	var elems []l2store.Reply
	for _, m := range sorted {
		if supported(m.Name) {
			elems = append(elems, m.Info(supported))
		}
	}
	return l2store.Array(elems...)
}

// lookupSupported finds a command by full name for COMMAND INFO and DOCS.
func lookupSupported(name []byte, supported func(string) bool) *Meta {
	m := LookupFullName(name)
	if m == nil || !supported(m.Name) || (m.Parent != nil && !supported(m.Parent.Name)) {
		return nil
	}
	return m
}

// list is COMMAND LIST [FILTERBY MODULE name|ACLCAT category|PATTERN pattern].
func list(args [][]byte, supported func(string) bool) l2store.Reply {
	match := func(*Meta) bool { return true }
	for i := 2; i < len(args); i++ {
		if !equalFold(l2store.CString(args[i]), "filterby") || len(args)-1-i != 2 {
			return syntaxError
		}
		kind, arg := l2store.CString(args[i+1]), args[i+2]
		switch {
		case equalFold(kind, "module"):
			// No modules are loaded: no command belongs to one.
			match = func(*Meta) bool { return false }
		case equalFold(kind, "aclcat"):
			cat := aclCategoryByName(arg)
			match = func(m *Meta) bool { return m.acl&cat != 0 }
		case equalFold(kind, "pattern"):
			match = func(m *Meta) bool { return globMatch(arg, m.Name) }
		default:
			return syntaxError
		}
		i += 2
	}
	var elems []l2store.Reply
	for _, m := range sorted {
		if !supported(m.Name) {
			continue
		}
		if match(m) {
			elems = append(elems, l2store.BulkString(m.Name))
		}
		for _, s := range m.subs {
			if supported(s.Name) && match(s) {
				elems = append(elems, l2store.BulkString(s.Name))
			}
		}
	}
	return l2store.Array(elems...)
}

var syntaxError = l2store.Error("ERR syntax error")

// getKeysReply is COMMAND GETKEYS and COMMAND GETKEYSANDFLAGS; call is the
// command whose keys are wanted.
func getKeysReply(call [][]byte, supported func(string) bool, withFlags bool) l2store.Reply {
	m := Find(call)
	if m == nil || !supported(m.Name) || (m.Parent != nil && !supported(m.Parent.Name)) {
		return l2store.Error("ERR Invalid command specified")
	}
	if !m.hasKeys() {
		return l2store.Error("ERR The command has no key arguments")
	}
	if !m.ArityOK(len(call)) {
		return l2store.Error("ERR Invalid number of arguments specified for command")
	}
	refs := m.KeyRefs(nil, call)
	if len(refs) == 0 {
		if m.Flags&NoMandatoryKeys != 0 {
			return l2store.Array()
		}
		return l2store.Error("ERR Invalid arguments specified for command")
	}
	elems := make([]l2store.Reply, len(refs))
	for i, r := range refs {
		key := l2store.Bulk(call[r.Pos])
		if withFlags {
			key = l2store.Array(key, keyFlagsReply(r.Flags))
		}
		elems[i] = key
	}
	return l2store.Array(elems...)
}

// keyFlagsReply is the set of flag names Redis gives for a key.
func keyFlagsReply(f KeyFlags) l2store.Reply {
	set := l2store.Reply{Kind: l2store.KindSet}
	for i, name := range keyFlagNames {
		if f&(1<<i) != 0 {
			set.Elems = append(set.Elems, l2store.Status(name))
		}
	}
	return set
}

var helpLines = []string{
	"(no subcommand)",
	"    Return details about all Redis commands.",
	"COUNT",
	"    Return the total number of commands in this Redis server.",
	"LIST",
	"    Return a list of all commands in this Redis server.",
	"INFO [<command-name> ...]",
	"    Return details about multiple Redis commands.",
	"    If no command names are given, documentation details for all",
	"    commands are returned.",
	"DOCS [<command-name> ...]",
	"    Return documentation details about multiple Redis commands.",
	"    If no command names are given, documentation details for all",
	"    commands are returned.",
	"GETKEYS <full-command>",
	"    Return the keys from a full Redis command.",
	"GETKEYSANDFLAGS <full-command>",
	"    Return the keys and the access flags from a full Redis command.",
	"HELP",
	"    Prints this help.",
}

// help is COMMAND HELP, headed by the command name as the client spelled
// it, upper-cased.
func help(name []byte) l2store.Reply {
	head := appendUpper(nil, l2store.CString(name))
	head = append(head, " <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"...)
	elems := make([]l2store.Reply, 0, len(helpLines)+1)
	elems = append(elems, l2store.Reply{Kind: l2store.KindStatus, Str: head})
	for _, l := range helpLines {
		elems = append(elems, l2store.Status(l))
	}
	return l2store.Array(elems...)
}
