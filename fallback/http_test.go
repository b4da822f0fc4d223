package fallback

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const testMaxBytes = 1024

// originServer serves /items/{key} (and /get?k={key}): a few keys have fixed
// behaviours, any other key is echoed back as its value, so a value equal
// to its key shows the key round-tripped.
func originServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var key string
		var err error
		if r.URL.Path == "/get" {
			key = r.URL.Query().Get("k")
		} else {
			key, err = url.PathUnescape(strings.TrimPrefix(r.URL.EscapedPath(), "/items/"))
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h := w.Header()
		switch key {
		case "max-age":
			h.Set("Cache-Control", "public, max-age=60")
		case "age":
			h.Set("Cache-Control", "max-age=60")
			h.Set("Age", "10")
		case "aged-out":
			h.Set("Cache-Control", "max-age=60")
			h.Set("Age", "61")
		case "s-maxage":
			h.Set("Cache-Control", "max-age=60, s-maxage=5")
		case "quoted":
			h.Set("Cache-Control", `max-age="30"`)
		case "huge-max-age":
			h.Set("Cache-Control", "max-age=99999999999999999999999")
		case "no-store":
			h.Set("Cache-Control", "max-age=60, no-store")
		case "no-cache":
			h.Add("Cache-Control", "max-age=60")
			h.Add("Cache-Control", "No-Cache")
		case "max-age-0":
			h.Set("Cache-Control", "max-age=0")
		case "bad-max-age":
			h.Set("Cache-Control", "max-age=soon")
		case "missing":
			http.NotFound(w, r)
			return
		case "broken":
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		case "moved":
			http.Redirect(w, r, "/items/max-age", http.StatusMovedPermanently)
			return
		case "exact":
			_, _ = w.Write(bytes.Repeat([]byte("x"), testMaxBytes))
			return
		case "big":
			_, _ = w.Write(bytes.Repeat([]byte("x"), testMaxBytes+1))
			return
		case "big-chunked": // no Content-Length: the limit is found reading
			_, _ = w.Write([]byte("x"))
			w.(http.Flusher).Flush()
			for range 1000 {
				if _, err := w.Write(bytes.Repeat([]byte("x"), 1024)); err != nil {
					return
				}
			}
			return
		case "slow":
			<-r.Context().Done()
			return
		}
		_, _ = w.Write([]byte(key))
	}))
	t.Cleanup(srv.Close)
	return srv
}

var testNow = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

