package remote

import (
	"context"
	"strings"
	"sync"

	"github.com/sidecache/sidecache/l2store/commands"
)

// metaCache remembers what the upstream's COMMAND INFO said of commands
// missing from sidecache's table (a module's, a newer Redis's).
type metaCache struct {
	mu    sync.Mutex
	metas map[string]*commands.Meta // nil value: COMMAND INFO's entry could not be read
}

// maxMetas bounds metaCache: command names come from clients.
const maxMetas = 1024

// CommandMeta returns what the upstream's COMMAND INFO says of the command
// args invoke, for a command missing from sidecache's table (a Meta with
// Arity 0 and no flags if the upstream does not know it either), or nil
// when the upstream cannot be asked or its answer cannot be read. The proxy uses it to
// find the keys a write modifies.
func (s *Store) CommandMeta(ctx context.Context, args [][]byte) *commands.Meta {
	if len(args) == 0 {
		return nil
	}
	name := strings.ToLower(string(args[0]))
	s.metas.mu.Lock()
	m, ok := s.metas.metas[name]
	s.metas.mu.Unlock()
	if ok {
		return m
	}
	res, err := s.pass[0].Do(ctx, "command", "info", name).Slice()
	if err != nil {
		return nil // not cached: ask again next time
	}
	switch {
	case len(res) == 1 && res[0] == nil:
		// The upstream does not know it either: it answers an error and
		// writes nothing.
		m = commands.FromRange(name, 0, 0, 0, 0, 0)
	case len(res) == 1:
		m = parseCommandInfo(name, res[0])
	}
	s.metas.mu.Lock()
	if s.metas.metas == nil || len(s.metas.metas) >= maxMetas {
		s.metas.metas = make(map[string]*commands.Meta)
	}
	s.metas.metas[name] = m
	s.metas.mu.Unlock()
	return m
}

// parseCommandInfo reads one COMMAND INFO entry: name, arity, flags,
// first key, last key, step, ...
func parseCommandInfo(name string, v any) *commands.Meta {
	e, ok := v.([]any)
	if !ok || len(e) < 6 {
		return nil
	}
	arity, _ := e[1].(int64)
	var flagNames []string
	if fs, ok := e[2].([]any); ok {
		for _, f := range fs {
			if s, ok := f.(string); ok {
				flagNames = append(flagNames, s)
			}
		}
	}
	first, _ := e[3].(int64)
	last, _ := e[4].(int64)
	step, _ := e[5].(int64)
	return commands.FromRange(name, int(arity), commands.ParseFlags(flagNames), int(first), int(last), int(step))
}
