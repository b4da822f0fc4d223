package commands

import (
	"math"

	"github.com/sidecache/sidecache/l2store"
)

// KeyFlags describe how a command uses one key (Redis's key-spec flags).
type KeyFlags uint16

// The key flags of Redis 7.0, with their spelling in COMMAND INFO.
const (
	KeyRO            KeyFlags = 1 << iota // RO: reads the value
	KeyRW                                 // RW: reads and modifies the value
	KeyOW                                 // OW: overwrites the value without reading it
	KeyRM                                 // RM: deletes the key
	KeyAccess                             // access: returns or uses user data of the value
	KeyUpdate                             // update: updates data in the value
	KeyInsert                             // insert: adds data to the value
	KeyDelete                             // delete: deletes data from the value
	KeyNotKey                             // not_key: not a key, only used for routing
	KeyIncomplete                         // incomplete: the spec may not find every key
	KeyVariableFlags                      // variable_flags: the flags depend on other arguments
)

// keyFlagNames are the key flags' names in Redis's spelling, in the order of
// Redis's addReplyFlagsForKeyArgs.
var keyFlagNames = [...]string{
	"RO", "RW", "OW", "RM", "access", "update", "insert", "delete",
	"not_key", "incomplete", "variable_flags",
}

// KeyRef is one key argument of a command: its position in args and how
// the command uses it. Flags are 0 where Redis does not know them (the
// keys some commands find without key specs, such as ZUNIONSTORE's with a
// bad numkeys): treat those as read and written.
type KeyRef struct {
	Pos   int
	Flags KeyFlags
}

type beginSearch uint8

const (
	bsUnknown beginSearch = iota
	bsIndex
	bsKeyword
)

type findKeys uint8

const (
	fkUnknown findKeys = iota
	fkRange
	fkKeynum
)

// keySpec is one of Redis's key specs: where the search for keys begins
// (a fixed index, or after a keyword), then which arguments from there are
// keys (a range, or a count given by an argument).
type keySpec struct {
	flags KeyFlags

	bs        beginSearch
	index     int    // bsIndex: position of the first key
	keyword   string // bsKeyword: keys follow this argument
	startFrom int    // bsKeyword: where to start looking; negative counts from the end, backwards

	fk        findKeys
	lastKey   int // fkRange: last key relative to the first; negative counts from the end
	keyStep   int // fkRange, fkKeynum: distance between keys
	limit     int // fkRange: with lastKey -1, use only 1/limit of the remaining arguments
	keynumIdx int // fkKeynum: position of the key count, relative to the first
	firstKey  int // fkKeynum: position of the first key, relative to the first
}

// getKeys names one of Redis's per-command getkeys_proc helpers, used when
// a command's key specs cannot find its keys.
type getKeys uint8

const (
	getKeysNone getKeys = iota
	getKeysSort
	getKeysSortRO
	getKeysMigrate
	getKeysGeoradius
	getKeysXread
	getKeysSet
	getKeysBitfield
	getKeysNumkeys1  // COMMAND numkeys key ...  (ZUNION, LMPOP, SINTERCARD...)
	getKeysNumkeys2  // COMMAND arg numkeys key ...  (EVAL, FCALL, BLMPOP...)
	getKeysStoreNum1 // COMMAND destkey numkeys key ...  (ZUNIONSTORE...)
	getKeysRange     // FirstKey, LastKey, Step (a command not in the table; see FromRange)
)

// FromRange returns the Meta of a command that is not in the table, such
// as a module's or a newer Redis's, from what COMMAND INFO tells of it:
// its keys are found by the legacy range first, last, step.
func FromRange(name string, arity int, flags Flags, first, last, step int) *Meta {
	return &Meta{Name: name, Arity: arity, Flags: flags, FirstKey: first, LastKey: last, Step: step, getkeys: getKeysRange}
}

// ParseFlags returns the flags named as COMMAND INFO spells them; unknown
// names are ignored.
func ParseFlags(names []string) Flags {
	var f Flags
	for _, name := range names {
		for _, n := range flagNames {
			if n.name == name {
				f |= n.flag
			}
		}
	}
	return f
}

