package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/sidecache/sidecache/l1"
	"github.com/sidecache/sidecache/l2store"
	"github.com/sidecache/sidecache/l2store/embedded"
	"github.com/sidecache/sidecache/l2store/embedded/kv"
	"github.com/sidecache/sidecache/proxy"
)

// startServer runs a proxy over an embedded store and an L1, as
// cmd/sidecache wires them, on a loopback port. It returns the address.
func startServer(tb testing.TB, cfg proxy.Config) string {
	tb.Helper()
	store, err := embedded.New(embedded.Config{KV: kv.Config{MaxBytes: 8 << 20}})
	if err != nil {
		tb.Fatal(err)
	}
	cache, err := l1.New(l1.GetterFunc(func(ctx context.Context, key []byte, _ bool) (l1.Item, bool, error) {
		item, ok, err := store.Get(ctx, key)
		return l1.Item{Value: item.Value, Expires: item.Expires}, ok, err
	}), l1.Config{MaxBytes: 1 << 20})
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Addr = "127.0.0.1:0"
	srv, err := proxy.New(cache, store, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := srv.Listen()
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, proxy.ErrServerClosed) {
			tb.Errorf("Serve returned %v", err)
		}
		store.Close()
	})
	return ln.Addr().String()
}

// FuzzRequest sends arbitrary bytes to a running server and checks that
// everything it answers is well-formed RESP and that it keeps serving.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		"PING\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
		"SET k 10\r\nINCRBYFLOAT k 1.5e3\r\nGETRANGE k 0 -1\r\nAPPEND k \"\\x00\"\r\nMGET k k nope\r\n",
		"SET k v EX 100 NX GET\r\nEXPIRE k 10 GT\r\nTTL k\r\nPERSIST k\r\nGETEX k PXAT 1\r\nGET k\r\n",
		"HELLO 3\r\nGET nope\r\nCLIENT INFO\r\nINFO\r\nCONFIG GET *\r\nCOMMAND DOCS get\r\n",
		"HELLO 3 SETNAME x AUTH default p\r\nCLIENT SETINFO lib-name a\r\nCLIENT LIST\r\nRESET\r\n",
		"MSET a 1 b 2\r\nMSETNX a 1 c 3\r\nRENAME a z\r\nSETRANGE z 5 x\r\nDEL z b c\r\nFLUSHALL\r\n",
		"*1\r\n$4\r\nPINGxx*0\r\n*x\r\n",
		"NOSUCH a b\r\nCLIENT NOSUCH\r\nGET\r\nSELECT 1\r\nQUIT\r\n",
	} {
		f.Add([]byte(s))
	}
	addr := startServer(f, proxy.Config{ProtoMaxBulkLen: 1 << 20})
	f.Fuzz(func(t *testing.T, in []byte) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		go func() {
			conn.Write(in)
			conn.(*net.TCPConn).CloseWrite()
		}()
		r := bufio.NewReader(conn)
		for {
			_, err := l2store.ReadReply(r, 1<<30)
			if errors.Is(err, io.EOF) || isClosedByPeer(err) {
				break
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("no end of replies to %q within the deadline", in)
			}
			if err != nil {
				t.Fatalf("malformed reply to %q: %v", in, err)
			}
		}
		ping(t, addr)
	})
}

// isClosedByPeer reports a connection the server reset, as it does when it
// closes with unread input (after QUIT or a protocol error).
func isClosedByPeer(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// ping checks that the server answers a new connection.
func ping(t testing.TB, addr string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("server no longer accepts connections: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	reply, err := l2store.ReadReply(bufio.NewReader(conn), 1<<20)
	if err != nil || string(reply.Str) != "PONG" {
		t.Fatalf("PING: %v %v", reply, err)
	}
}
