package remote

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		url  string
		want target
	}{
		{"redis://127.0.0.1:6380/0", target{mode: Standalone, addrs: []string{"127.0.0.1:6380"}}},
		{"redis://localhost", target{mode: Standalone, addrs: []string{"localhost:6379"}}},
		{"redis://h:1/3", target{mode: Standalone, addrs: []string{"h:1"}, db: 3}},
		{"rediss://u:p%40ss@h:1/2", target{mode: Standalone, tls: true, addrs: []string{"h:1"}, db: 2, username: "u", password: "p@ss"}},
		{"redis://:secret@h:1", target{mode: Standalone, addrs: []string{"h:1"}, password: "secret"}},
		{"REDIS://h:1", target{mode: Standalone, addrs: []string{"h:1"}}},
		{"redis+sentinel://s1:26379,s2:26380/mymaster", target{mode: Sentinel, addrs: []string{"s1:26379", "s2:26380"}, master: "mymaster"}},
		{"redis+sentinel://s1/mymaster/4", target{mode: Sentinel, addrs: []string{"s1:26379"}, master: "mymaster", db: 4}},
		{"rediss+sentinel://a:b@s1:1/m", target{mode: Sentinel, tls: true, addrs: []string{"s1:1"}, master: "m", username: "a", password: "b"}},
		{"redis+cluster://n1:7000,n2:7001,n3:7002", target{mode: Cluster, addrs: []string{"n1:7000", "n2:7001", "n3:7002"}}},
		{"rediss+cluster://n1:7000/", target{mode: Cluster, tls: true, addrs: []string{"n1:7000"}}},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			got, err := parseURL(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got %+v, want %+v", *got, tt.want)
			}
		})
	}
}

func TestParseURLErrors(t *testing.T) {
	tests := []struct{ url, want string }{
		{"127.0.0.1:6379", "want a URL"},
		{"http://h:1", "unknown scheme"},
		{"redis://", "no host"},
		{"redis://a:1,b:2", "several hosts"},
		{"redis+sentinel://s:1", "master name"},
		{"redis+cluster://n:1/1", "only database 0"},
		{"redis://h:1/x", "not a number"},
		{"redis://h:1/-1", "not a number"},
		{"redis://h:1/0/1", "unexpected path"},
		{"redis://h:1/0?dial_timeout=1", "query parameters"},
		{"redis://u:secret@h:1/x", "u:xxxxx@h:1/x"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := parseURL(tt.url)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("%v does not wrap ErrConfig", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"redis://h:1/0", "redis://h:1/0"},
		{"redis://:pw@h:1/0", "redis://:xxxxx@h:1/0"},
		{"rediss://user:pw@h:1", "rediss://user:xxxxx@h:1"},
		{"redis://user@h:1", "redis://user@h:1"},
		{"redis+sentinel://u:p@a:1,b:2/m", "redis+sentinel://u:xxxxx@a:1,b:2/m"},
		{"not a url", "not a url"},
	}
	for _, tt := range tests {
		if got := redactURL(tt.in); got != tt.want {
			t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{URL: "redis://h:1"}
	if _, err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if c.DialTimeout != DefaultDialTimeout || c.ReadTimeout != DefaultReadTimeout || c.WriteTimeout != DefaultWriteTimeout || c.Tracking != TrackingAuto {
		t.Errorf("defaults not applied: %+v", c)
	}
	for _, bad := range []Config{
		{URL: "redis://h:1", DialTimeout: -1},
		{URL: "redis://h:1", PoolSize: -1},
		{URL: "redis://h:1", Tracking: "sometimes"},
	} {
		if _, err := bad.setDefaults(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: err %v, want ErrConfig", bad, err)
		}
	}
}

func TestRedirection(t *testing.T) {
	tests := []struct {
		raw       string
		moved, ok bool
		addr      string
	}{
		{"-MOVED 3999 127.0.0.1:6381\r\n", true, false, "127.0.0.1:6381"},
		{"-ASK 3999 127.0.0.1:6381\r\n", false, true, "127.0.0.1:6381"},
		{"-ERR MOVED 1 a:1\r\n", false, false, ""},
		{"-MOVED x a:1\r\n", false, false, ""},
		{"+MOVED 1 a:1\r\n", false, false, ""},
		{"$5\r\nhello\r\n", false, false, ""},
		{"-CROSSSLOT Keys in request don't hash to the same slot\r\n", false, false, ""},
	}
	for _, tt := range tests {
		moved, ask, addr := redirection([]byte(tt.raw))
		if moved != tt.moved || ask != tt.ok || addr != tt.addr {
			t.Errorf("redirection(%q) = %v %v %q", tt.raw, moved, ask, addr)
		}
	}
}
