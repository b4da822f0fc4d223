package test

import (
	"bytes"
	"testing"

	"github.com/sidecache/sidecache/l2store"
)

// TestE2EHelloHandshake replays, on raw connections, the handshakes client
// libraries make: a client that sends HELLO 3 (falling back to RESP2 only
// on "unknown command 'HELLO'") must get the RESP3 map and then RESP3
// replies; go-redis v9 pipelines HELLO 3 with two CLIENT SETINFO (a Redis
// 7.2 command, which sidecache accepts).
func TestE2EHelloHandshake(t *testing.T) {
	sc := StartSidecache(t)

	t.Run("HELLO 3", func(t *testing.T) {
		c := sc.Dial(t)
		r := parseReply(t, do(t, c, "HELLO", "3"))
		if r.Kind != l2store.KindMap {
			t.Fatalf("HELLO 3 = %v, want a RESP3 map", r)
		}
		fields := map[string]l2store.Reply{}
		for i := 0; i+1 < len(r.Elems); i += 2 {
			fields[string(r.Elems[i].Str)] = r.Elems[i+1]
		}
		checks := []struct {
			name string
			ok   bool
		}{
			{"server", string(fields["server"].Str) == "redis"},
			{"version", string(fields["version"].Str) == "7.0.15"},
			{"proto", fields["proto"].Kind == l2store.KindInt && fields["proto"].Int == 3},
			{"id", fields["id"].Kind == l2store.KindInt && fields["id"].Int > 0},
			{"mode", string(fields["mode"].Str) == "standalone"},
			{"role", string(fields["role"].Str) == "master"},
			{"modules", fields["modules"].Kind == l2store.KindArray && len(fields["modules"].Elems) == 0},
		}
		for _, ch := range checks {
			if !ch.ok {
				t.Errorf("HELLO 3: field %s = %v", ch.name, fields[ch.name])
			}
		}
		if len(r.Elems) != 14 {
			t.Errorf("HELLO 3 has %d fields, want 7", len(r.Elems)/2)
		}
		id := mustInt(t, c, "CLIENT", "ID")
		if id != fields["id"].Int {
			t.Errorf("CLIENT ID = %d, HELLO said %d", id, fields["id"].Int)
		}
		// RESP3 replies from then on.
		expect(t, c, "_\r\n", "GET", "missing")
		expect(t, c, "+OK\r\n", "SET", "k", "v")
		expect(t, c, "$1\r\nv\r\n", "GET", "k")
		expect(t, c, "$1\r\nv\r\n", "GET", "k") // from L1
		expect(t, c, "*2\r\n$1\r\nv\r\n_\r\n", "MGET", "k", "missing")
		expect(t, c, "_\r\n", "CLIENT", "GETNAME")
		// RESP2 again.
		if r := parseReply(t, do(t, c, "HELLO", "2")); r.Kind != l2store.KindArray || len(r.Elems) != 14 {
			t.Errorf("HELLO 2 = %v, want a flat array of 14", r)
		}
		expect(t, c, "$-1\r\n", "GET", "missing")
		expect(t, c, "*2\r\n$1\r\nv\r\n$-1\r\n", "MGET", "k", "missing")
	})

	t.Run("go-redis handshake", func(t *testing.T) {
		c := sc.Dial(t)
		for _, args := range [][]string{
			{"HELLO", "3"},
			{"CLIENT", "SETINFO", "LIB-NAME", "go-redis(,go1.26)"},
			{"CLIENT", "SETINFO", "LIB-VER", "9.23.0"},
			{"PING"},
		} {
			b := make([][]byte, len(args))
			for i, a := range args {
				b[i] = []byte(a)
			}
			if err := c.Send(b...); err != nil {
				t.Fatal(err)
			}
		}
		first, err := c.Receive()
		if err != nil || parseReply(t, first).Kind != l2store.KindMap {
			t.Fatalf("HELLO 3 = %q, %v", first, err)
		}
		for _, want := range []string{"+OK\r\n", "+OK\r\n", "+PONG\r\n"} {
			if got, err := c.Receive(); err != nil || string(got) != want {
				t.Errorf("reply %q, %v; want %q", got, err, want)
			}
		}
		info := parseReply(t, do(t, c, "CLIENT", "INFO"))
		for _, want := range []string{"lib-name=go-redis(,go1.26)", "lib-ver=9.23.0", "resp=3"} {
			if !bytes.Contains(info.Str, []byte(want)) {
				t.Errorf("CLIENT INFO = %q, want %s", info.Str, want)
			}
		}
	})
}
