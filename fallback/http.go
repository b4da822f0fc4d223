package fallback

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// HTTPConfig configures an HTTPOrigin. The zero value of every field but
// URL selects its default.
type HTTPConfig struct {
	// URL is the template of a key's URL: an absolute http or https URL
	// containing {key} in its path or query (--origin-url), e.g.
	// "http://db-api:8080/items/{key}". The key replaces {key} escaped
	// with url.PathEscape in the path and url.QueryEscape in the query, so
	// any bytes round-trip.
	URL string

	// Client sends the requests. Default: an http.Client with Timeout.
	Client *http.Client

	// Timeout bounds one load, from sending the request to reading the
	// body (--origin-timeout). Default 1s.
	Timeout time.Duration

	// MaxBytes is the largest body accepted (--origin-max-bytes); a larger
	// one is an error, and at most MaxBytes+1 bytes of it are read.
	// Default 8 MiB.
	MaxBytes int64

	// DefaultTTL is the lifetime of a value whose response has no
	// Cache-Control max-age. 0: no expiry.
	DefaultTTL time.Duration

	// Now returns the current time, to turn max-age into an expiry.
	// Default time.Now.
	Now func() time.Time
}

// Defaults of HTTPConfig's zero fields.
const (
	DefaultHTTPTimeout  = time.Second
	DefaultHTTPMaxBytes = 8 << 20
)

// keyPlaceholder is what URL templates mark the key with.
const keyPlaceholder = "{key}"

// HTTPOrigin is an Origin that GETs a key's value from an HTTP server. It is
// safe for concurrent use.
//
// A 200 response's body is the value, and its Cache-Control header its
// lifetime: s-maxage, else max-age, less the Age header; no-store,
// no-cache, a zero or invalid max-age make a value that is returned but
// not kept (Expires = now); none of these, DefaultTTL. A 404 is a miss.
// Any other status, a transport error, a timeout or a body over MaxBytes is
// an error wrapping ErrOrigin.
type HTTPOrigin struct {
	parts      []string // the template split at {key}
	query      []bool   // query[i]: the key after parts[i] is in the query
	client     *http.Client
	timeout    time.Duration
	maxBytes   int64
	defaultTTL time.Duration
	now        func() time.Time
}

// NewHTTPOrigin returns an HTTPOrigin, or an error wrapping
// ErrInvalidConfig if cfg.URL is not an absolute http(s) URL with {key} in
// its path or query.
func NewHTTPOrigin(cfg HTTPConfig) (*HTTPOrigin, error) {
	switch {
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("%w: negative origin Timeout %v", ErrInvalidConfig, cfg.Timeout)
	case cfg.MaxBytes < 0:
		return nil, fmt.Errorf("%w: negative origin MaxBytes %d", ErrInvalidConfig, cfg.MaxBytes)
	case cfg.DefaultTTL < 0:
		return nil, fmt.Errorf("%w: negative origin DefaultTTL %v", ErrInvalidConfig, cfg.DefaultTTL)
	}
	parts := strings.Split(cfg.URL, keyPlaceholder)
	if len(parts) < 2 {
		return nil, fmt.Errorf("%w: origin URL %q has no %s", ErrInvalidConfig, cfg.URL, keyPlaceholder)
	}
	const probe = "sidecache-key"
	u, err := url.Parse(strings.ReplaceAll(cfg.URL, keyPlaceholder, probe))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: origin URL %q: %w", ErrInvalidConfig, cfg.URL, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%w: origin URL %q: scheme must be http or https", ErrInvalidConfig, cfg.URL)
	case u.Host == "":
		return nil, fmt.Errorf("%w: origin URL %q has no host", ErrInvalidConfig, cfg.URL)
	case strings.Contains(u.Host, probe) || strings.Contains(u.User.String(), probe) || strings.Contains(u.Fragment, probe):
		return nil, fmt.Errorf("%w: origin URL %q: %s must be in the path or query", ErrInvalidConfig, cfg.URL, keyPlaceholder)
	}
	o := &HTTPOrigin{
		parts:      parts,
		query:      make([]bool, len(parts)-1),
		client:     cfg.Client,
		timeout:    cfg.Timeout,
		maxBytes:   cfg.MaxBytes,
		defaultTTL: cfg.DefaultTTL,
		now:        cfg.Now,
	}
	inQuery := false
	for i := range o.query {
		inQuery = inQuery || strings.Contains(parts[i], "?")
		o.query[i] = inQuery
	}
	if o.timeout == 0 {
		o.timeout = DefaultHTTPTimeout
	}
	if o.maxBytes == 0 {
		o.maxBytes = DefaultHTTPMaxBytes
	}
	if o.client == nil {
		o.client = &http.Client{Timeout: o.timeout}
	}
	if o.now == nil {
		o.now = time.Now
	}
	return o, nil
}

