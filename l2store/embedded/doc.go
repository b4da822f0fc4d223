// Package embedded is the default L2 store: it implements Redis 7.0.15's
// string and key commands (GET, SET and its options, MSET, INCR*, APPEND,
// GETRANGE, SETRANGE, DEL, EXPIRE*, TTL*, RENAME, ... ; see Store.Commands)
// in process, over the byte-bounded memory of package kv.
//
// It owns the commands' semantics: argument parsing with Redis's syntax
// checks and error texts (option names compared case-insensitively as C
// strings, integers parsed as Redis's string2ll, INCRBYFLOAT computed in an
// emulation of x86's 80-bit long double), TTL rules, and the reply each
// command sends. Package kv owns the bytes, the memory bound, eviction and
// expiry.
//
// Every command runs as one kv transaction: Do parses what needs no data,
// then Begin locks the shards of all the command's keys (in a fixed order,
// so concurrent multi-key commands cannot deadlock), and the command reads
// and writes through the Tx at the Tx's single clock reading, as Redis
// runs a command at one instant. Multi-key writes are therefore atomic:
// MSET and MSETNX check tx.Fits first and set every key or none, RENAME
// moves the value under both locks, DEL removes all its keys at once. Values
// read through the Tx alias kv memory, so replies copy them before End.
//
// A write that does not fit in memory (kv.ErrOOM, under the noeviction
// policy or for a value larger than a shard) changes nothing and comes back
// from Do as a Go error wrapping l2store.ErrOOM; the proxy turns it into
// Redis's OOM error. Every other failure is a Redis error reply.
package embedded
