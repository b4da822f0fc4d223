package embedded

import (
	"math"
	"strconv"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/commands"
	"github.com/sidecache/sidecache/l2store/embedded/kv"
)

// Option flags of SET and GETEX, as Redis's OBJ_* flags.
const (
	optNX = 1 << iota
	optXX
	optGet
	optKeepTTL
	optPersist
	optEX
	optPX
	optEXAT
	optPXAT

	optExpire = optEX | optPX | optEXAT | optPXAT
)

// parseStringOptions parses the options of SET (isSet, from args[3]) or
// GETEX (from args[2]) as Redis's parseExtendedStringArgumentsOrReply does,
// including which options exclude which. It returns the flags and the
// expiry argument, or ok == false for a syntax error.
func parseStringOptions(args [][]byte, isSet bool) (flags int, expire []byte, ok bool) {
	j := 2
	if isSet {
		j = 3
	}
	for ; j < len(args); j++ {
		a := args[j]
		hasNext := j+1 < len(args)
		switch {
		case isSet && isOpt(a, "nx") && flags&optXX == 0:
			flags |= optNX
		case isSet && isOpt(a, "xx") && flags&optNX == 0:
			flags |= optXX
		case isSet && isOpt(a, "get"):
			flags |= optGet
		case isSet && isOpt(a, "keepttl") && flags&(optPersist|optExpire) == 0:
			flags |= optKeepTTL
		case !isSet && isOpt(a, "persist") && flags&(optKeepTTL|optExpire) == 0:
			flags |= optPersist
		case hasNext && isOpt(a, "ex") && flags&(optKeepTTL|optPersist|optExpire&^optEX) == 0:
			flags |= optEX
			expire = args[j+1]
			j++
		case hasNext && isOpt(a, "px") && flags&(optKeepTTL|optPersist|optExpire&^optPX) == 0:
			flags |= optPX
			expire = args[j+1]
			j++
		case hasNext && isOpt(a, "exat") && flags&(optKeepTTL|optPersist|optExpire&^optEXAT) == 0:
			flags |= optEXAT
			expire = args[j+1]
			j++
		case hasNext && isOpt(a, "pxat") && flags&(optKeepTTL|optPersist|optExpire&^optPXAT) == 0:
			flags |= optPXAT
			expire = args[j+1]
			j++
		default:
			return 0, nil, false
		}
	}
	return flags, expire, true
}

// expireAt turns the argument of EX, PX, EXAT or PXAT (which one flags
// says) into a Unix time in milliseconds, as Redis's
// getExpireMillisecondsOrReply: the argument must be a positive integer and
// the result must not overflow.
func expireAt(c *command, arg []byte, flags int, now int64) (int64, l2store.Reply, bool) {
	ms, ok := l2store.ParseInt(arg)
	if !ok {
		return 0, errNotInteger, false
	}
	seconds := flags&(optEX|optEXAT) != 0
	if ms <= 0 || (seconds && ms > math.MaxInt64/1000) {
		return 0, expireTimeError(c), false
	}
	if seconds {
		ms *= 1000
	}
	if flags&(optEX|optPX) != 0 {
		ms += now // may wrap around, as in Redis, and is caught below
	}
	if ms <= 0 {
		return 0, expireTimeError(c), false
	}
	return ms, l2store.Reply{}, true
}

// oneKey is the key list of a single-key command.
func oneKey(key []byte) [][]byte { return [][]byte{key} }

// bulkCopy returns a bulk reply holding a copy of b, which may alias kv
// memory.
func bulkCopy(b []byte) l2store.Reply {
	return l2store.Bulk(append(make([]byte, 0, len(b)), b...))
}

func getCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	tx := s.db.Begin(oneKey(args[1]))
	defer tx.End()
	if val, _, ok := tx.Get(args[1]); ok {
		return bulkCopy(val), nil
	}
	return l2store.Null, nil
}

func setCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	flags, expire, ok := parseStringOptions(args, true)
	if !ok {
		return errSyntax, nil
	}
	return s.set(c, flags, args[1], args[2], expire, l2store.OK, l2store.Null)
}

// setexCmd runs SETEX and PSETEX.
func setexCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	flags := optEX
	if c.Name == "psetex" {
		flags = optPX
	}
	return s.set(c, flags, args[1], args[3], args[2], l2store.OK, l2store.Null)
}

func setnxCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	return s.set(c, optNX, args[1], args[2], nil, l2store.One, l2store.Zero)
}

