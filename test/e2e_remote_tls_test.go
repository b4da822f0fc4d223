package test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its
// key to dir as PEM files.
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sidecache e2e"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestRemoteTLS runs sidecache against a rediss:// upstream configured
// with the --l2-tls-* flags: pass-through, the read path and tracking all
// speak TLS, and a certificate that is not trusted stops sidecache at
// start.
func TestRemoteTLS(t *testing.T) {
	cert, key := writeSelfSigned(t, t.TempDir())
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