// nativeGetKeys lists the commands that have a getkeys_proc in Redis
// 7.0.15's src/commands.c.
var nativeGetKeys = map[string]getKeys{
	"sort":              getKeysSort,
	"sort_ro":           getKeysSortRO,
	"migrate":           getKeysMigrate,
	"georadius":         getKeysGeoradius,
	"georadiusbymember": getKeysGeoradius,
	"xread":             getKeysXread,
	"xreadgroup":        getKeysXread,
	"set":               getKeysSet,
	"bitfield":          getKeysBitfield,
	"lmpop":             getKeysNumkeys1,
	"zmpop":             getKeysNumkeys1,
	"sintercard":        getKeysNumkeys1,
	"zdiff":             getKeysNumkeys1,
	"zinter":            getKeysNumkeys1,
	"zintercard":        getKeysNumkeys1,
	"zunion":            getKeysNumkeys1,
	"blmpop":            getKeysNumkeys2,
	"bzmpop":            getKeysNumkeys2,
	"eval":              getKeysNumkeys2,
	"evalsha":           getKeysNumkeys2,
	"eval_ro":           getKeysNumkeys2,
	"evalsha_ro":        getKeysNumkeys2,
	"fcall":             getKeysNumkeys2,
	"fcall_ro":          getKeysNumkeys2,
	"zdiffstore":        getKeysStoreNum1,
	"zinterstore":       getKeysStoreNum1,
	"zunionstore":       getKeysStoreNum1,
}

// Keys appends to dst the key arguments of the call args of m (args[0] is
// the command name; for a subcommand, args[1] is its name) and returns the
// extended slice. The keys are those COMMAND GETKEYS gives (see KeyRefs).
// It does not allocate for commands with up to eight keys, beyond growing
// dst.
func (m *Meta) Keys(dst [][]byte, args [][]byte) [][]byte {
	var buf [8]KeyRef
	for _, r := range m.KeyRefs(buf[:0], args) {
		dst = append(dst, args[r.Pos])
	}
	return dst
}

// KeyRefs appends to dst the key arguments of the call args of m and how
// they are used, the way Redis 7.0.15's getKeysFromCommandWithSpecs finds
// them: through the key specs when the command has real (not not_key) key
// specs without variable flags and they all apply, else through Redis's
// helper for the command (SORT, MIGRATE, SET, BITFIELD, EVAL, ZUNIONSTORE,
// XREAD...), else none. A call with a malformed key count or key list
// yields no keys, as in Redis, where the command itself then fails.
//
// args should fit m's arity; positions beyond args are never returned.
func (m *Meta) KeyRefs(dst []KeyRef, args [][]byte) []KeyRef {
	var hasKeySpec, hasVarFlags bool
	for i := range m.specs {
		hasKeySpec = hasKeySpec || m.specs[i].flags&KeyNotKey == 0
		hasVarFlags = hasVarFlags || m.specs[i].flags&KeyVariableFlags != 0
	}
	if hasKeySpec && !hasVarFlags {
		if out, ok := m.specKeys(dst, args); ok {
			return out
		}
	}
	return m.nativeKeys(dst, args)
}

// hasKeys reports whether m may have key arguments (Redis's
// doesCommandHaveKeys).
func (m *Meta) hasKeys() bool {
	if m.getkeys != getKeysNone {
		return true
	}
	for i := range m.specs {
		if m.specs[i].flags&KeyNotKey == 0 {
			return true
		}
	}
	return false
}