// set is Redis's setGenericCommand: SET with its options, and the commands
// that are SET with fixed options. It replies okReply when it sets the key
// and abortReply when NX or XX stop it, except that with GET it replies
// the old value either way.
func (s *Store) set(c *command, flags int, key, val, expire []byte, okReply, abortReply l2store.Reply) (l2store.Reply, error) {
	tx := s.db.Begin(oneKey(key))
	defer tx.End()
	var exp int64
	if expire != nil {
		var errReply l2store.Reply
		var ok bool
		if exp, errReply, ok = expireAt(c, expire, flags, tx.Now()); !ok {
			return errReply, nil
		}
	}
	old, oldExp, found := tx.Get(key)
	reply := okReply
	if flags&optGet != 0 {
		reply = l2store.Null
		if found {
			reply = bulkCopy(old)
		}
	}
	if (flags&optNX != 0 && found) || (flags&optXX != 0 && !found) {
		if flags&optGet != 0 {
			return reply, nil
		}
		return abortReply, nil
	}
	if flags&optKeepTTL != 0 && found {
		exp = oldExp
	}
	if err := tx.Set(key, val, exp); err != nil {
		return l2store.Reply{}, err
	}
	return reply, nil
}

func getsetCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	return s.set(c, optGet, args[1], args[2], nil, l2store.OK, l2store.Null)
}

func getdelCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	tx := s.db.Begin(oneKey(args[1]))
	defer tx.End()
	val, _, ok := tx.Get(args[1])
	if !ok {
		return l2store.Null, nil
	}
	reply := bulkCopy(val)
	tx.Delete(args[1])
	return reply, nil
}

func getexCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	flags, expire, ok := parseStringOptions(args, false)
	if !ok {
		return errSyntax, nil
	}
	key := args[1]
	tx := s.db.Begin(oneKey(key))
	defer tx.End()
	val, oldExp, found := tx.Get(key)
	if !found {
		return l2store.Null, nil
	}
	var exp int64
	if expire != nil {
		var errReply l2store.Reply
		if exp, errReply, ok = expireAt(c, expire, flags, tx.Now()); !ok {
			return errReply, nil
		}
	}
	reply := bulkCopy(val)
	switch {
	case flags&(optEXAT|optPXAT) != 0 && exp <= tx.Now():
		tx.Delete(key)
	case expire != nil:
		tx.SetExpire(key, exp)
	case flags&optPersist != 0 && oldExp != 0:
		tx.SetExpire(key, 0)
	}
	return reply, nil
}

func mgetCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	keys := args[1:]
	tx := s.db.Begin(keys)
	defer tx.End()
	elems := make([]l2store.Reply, len(keys))
	for i, k := range keys {
		if val, _, ok := tx.Get(k); ok {
			elems[i] = bulkCopy(val)
		} else {
			elems[i] = l2store.Null
		}
	}
	return l2store.Array(elems...), nil
}

// msetCmd runs MSET and MSETNX in one Tx over all their keys: it sets
// every pair or none.
func msetCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	if len(args)%2 == 0 {
		return commands.WrongArity(c), nil
	}
	pairs := args[1:]
	keys := make([][]byte, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		keys = append(keys, pairs[i])
	}
	nx := c.Name == "msetnx"
	tx := s.db.Begin(keys)
	defer tx.End()
	if nx {
		for _, k := range keys {
			if _, _, ok := tx.Get(k); ok {
				return l2store.Zero, nil
			}
		}
	}
	if !tx.Fits(pairs) {
		return l2store.Reply{}, kv.ErrOOM
	}
	for i := 0; i < len(pairs); i += 2 {
		if err := tx.Set(pairs[i], pairs[i+1], 0); err != nil {
			// Fits promised this cannot happen.
			return l2store.Reply{}, err
		}
	}
	if nx {
		return l2store.One, nil
	}
	return l2store.OK, nil
}

// checkLength is Redis's checkStringLength: a string of size+add bytes
// must not exceed proto-max-bulk-len.
func (s *Store) checkLength(size, add int64) bool {
	total := uint64(size) + uint64(add)
	return total <= uint64(s.maxBulk) && total >= uint64(size) && total >= uint64(add)
}

// neverFits reports whether an entry of key and n value bytes is larger
// than the whole memory bound, so that a write can fail without first
// building the value.
func (s *Store) neverFits(key []byte, n int64) bool {
	return n > s.maxBytes-int64(len(key))
}

func appendCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	key, data := args[1], args[2]
	tx := s.db.Begin(oneKey(key))
	defer tx.End()
	old, _, found := tx.Get(key)
	if found && !s.checkLength(int64(len(old)), int64(len(data))) {
		return errTooLong, nil
	}
	if s.neverFits(key, int64(len(old))+int64(len(data))) {
		return l2store.Reply{}, kv.ErrOOM
	}
	n, err := tx.Append(key, data)
	if err != nil {
		return l2store.Reply{}, err
	}
	return l2store.Int(int64(n)), nil
}

func strlenCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	tx := s.db.Begin(oneKey(args[1]))
	defer tx.End()
	val, _, _ := tx.Get(args[1])
	return l2store.Int(int64(len(val))), nil
}

// incrCmd runs INCR and DECR.
func incrCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	if c.Name == "decr" {
		return s.incrBy(args[1], -1)
	}
	return s.incrBy(args[1], 1)
}

// incrbyCmd runs INCRBY and DECRBY.
func incrbyCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	n, ok := l2store.ParseInt(args[2])
	if !ok {
		return errNotInteger, nil
	}
	if c.Name == "decrby" {
		if n == math.MinInt64 {
			return errDecrOverflow, nil
		}
		n = -n
	}
	return s.incrBy(args[1], n)
}

// incrBy adds delta to the integer at key (0 if missing), keeping its TTL.
func (s *Store) incrBy(key []byte, delta int64) (l2store.Reply, error) {
	tx := s.db.Begin(oneKey(key))
	defer tx.End()
	var v int64
	val, exp, found := tx.Get(key)
	if found {
		var ok bool
		if v, ok = l2store.ParseInt(val); !ok {
			return errNotInteger, nil
		}
	}
	if (delta < 0 && v < 0 && delta < math.MinInt64-v) ||
		(delta > 0 && v > 0 && delta > math.MaxInt64-v) {
		return errOverflow, nil
	}
	v += delta
	var buf [24]byte
	if err := tx.Set(key, strconv.AppendInt(buf[:0], v, 10), exp); err != nil {
		return l2store.Reply{}, err
	}
	return l2store.Int(v), nil
}

func incrbyfloatCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	key := args[1]
	tx := s.db.Begin(oneKey(key))
	defer tx.End()
	val, exp, found := tx.Get(key)
	v := newLD()
	if found {
		var ok bool
		if v, ok = parseLongDouble(val); !ok {
			return errNotFloat, nil
		}
	}
	incr, ok := parseLongDouble(args[2])
	if !ok {
		return errNotFloat, nil
	}
	sum, ok := addLongDouble(v, incr)
	if !ok {
		return errNaN, nil
	}
	out := formatLongDouble(sum)
	if err := tx.Set(key, out, exp); err != nil {
		return l2store.Reply{}, err
	}
	return l2store.Bulk(out), nil
}

// getrangeCmd runs GETRANGE and SUBSTR.
func getrangeCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	start, ok := l2store.ParseInt(args[2])
	if !ok {
		return errNotInteger, nil
	}
	end, ok := l2store.ParseInt(args[3])
	if !ok {
		return errNotInteger, nil
	}
	tx := s.db.Begin(oneKey(args[1]))
	defer tx.End()
	val, _, found := tx.Get(args[1])
	if !found {
		return l2store.EmptyBulk, nil
	}
	n := int64(len(val))
	if start < 0 && end < 0 && start > end {
		return l2store.EmptyBulk, nil
	}
	if start < 0 {
		start += n
	}
	if end < 0 {
		end += n
	}
	start, end = max(start, 0), max(end, 0)
	if end >= n {
		end = n - 1
	}
	if start > end || n == 0 {
		return l2store.EmptyBulk, nil
	}
	return bulkCopy(val[start : end+1]), nil
}

func setrangeCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	key, data := args[1], args[3]
	offset, ok := l2store.ParseInt(args[2])
	if !ok {
		return errNotInteger, nil
	}
	if offset < 0 {
		return errOffset, nil
	}
	tx := s.db.Begin(oneKey(key))
	defer tx.End()
	old, exp, found := tx.Get(key)
	if len(data) == 0 {
		// Setting nothing: the length of what is there.
		return l2store.Int(int64(len(old))), nil
	}
	if !s.checkLength(offset, int64(len(data))) {
		return errTooLong, nil
	}
	n := max(int64(len(old)), offset+int64(len(data)))
	if s.neverFits(key, n) {
		return l2store.Reply{}, kv.ErrOOM
	}
	val := make([]byte, n)
	copy(val, old)
	copy(val[offset:], data)
	if !found {
		exp = 0
	}
	if err := tx.Set(key, val, exp); err != nil {
		return l2store.Reply{}, err
	}
	return l2store.Int(n), nil
}
