package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// newGoRedis returns a go-redis client for addr, closed when the test
// ends. Other options are go-redis's defaults (RESP3 with HELLO 3, CLIENT
// SETINFO on every connection) unless set in opt.
func newGoRedis(t *testing.T, addr string, opt redis.Options) *redis.Client {
	t.Helper()
	opt.Addr = addr
	c := redis.NewClient(&opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestE2EGoRedis runs common go-redis v9 calls against sidecache, with the
// default options (RESP3) and with Protocol: 2.
func TestE2EGoRedis(t *testing.T) {
	sc := StartSidecache(t)
	for _, proto := range []int{0, 2} {
		t.Run(fmt.Sprintf("protocol %d", proto), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			rdb := newGoRedis(t, sc.Addr, redis.Options{Protocol: proto})
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(rdb.FlushAll(ctx).Err())
			if got, err := rdb.Ping(ctx).Result(); err != nil || got != "PONG" {
				t.Fatalf("Ping = %q, %v", got, err)
			}
			// The connection identified itself with CLIENT SETINFO.
			info, err := rdb.Do(ctx, "CLIENT", "INFO").Text()
			must(err)
			wantResp := "resp=3"
			if proto == 2 {
				wantResp = "resp=2"
			}
			if !strings.Contains(info, "lib-name=go-redis") || !strings.Contains(info, "lib-ver=9.") || !strings.Contains(info, wantResp) {
				t.Errorf("CLIENT INFO = %q: want lib-name=go-redis, lib-ver=9.x, %s", info, wantResp)
			}

			must(rdb.Set(ctx, "k", "v", 0).Err())
			if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "v" {
				t.Errorf("Get k = %q, %v", got, err)
			}
			if _, err := rdb.Get(ctx, "missing").Result(); !errors.Is(err, redis.Nil) {
				t.Errorf("Get missing: err = %v, want redis.Nil", err)
			}
			if ok, err := rdb.Expire(ctx, "k", 100*time.Second).Result(); err != nil || !ok {
				t.Errorf("Expire = %v, %v", ok, err)
			}
			if ttl, err := rdb.TTL(ctx, "k").Result(); err != nil || ttl < 98*time.Second || ttl > 100*time.Second {
				t.Errorf("TTL = %v, %v; want about 100s", ttl, err)
			}
			if ttl, err := rdb.TTL(ctx, "missing").Result(); err != nil || ttl != -2 {
				t.Errorf("TTL missing = %v, %v; want -2 (go-redis's -2ns)", ttl, err)
			}
			if n, err := rdb.Incr(ctx, "n").Result(); err != nil || n != 1 {
				t.Errorf("Incr = %d, %v", n, err)
			}
			if n, err := rdb.IncrBy(ctx, "n", 41).Result(); err != nil || n != 42 {
				t.Errorf("IncrBy = %d, %v", n, err)
			}
			if f, err := rdb.IncrByFloat(ctx, "f", 1.5).Result(); err != nil || f != 1.5 {
				t.Errorf("IncrByFloat = %v, %v", f, err)
			}
			if err := rdb.Incr(ctx, "k").Err(); err == nil || !strings.Contains(err.Error(), "not an integer") {
				t.Errorf("Incr of a string: err = %v", err)
			}
			must(rdb.MSet(ctx, "a", "1", "b", "2").Err())
			vals, err := rdb.MGet(ctx, "a", "missing", "b").Result()
			must(err)
			if len(vals) != 3 || vals[0] != "1" || vals[1] != nil || vals[2] != "2" {
				t.Errorf("MGet = %#v", vals)
			}
			if n, err := rdb.Del(ctx, "a", "b", "missing").Result(); err != nil || n != 2 {
				t.Errorf("Del = %d, %v", n, err)
			}
			if n, err := rdb.Exists(ctx, "a", "k").Result(); err != nil || n != 1 {
				t.Errorf("Exists = %d, %v", n, err)
			}
			if typ, err := rdb.Type(ctx, "k").Result(); err != nil || typ != "string" {
				t.Errorf("Type = %q, %v", typ, err)
			}
			if got, err := rdb.SetArgs(ctx, "k", "w", redis.SetArgs{Get: true, KeepTTL: true}).Result(); err != nil || got != "v" {
				t.Errorf("SetArgs GET KEEPTTL = %q, %v", got, err)
			}
			if got, err := rdb.GetEx(ctx, "k", time.Hour).Result(); err != nil || got != "w" {
				t.Errorf("GetEx = %q, %v", got, err)
			}

			// Binary keys and values, and a 1 MiB value.
			bin := make([]byte, 256)
			for i := range bin {
				bin[i] = byte(i)
			}
			must(rdb.Set(ctx, string(bin), bin, 0).Err())
			if got, err := rdb.Get(ctx, string(bin)).Bytes(); err != nil || !bytes.Equal(got, bin) {
				t.Errorf("Get of a binary key = %q, %v", got, err)
			}
			big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
			must(rdb.Set(ctx, "big", big, 0).Err())
			for range 2 { // the second read is served by L1
				if got, err := rdb.Get(ctx, "big").Bytes(); err != nil || !bytes.Equal(got, big) {
					t.Errorf("Get big: %d bytes, %v; want %d", len(got), err, len(big))
				}
			}
			if n, err := rdb.StrLen(ctx, "big").Result(); err != nil || n != int64(len(big)) {
				t.Errorf("StrLen big = %d, %v", n, err)
			}

			// A pipeline of 1000 commands.
			cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i := range 500 {
					p.Set(ctx, fmt.Sprintf("p%d", i), i, 0)
					p.Get(ctx, fmt.Sprintf("p%d", i))
				}
				return nil
			})
			must(err)
			for i := range 500 {
				if got := cmds[2*i+1].(*redis.StringCmd).Val(); got != fmt.Sprint(i) {
					t.Fatalf("pipelined Get p%d = %q", i, got)
				}
			}
			// MULTI/EXEC are not supported by the embedded L2: a
			// TxPipeline fails with an error, and the connection stays
			// usable.
			if _, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, "tx", "1", 0)
				return nil
			}); err == nil {
				t.Errorf("TxPipelined succeeded; MULTI is not supported")
			} else {
				t.Logf("TxPipelined: %v", err)
			}
			if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "w" {
				t.Errorf("Get after TxPipelined = %q, %v", got, err)
			}
		})
	}
}

