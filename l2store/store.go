// Package l2store defines the second tier of sidecache: the store that owns
// every key, behind the in-process L1.
//
// A Store speaks Redis: reads on the hot path come through Get, which returns
// a string value with its absolute expiry so that L1 never keeps a copy past
// its TTL; every other command goes through Do, which runs one Redis command
// and returns its reply. Two implementations fit this shape: the embedded
// store (package embedded, the default) implements Redis's string and key
// commands itself, and a remote store passes commands to a Redis-compatible
// server. Callers never need to know which one they hold.
//
// Errors: a command that runs and fails the way Redis fails (a syntax error,
// a wrong type) is a Reply of KindError, as Redis would send it. A Go error
// means the store could not run the command at all (ErrOOM, a dead upstream);
// only the proxy turns those into RESP replies.
package l2store

import (
	"context"
	"errors"
	"time"
)

// ErrOOM is returned by writes that do not fit in the store's memory bound
// under the noeviction policy (or a value larger than the whole store). The
// proxy answers it with Redis's "-OOM command not allowed when used memory >
// 'maxmemory'." error.
var ErrOOM = errors.New("l2store: out of memory")

// ErrUnavailable wraps the errors of a remote store that could not get an
// answer from its upstream: a refused or dropped connection, a timeout.
var ErrUnavailable = errors.New("l2store: upstream unavailable")

// ErrClosed is returned by a store after Close.
var ErrClosed = errors.New("l2store: closed")

// Item is a string value with its absolute expiry.
type Item struct {
	// Value is owned by the caller once returned: the store keeps no
	// reference to it and never modifies it.
	Value []byte
	// Expires is the instant the key expires; the zero Time means never.
	Expires time.Time
}

// Store is the L2 tier.
//
// Implementations are safe for concurrent use. Arguments passed in (keys,
// args) are only read during the call; the store copies what it keeps.
type Store interface {
	// Get returns key's string value and its expiry. A missing or expired
	// key returns found == false and a nil error. A key that holds a
	// non-string value returns found == false and an error whose reply is
	// Redis's WRONGTYPE error (see ReplyError).
	Get(ctx context.Context, key []byte) (item Item, found bool, err error)

	// Do runs one command. args[0] is the command name in any case; the
	// caller has already checked that the command exists and its arity
	// (see Commands). The reply's byte slices are owned by the caller.
	Do(ctx context.Context, args [][]byte) (Reply, error)

	// Commands lists the lower-case names of the commands Do implements,
	// or nil if Do accepts every command (a remote store passes unknown
	// commands through).
	Commands() []string

	// Stats reports the store's counters and memory use.
	Stats() Stats

	// Close releases the store's resources. Calls after Close return
	// ErrClosed.
	Close() error
}

// Conn is a dedicated connection to a remote upstream node, for a client
// whose connection holds state there (a transaction, a subscription, a
// blocking command). A remote store hands them out; the proxy pins a
// client to one.
type Conn interface {
	// Send writes and flushes one command.
	Send(args [][]byte) error
	// Receive reads one reply (or push) and returns its RESP bytes as sent.
	Receive() ([]byte, error)
	// Buffered is how many reply bytes are read but not yet received.
	Buffered() int
	// Do sends a command and receives its reply, following cluster
	// redirections by reconnecting: only for a connection without state.
	Do(args [][]byte) ([]byte, error)
	// SetReadTimeout bounds each Receive: 0 means no bound, a negative
	// duration restores the store's default.
	SetReadTimeout(d time.Duration)
	// Release returns a connection in its initial state for reuse.
	Release()
	// Close closes it; it may be called from any goroutine.
	Close() error
}

// protoKey is the context key of WithProto.
type protoKey struct{}

// WithProto returns ctx carrying the RESP protocol version (2 or 3) of the
// client a command comes from. A remote store passes replies through
// unchanged (KindRaw), so it must ask its upstream in that protocol; the
// embedded store ignores it.
func WithProto(ctx context.Context, proto int) context.Context {
	return context.WithValue(ctx, protoKey{}, proto)
}

// Proto returns the protocol version WithProto put in ctx, or 2.
func Proto(ctx context.Context) int {
	if p, ok := ctx.Value(protoKey{}).(int); ok {
		return p
	}
	return 2
}

// Stats is a snapshot of a store's counters.
type Stats struct {
	Kind        string // "embedded" or "remote"
	Keys        int64  // keys held, including not-yet-reclaimed expired ones
	Expires     int64  // keys with an expiry
	UsedBytes   int64  // memory held by the store, including its indexes
	MaxBytes    int64  // the configured bound, 0 if unbounded
	Policy      string // eviction policy in Redis's spelling, e.g. "allkeys-lru"
	Evictions   uint64 // keys evicted to make room
	Expirations uint64 // keys removed because their TTL passed

	// Remote stores only.
	Upstream string // the upstream's URL without its password
	Mode     string // "standalone", "sentinel" or "cluster"
	Tracking string // how L1 learns of others' writes: "redirect", "off" (the L1 TTL cap), ...
}

// ReplyError is a Go error carrying a Redis error reply, for the places
// (like Get) that return an error rather than a Reply. Its text is the
// reply without the leading '-', e.g. "WRONGTYPE Operation against a key
// holding the wrong kind of value".
type ReplyError string

func (e ReplyError) Error() string { return string(e) }
