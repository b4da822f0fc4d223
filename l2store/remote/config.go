package remote

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Mode is the kind of upstream deployment.
type Mode string

// The deployments a URL can name.
const (
	Standalone Mode = "standalone" // redis:// or rediss://
	Sentinel   Mode = "sentinel"   // redis+sentinel:// or rediss+sentinel://
	Cluster    Mode = "cluster"    // redis+cluster:// or rediss+cluster://
)

// Config configures a Store. Zero fields take the defaults in their
// comments.
type Config struct {
	// URL names the upstream:
	//
	//	redis://[user:password@]host:port[/db]           one server (Redis, Valkey, Dragonfly)
	//	rediss://...                                      the same over TLS
	//	redis+sentinel://[user:password@]host:port[,host:port...]/master[/db]
	//	                                                  Sentinel: sentinel addresses, master name
	//	redis+cluster://[user:password@]host:port[,host:port...]
	//	                                                  Redis Cluster: seed nodes
	//
	// rediss+sentinel:// and rediss+cluster:// use TLS to the data nodes.
	URL string
	// DialTimeout bounds connecting to a node. Default 5s.
	DialTimeout time.Duration
	// ReadTimeout and WriteTimeout bound one command's round trip (not
	// blocking commands, which wait as long as they ask). Default 3s.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// PoolSize is the most pooled connections per node and protocol.
	// Default 10 per CPU.
	PoolSize int
	// TLS configures TLS when the scheme asks for it; nil means the
	// system's roots and the host name of the URL.
	TLS *tls.Config
	// Tracking chooses how L1 learns of writes it did not see; see
	// TrackingMode. Default TrackingAuto.
	Tracking TrackingMode
	// Logger receives connection events. Default: none.
	Logger *zap.Logger
}

// TrackingMode selects server-assisted invalidation (CLIENT TRACKING).
type TrackingMode string

// The tracking modes.
const (
	// TrackingAuto uses TrackingRedirect and, where the upstream refuses
	// REDIRECT, TrackingOff.
	TrackingAuto TrackingMode = "auto"
	// TrackingRedirect enables tracking on the connections that fill L1,
	// redirecting invalidations to one connection per node subscribed to
	// __redis__:invalidate (Redis 6+, Valkey).
	TrackingRedirect TrackingMode = "redirect"
	// TrackingPush enables tracking on connections of the read path's own,
	// speaking RESP3, which receive the invalidations as push messages
	// (Dragonfly, which refuses REDIRECT; also Redis 6+ and Valkey); see
	// push.go.
	TrackingPush TrackingMode = "push"
	// TrackingOff relies on the L1 TTL alone.
	TrackingOff TrackingMode = "off"
)

// Defaults of Config's zero fields.
const (
	DefaultDialTimeout  = 5 * time.Second
	DefaultReadTimeout  = 3 * time.Second
	DefaultWriteTimeout = 3 * time.Second
)

// ErrConfig is wrapped by the errors New returns for an unusable Config.
var ErrConfig = errors.New("remote: invalid config")

// target is a parsed URL: the deployment and go-redis's options for it.
type target struct {
	mode     Mode
	tls      bool
	addrs    []string // seeds: the server, the sentinels or the cluster nodes
	master   string   // Sentinel's master name
	db       int
	username string
	password string
}

