package test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// End-to-end tests of connection state through the binary with a remote
// L2 (standalone and cluster): transactions, pub/sub and blocking
// commands, as an application using go-redis sees them.

func TestRemoteStateGoRedis(t *testing.T) {
	r := StartRedisServer(t)
	cl := StartRedisCluster(t, 3)
	targets := []struct{ name, url string }{
		{"standalone", "redis://" + r.Addr},
		{"cluster", "redis+cluster://" + strings.Join(cl.Addrs, ",")},
	}
	for _, tg := range targets {
		sc := StartSidecache(t, "--l2", tg.url)
		for _, proto := range []int{2, 3} {
			t.Run(fmt.Sprintf("%s/RESP%d", tg.name, proto), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				rdb := newGoRedis(t, sc.Addr, redis.Options{Protocol: proto})
				other := newGoRedis(t, sc.Addr, redis.Options{Protocol: proto})
				key := fmt.Sprintf("{t%d}counter", proto)

				// Optimistic locking: WATCH, a conflicting write, EXEC fails.
				if err := rdb.Set(ctx, key, "1", 0).Err(); err != nil {
					t.Fatal(err)
				}
				if got, _ := rdb.Get(ctx, key).Result(); got != "1" {
					t.Fatalf("GET = %q", got)
				}
				err := rdb.Watch(ctx, func(tx *redis.Tx) error {
					if err := other.Set(ctx, key, "100", 0).Err(); err != nil {
						return err
					}
					_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
						p.Incr(ctx, key)
						return nil
					})
					return err
				}, key)
				if !errors.Is(err, redis.TxFailedErr) {
					t.Fatalf("conflicting WATCH: err %v, want TxFailedErr", err)
				}
				// Without a conflict it commits, and L1 sees the result.
				err = rdb.Watch(ctx, func(tx *redis.Tx) error {
					n, err := tx.Get(ctx, key).Int()
					if err != nil {
						return err
					}
					_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
						p.Set(ctx, key, n+1, 0)
						p.SAdd(ctx, key+":set", "a")
						return nil
					})
					return err
				}, key)
				if err != nil {
					t.Fatalf("WATCH without conflict: %v", err)
				}
				if got, _ := other.Get(ctx, key).Result(); got != "101" {
					t.Errorf("after EXEC GET = %q, want 101", got)
				}

				// Pub/sub: a message published through sidecache reaches a
				// subscriber through sidecache.
				ch := fmt.Sprintf("news%d", proto)
				sub := rdb.Subscribe(ctx, ch)
				defer sub.Close()
				if _, err := sub.Receive(ctx); err != nil {
					t.Fatalf("subscribe: %v", err)
				}
				// In a cluster PUBLISH counts the subscribers of the node it
				// ran on only; the message reaches the others all the same.
				if n, err := other.Publish(ctx, ch, "hello").Result(); err != nil || n > 1 || n == 0 && tg.name != "cluster" {
					t.Fatalf("PUBLISH = %d, %v", n, err)
				}
				msg, err := sub.ReceiveMessage(ctx)
				if err != nil || msg.Payload != "hello" {
					t.Fatalf("message = %+v, %v", msg, err)
				}

				// Blocking: BLPOP waits on its own connection while another
				// client keeps getting replies, then a push wakes it.
				list := fmt.Sprintf("{t%d}jobs", proto)
				popped := make(chan []string, 1)
				go func() {
					v, _ := other.BLPop(ctx, 10*time.Second, list).Result()
					popped <- v
				}()
				for i := range 20 {
					if err := rdb.Set(ctx, key, i, 0).Err(); err != nil {
						t.Fatal(err)
					}
				}
				if err := rdb.LPush(ctx, list, "job").Err(); err != nil {
					t.Fatal(err)
				}
				select {
				case v := <-popped:
					if len(v) != 2 || v[0] != list || v[1] != "job" {
						t.Errorf("BLPOP = %q", v)
					}
				case <-ctx.Done():
					t.Fatal("BLPOP never returned")
				}
			})
		}
	}
}