// specKeys finds keys through m's key specs (Redis's getKeysUsingKeySpecs
// without its options). It reports false, with dst unchanged, if a spec is
// incomplete or does not fit args.
func (m *Meta) specKeys(dst []KeyRef, args [][]byte) ([]KeyRef, bool) {
	start, argc := len(dst), len(args)
	for i := range m.specs {
		s := &m.specs[i]
		if s.flags&KeyNotKey != 0 {
			continue
		}
		var first int
		switch s.bs {
		case bsIndex:
			first = s.index
		case bsKeyword:
			first = s.findKeyword(args)
			if first == 0 {
				continue // no keyword, no keys from this spec
			}
		default:
			return dst[:start], false
		}

		var last int
		switch s.fk {
		case fkRange:
			switch {
			case s.lastKey >= 0:
				last = first + s.lastKey
			case s.limit == 0:
				last = argc + s.lastKey
			default:
				last = first + (argc-first)/s.limit + s.lastKey
			}
		case fkKeynum:
			at := first + s.keynumIdx
			if at >= argc {
				return dst[:start], false
			}
			n, ok := l2store.ParseInt(args[at])
			if !ok || n < 0 {
				return dst[:start], false
			}
			first += s.firstKey
			last = first + int(int32(n)) - 1 // Redis keeps the count in a C int
		default:
			return dst[:start], false
		}

		if last >= argc || last < first || first >= argc || s.keyStep <= 0 {
			return dst[:start], false
		}
		for pos := first; pos <= last; pos += s.keyStep {
			dst = append(dst, KeyRef{Pos: pos, Flags: s.flags})
		}
		if s.flags&KeyIncomplete != 0 {
			return dst[:start], false
		}
	}
	return dst, true
}

// findKeyword returns the position after the spec's keyword in args, or 0.
// Like Redis, it searches from startFrom towards the far end, stopping
// before the last argument (forwards) or before args[1] (backwards).
func (s *keySpec) findKeyword(args [][]byte) int {
	argc := len(args)
	from, to := s.startFrom, 1
	if s.startFrom > 0 {
		to = argc - 1
	} else {
		from = argc + s.startFrom
	}
	for i := from; i != to; {
		if i >= argc || i < 1 {
			break
		}
		if equalFold(l2store.CString(args[i]), s.keyword) {
			return i + 1
		}
		if from <= to {
			i++
		} else {
			i--
		}
	}
	return 0
}