// parseURL parses Config.URL.
func parseURL(raw string) (*target, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, fmt.Errorf("%w: --l2 %q: want a URL such as redis://host:6379/0", ErrConfig, raw)
	}
	t := &target{}
	switch strings.ToLower(scheme) {
	case "redis":
		t.mode = Standalone
	case "rediss":
		t.mode, t.tls = Standalone, true
	case "redis+sentinel":
		t.mode = Sentinel
	case "rediss+sentinel":
		t.mode, t.tls = Sentinel, true
	case "redis+cluster":
		t.mode = Cluster
	case "rediss+cluster":
		t.mode, t.tls = Cluster, true
	default:
		return nil, fmt.Errorf("%w: --l2 %q: unknown scheme %q (want redis, rediss, redis+sentinel, redis+cluster)", ErrConfig, raw, scheme)
	}
	// The host part may list several addresses, which net/url refuses:
	// parse it on its own.
	hostPart, path, _ := strings.Cut(rest, "/")
	if i := strings.LastIndexByte(hostPart, '@'); i >= 0 {
		ui, err := url.Parse("x://" + hostPart[:i+1] + "h")
		if err != nil {
			return nil, fmt.Errorf("%w: --l2: bad user or password: %v", ErrConfig, redactErr(err))
		}
		t.username = ui.User.Username()
		t.password, _ = ui.User.Password()
		hostPart = hostPart[i+1:]
	}
	if q := strings.IndexByte(path, '?'); q >= 0 {
		return nil, fmt.Errorf("%w: --l2 %q: query parameters are not supported; use the --l2-* flags", ErrConfig, redactURL(raw))
	}
	for _, a := range strings.Split(hostPart, ",") {
		if a == "" {
			continue
		}
		if !strings.Contains(a, ":") {
			a += ":6379"
			if t.mode == Sentinel {
				a = strings.TrimSuffix(a, ":6379") + ":26379"
			}
		}
		t.addrs = append(t.addrs, a)
	}
	if len(t.addrs) == 0 {
		return nil, fmt.Errorf("%w: --l2 %q: no host", ErrConfig, redactURL(raw))
	}
	if t.mode == Standalone && len(t.addrs) > 1 {
		return nil, fmt.Errorf("%w: --l2 %q: several hosts need redis+cluster:// or redis+sentinel://", ErrConfig, redactURL(raw))
	}
	segs := strings.Split(strings.Trim(path, "/"), "/")
	if t.mode == Sentinel {
		if segs[0] == "" {
			return nil, fmt.Errorf("%w: --l2 %q: Sentinel needs the master name: redis+sentinel://host:26379/mymaster", ErrConfig, redactURL(raw))
		}
		t.master, segs = segs[0], segs[1:]
	}
	if len(segs) > 0 && segs[0] != "" {
		if t.mode == Cluster {
			return nil, fmt.Errorf("%w: --l2 %q: Redis Cluster has only database 0", ErrConfig, redactURL(raw))
		}
		if len(segs) > 1 {
			return nil, fmt.Errorf("%w: --l2 %q: unexpected path", ErrConfig, redactURL(raw))
		}
		if _, err := fmt.Sscanf(segs[0], "%d", &t.db); err != nil || t.db < 0 || fmt.Sprint(t.db) != segs[0] {
			return nil, fmt.Errorf("%w: --l2 %q: database %q is not a number", ErrConfig, redactURL(raw), segs[0])
		}
	}
	return t, nil
}

// redactURL hides the password of a URL, for messages and logs.
func redactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	hostPart, path, hasPath := strings.Cut(rest, "/")
	if i := strings.LastIndexByte(hostPart, '@'); i >= 0 {
		user, _, hasPass := strings.Cut(hostPart[:i], ":")
		if hasPass {
			user += ":xxxxx"
		}
		hostPart = user + "@" + hostPart[i+1:]
	}
	if hasPath {
		hostPart += "/" + path
	}
	return scheme + "://" + hostPart
}

// redactErr drops net/url's quoting of the input, which may hold a password.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Redacted returns the URL with its password hidden, for logs.
func (c Config) Redacted() string { return redactURL(c.URL) }

func (c *Config) setDefaults() (*target, error) {
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Tracking == "" {
		c.Tracking = TrackingAuto
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	switch {
	case c.DialTimeout < 0 || c.ReadTimeout < 0 || c.WriteTimeout < 0:
		return nil, fmt.Errorf("%w: timeouts must not be negative", ErrConfig)
	case c.PoolSize < 0:
		return nil, fmt.Errorf("%w: pool size %d is negative", ErrConfig, c.PoolSize)
	case c.Tracking != TrackingAuto && c.Tracking != TrackingRedirect && c.Tracking != TrackingPush && c.Tracking != TrackingOff:
		return nil, fmt.Errorf("%w: tracking %q: want auto, redirect, push or off", ErrConfig, c.Tracking)
	}
	return parseURL(c.URL)
}

// tlsConfig returns the TLS configuration for a node, or nil without TLS.
func (c *Config) tlsConfig(t *target) *tls.Config {
	if !t.tls {
		return nil
	}
	if c.TLS != nil {
		return c.TLS.Clone()
	}
	return &tls.Config{MinVersion: tls.VersionTLS12}
}

// clientOptions returns go-redis's options for the target's clients
// speaking proto: UniversalOptions, from which Simple, Failover and
// Cluster derive each deployment's own.
func (c *Config) clientOptions(t *target, proto int) *redis.UniversalOptions {
	return &redis.UniversalOptions{
		Addrs:           t.addrs,
		MasterName:      t.master,
		Protocol:        proto,
		Username:        t.username,
		Password:        t.password,
		DB:              t.db,
		DialTimeout:     c.DialTimeout,
		ReadTimeout:     c.ReadTimeout,
		WriteTimeout:    c.WriteTimeout,
		PoolSize:        c.PoolSize,
		TLSConfig:       c.tlsConfig(t),
		MaxRetries:      -1, // the application retries; we must not multiply its load
		DisableIdentity: true,
	}
}
