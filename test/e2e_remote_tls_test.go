package test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sidecache/sidecache/internal/testcert"
)

// TestRemoteTLS runs sidecache against a rediss:// upstream configured
// with the --l2-tls-* flags: pass-through, the read path and tracking all
// speak TLS, and a certificate that is not trusted stops sidecache at
// start.
func TestRemoteTLS(t *testing.T) {
	cert, key, _ := testcert.Write(t, t.TempDir())
	tlsPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	// The plain port stays open for the test's own checks.
	r := StartRedisServer(t, "--tls-port", strconv.Itoa(tlsPort),
		"--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert, "--tls-auth-clients", "no")
	url := "rediss://127.0.0.1:" + strconv.Itoa(tlsPort) + "/0"

	sc := StartSidecache(t, "--l2", url, "--l2-tls-ca-cert", cert, "--l1-ttl", "1h")
	c, direct := sc.Dial(t), r.Dial(t)
	expect(t, c, "+OK\r\n", "SET", "k", "over tls")
	expect(t, c, bulkReply("over tls"), "GET", "k")
	expect(t, c, ":1\r\n", "HSET", "h", "f", "v")
	if v, err := redisCallString(r.Addr, "GET", "k"); err != nil || v != "over tls" {
		t.Errorf("GET on the upstream: %q, %v", v, err)
	}
	if got := infoFields(t, c, "sidecache")["l2_tracking"]; got != "redirect" {
		t.Errorf("l2_tracking = %q, want redirect", got)
	}
	expect(t, direct, "+OK\r\n", "SET", "k", "changed")
	eventually(t, c, 5*time.Second, bulkReply("changed"), "GET", "k")
	// Only TLS connections reached the upstream from sidecache: the
	// plain port serves this test's own connection alone.
	clients := string(parseReply(t, do(t, direct, "CLIENT", "LIST")).Str)
	if n := strings.Count(clients, "laddr=127.0.0.1:"+strconv.Itoa(tlsPort)); n < 2 {
		t.Errorf("CLIENT LIST shows %d TLS connections, want the tracker and a fill connection:\n%s", n, clients)
	}

	t.Run("untrusted certificate", func(t *testing.T) {
		_, stderr, code := RunSidecache(t, nil, 20*time.Second, "--listen", "127.0.0.1:0", "--l2", url, "--l2-dial-timeout", "2s")
		if code != 1 || !strings.Contains(stderr, "certificate") {
			t.Errorf("exit %d, stderr %q: want 1 and a certificate error", code, stderr)
		}
	})
	t.Run("insecure skip verify", func(t *testing.T) {
		sc := StartSidecache(t, "--l2", url, "--l2-tls-insecure-skip-verify")
		expect(t, sc.Dial(t), bulkReply("changed"), "GET", "k")
	})
	t.Run("bad CA file", func(t *testing.T) {
		_, stderr, code := RunSidecache(t, nil, 20*time.Second, "--listen", "127.0.0.1:0", "--l2", url, "--l2-tls-ca-cert", key)
		if code != 2 || !strings.Contains(stderr, "--l2-tls-ca-cert") {
			t.Errorf("exit %d, stderr %q: want 2 and an error naming --l2-tls-ca-cert", code, stderr)
		}
	})
}
