package embedded

import (
	"bytes"
	"math"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/embedded/kv"
)

// delCmd runs DEL and UNLINK.
func delCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	keys := args[1:]
	tx := s.db.Begin(keys)
	defer tx.End()
	n := 0
	for _, k := range keys {
		if tx.Delete(k) {
			n++
		}
	}
	return l2store.Int(int64(n)), nil
}

// existsCmd counts the keys that exist, a key given twice counting twice.
// Like Redis, it does not mark them as used.
func existsCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	keys := args[1:]
	tx := s.db.Begin(keys)
	defer tx.End()
	n := 0
	for _, k := range keys {
		if _, _, ok := tx.Peek(k); ok {
			n++
		}
	}
	return l2store.Int(int64(n)), nil
}

// touchCmd counts the keys that exist and marks them as used.
func touchCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	keys := args[1:]
	tx := s.db.Begin(keys)
	defer tx.End()
	n := 0
	for _, k := range keys {
		if _, _, ok := tx.Get(k); ok {
			n++
		}
	}
	return l2store.Int(int64(n)), nil
}

var (
	typeString = l2store.Status("string")
	typeNone   = l2store.Status("none")
)

func typeCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	tx := s.db.Begin(oneKey(args[1]))
	defer tx.End()
	if _, _, ok := tx.Peek(args[1]); ok {
		return typeString, nil
	}
	return typeNone, nil
}

// Flags of the EXPIRE commands.
const (
	expireNX = 1 << iota
	expireXX
	expireGT
	expireLT
)

// parseExpireOptions parses the NX, XX, GT and LT options of the EXPIRE
// commands (args[3:]) as Redis's parseExtendedExpireArgumentsOrReply.
func parseExpireOptions(args [][]byte) (int, l2store.Reply, bool) {
	flags := 0
	for _, a := range args[3:] {
		switch {
		case isOpt(a, "nx"):
			flags |= expireNX
		case isOpt(a, "xx"):
			flags |= expireXX
		case isOpt(a, "gt"):
			flags |= expireGT
		case isOpt(a, "lt"):
			flags |= expireLT
		default:
			// Redis formats the option as a C string, trims CR and LF
			// from the end of the message and blanks the others.
			msg := append([]byte("ERR Unsupported option "), l2store.CString(a)...)
			msg = bytes.TrimRight(msg, "\r\n")
			return 0, l2store.Reply{Kind: l2store.KindError, Str: sanitizeLine(msg)}, false
		}
	}
	if flags&expireNX != 0 && flags&(expireXX|expireGT|expireLT) != 0 {
		return 0, l2store.Error("ERR NX and XX, GT or LT options at the same time are not compatible"), false
	}
	if flags&expireGT != 0 && flags&expireLT != 0 {
		return 0, l2store.Error("ERR GT and LT options at the same time are not compatible"), false
	}
	return flags, l2store.Reply{}, true
}

// expireCmd runs EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT, as Redis's
// expireGenericCommand.
func expireCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	flags, errReply, ok := parseExpireOptions(args)
	if !ok {
		return errReply, nil
	}
	when, ok := l2store.ParseInt(args[2])
	if !ok {
		return errNotInteger, nil
	}
	seconds := c.Name == "expire" || c.Name == "expireat"
	relative := c.Name == "expire" || c.Name == "pexpire"
	key := args[1]
	tx := s.db.Begin(oneKey(key))
	defer tx.End()
	now := tx.Now()
	if seconds {
		if when > math.MaxInt64/1000 || when < math.MinInt64/1000 {
			return expireTimeError(c), nil
		}
		when *= 1000
	}
	if relative {
		if when > math.MaxInt64-now {
			return expireTimeError(c), nil
		}
		when += now
	}
	_, cur, found := tx.Get(key)
	if !found {
		return l2store.Zero, nil
	}
	// cur == 0 means no expiry: Redis's -1, an infinite TTL.
	switch {
	case flags&expireNX != 0 && cur != 0,
		flags&expireXX != 0 && cur == 0,
		flags&expireGT != 0 && (cur == 0 || when <= cur),
		flags&expireLT != 0 && cur != 0 && when >= cur:
		return l2store.Zero, nil
	}
	if when <= now {
		tx.Delete(key)
	} else {
		tx.SetExpire(key, when)
	}
	return l2store.One, nil
}

// ttlCmd runs TTL, PTTL, EXPIRETIME and PEXPIRETIME: -2 for a missing key,
// -1 for a key without expiry, else the time left (or the expiry time),
// in seconds rounded to nearest or in milliseconds.
func ttlCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	ms := c.Name == "pttl" || c.Name == "pexpiretime"
	abs := c.Name == "expiretime" || c.Name == "pexpiretime"
	tx := s.db.Begin(oneKey(args[1]))
	defer tx.End()
	_, exp, found := tx.Peek(args[1])
	if !found {
		return l2store.Int(-2), nil
	}
	if exp == 0 {
		return l2store.Int(-1), nil
	}
	ttl := exp
	if !abs {
		ttl -= tx.Now()
	}
	ttl = max(ttl, 0)
	if !ms {
		ttl = (ttl + 500) / 1000
	}
	return l2store.Int(ttl), nil
}

func persistCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	tx := s.db.Begin(oneKey(args[1]))
	defer tx.End()
	if _, exp, ok := tx.Get(args[1]); ok && exp != 0 {
		tx.SetExpire(args[1], 0)
		return l2store.One, nil
	}
	return l2store.Zero, nil
}

// renameCmd runs RENAME and RENAMENX in one Tx over both keys. The
// destination keeps the source's TTL.
func renameCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	src, dst := args[1], args[2]
	nx := c.Name == "renamenx"
	tx := s.db.Begin([][]byte{src, dst})
	defer tx.End()
	val, exp, ok := tx.Get(src)
	if !ok {
		return errNoSuchKey, nil
	}
	if bytes.Equal(src, dst) {
		if nx {
			return l2store.Zero, nil
		}
		return l2store.OK, nil
	}
	done := l2store.OK
	if nx {
		done = l2store.One
	}
	// Writes invalidate val, which aliases kv memory.
	val = append([]byte(nil), val...)
	if _, _, exists := tx.Get(dst); exists && nx {
		return l2store.Zero, nil
	}
	// The value is copied, so both copies must fit at once (under
	// noeviction, near the bound, RENAME can get -OOM where Redis, which
	// moves a pointer, would not). Deleting the source first instead could
	// lose it if the destination then did not fit.
	if !tx.Fits([][]byte{dst, val}) {
		return l2store.Reply{}, kv.ErrOOM
	}
	if err := tx.Set(dst, val, exp); err != nil {
		return l2store.Reply{}, err
	}
	tx.Delete(src)
	return done, nil
}

func dbsizeCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	return l2store.Int(s.db.Stats().Keys), nil
}

// flushCmd runs FLUSHDB and FLUSHALL. There is one database; SYNC and
// ASYNC both flush at once.
func flushCmd(s *Store, c *command, args [][]byte) (l2store.Reply, error) {
	if len(args) > 2 || (len(args) == 2 && !isOpt(args[1], "sync") && !isOpt(args[1], "async")) {
		return errSyntax, nil
	}
	s.db.Flush()
	return l2store.OK, nil
}
