package proxy

import "github.com/sidecache/sidecache/l2store/commands"

// pinnedCommand runs args on the client's dedicated upstream connection
// when the command needs one (transactions, subscriptions, blocking
// commands) or the client holds one, and reports whether it did.
func (s *Server) pinnedCommand(c *client, m *commands.Meta, args [][]byte) bool {
	return false
}

// wantsPin reports whether the command must run on a dedicated upstream
// connection (pinnedCommand would take it), so it is not batched with
// others.
func (s *Server) wantsPin(c *client, m *commands.Meta, args [][]byte) bool {
	return false
}
