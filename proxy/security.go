package proxy

// The command deny-list. A sidecache in front of a shared upstream (a
// remote L2 that other pods use too) relays what its clients send; a
// client that may use the cache should not thereby be able to stop, wipe,
// reconfigure or stall the upstream for everyone. Config.DenyCommands
// names the commands the proxy refuses, the way a Redis ACL refuses a
// command to a user: with Redis 7.0's error
//
//	-NOPERM this user has no permissions to run the 'flushall' command
//
// (the subcommand's full name, e.g. 'config|set', for a subcommand), after
// the checks Redis makes before its ACL check (unknown command, arity,
// NOAUTH). A refused command never reaches the store and drops nothing
// from L1. Inside MULTI it flags the transaction as Redis does, so EXEC
// answers EXECABORT; in a pipeline it fails alone.

import (
	"errors"
	"fmt"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/commands"
)

// DeniedCommand is an entry of the default deny-list: a command's full
// name ("flushall", "config|set") and why it is denied.
type DeniedCommand struct{ Name, Why string }

// DefaultDenyCommands returns the commands cmd/sidecache denies by default
// in front of a shared upstream: each one, run by one pod, harms the
// upstream for every other pod. Everything else a Redis client needs
// (keyed reads and writes, scripts and functions on keys, transactions,
// pub/sub, informational commands) stays allowed. CLIENT KILL is not in
// the list: the proxy answers it itself, closing its own clients'
// connections, never the upstream's.
func DefaultDenyCommands() []DeniedCommand {
	return []DeniedCommand{
		{"shutdown", "stops the upstream"},
		{"debug", "DEBUG SEGFAULT, RELOAD, SLEEP... crash or stall the upstream"},
		{"config|set", "changes the upstream's settings (maxmemory, requirepass, dir...) for everyone"},
		{"config|rewrite", "writes the upstream's configuration file"},
		{"flushall", "deletes every key of every database"},
		{"flushdb", "deletes every key of the database"},
		{"swapdb", "swaps whole databases under every other client"},
		{"monitor", "shows every client's commands and data, and slows the upstream"},
		{"save", "blocks the upstream while it writes its dataset"},
		{"bgsave", "forks the upstream and writes its dataset: memory and latency for everyone"},
		{"bgrewriteaof", "forks the upstream and rewrites its AOF: memory and latency for everyone"},
		{"replicaof", "turns the upstream into a replica: its data replaced by another server's"},
		{"slaveof", "the old name of REPLICAOF"},
		{"failover", "hands the upstream's master role to a replica"},
		{"cluster|reset", "resets a cluster node, forgetting its slots and peers"},
		{"cluster|failover", "promotes a replica of the cluster"},
		{"cluster|forget", "removes a node from the cluster's view"},
		{"cluster|meet", "joins a node to the cluster"},
		{"cluster|replicate", "turns a cluster node into a replica"},
		{"cluster|addslots", "changes which node serves which slots"},
		{"cluster|addslotsrange", "changes which node serves which slots"},
		{"cluster|delslots", "changes which node serves which slots"},
		{"cluster|delslotsrange", "changes which node serves which slots"},
		{"cluster|flushslots", "drops all of a node's slots"},
		{"cluster|setslot", "changes which node serves a slot"},
		{"cluster|bumpepoch", "changes the cluster's configuration epoch"},
		{"cluster|set-config-epoch", "changes the cluster's configuration epoch"},
		{"script|kill", "kills a script another client is running"},
		{"script|flush", "deletes every client's cached scripts"},
		{"function|kill", "kills a function another client is running"},
		{"function|flush", "deletes every function library"},
		{"function|restore", "replaces the function libraries"},
		{"module", "MODULE LOAD runs arbitrary code in the upstream"},
		{"acl|setuser", "changes the upstream's users and their passwords"},
		{"acl|deluser", "deletes the upstream's users"},
		{"acl|load", "reloads the upstream's users from its ACL file"},
		{"client|pause", "suspends every client of the upstream"},
	}
}

// DefaultDenyCommandNames returns the names of DefaultDenyCommands.
func DefaultDenyCommandNames() []string {
	d := DefaultDenyCommands()
	names := make([]string, len(d))
	for i, c := range d {
		names[i] = c.Name
	}
	return names
}

// ErrUnknownCommand is wrapped by CheckCommandNames' error for a name
// missing from Redis's command table.
var ErrUnknownCommand = errors.New("no such Redis command")

// CheckCommandNames checks that every name is the full name of a command
// in Redis's table, as DenyCommands and AllowCommands take them: "flushall",
// a subcommand "config|set", or a command with subcommands ("config"),
// which stands for all of them. Case does not matter.
func CheckCommandNames(names []string) error {
	for _, n := range names {
		if commands.LookupFullName([]byte(n)) == nil {
			return fmt.Errorf("%w: %q (write a subcommand as command|subcommand)", ErrUnknownCommand, n)
		}
	}
	return nil
}

// denySet is the set of commands the proxy refuses; nil refuses nothing.
type denySet map[*commands.Meta]bool

// newDenySet builds the set of deny's commands (a command with
// subcommands: it and all of them) less allow's.
func newDenySet(deny, allow []string) (denySet, error) {
	if err := CheckCommandNames(deny); err != nil {
		return nil, fmt.Errorf("%w: DenyCommands: %w", ErrConfig, err)
	}
	if err := CheckCommandNames(allow); err != nil {
		return nil, fmt.Errorf("%w: AllowCommands: %w", ErrConfig, err)
	}
	set := make(denySet)
	each := func(name string, f func(*commands.Meta)) {
		m := commands.LookupFullName([]byte(name))
		f(m)
		for _, sub := range m.Subcommands {
			f(sub)
		}
	}
	for _, n := range deny {
		each(n, func(m *commands.Meta) { set[m] = true })
	}
	for _, n := range allow {
		each(n, func(m *commands.Meta) { delete(set, m) })
	}
	if len(set) == 0 {
		return nil, nil
	}
	return set, nil
}

// denied reports whether m is refused. m may be nil (a command missing
// from the table, which the deny-list cannot name).
func (d denySet) denied(m *commands.Meta) bool { return m != nil && d[m] }

// deniedReply is Redis 7.0's error for a command an ACL refuses
// (processCommand: "this user has no permissions to run the '%s'
// command", with the command's full name).
func deniedReply(m *commands.Meta) l2store.Reply {
	return l2store.Error("NOPERM this user has no permissions to run the '" + m.Name + "' command")
}

// refuseDeniedPinned refuses a denied command of a pinned client (in a
// transaction or WATCH: dispatch does not classify its commands) and
// reports whether it did. As in Redis, the unknown command and arity
// errors come first (the upstream gives them), and so does MULTI's "not
// allowed inside a transaction"; a refusal inside MULTI makes EXEC abort.
func (s *Server) refuseDeniedPinned(c *client, args [][]byte) bool {
	if s.deny == nil {
		return false
	}
	m := commands.Find(args)
	if !s.deny.denied(m) || !m.ArityOK(len(args)) {
		return false
	}
	p := c.pin
	if p.multi && m.Flags&commands.NoMulti != 0 {
		return false // pinnedDispatch refuses it as Redis does
	}
	if p.multi {
		p.dirty = true
	}
	c.writeReply(deniedReply(m))
	return true
}
