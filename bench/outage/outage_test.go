package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sidecache/sidecache/l2store"
)

func TestClassify(t *testing.T) {
	want := valueFor("hot:000001", 16)
	tests := []struct {
		name  string
		reply l2store.Reply
		err   error
		want  []byte
		out   outcome
	}{
		{"value", l2store.Bulk(want), nil, want, outValue},
		{"other value", l2store.BulkString("x"), nil, want, outWrong},
		{"nil", l2store.Null, nil, want, outNil},
		{"tryagain", l2store.Error("TRYAGAIN sidecache: L2 circuit breaker is open"), nil, want, outTryAgain},
		{"tryagain without its space", l2store.Error("TRYAGAINX"), nil, want, outError},
		{"error", l2store.Error("ERR boom"), nil, want, outError},
		{"io error", l2store.Reply{}, io.ErrUnexpectedEOF, want, outIOError},
		{"status to a GET", l2store.OK, nil, want, outWrong},
		{"SET ok", l2store.OK, nil, nil, outValue},
		{"SET error", l2store.Error("TRYAGAIN x"), nil, nil, outTryAgain},
		{"SET answered nil", l2store.Null, nil, nil, outWrong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.reply, tt.err, tt.want); got != tt.out {
				t.Errorf("classify = %d, want %d", got, tt.out)
			}
		})
	}
}