// nativeKeys finds keys with Redis's getkeys_proc for m, if it has one.
func (m *Meta) nativeKeys(dst []KeyRef, args [][]byte) []KeyRef {
	argc := len(args)
	add := func(dst []KeyRef, pos int, flags KeyFlags) []KeyRef {
		if pos < argc {
			dst = append(dst, KeyRef{Pos: pos, Flags: flags})
		}
		return dst
	}
	switch m.getkeys {
	case getKeysRange:
		if m.FirstKey <= 0 || m.Step <= 0 {
			return dst
		}
		last := m.LastKey
		if last < 0 {
			last += argc
		}
		for i := m.FirstKey; i <= last && i < argc; i += m.Step {
			dst = add(dst, i, 0)
		}
		return dst
	case getKeysNumkeys1:
		return numkeysKeys(dst, args, 0, 1, 2)
	case getKeysNumkeys2:
		return numkeysKeys(dst, args, 0, 2, 3)
	case getKeysStoreNum1:
		return numkeysKeys(dst, args, 1, 2, 3)

	case getKeysSortRO:
		return add(dst, 1, KeyRO|KeyAccess)

	case getKeysSort:
		// SORT key [BY p] [LIMIT o c] [GET p ...] [ASC|DESC] [ALPHA] [STORE dst]:
		// skip the options' arguments; the last STORE wins.
		dst = add(dst, 1, KeyRO|KeyAccess)
		store := 0
		for i := 2; i < argc; i++ {
			switch a := l2store.CString(args[i]); {
			case equalFold(a, "limit"):
				i += 2
			case equalFold(a, "store") && i+1 < argc:
				store = i + 1
			case equalFold(a, "get"), equalFold(a, "by"):
				i++
			}
		}
		if store != 0 {
			dst = add(dst, store, KeyOW|KeyUpdate)
		}
		return dst

	case getKeysMigrate:
		// MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw]
		// [AUTH2 user pw] [KEYS key ...]
		first, num := 3, 1
		for i := 6; i < argc; i++ {
			a := l2store.CString(args[i])
			if equalFold(a, "keys") {
				if len(args[3]) > 0 {
					num = 0 // a syntax error MIGRATE reports itself
				} else {
					first, num = i+1, argc-(i+1)
				}
				break
			}
			switch {
			case equalFold(a, "auth"):
				i++
			case equalFold(a, "auth2"):
				i += 2
			}
		}
		for i := range num {
			dst = add(dst, first+i, KeyRW|KeyAccess|KeyDelete)
		}
		return dst

	case getKeysGeoradius:
		// The last STORE or STOREDIST key counts.
		dst = add(dst, 1, 0)
		stored := -1
		for i := 5; i < argc; i++ {
			a := l2store.CString(args[i])
			if (equalFold(a, "store") || equalFold(a, "storedist")) && i+1 < argc {
				stored = i + 1
				i++
			}
		}
		if stored != -1 {
			dst = add(dst, stored, 0)
		}
		return dst

	case getKeysXread:
		// XREAD [BLOCK ms] [COUNT n] [GROUP g c] [NOACK] STREAMS key ... id ...
		streams := -1
	options:
		for i := 1; i < argc; i++ {
			switch a := l2store.CString(args[i]); {
			case equalFold(a, "block"), equalFold(a, "count"):
				i++
			case equalFold(a, "group"):
				i += 2
			case equalFold(a, "noack"):
			case equalFold(a, "streams"):
				streams = i
				break options
			default:
				break options
			}
		}
		if streams == -1 {
			return dst
		}
		num := argc - streams - 1
		if num == 0 || num%2 != 0 {
			return dst
		}
		for i := streams + 1; i < argc-num/2; i++ {
			dst = add(dst, i, 0)
		}
		return dst

	case getKeysSet:
		for i := 3; i < argc; i++ {
			if equalFold(l2store.CString(args[i]), "get") {
				return add(dst, 1, KeyRW|KeyAccess|KeyUpdate)
			}
		}
		return add(dst, 1, KeyOW|KeyUpdate)

	case getKeysBitfield:
		readonly := true
	ops:
		for i := 2; i < argc; i++ {
			rem := argc - i - 1
			switch a := l2store.CString(args[i]); {
			case equalFold(a, "get") && rem >= 2:
				i += 2
			case (equalFold(a, "set") || equalFold(a, "incrby")) && rem >= 3:
				readonly = false
				break ops
			case equalFold(a, "overflow") && rem >= 1:
				i++
			default:
				readonly = false // a syntax error: assume a write
				break ops
			}
		}
		if readonly {
			return add(dst, 1, KeyRO|KeyAccess)
		}
		return add(dst, 1, KeyRW|KeyAccess|KeyUpdate)
	}
	return dst
}

// numkeysKeys finds the keys of COMMAND [destkey] numkeys key ... (Redis's
// genericGetKeys with a key step of 1): store is the position of the
// destination key (0 if none), count that of the key count, first that of
// the first key. A count that is not positive or exceeds the arguments
// gives no keys.
func numkeysKeys(dst []KeyRef, args [][]byte, store, count, first int) []KeyRef {
	if count >= len(args) {
		return dst
	}
	num := atoi(args[count])
	if num < 1 || num > len(args)-first {
		return dst
	}
	for i := range num {
		dst = append(dst, KeyRef{Pos: first + i})
	}
	if store != 0 {
		dst = append(dst, KeyRef{Pos: store})
	}
	return dst
}

// atoi parses b like C's atoi on glibc: leading white space, a sign and
// digits, saturated to 64 bits and then truncated to a 32-bit int.
func atoi(b []byte) int {
	b = l2store.CString(b)
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] >= '\t' && b[i] <= '\r') {
		i++
	}
	neg := false
	if i < len(b) && (b[i] == '+' || b[i] == '-') {
		neg = b[i] == '-'
		i++
	}
	// Accumulate the magnitude, saturating just above 1<<63.
	const limit = 1 << 63
	var v uint64
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if v > limit/10 {
			v = limit + 1
			continue
		}
		v = min(v*10+uint64(b[i]-'0'), limit+1)
	}
	var n int64
	switch {
	case neg && v >= limit:
		n = math.MinInt64
	case neg:
		n = -int64(v)
	case v > math.MaxInt64:
		n = math.MaxInt64
	default:
		n = int64(v)
	}
	return int(int32(n))
}
