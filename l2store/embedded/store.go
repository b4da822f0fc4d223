package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/commands"
	"github.com/sidecache/sidecache/l2store/embedded/kv"
)

// DefaultProtoMaxBulkLen is Redis's default proto-max-bulk-len: 512 MiB.
const DefaultProtoMaxBulkLen = 512 << 20

// Config configures a Store. The zero value is usable.
type Config struct {
	// KV configures the memory: its bound, eviction policy, shards, clock
	// and active-expiry interval. See kv.Config for the defaults (256 MiB,
	// allkeys-lru, time.Now, 100ms).
	KV kv.Config
	// ProtoMaxBulkLen is the largest string APPEND and SETRANGE may build,
	// as Redis's proto-max-bulk-len. Default DefaultProtoMaxBulkLen.
	ProtoMaxBulkLen int64
}

// ErrConfig is wrapped by the errors New returns for an invalid Config.
var ErrConfig = errors.New("embedded: invalid config")

// Store is the embedded L2: Redis's string and key commands over a kv.DB.
// It is safe for concurrent use.
type Store struct {
	db       *kv.DB
	maxBulk  int64
	maxBytes int64
	policy   string
	closed   atomic.Bool
}

var _ l2store.Store = (*Store)(nil)

// New returns a Store configured by cfg.
func New(cfg Config) (*Store, error) {
	if cfg.ProtoMaxBulkLen == 0 {
		cfg.ProtoMaxBulkLen = DefaultProtoMaxBulkLen
	}
	if cfg.ProtoMaxBulkLen < 0 {
		return nil, fmt.Errorf("%w: ProtoMaxBulkLen %d is negative", ErrConfig, cfg.ProtoMaxBulkLen)
	}
	db, err := kv.New(cfg.KV)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return &Store{
		db:       db,
		maxBulk:  cfg.ProtoMaxBulkLen,
		maxBytes: db.Stats().MaxBytes,
		policy:   cfg.KV.Policy.String(),
	}, nil
}

// Get returns a copy of key's value and its expiry, and marks the key as
// recently used. A missing or expired key returns found == false.
func (s *Store) Get(ctx context.Context, key []byte) (l2store.Item, bool, error) {
	if err := s.check(ctx); err != nil {
		return l2store.Item{}, false, err
	}
	tx := s.db.Begin([][]byte{key})
	defer tx.End()
	val, exp, ok := tx.Get(key)
	if !ok {
		return l2store.Item{}, false, nil
	}
	item := l2store.Item{Value: bytes.Clone(val)}
	if exp != 0 {
		item.Expires = time.UnixMilli(exp)
	}
	return item, true, nil
}

// Do runs one command (args[0] is its name, in any case) and returns its
// reply as Redis 7.0.15 would. Redis errors (syntax, bad integer, wrong
// arity, unknown command) are error replies; the Go error is non-nil only
// when the command could not run: a write that does not fit in memory
// returns an error wrapping l2store.ErrOOM and changes nothing. The reply
// never aliases the store's memory.
func (s *Store) Do(ctx context.Context, args [][]byte) (l2store.Reply, error) {
	if err := s.check(ctx); err != nil {
		return l2store.Reply{}, err
	}
	c, errReply := commands.Check(args, implemented)
	if c == nil {
		return errReply, nil
	}
	r, err := handlers[c.Name](s, c, args)
	if errors.Is(err, kv.ErrOOM) {
		return l2store.Reply{}, fmt.Errorf("embedded: %s: %w", c.Name, l2store.ErrOOM)
	}
	if err != nil {
		return l2store.Reply{}, fmt.Errorf("embedded: %s: %w", c.Name, err)
	}
	return r, nil
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return l2store.ErrClosed
	}
	return ctx.Err()
}

// Commands returns the lower-case names of the commands Do implements.
func (s *Store) Commands() []string {
	names := make([]string, 0, len(handlers))
	for name := range handlers {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Stats reports the memory's counters.
func (s *Store) Stats() l2store.Stats {
	st := s.db.Stats()
	return l2store.Stats{
		Kind:        "embedded",
		Keys:        st.Keys,
		Expires:     st.Expires,
		UsedBytes:   st.UsedBytes,
		MaxBytes:    st.MaxBytes,
		Policy:      s.policy,
		Evictions:   st.Evictions,
		Expirations: st.Expirations,
	}
}

// Close stops the store's background expiry. Calls that start after Close
// return l2store.ErrClosed; callers must not have calls in flight when they
// call Close.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return l2store.ErrClosed
	}
	s.db.Close()
	return nil
}

// command is a command's entry in Redis's table: its name and arity.
type command = commands.Meta

// handler runs one command whose arity has been checked.
type handler func(s *Store, c *command, args [][]byte) (l2store.Reply, error)

// implemented reports whether Do runs the command with this full name.
func implemented(fullname string) bool { return handlers[fullname] != nil }
