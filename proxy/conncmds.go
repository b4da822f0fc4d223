package proxy

import (
	"bytes"
	"crypto/subtle"
	"sort"
	"strconv"
	"strings"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/commands"
)

// RedisVersion is the Redis version whose behaviour sidecache reproduces
// and reports (HELLO, INFO): Debian 12's redis-server, which the
// differential tests compare against.
const RedisVersion = "7.0.15"

func cmdPing(c *client, m *commands.Meta, args [][]byte) {
	switch len(args) {
	case 1:
		c.writeReply(l2store.Status("PONG"))
	case 2:
		c.writeReply(l2store.Bulk(args[1]))
	default:
		c.writeError("ERR wrong number of arguments for '" + m.Name + "' command")
	}
}

func cmdEcho(c *client, _ *commands.Meta, args [][]byte) { c.writeReply(l2store.Bulk(args[1])) }

func cmdQuit(c *client, _ *commands.Meta, _ [][]byte) {
	c.writeReply(l2store.OK)
	c.quit = true
}

// cmdSelect accepts database 0 only: sidecache has one keyspace.
func cmdSelect(c *client, _ *commands.Meta, args [][]byte) {
	id, ok := l2store.ParseInt(args[1])
	switch {
	case !ok:
		c.writeError("ERR value is not an integer or out of range")
	case id < -1<<31 || id > maxInt32:
		c.writeError("ERR value is out of range, value must between -2147483648 and 2147483647")
	case id != 0:
		c.writeError("ERR DB index is out of range")
	default:
		c.writeReply(l2store.OK)
	}
}

const (
	errWrongPass = "WRONGPASS invalid username-password pair or user is disabled."
	errNoPass    = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
)

// checkPassword reports whether user/pass authenticate, as Redis's only
// user, "default", with RequirePass as its password ("nopass" when empty).
func (s *Server) checkPassword(user, pass []byte) bool {
	if string(user) != "default" {
		return false
	}
	want := s.cfg.RequirePass
	if want == "" {
		return true
	}
	return subtle.ConstantTimeCompare(pass, []byte(want)) == 1
}

func (s *Server) cmdAuth(c *client, _ *commands.Meta, args [][]byte) {
	user, pass := []byte("default"), args[len(args)-1]
	switch len(args) {
	case 2:
		if s.cfg.RequirePass == "" {
			c.writeError(errNoPass)
			return
		}
	case 3:
		user = args[1]
	default:
		c.writeError("ERR syntax error")
		return
	}
	if !s.checkPassword(user, pass) {
		c.writeError(errWrongPass)
		return
	}
	c.setAuthed(true)
	c.writeReply(l2store.OK)
}