func TestQuantile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var d []time.Duration
		for _, x := range n {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
		ok     bool
	}{
		{"empty", nil, 0.99, 0, false},
		{"one", ms(7), 0.99, 7 * time.Millisecond, true},
		{"p99 of 1..100", ms(hundred...), 0.99, 99 * time.Millisecond, true},
		{"p50 of 1..100", ms(hundred...), 0.5, 50 * time.Millisecond, true},
		{"max", ms(1, 2, 3), 1, 3 * time.Millisecond, true},
		{"p99 of 10 is the largest", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := quantile(tt.sorted, tt.q)
			if got != tt.want || ok != tt.ok {
				t.Errorf("quantile = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestPerSecond(t *testing.T) {
	cfg := &config{duration: 3 * time.Second, killAt: time.Second, restoreAt: 2 * time.Second}
	at := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	samples := []sample{
		{start: at(0.1), lat: time.Millisecond, hot: true, out: outValue},
		{start: at(0.2), lat: 2 * time.Millisecond, hot: false, out: outValue},
		{start: at(1.0), lat: 3 * time.Millisecond, hot: true, out: outValue},
		{start: at(1.5), lat: 4 * time.Millisecond, hot: true, out: outTryAgain},
		{start: at(1.6), lat: 5 * time.Millisecond, hot: false, out: outNil},
		{start: at(1.7), lat: 6 * time.Millisecond, hot: false, out: outValue, fill: true},
		{start: at(1.8), lat: 7 * time.Millisecond, hot: false, out: outError, fill: true},
		{start: at(2.9), lat: 8 * time.Millisecond, hot: false, out: outWrong},
		{start: at(3.2), lat: 9 * time.Millisecond, hot: true, out: outIOError}, // after the last second
	}
	secs, byPhase := perSecond(samples, 3, cfg)
	type counts struct{ reads, errs, hotErrs, tryAgain, wrong, nils, fills, fillErrs, hotReads, hotLat int }
	get := func(s *stats) counts {
		return counts{s.reads, s.errs, s.hotErrs, s.tryAgain, s.wrong, s.nils, s.fills, s.fillErrs, s.hotReads, len(s.hotLat)}
	}
	tests := []struct {
		name string
		got  *stats
		want counts
	}{
		{"second 0", &secs[0], counts{reads: 2, hotReads: 1, hotLat: 1}},
		{"second 1", &secs[1], counts{reads: 3, errs: 1, hotErrs: 1, tryAgain: 1, nils: 1, fills: 2, fillErrs: 1, hotReads: 2, hotLat: 1}},
		{"second 2", &secs[2], counts{reads: 1, errs: 1, wrong: 1}},
		{"before", byPhase[phaseBefore], counts{reads: 2, hotReads: 1, hotLat: 1}},
		{"outage", byPhase[phaseOutage], counts{reads: 3, errs: 1, hotErrs: 1, tryAgain: 1, nils: 1, fills: 2, fillErrs: 1, hotReads: 2, hotLat: 1}},
		{"after (with the read past the end)", byPhase[phaseAfter], counts{reads: 2, errs: 2, hotErrs: 1, wrong: 1, hotReads: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := get(tt.got); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	if want := []time.Duration{3 * time.Millisecond, 4 * time.Millisecond, 5 * time.Millisecond}; !slices.Equal(secs[1].lat, want) {
		t.Errorf("second 1 latencies %v, want %v (sorted, fills left out)", secs[1].lat, want)
	}
	if want := []time.Duration{6 * time.Millisecond, 7 * time.Millisecond}; !slices.Equal(secs[1].fillLat, want) {
		t.Errorf("second 1 fill latencies %v, want %v", secs[1].fillLat, want)
	}
}

func TestPhaseOf(t *testing.T) {
	cfg := &config{killAt: 10 * time.Second, restoreAt: 20 * time.Second}
	tests := []struct {
		at   time.Duration
		want string
	}{
		{0, phaseBefore},
		{10*time.Second - 1, phaseBefore},
		{10 * time.Second, phaseOutage},
		{20*time.Second - 1, phaseOutage},
		{20 * time.Second, phaseAfter},
	}
	for _, tt := range tests {
		t.Run(tt.at.String(), func(t *testing.T) {
			if got := phaseOf(tt.at, cfg); got != tt.want {
				t.Errorf("phaseOf(%v) = %s, want %s", tt.at, got, tt.want)
			}
		})
	}
}

func TestDelta(t *testing.T) {
	a := snapshot{fields: map[string]string{"reads_stale": "10", "bad": "x"}}
	b := snapshot{fields: map[string]string{"reads_stale": "25", "bad": "3"}}
	tests := []struct {
		name string
		a, b snapshot
		f    string
		want string
	}{
		{"counter", a, b, "reads_stale", "15"},
		{"missing field", a, b, "reads_shed", "-"},
		{"not a number", a, b, "bad", "-"},
		{"failed INFO", snapshot{}, b, "reads_stale", "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := delta(tt.a, tt.b, tt.f); got != tt.want {
				t.Errorf("delta = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseInfo(t *testing.T) {
	got := parseInfo("# Sidecache\r\nreads_stale:12\r\nbreaker_state:half-open\r\nbreaker_cause:error ratio 0.9: 18 of 20\r\n\r\n# Other\r\nx:1\r\n")
	want := map[string]string{"reads_stale": "12", "breaker_state": "half-open", "breaker_cause": "error ratio 0.9: 18 of 20", "x": "1"}
	if len(got) != len(want) {
		t.Fatalf("parseInfo = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestListeningAddr(t *testing.T) {
	tests := []struct {
		name, log, want string
	}{
		{"found", `{"level":"info","msg":"sidecache starting"}` + "\n" + `{"level":"info","msg":"listening","addr":"127.0.0.1:4242"}` + "\n", "127.0.0.1:4242"},
		{"not yet", `{"level":"info","msg":"sidecache starting"}` + "\n", ""},
		{"half a line", `{"level":"info","msg":"listening","ad`, ""},
		{"console format", "INFO listening addr=127.0.0.1:1\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := listeningAddr([]byte(tt.log)); got != tt.want {
				t.Errorf("listeningAddr = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestChildEnv(t *testing.T) {
	got := childEnv([]string{"PATH=/bin", "SIDECACHE_L1_TTL=1h", "HOME=/root", "SIDECACHE_BIN=x"})
	if want := []string{"PATH=/bin", "HOME=/root"}; !slices.Equal(got, want) {
		t.Errorf("childEnv = %q, want %q", got, want)
	}
}

func TestValueFor(t *testing.T) {
	v := valueFor("hot:000001", 25)
	if len(v) != 25 || !bytes.HasPrefix(v, []byte("hot:000001.hot:000001.hot")) {
		t.Errorf("valueFor = %q", v)
	}
	if bytes.Equal(valueFor("hot:000001", 25), valueFor("hot:000002", 25)) {
		t.Error("two keys have the same value")
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"defaults", nil, ""},
		{"read-through", []string{"-mode", "read-through"}, ""},
		{"closed loop", []string{"-rate", "0"}, ""},
		{"bad mode", []string{"-mode", "write-back"}, "-mode"},
		{"fraction of a second", []string{"-kill-at", "1500ms"}, "-kill-at"},
		{"restore before kill", []string{"-kill-at", "5s", "-restore-at", "4s"}, "want -kill-at < -restore-at < -duration"},
		{"restore after the end", []string{"-duration", "10s", "-restore-at", "10s"}, "want -kill-at < -restore-at < -duration"},
		{"no connections", []string{"-conns", "0"}, "-conns"},
		{"share above 1", []string{"-hot-share", "1.5"}, "-hot-share"},
		{"stray argument", []string{"now"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFlags(tt.args, io.Discard)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("parseFlags: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("parseFlags error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestSidecacheFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-stale-while-revalidate", "1s", "-sidecache-args", "--l2-timeout 200ms  --fill-wait 0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(cfg.sidecacheFlags("http://o/{key}"), " ")
	want := "--l1-ttl 2s --stale-for 10m0s --breaker-open-for 2s --origin-rate 100 --origin-queue 10 --stale-while-revalidate 1s --origin-url http://o/{key} --l2-timeout 200ms --fill-wait 0"
	if got != want {
		t.Errorf("sidecacheFlags =\n%s\nwant\n%s", got, want)
	}
}

func TestOrigin(t *testing.T) {
	o, err := startOrigin(20, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	get := func(key string) (*http.Response, []byte) {
		t.Helper()
		url := strings.Replace(o.urlTemplate(), "{key}", key, 1)
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}
	tests := []struct {
		key    string
		status int
		body   []byte
		cc     string
	}{
		{"cold:0000042", http.StatusOK, valueFor("cold:0000042", 20), "max-age=90"},
		{"hot:000001", http.StatusOK, valueFor("hot:000001", 20), "max-age=90"},
		{"other", http.StatusNotFound, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			resp, body := get(tt.key)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.body != nil && !bytes.Equal(body, tt.body) {
				t.Errorf("body %q, want %q", body, tt.body)
			}
			if got := resp.Header.Get("Cache-Control"); got != tt.cc {
				t.Errorf("Cache-Control %q, want %q", got, tt.cc)
			}
		})
	}
	if n, m := o.loads.Load(), o.misses.Load(); n != 2 || m != 1 {
		t.Errorf("loads %d, misses %d; want 2, 1", n, m)
	}
}

func TestRun(t *testing.T) {
	// Bad flags exit 2 before anything starts; -help exits 0.
	var out, errOut bytes.Buffer
	if code := run([]string{"-conns", "0"}, &out, &errOut); code != 2 {
		t.Errorf("run with -conns 0 = %d, want 2 (stderr %q)", code, errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"-help"}, &out, &errOut); code != 0 || !strings.Contains(errOut.String(), "-kill-at") {
		t.Errorf("run -help = %d, usage %q", code, errOut.String())
	}
	if out.Len() != 0 {
		t.Errorf("stdout %q, want nothing", out.String())
	}
}

func TestWriteInfoTSV(t *testing.T) {
	cfg := &config{duration: 3 * time.Second, killAt: time.Second, restoreAt: 2 * time.Second}
	snaps := []snapshot{
		{fields: map[string]string{"reads_stale": "0", "breaker_state": "closed"}},
		{fields: map[string]string{"reads_stale": "4", "breaker_state": "open", "breaker_cause": "error ratio\t1.00"}},
		{}, // INFO failed at second 2
	}
	var b strings.Builder
	if err := writeInfoTSV(&b, cfg, snaps); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want a header and 3 seconds:\n%s", len(lines), b.String())
	}
	head := strings.Split(lines[0], "\t")
	col := func(line int, name string) string {
		i := slices.Index(head, name)
		if i < 0 {
			t.Fatalf("no column %s in %q", name, lines[0])
		}
		f := strings.Split(lines[line], "\t")
		if len(f) != len(head) {
			t.Fatalf("line %d has %d fields, the header %d", line, len(f), len(head))
		}
		return f[i]
	}
	tests := []struct {
		line       int
		name, want string
	}{
		{1, "second", "0"},
		{1, "phase", phaseBefore},
		{1, "reads_stale", "4"},
		{1, "breaker_state", "open"},
		{1, "breaker_cause", "error ratio 1.00"},
		{1, "reads_shed", ""},
		{2, "phase", phaseOutage},
		{2, "reads_stale", ""},
		{3, "phase", phaseAfter},
		{3, "breaker_state", ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d %s", tt.line, tt.name), func(t *testing.T) {
			if got := col(tt.line, tt.name); got != tt.want {
				t.Errorf("%q, want %q", got, tt.want)
			}
		})
	}
}

func TestFirstNotClosed(t *testing.T) {
	st := func(s string) snapshot { return snapshot{fields: map[string]string{"breaker_state": s}} }
	r := &report{run: &runResult{snaps: []snapshot{st("closed"), st("closed"), {}, st("open"), st("half-open"), st("closed")}}}
	tests := []struct {
		from, to, want int
		ok             bool
	}{
		{0, 6, 3, true},
		{4, 6, 4, true},
		{0, 3, 0, false}, // a failed INFO (second 2) is not a state
		{5, 9, 0, false}, // past the snapshots
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d-%d", tt.from, tt.to), func(t *testing.T) {
			if got, ok := r.firstNotClosed(tt.from, tt.to); got != tt.want || ok != tt.ok {
				t.Errorf("firstNotClosed = %d, %v; want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