func TestHTTPOrigin(t *testing.T) {
	checkGoroutines(t)
	srv := originServer(t)
	var binary []byte
	for b := range 256 {
		binary = append(binary, byte(b))
	}
	binary = append(binary, "/../?#%+& =é"...)
	tests := []struct {
		name        string
		template    string // default: /items/{key}
		defaultTTL  time.Duration
		key         string
		wantValue   string // "": a miss or an error
		wantExpires time.Time
		wantErr     bool
	}{
		{name: "max-age", key: "max-age", wantValue: "max-age", wantExpires: testNow.Add(60 * time.Second)},
		{name: "age is taken off", key: "age", wantValue: "age", wantExpires: testNow.Add(50 * time.Second)},
		{name: "older than max-age: not kept", key: "aged-out", wantValue: "aged-out", wantExpires: testNow},
		{name: "s-maxage wins", key: "s-maxage", wantValue: "s-maxage", wantExpires: testNow.Add(5 * time.Second)},
		{name: "quoted max-age", key: "quoted", wantValue: "quoted", wantExpires: testNow.Add(30 * time.Second)},
		{name: "max-age capped at 2^31s", key: "huge-max-age", wantValue: "huge-max-age", wantExpires: testNow.Add(maxAgeCap * time.Second)},
		{name: "no-store: returned, not kept", key: "no-store", wantValue: "no-store", wantExpires: testNow},
		{name: "no-cache on a second line", key: "no-cache", wantValue: "no-cache", wantExpires: testNow},
		{name: "max-age=0: not kept", key: "max-age-0", wantValue: "max-age-0", wantExpires: testNow},
		{name: "invalid max-age: not kept", key: "bad-max-age", wantValue: "bad-max-age", wantExpires: testNow},
		{name: "no Cache-Control: no expiry", key: "plain", wantValue: "plain"},
		{name: "no Cache-Control: DefaultTTL", key: "plain", defaultTTL: time.Minute, wantValue: "plain", wantExpires: testNow.Add(time.Minute)},
		{name: "redirect followed", key: "moved", wantValue: "max-age", wantExpires: testNow.Add(60 * time.Second)},
		{name: "404 is a miss", key: "missing"},
		{name: "500 is an error", key: "broken", wantErr: true},
		{name: "body of MaxBytes", key: "exact", wantValue: strings.Repeat("x", testMaxBytes)},
		{name: "body over MaxBytes", key: "big", wantErr: true},
		{name: "chunked body over MaxBytes", key: "big-chunked", wantErr: true},
		{name: "binary key round-trips in the path", key: string(binary), wantValue: string(binary)},
		{name: "binary key round-trips in the query", template: "/get?k={key}", key: string(binary), wantValue: string(binary)},
		{name: "empty key", template: "/get?k={key}", key: "", wantValue: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			template := tt.template
			if template == "" {
				template = "/items/{key}"
			}
			o, err := NewHTTPOrigin(HTTPConfig{
				URL:        srv.URL + template,
				MaxBytes:   testMaxBytes,
				DefaultTTL: tt.defaultTTL,
				Now:        func() time.Time { return testNow },
			})
			if err != nil {
				t.Fatal(err)
			}
			item, found, err := o.Load(context.Background(), []byte(tt.key))
			switch {
			case tt.wantErr:
				if !errors.Is(err, ErrOrigin) || found {
					t.Fatalf("Load: (%v, %v), want an error wrapping ErrOrigin", found, err)
				}
				return
			case err != nil:
				t.Fatalf("Load: %v", err)
			}
			wantFound := tt.wantValue != "" || tt.key == ""
			if found != wantFound || string(item.Value) != tt.wantValue {
				t.Fatalf("Load: (%q, %v), want (%q, %v)", item.Value, found, tt.wantValue, wantFound)
			}
			if !item.Expires.Equal(tt.wantExpires) {
				t.Fatalf("Expires %v, want %v", item.Expires, tt.wantExpires)
			}
			if item.Origin != found {
				t.Fatalf("Origin %v for found %v", item.Origin, found)
			}
		})
	}
}

func TestHTTPOriginTimeout(t *testing.T) {
	checkGoroutines(t)
	srv := originServer(t)
	for _, client := range []*http.Client{nil, srv.Client()} {
		o, err := NewHTTPOrigin(HTTPConfig{URL: srv.URL + "/items/{key}", Timeout: 20 * time.Millisecond, Client: client})
		if err != nil {
			t.Fatal(err)
		}
		_, found, err := o.Load(context.Background(), []byte("slow"))
		var ne net.Error
		if found || !errors.Is(err, ErrOrigin) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Load from a server that does not answer: (%v, %v), want a timeout wrapping ErrOrigin", found, err)
		}
	}
}

