package test

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The redis-cli and redis-benchmark tests run Debian's tools against
// sidecache, as an operator would, and compare redis-cli's output with its
// output against redis-server.

// cliTimeout bounds one run of redis-cli or redis-benchmark.
const cliTimeout = 60 * time.Second

// runTool runs a redis tool with args and stdin, returning its stdout,
// stderr and exit status.
func runTool(t *testing.T, tool string, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	bin := requireBinary(t, tool)
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: still running after %v", tool, strings.Join(args, " "), cliTimeout)
	}
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("%s %s: %v", tool, strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// hostPort splits addr for redis-cli's -h and -p.
func hostPort(addr string) (string, string) {
	i := strings.LastIndexByte(addr, ':')
	return addr[:i], addr[i+1:]
}

// TestE2ERedisCLI runs redis-cli commands, one-shot and interactive (fed
// on stdin), against sidecache and redis-server and compares what it
// prints, in raw and --no-raw modes and with RESP3 (-3).
func TestE2ERedisCLI(t *testing.T) {
	srv := StartRedisServer(t)
	sc := StartSidecache(t)
	tests := []struct {
		name  string
		stdin string
		args  []string
	}{
		{name: "set", args: []string{"SET", "k", "v"}},
		{name: "get", args: []string{"GET", "k"}},
		{name: "get no-raw", args: []string{"--no-raw", "GET", "k"}},
		{name: "ttl", args: []string{"TTL", "k"}},
		{name: "ttl no-raw", args: []string{"--no-raw", "TTL", "k"}},
		{name: "expire", args: []string{"--no-raw", "EXPIRE", "k", "1000"}},
		{name: "get missing", args: []string{"GET", "missing"}},
		{name: "get missing no-raw", args: []string{"--no-raw", "GET", "missing"}},
		{name: "resp3 get missing", args: []string{"-3", "GET", "missing"}},
		{name: "resp3 get missing no-raw", args: []string{"-3", "--no-raw", "GET", "missing"}},
		{name: "resp3 get", args: []string{"-3", "--no-raw", "GET", "k"}},
		{name: "incr", args: []string{"--no-raw", "INCR", "n"}},
		{name: "incrbyfloat", args: []string{"-3", "--no-raw", "INCRBYFLOAT", "f", "1.5"}},
		{name: "mget", args: []string{"--no-raw", "MGET", "k", "missing", "n"}},
		{name: "resp3 mget", args: []string{"-3", "--no-raw", "MGET", "k", "missing", "n"}},
		{name: "mset", args: []string{"MSET", "a", "1", "b", "2"}},
		{name: "ping", args: []string{"--no-raw", "PING"}},
		{name: "echo", args: []string{"ECHO", "a b"}},
		{name: "binary value", args: []string{"--no-raw", "SET", "bin", "\x01\x02\xff"}},
		{name: "get binary value", args: []string{"--no-raw", "GET", "bin"}},
		{name: "unknown command", args: []string{"--no-raw", "NOSUCH", "x"}},
		{name: "wrong arity", args: []string{"--no-raw", "SET", "k"}},
		{name: "wrong type of number", args: []string{"--no-raw", "INCR", "k"}},
		{name: "dbsize", args: []string{"--no-raw", "DBSIZE"}},
		{name: "del", args: []string{"--no-raw", "DEL", "k", "n", "missing"}},
		{name: "interactive", stdin: "SET a 1\nGET a\nINCR a\nGET nosuch\nTTL a\nPEXPIRE a 100000\nPERSIST a\nDEL a\nGET a\n"},
		{name: "interactive no-raw", stdin: "SET a 1\nGET a\nINCR a\nGET nosuch\nMGET a nosuch\nNOSUCH\n", args: []string{"--no-raw"}},
		{name: "interactive resp3", stdin: "SET a 1\nGET a\nGET nosuch\nMGET a nosuch\n", args: []string{"-3"}},
		{name: "interactive resp3 no-raw", stdin: "SET a 1\nGET a\nGET nosuch\nMGET a nosuch\nINCRBYFLOAT a 0.5\n", args: []string{"-3", "--no-raw"}},
		{name: "interactive quotes", stdin: "SET \"a b\" 'c d'\nGET \"a b\"\nSET x \"\\x00\\xff\"\nSTRLEN x\n", args: []string{"--no-raw"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var outs [2]string
			for i, addr := range []string{srv.Addr, sc.Addr} {
				host, port := hostPort(addr)
				args := append([]string{"-h", host, "-p", port}, tt.args...)
				out, errOut, code := runTool(t, "redis-cli", tt.stdin, args...)
				if code != 0 || errOut != "" {
					t.Fatalf("redis-cli %s: exit %d, stderr %q, stdout %q", strings.Join(args, " "), code, errOut, out)
				}
				outs[i] = out
			}
			if outs[0] != outs[1] {
				t.Errorf("redis-cli %s (stdin %q):\n  redis-server printed %q\n  sidecache printed    %q",
					strings.Join(tt.args, " "), tt.stdin, outs[0], outs[1])
			}
		})
	}
	// The brief of the tool: RESP3 nil is shown as (nil).
	host, port := hostPort(sc.Addr)
	if out, _, _ := runTool(t, "redis-cli", "", "-h", host, "-p", port, "-3", "--no-raw", "GET", "missing"); out != "(nil)\n" {
		t.Errorf("redis-cli -3 --no-raw GET missing printed %q, want (nil)", out)
	}
	// INFO sidecache exists only in sidecache.
	out, _, code := runTool(t, "redis-cli", "", "-h", host, "-p", port, "INFO", "sidecache")
	if code != 0 || !strings.Contains(out, "# Sidecache") || !strings.Contains(out, "l1_hits:") || !strings.Contains(out, "l2_used_bytes:") {
		t.Errorf("redis-cli INFO sidecache: exit %d, printed %q", code, out)
	}
}

// TestE2ERedisBenchmark runs redis-benchmark's SET and GET tests against
// sidecache, in RESP2 and RESP3 and pipelined, and requires that they run
// without errors.
func TestE2ERedisBenchmark(t *testing.T) {
	sc := StartSidecache(t)
	host, port := hostPort(sc.Addr)
	for _, extra := range [][]string{nil, {"-3"}, {"-P", "16"}, {"-3", "-P", "16", "-d", "1000"}} {
		t.Run(strings.Join(append([]string{"args"}, extra...), " "), func(t *testing.T) {
			args := append([]string{"-h", host, "-p", port, "-t", "set,get", "-n", "2000", "-q"}, extra...)
			out, errOut, code := runTool(t, "redis-benchmark", "", args...)
			if code != 0 {
				t.Fatalf("redis-benchmark %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
			}
			all := out + errOut
			for _, want := range []string{"SET: ", "GET: "} {
				if !strings.Contains(out, want) {
					t.Errorf("redis-benchmark printed no %q line:\n%s", want, all)
				}
			}
			if strings.Contains(strings.ToLower(all), "error") {
				t.Errorf("redis-benchmark reported an error:\n%s", all)
			}
		})
	}
	c := sc.Dial(t)
	if n := infoInt(t, c, "stats", "total_error_replies"); n != 0 {
		t.Errorf("total_error_replies = %d after redis-benchmark, want 0", n)
	}
}