// cmdHello switches the protocol (RESP2 or RESP3), optionally
// authenticating and naming the client, and describes the server.
func (s *Server) cmdHello(c *client, _ *commands.Meta, args [][]byte) {
	var ver int64
	next := 1
	if len(args) >= 2 {
		v, ok := l2store.ParseInt(args[1])
		if !ok {
			c.writeError("ERR Protocol version is not an integer or out of range")
			return
		}
		if v < 2 || v > 3 {
			c.writeError("NOPROTO unsupported protocol version")
			return
		}
		ver, next = v, 2
	}
	// Like Redis, each option takes effect as it is read, even if a later
	// one fails.
	for j := next; j < len(args); j++ {
		more := len(args) - 1 - j
		switch opt := args[j]; {
		case strings.EqualFold(cstring(opt, -1), "auth") && more >= 2:
			if !s.checkPassword(args[j+1], args[j+2]) {
				c.writeError(errWrongPass)
				return
			}
			c.setAuthed(true)
			j += 2
		case strings.EqualFold(cstring(opt, -1), "setname") && more >= 1:
			if !validClientName(args[j+1]) {
				c.writeError(errClientName)
				return
			}
			c.setName(args[j+1])
			j++
		default:
			c.writeError("ERR Syntax error in HELLO option '" + cstring(opt, -1) + "'")
			return
		}
	}
	if !c.authed {
		c.writeError("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
		return
	}
	if ver != 0 {
		c.proto.Store(int32(ver))
	}
	c.writeReply(l2store.Map(
		l2store.BulkString("server"), l2store.BulkString("redis"),
		l2store.BulkString("version"), l2store.BulkString(RedisVersion),
		l2store.BulkString("proto"), l2store.Int(int64(c.proto.Load())),
		l2store.BulkString("id"), l2store.Int(c.id),
		l2store.BulkString("mode"), l2store.BulkString("standalone"),
		l2store.BulkString("role"), l2store.BulkString("master"),
		l2store.BulkString("modules"), l2store.Array(),
	))
}

// cmdReset returns the connection to its initial state, like Redis's RESET.
func (s *Server) cmdReset(c *client, _ *commands.Meta, _ [][]byte) {
	c.proto.Store(2)
	c.name.Store(nil)
	c.setAuthed(s.cfg.RequirePass == "")
	c.writeReply(l2store.Status("RESET"))
}

func (s *Server) cmdTime(c *client, _ *commands.Meta, _ [][]byte) {
	now := s.cfg.Now()
	c.writeReply(l2store.Array(
		l2store.BulkString(strconv.FormatInt(now.Unix(), 10)),
		l2store.BulkString(strconv.FormatInt(int64(now.Nanosecond()/1000), 10)),
	))
}

func (s *Server) cmdCommand(c *client, _ *commands.Meta, args [][]byte) {
	c.writeReply(commands.Command(args, s.isSupported))
}

const errClientName = "ERR Client names cannot contain spaces, newlines or special characters."

// validClientName reports whether name is printable ASCII without spaces,
// so that CLIENT LIST stays parseable (Redis's rule, also for SETINFO).
func validClientName(name []byte) bool {
	for _, b := range name {
		if b < '!' || b > '~' {
			return false
		}
	}
	return true
}

func (c *client) setName(name []byte) {
	if len(name) == 0 {
		c.name.Store(nil)
		return
	}
	n := string(name)
	c.name.Store(&n)
}

func cmdClientID(c *client, _ *commands.Meta, _ [][]byte) { c.writeReply(l2store.Int(c.id)) }

func cmdClientGetName(c *client, _ *commands.Meta, _ [][]byte) {
	if n := c.name.Load(); n != nil {
		c.writeReply(l2store.BulkString(*n))
		return
	}
	c.writeNull()
}

func cmdClientSetName(c *client, _ *commands.Meta, args [][]byte) {
	if !validClientName(args[2]) {
		c.writeError(errClientName)
		return
	}
	c.setName(args[2])
	c.writeReply(l2store.OK)
}

// cmdClientSetInfo is Redis 7.2's CLIENT SETINFO, which go-redis sends.
func cmdClientSetInfo(c *client, _ *commands.Meta, args [][]byte) {
	attr := cstring(args[2], -1)
	var dst *atomicString
	switch strings.ToLower(attr) {
	case "lib-name":
		dst = &c.libName
	case "lib-ver":
		dst = &c.libVer
	default:
		c.writeError("ERR Unrecognized option '" + attr + "'")
		return
	}
	if !validClientName(args[3]) {
		c.writeError("ERR " + attr + " cannot contain spaces, newlines or special characters.")
		return
	}
	if len(args[3]) == 0 {
		dst.Store(nil)
	} else {
		v := string(args[3])
		dst.Store(&v)
	}
	c.writeReply(l2store.OK)
}

func (s *Server) cmdClientInfo(c *client, _ *commands.Meta, _ [][]byte) {
	c.writeReply(verbatim(c.info(nil, s.stats.ops.unixSeconds())))
}

// verbatim returns a RESP3 verbatim text reply (a bulk string in RESP2).
func verbatim(text []byte) l2store.Reply {
	return l2store.Reply{Kind: l2store.KindVerbatim, Str: append([]byte("txt:"), text...)}
}

// clientTypeKnown reports whether name is a client type Redis knows. All of
// sidecache's clients are of type "normal".
func clientTypeKnown(name []byte) (known, normal bool) {
	switch strings.ToLower(cstring(name, -1)) {
	case "normal":
		return true, true
	case "slave", "replica", "pubsub", "master":
		return true, false
	}
	return false, false
}

func (s *Server) cmdClientList(c *client, _ *commands.Meta, args [][]byte) {
	now := s.stats.ops.unixSeconds()
	var out []byte
	switch {
	case len(args) == 4 && strings.EqualFold(cstring(args[2], -1), "type"):
		known, normal := clientTypeKnown(args[3])
		if !known {
			c.writeError("ERR Unknown client type '" + cstring(args[3], -1) + "'")
			return
		}
		if normal {
			for _, cl := range s.snapshotClients() {
				out = cl.info(out, now)
			}
		}
	case len(args) > 3 && strings.EqualFold(cstring(args[2], -1), "id"):
		ids := make(map[int64]bool)
		for _, a := range args[3:] {
			id, ok := l2store.ParseInt(a)
			if !ok {
				c.writeError("ERR Invalid client ID")
				return
			}
			ids[id] = true
		}
		for _, cl := range s.snapshotClients() {
			if ids[cl.id] {
				out = cl.info(out, now)
			}
		}
	case len(args) == 2:
		for _, cl := range s.snapshotClients() {
			out = cl.info(out, now)
		}
	default:
		c.writeError("ERR syntax error")
		return
	}
	c.writeReply(verbatim(out))
}

// cmdClientKill closes the matching connections: CLIENT KILL addr, or
// CLIENT KILL with ID, TYPE, ADDR, LADDR, USER and SKIPME filters.
func (s *Server) cmdClientKill(c *client, _ *commands.Meta, args [][]byte) {
	var addr, laddr *string
	var id int64
	typeNormal, skipMe := true, true
	if len(args) == 3 {
		a := cstring(args[2], -1)
		addr, skipMe = &a, false
	} else {
		for i := 2; i < len(args); i += 2 {
			if i+1 >= len(args) {
				c.writeError("ERR syntax error")
				return
			}
			opt, val := strings.ToLower(cstring(args[i], -1)), args[i+1]
			switch opt {
			case "id":
				n, ok := l2store.ParseInt(val)
				if !ok || n < 1 {
					c.writeError("ERR client-id should be greater than 0")
					return
				}
				id = n
			case "type":
				known, normal := clientTypeKnown(val)
				if !known {
					c.writeError("ERR Unknown client type '" + cstring(val, -1) + "'")
					return
				}
				typeNormal = normal
			case "addr":
				a := cstring(val, -1)
				addr = &a
			case "laddr":
				a := cstring(val, -1)
				laddr = &a
			case "user":
				if cstring(val, -1) != "default" {
					c.writeError("ERR No such user '" + cstring(val, -1) + "'")
					return
				}
			case "skipme":
				switch strings.ToLower(cstring(val, -1)) {
				case "yes":
					skipMe = true
				case "no":
					skipMe = false
				default:
					c.writeError("ERR syntax error")
					return
				}
			default:
				c.writeError("ERR syntax error")
				return
			}
		}
	}
	killed := 0
	for _, cl := range s.snapshotClients() {
		if !typeNormal || addr != nil && cl.addr != *addr || laddr != nil && cl.laddr != *laddr ||
			id != 0 && cl.id != id || cl == c && skipMe {
			continue
		}
		if cl == c {
			c.quit = true
		} else {
			cl.gate.Close()
		}
		killed++
	}
	if len(args) == 3 {
		if killed == 0 {
			c.writeError("ERR No such client")
			return
		}
		c.writeReply(l2store.OK)
		return
	}
	c.writeReply(l2store.Int(int64(killed)))
}

func (s *Server) cmdClientHelp(c *client, _ *commands.Meta, args [][]byte) {
	c.writeReply(help(args[0],
		"GETNAME",
		"    Return the name of the current connection.",
		"ID",
		"    Return the ID of the current connection.",
		"INFO",
		"    Return information about the current client connection.",
		"KILL <ip:port>",
		"    Kill connection made from <ip:port>.",
		"KILL <option> <value> [<option> <value> [...]]",
		"    Kill connections. Options are:",
		"    * ADDR (<ip:port>|<unixsocket>:0)",
		"      Kill connections made from the specified address",
		"    * LADDR (<ip:port>|<unixsocket>:0)",
		"      Kill connections made to specified local address",
		"    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
		"      Kill connections by type.",
		"    * USER <username>",
		"      Kill connections authenticated by <username>.",
		"    * SKIPME (YES|NO)",
		"      Skip killing current connection (default: yes).",
		"LIST [options ...]",
		"    Return information about client connections. Options:",
		"    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
		"      Return clients of specified type.",
		"SETINFO <option> <value>",
		"    Set client meta attr. Options are:",
		"    * LIB-NAME: the client lib name.",
		"    * LIB-VER: the client lib version.",
		"SETNAME <name>",
		"    Assign the name <name> to the current connection.",
	))
}

// help builds a HELP reply the way Redis's addReplyHelp does.
func help(cmd []byte, lines ...string) l2store.Reply {
	r := make([]l2store.Reply, 0, len(lines)+3)
	r = append(r, l2store.Status(strings.ToUpper(cstring(cmd, -1))+" <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"))
	for _, l := range lines {
		r = append(r, l2store.Status(l))
	}
	r = append(r, l2store.Status("HELP"), l2store.Status("    Prints this help."))
	return l2store.Array(r...)
}

// configParams returns CONFIG GET's parameters, by name.
func (s *Server) configParams() map[string]string {
	host, port := s.cfg.Addr, ""
	if a := s.Addr(); a != nil {
		host = a.String()
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host, port = host[:i], host[i+1:]
	}
	p := map[string]string{
		"bind":                      strings.Trim(host, "[]"),
		"port":                      port,
		"maxclients":                strconv.FormatInt(s.maxClients.Load(), 10),
		"timeout":                   strconv.FormatInt(int64(s.cfg.IdleTimeout.Seconds()), 10),
		"proto-max-bulk-len":        strconv.FormatInt(s.cfg.ProtoMaxBulkLen, 10),
		"client-query-buffer-limit": strconv.FormatInt(s.cfg.ClientQueryBufferLimit, 10),
		"requirepass":               s.cfg.RequirePass,
		"databases":                 "1",
		"save":                      "",
		"appendonly":                "no",
		"cluster-enabled":           "no",
	}
	for _, st := range s.cfg.Settings {
		p[st.Name] = st.Value
	}
	return p
}

// cmdConfigGet answers CONFIG GET pattern [pattern ...] with the matching
// parameters, each once. As in Redis, a name without glob characters is
// looked up case-insensitively and echoed as given; patterns match the
// parameters' own names. Parameters are listed in name order (Redis's
// order is its hash table's).
func (s *Server) cmdConfigGet(c *client, _ *commands.Meta, args [][]byte) {
	params := s.configParams()
	names := make([]string, 0, len(params))
	for n := range params {
		names = append(names, n)
	}
	sort.Strings(names)
	shown := map[string]string{} // parameter -> the name to reply with
	for _, pat := range args[2:] {
		if !bytes.ContainsAny(pat, "[*?") {
			n := strings.ToLower(cstring(pat, -1))
			if _, ok := params[n]; ok && shown[n] == "" {
				shown[n] = cstring(pat, -1)
			}
			continue
		}
		for _, n := range names {
			if shown[n] == "" && commands.Match(pat, n) {
				shown[n] = n
			}
		}
	}
	var out []l2store.Reply
	for _, n := range names {
		if as := shown[n]; as != "" {
			out = append(out, l2store.BulkString(as), l2store.BulkString(params[n]))
		}
	}
	c.writeReply(l2store.Map(out...))
}

// cmdConfigResetStat zeroes the counters INFO reports.
func (s *Server) cmdConfigResetStat(c *client, _ *commands.Meta, _ [][]byte) {
	s.resetStats()
	c.writeReply(l2store.OK)
}

func (s *Server) cmdConfigHelp(c *client, _ *commands.Meta, args [][]byte) {
	c.writeReply(help(args[0],
		"GET <pattern>",
		"    Return parameters matching the glob-like <pattern> and their values.",
		"RESETSTAT",
		"    Reset statistics reported by the INFO command.",
	))
}