func TestHTTPOriginUnreachable(t *testing.T) {
	checkGoroutines(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	o, err := NewHTTPOrigin(HTTPConfig{URL: "http://" + addr + "/items/{key}"})
	if err != nil {
		t.Fatal(err)
	}
	if _, found, err := o.Load(context.Background(), []byte("k")); found || !errors.Is(err, ErrOrigin) {
		t.Fatalf("Load from a closed port: (%v, %v), want an error wrapping ErrOrigin", found, err)
	}
}

func TestNewHTTPOrigin(t *testing.T) {
	tests := []struct {
		name string
		cfg  HTTPConfig
		ok   bool
	}{
		{"path", HTTPConfig{URL: "http://db-api:8080/items/{key}"}, true},
		{"query", HTTPConfig{URL: "https://db-api/get?id={key}&v=1"}, true},
		{"twice", HTTPConfig{URL: "http://db-api/{key}/{key}"}, true},
		{"empty", HTTPConfig{}, false},
		{"no placeholder", HTTPConfig{URL: "http://db-api:8080/items/"}, false},
		{"relative", HTTPConfig{URL: "/items/{key}"}, false},
		{"other scheme", HTTPConfig{URL: "ftp://db-api/{key}"}, false},
		{"key in host", HTTPConfig{URL: "http://{key}.db-api/"}, false},
		{"key in user", HTTPConfig{URL: "http://{key}@db-api/x"}, false},
		{"key in fragment", HTTPConfig{URL: "http://db-api/x#{key}"}, false},
		{"unparsable", HTTPConfig{URL: "http://db api/{key}"}, false},
		{"negative timeout", HTTPConfig{URL: "http://db-api/{key}", Timeout: -1}, false},
		{"negative max bytes", HTTPConfig{URL: "http://db-api/{key}", MaxBytes: -1}, false},
		{"negative default ttl", HTTPConfig{URL: "http://db-api/{key}", DefaultTTL: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewHTTPOrigin(tt.cfg)
			if tt.ok != (err == nil) {
				t.Fatalf("NewHTTPOrigin(%+v): %v", tt.cfg, err)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestHTTPOriginURL(t *testing.T) {
	tests := []struct{ template, key, want string }{
		{"http://h/items/{key}", "a/b c", "http://h/items/a%2Fb%20c"},
		{"http://h/get?k={key}", "a/b c&d", "http://h/get?k=a%2Fb+c%26d"},
		{"http://h/{key}/x?k={key}", "a b", "http://h/a%20b/x?k=a+b"},
	}
	for _, tt := range tests {
		o, err := NewHTTPOrigin(HTTPConfig{URL: tt.template})
		if err != nil {
			t.Fatal(err)
		}
		if got := o.URL([]byte(tt.key)); got != tt.want {
			t.Errorf("URL(%q) of %s = %s, want %s", tt.key, tt.template, got, tt.want)
		}
	}
}

// TestShieldHTTPReadThrough: concurrent misses on one key make one request
// to a real HTTP origin, and its value goes to the L2.
func TestShieldHTTPReadThrough(t *testing.T) {
	checkGoroutines(t)
	const n = 8
	release := make(chan struct{})
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write([]byte("value of " + strings.TrimPrefix(r.URL.Path, "/items/")))
	}))
	t.Cleanup(srv.Close)
	o, err := NewHTTPOrigin(HTTPConfig{URL: srv.URL + "/items/{key}", Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	l2 := newFakeL2()
	stored := make(chan Item, n)
	clock := newFakeClock()
	clock.now = testNow
	s := newShield(t, l2, Config{Origin: o, Clock: clock, Store: WriterFunc(func(ctx context.Context, key, value []byte, expires time.Time) error {
		stored <- Item{Value: append([]byte(nil), value...), Expires: expires}
		return nil
	})})
	var results []<-chan got
	for range n {
		results = append(results, goGet(context.Background(), s, "k1", false))
	}
	waitFor(t, "n callers on one request", func() bool { return requests.Load() == 1 && s.Stats().Coalesced == n-1 })
	close(release)
	for _, ch := range results {
		if r := <-ch; r.err != nil || string(r.item.Value) != "value of k1" || !r.item.Origin {
			t.Fatalf("Get: %+v, %v", r.item, r.err)
		}
	}
	s.Close()
	if requests.Load() != 1 || len(stored) != 1 {
		t.Fatalf("%d requests, %d L2 writes; want 1 and 1", requests.Load(), len(stored))
	}
	if it := <-stored; string(it.Value) != "value of k1" || !it.Expires.Equal(testNow.Add(time.Minute)) {
		t.Fatalf("L2 write %q expiring %v", it.Value, it.Expires)
	}
}
