package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/sidecache/sidecache/proxy"
)

// securityConfig configures protected mode, the command deny-list and TLS
// on the RESP listener (README "Security").
//
// Protected mode and the deny-list's default depend on other flags
// (--listen, --requirepass, --l2): flags keeps those flags, which are
// defined before it, and validate reads them once parsing is done.
type securityConfig struct {
	ProtectedMode  bool
	DenyCommands   commandList
	AllowCommands  commandList
	TLSCertFile    string
	TLSKeyFile     string
	TLSCACertFile  string
	TLSAuthClients string

	listen, requirePass, l2 *flag.Flag
	tls                     *tls.Config // built by validate
}

// errProtectedMode is validate's refusal to listen on the network with no
// password.
var errProtectedMode = errors.New("protected mode")

func (c *securityConfig) flags(fs *flag.FlagSet) {
	c.listen, c.requirePass, c.l2 = fs.Lookup("listen"), fs.Lookup("requirepass"), fs.Lookup("l2")
	if c.listen == nil || c.requirePass == nil || c.l2 == nil {
		panic("sidecache: security flags defined before --listen, --requirepass and --l2")
	}
	c.ProtectedMode = true
	fs.Var(yesNo{&c.ProtectedMode}, "protected-mode", "yes: refuse to start when --listen is not a loopback address and no --requirepass is set (Redis protected-mode); no: allow it")
	c.DenyCommands = commandList{names: proxy.DefaultDenyCommandNames()}
	fs.Var(&c.DenyCommands, "deny-commands", "commands refused with Redis's -NOPERM error, comma-separated: a name (flushall), command|subcommand (config|set), or a command with subcommands for all of them; \"\" for none. The default, commands that harm a shared upstream (README \"Security\"), applies with a remote --l2 only: the embedded L2 is the pod's own")
	fs.Var(&c.AllowCommands, "allow-commands", "commands to remove from --deny-commands (e.g. flushdb), comma-separated")
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", "", "PEM certificate of the RESP listener, with --tls-key-file: the listener then speaks TLS only (Redis tls-cert-file)")
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", "", "PEM private key of --tls-cert-file")
	fs.StringVar(&c.TLSCACertFile, "tls-ca-cert-file", "", "PEM CAs that sign client certificates (required unless --tls-auth-clients no)")
	fs.StringVar(&c.TLSAuthClients, "tls-auth-clients", "yes", "with TLS, client certificates: yes (required), optional (verified if sent) or no (Redis tls-auth-clients)")
}

func (c *securityConfig) validate() error {
	listen, pass := c.listen.Value.String(), c.requirePass.Value.String()
	if c.ProtectedMode && pass == "" && !isLoopback(listen) {
		return fmt.Errorf("%w: --listen %s is not a loopback address and no --requirepass is set; set --requirepass, or --protected-mode no to serve unauthenticated clients on the network", errProtectedMode, listen)
	}
	if err := proxy.CheckCommandNames(c.DenyCommands.names); err != nil {
		return fmt.Errorf("--deny-commands: %w", err)
	}
	if err := proxy.CheckCommandNames(c.AllowCommands.names); err != nil {
		return fmt.Errorf("--allow-commands: %w", err)
	}
	tc, err := c.tlsConfig()
	if err != nil {
		return err
	}
	c.tls = tc
	return nil
}

// apply sets the proxy's security settings; CONFIG GET reports them
// under Redis's names (and sidecache-deny-commands).
func (c *securityConfig) apply(pc *proxy.Config) error {
	deny := c.deniedCommands()
	pc.DenyCommands, pc.AllowCommands, pc.TLS = deny, c.AllowCommands.names, c.tls
	pc.Settings = append(pc.Settings,
		proxy.Setting{Name: "protected-mode", Value: yesNo{&c.ProtectedMode}.String()},
		proxy.Setting{Name: "sidecache-deny-commands", Value: strings.Join(deny, ",")},
		proxy.Setting{Name: "sidecache-allow-commands", Value: c.AllowCommands.String()},
		proxy.Setting{Name: "tls-cert-file", Value: c.TLSCertFile},
		proxy.Setting{Name: "tls-key-file", Value: c.TLSKeyFile},
		proxy.Setting{Name: "tls-ca-cert-file", Value: c.TLSCACertFile},
		proxy.Setting{Name: "tls-auth-clients", Value: c.TLSAuthClients},
	)
	return nil
}

// deniedCommands is --deny-commands, except that its default applies in
// front of a remote L2 only: the embedded L2 is the pod's own, and the
// only default commands it has, FLUSHALL and FLUSHDB, empty this pod's
// cache and nobody else's.
func (c *securityConfig) deniedCommands() []string {
	if !c.DenyCommands.set && c.l2.Value.String() == "" {
		return nil
	}
	return c.DenyCommands.names
}

// tlsConfig builds the listener's TLS settings from the flags, or nil for
// plain TCP. Key files are read here, so that a bad one stops the start
// like a bad flag; their contents never appear in an error.
func (c *securityConfig) tlsConfig() (*tls.Config, error) {
	var auth tls.ClientAuthType
	switch c.TLSAuthClients {
	case "yes":
		auth = tls.RequireAndVerifyClientCert
	case "optional":
		auth = tls.VerifyClientCertIfGiven
	case "no":
		auth = tls.NoClientCert
	default:
		return nil, fmt.Errorf("--tls-auth-clients %q: want yes, optional or no", c.TLSAuthClients)
	}
	if c.TLSCertFile == "" && c.TLSKeyFile == "" {
		if c.TLSCACertFile != "" {
			return nil, errors.New("--tls-ca-cert-file needs --tls-cert-file and --tls-key-file")
		}
		return nil, nil
	}
	if c.TLSCertFile == "" || c.TLSKeyFile == "" {
		return nil, errors.New("--tls-cert-file and --tls-key-file go together")
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert-file %s, --tls-key-file %s: %v", c.TLSCertFile, c.TLSKeyFile, err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, ClientAuth: auth}
	if c.TLSCACertFile == "" {
		if auth != tls.NoClientCert {
			return nil, fmt.Errorf("--tls-auth-clients %s needs --tls-ca-cert-file (or --tls-auth-clients no)", c.TLSAuthClients)
		}
		return tc, nil
	}
	pem, err := os.ReadFile(c.TLSCACertFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca-cert-file: %v", err)
	}
	tc.ClientCAs = x509.NewCertPool()
	if !tc.ClientCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca-cert-file %s: no PEM certificate in it", c.TLSCACertFile)
	}
	return tc, nil
}

// isLoopback reports whether a listen address accepts loopback
// connections only: its host is "localhost" or a loopback IP. An empty
// host, an unspecified IP, any other IP or name may be reachable from the
// network.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// yesNo is a flag taking Redis's yes or no.
type yesNo struct{ p *bool }

func (v yesNo) String() string {
	if v.p != nil && *v.p {
		return "yes"
	}
	return "no"
}

func (v yesNo) Set(s string) error {
	switch strings.ToLower(s) {
	case "yes":
		*v.p = true
	case "no":
		*v.p = false
	default:
		return fmt.Errorf("%q: want yes or no", s)
	}
	return nil
}

// commandList is a flag of comma-separated command names, lower-cased;
// set records that the flag (or its environment variable) was given.
type commandList struct {
	names []string
	set   bool
}

func (l *commandList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.names, ",")
}

func (l *commandList) Set(s string) error {
	l.names, l.set = nil, true
	for _, n := range strings.Split(s, ",") {
		if n = strings.ToLower(strings.TrimSpace(n)); n != "" {
			l.names = append(l.names, n)
		}
	}
	return nil
}
