package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// noBreaker are the metrics of the L2 circuit breaker, which guards a
// remote L2 only: the embedded L2 has none.
var noBreaker = map[string]bool{
	"sidecache_breaker_state":             true,
	"sidecache_breaker_transitions_total": true,
	"sidecache_l2_hit_ratio":              true,
	"sidecache_l2_hit_ratio_baseline":     true,
}

// calmBreaker: a breaker transition, a labelled counter, has no series
// until the breaker changes state, which a calm start does not.
var calmBreaker = map[string]bool{
	"sidecache_breaker_transitions_total": true,
}

// startRedis starts Debian's redis-server on a free loopback port, for the
// remote L2 case; `make deps` installs it.
func startRedis(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server not on PATH (make deps installs it)")
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRenderedConfigRuns starts the sidecache binary (built with the
// Dockerfile's command) with the environment the chart gives the sidecar:
// the ConfigMap's SIDECACHE_* variables and GOMEMLIMIT. Only the two
// listeners move to free loopback ports. The probes' paths must answer 200,
// and /metrics must export every metric the alerts and the dashboard use.
func TestRenderedConfigRuns(t *testing.T) {
	bin := dockerBuild(t)
	redisAddr := startRedis(t)
	for _, tc := range []struct {
		name   string
		vals   map[string]any
		absent map[string]bool
	}{
		{"default", map[string]any{}, noBreaker},
		{"parent example", map[string]any{
			"config":    map[string]any{"l1-max-bytes": "32mb", "l2-max-bytes": "64mb"},
			"resources": map[string]any{"limits": map[string]any{"memory": "256Mi"}},
		}, noBreaker},
		{"remote L2", map[string]any{"config": map[string]any{"l2": "redis://" + redisAddr}}, calmBreaker},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := render(t, tc.vals)
			dep := r.byKind("Deployment")[0].obj.(*appsv1.Deployment)
			c := dep.Spec.Template.Spec.InitContainers[0]
			var env []string
			for _, o := range r.byKind("ConfigMap") {
				if cm := o.obj.(*corev1.ConfigMap); cm.Name == c.EnvFrom[0].ConfigMapRef.Name {
					for k, v := range cm.Data {
						env = append(env, k+"="+v)
					}
				}
			}
			for _, e := range c.Env {
				env = append(env, e.Name+"="+e.Value)
			}
			slices.Sort(env)
			t.Logf("env: %v", env)

			resp, admin := freeAddr(t), freeAddr(t)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "--listen", resp, "--admin-listen", admin)
			cmd.Env = env
			var logs bytes.Buffer
			cmd.Stdout, cmd.Stderr = &logs, &logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			var waitErr error
			go func() { waitErr = cmd.Wait(); close(exited) }()
			defer func() {
				cancel()
				<-exited
				if t.Failed() {
					t.Logf("sidecache output:\n%s", logs.String())
				}
			}()

			// The startup probe: poll /healthz until it answers.
			deadline := time.Now().Add(20 * time.Second)
			for {
				if code, _ := httpGet("http://" + admin + "/healthz"); code == http.StatusOK {
					break
				}
				select {
				case <-exited:
					t.Fatalf("sidecache exited at start: %v", waitErr)
				default:
				}
				if time.Now().After(deadline) {
					t.Fatal("/healthz did not answer 200 within 20s")
				}
				time.Sleep(50 * time.Millisecond)
			}
			if code, body := httpGet("http://" + admin + "/readyz"); code != http.StatusOK {
				t.Errorf("/readyz: %d %s", code, body)
			}

			// Some traffic, so that labelled metrics have series.
			conn, err := net.DialTimeout("tcp", resp, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(conn)
			for _, args := range [][]string{{"SET", "k", "v"}, {"GET", "k"}, {"GET", "k"}, {"GET", "missing"}, {"PING"}} {
				fmt.Fprintf(conn, "*%d\r\n", len(args))
				for _, a := range args {
					fmt.Fprintf(conn, "$%d\r\n%s\r\n", len(a), a)
				}
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("%v: %v", args, err)
				}
				if strings.HasPrefix(line, "-") {
					t.Fatalf("%v: %s", args, line)
				}
				if strings.HasPrefix(line, "$") && line != "$-1\r\n" {
					if _, err := br.ReadString('\n'); err != nil {
						t.Fatal(err)
					}
				}
			}

			code, body := httpGet("http://" + admin + "/metrics")
			if code != http.StatusOK {
				t.Fatalf("/metrics: %d", code)
			}
			var p expfmt.TextParser
			families, err := p.TextToMetricFamilies(strings.NewReader(body))
			if err != nil {
				t.Fatalf("/metrics does not parse: %v", err)
			}
			for name, typ := range exportedMetrics {
				mf, ok := families[name]
				if !ok {
					if !tc.absent[name] {
						t.Errorf("/metrics lacks %s, which the chart's alerts or dashboard use", name)
					}
					continue
				}
				if got := strings.ToLower(mf.GetType().String()); got != typ {
					t.Errorf("%s is a %s, want a %s", name, got, typ)
				}
			}
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpGet(url string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
