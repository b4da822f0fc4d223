package embedded

import "github.com/sidecache/sidecache/l2store"

// handlers maps the names of the commands Do implements to the functions
// that run them; Redis's table (package commands) gives their arity.
var handlers = map[string]handler{
	// Strings.
	"get":         getCmd,
	"set":         setCmd,
	"setex":       setexCmd,
	"psetex":      setexCmd,
	"setnx":       setnxCmd,
	"getset":      getsetCmd,
	"getdel":      getdelCmd,
	"getex":       getexCmd,
	"mget":        mgetCmd,
	"mset":        msetCmd,
	"msetnx":      msetCmd,
	"append":      appendCmd,
	"strlen":      strlenCmd,
	"incr":        incrCmd,
	"decr":        incrCmd,
	"incrby":      incrbyCmd,
	"decrby":      incrbyCmd,
	"incrbyfloat": incrbyfloatCmd,
	"getrange":    getrangeCmd,
	"substr":      getrangeCmd,
	"setrange":    setrangeCmd,

	// Keys.
	"del":         delCmd,
	"unlink":      delCmd,
	"exists":      existsCmd,
	"touch":       touchCmd,
	"type":        typeCmd,
	"expire":      expireCmd,
	"pexpire":     expireCmd,
	"expireat":    expireCmd,
	"pexpireat":   expireCmd,
	"ttl":         ttlCmd,
	"pttl":        ttlCmd,
	"expiretime":  ttlCmd,
	"pexpiretime": ttlCmd,
	"persist":     persistCmd,
	"rename":      renameCmd,
	"renamenx":    renameCmd,

	// Server.
	"dbsize":   dbsizeCmd,
	"flushdb":  flushCmd,
	"flushall": flushCmd,
}

// Error replies shared by many commands, with Redis's texts.
var (
	errSyntax       = l2store.Error("ERR syntax error")
	errNotInteger   = l2store.Error("ERR value is not an integer or out of range")
	errNotFloat     = l2store.Error("ERR value is not a valid float")
	errOverflow     = l2store.Error("ERR increment or decrement would overflow")
	errDecrOverflow = l2store.Error("ERR decrement would overflow")
	errNaN          = l2store.Error("ERR increment would produce NaN or Infinity")
	errNoSuchKey    = l2store.Error("ERR no such key")
	errOffset       = l2store.Error("ERR offset is out of range")
	errTooLong      = l2store.Error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
)

func expireTimeError(c *command) l2store.Reply {
	return l2store.Errorf("ERR invalid expire time in '%s' command", c.Name)
}