// URL returns the URL key is loaded from.
func (o *HTTPOrigin) URL(key []byte) string {
	var b strings.Builder
	for i, p := range o.parts {
		b.WriteString(p)
		if i < len(o.query) {
			if o.query[i] {
				b.WriteString(url.QueryEscape(string(key)))
			} else {
				b.WriteString(url.PathEscape(string(key)))
			}
		}
	}
	return b.String()
}

// Load GETs key's URL. See HTTPOrigin for how the response is read.
func (o *HTTPOrigin) Load(ctx context.Context, key []byte) (Item, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.URL(key), nil)
	if err != nil {
		return Item{}, false, fmt.Errorf("%w: %w", ErrOrigin, err)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return Item{}, false, fmt.Errorf("%w: %w", ErrOrigin, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		drain(resp.Body)
		return Item{}, false, nil
	default:
		drain(resp.Body)
		return Item{}, false, fmt.Errorf("%w: %s: status %s", ErrOrigin, req.URL.Redacted(), resp.Status)
	}
	if resp.ContentLength > o.maxBytes {
		return Item{}, false, fmt.Errorf("%w: %s: body of %d bytes is over the limit of %d", ErrOrigin, req.URL.Redacted(), resp.ContentLength, o.maxBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, o.maxBytes+1))
	if err != nil {
		return Item{}, false, fmt.Errorf("%w: %s: reading body: %w", ErrOrigin, req.URL.Redacted(), err)
	}
	if int64(len(body)) > o.maxBytes {
		return Item{}, false, fmt.Errorf("%w: %s: body over the limit of %d bytes", ErrOrigin, req.URL.Redacted(), o.maxBytes)
	}
	return Item{Value: body, Expires: o.expires(resp.Header), Origin: true}, true, nil
}

// drain reads a little of an unwanted body so that its connection can be
// reused.
func drain(r io.Reader) { _, _ = io.CopyN(io.Discard, r, 4<<10) }

// maxAgeCap is the largest max-age honoured, as RFC 9111 section 1.2.2
// asks: 2^31 seconds.
const maxAgeCap = math.MaxInt32 + 1

// expires returns the expiry of a 200 response with header h: now for a
// value not to be kept, the zero Time for none.
func (o *HTTPOrigin) expires(h http.Header) time.Time {
	now := o.now()
	var maxAge, sMaxAge string
	var haveMaxAge, haveSMaxAge bool
	for _, line := range h.Values("Cache-Control") {
		for _, d := range strings.Split(line, ",") {
			name, value, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store", "no-cache":
				return now
			case "max-age":
				if !haveMaxAge {
					maxAge, haveMaxAge = value, true
				}
			case "s-maxage":
				if !haveSMaxAge {
					sMaxAge, haveSMaxAge = value, true
				}
			}
		}
	}
	if haveSMaxAge {
		maxAge, haveMaxAge = sMaxAge, true
	}
	if !haveMaxAge {
		if o.defaultTTL > 0 {
			return now.Add(o.defaultTTL)
		}
		return time.Time{}
	}
	secs, ok := deltaSeconds(maxAge)
	if !ok {
		return now // invalid freshness information: treat as stale
	}
	if age, ok := deltaSeconds(h.Get("Age")); ok {
		secs -= age
	}
	if secs <= 0 {
		return now
	}
	return now.Add(time.Duration(secs) * time.Second)
}

// deltaSeconds parses an RFC 9111 delta-seconds value (quotes tolerated),
// capped at maxAgeCap.
func deltaSeconds(s string) (int64, bool) {
	s = strings.Trim(strings.TrimSpace(s), `"`)
	if s == "" {
		return 0, false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > maxAgeCap {
		return maxAgeCap, true // only overflow gets here: all digits
	}
	return n, true
}