// TestE2EGoRedisReadYourWrites: goroutines sharing one go-redis pool
// (so successive commands of one goroutine may use different
// connections) each read their own latest write, also for keys that are
// hot in L1.
func TestE2EGoRedisReadYourWrites(t *testing.T) {
	sc := StartSidecache(t)
	rdb := newGoRedis(t, sc.Addr, redis.Options{PoolSize: 6})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				key := fmt.Sprintf("g%d:%d", g, i%3)
				val := fmt.Sprintf("%d:%d", g, i)
				if err := rdb.Set(ctx, key, val, 0).Err(); err != nil {
					t.Errorf("Set: %v", err)
					return
				}
				for range 3 {
					if got, err := rdb.Get(ctx, key).Result(); err != nil || got != val {
						t.Errorf("goroutine %d: Get %s = %q, %v; want its own write %q", g, key, got, err, val)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	info, err := rdb.Info(ctx, "sidecache").Result()
	if err != nil || !strings.Contains(info, "l1_hits:") || strings.Contains(info, "l1_hits:0\r") {
		t.Errorf("INFO sidecache: %q, %v: want L1 hits", info, err)
	}
}

// TestE2EGoRedisPassword: go-redis with Password authenticates through
// HELLO 3 AUTH (and AUTH in RESP2); without it commands fail with NOAUTH.
func TestE2EGoRedisPassword(t *testing.T) {
	sc := StartSidecache(t, "--requirepass", "s3cret")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, proto := range []int{0, 2} {
		rdb := newGoRedis(t, sc.Addr, redis.Options{Password: "s3cret", Protocol: proto})
		if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Fatalf("protocol %d: Set with password: %v", proto, err)
		}
		if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "v" {
			t.Errorf("protocol %d: Get = %q, %v", proto, got, err)
		}
		user := newGoRedis(t, sc.Addr, redis.Options{Username: "default", Password: "s3cret", Protocol: proto})
		if got, err := user.Get(ctx, "k").Result(); err != nil || got != "v" {
			t.Errorf("protocol %d: Get as default user = %q, %v", proto, got, err)
		}
		wrong := newGoRedis(t, sc.Addr, redis.Options{Password: "wrong", Protocol: proto, MaxRetries: -1})
		if err := wrong.Get(ctx, "k").Err(); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
			t.Errorf("protocol %d: Get with a wrong password: err = %v, want WRONGPASS", proto, err)
		}
		none := newGoRedis(t, sc.Addr, redis.Options{Protocol: proto, MaxRetries: -1})
		if err := none.Get(ctx, "k").Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
			t.Errorf("protocol %d: Get without a password: err = %v, want NOAUTH", proto, err)
		}
	}
}
