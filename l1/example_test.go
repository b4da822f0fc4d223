package l1_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sidecache/sidecache/l1"
)

func Example() {
	// The next tier; in sidecache it is the breaker in front of L2.
	next := l1.GetterFunc(func(_ context.Context, key []byte) (l1.Item, bool, error) {
		if string(key) != "greeting" {
			return l1.Item{}, false, nil // a miss: not cached
		}
		return l1.Item{Value: []byte("hello"), Expires: time.Now().Add(time.Minute)}, true, nil
	})
	c, err := l1.New(next, l1.Config{MaxBytes: 1 << 20, TTL: 5 * time.Second})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	v, found, _ := c.Get(ctx, []byte("greeting")) // miss: read through and fill
	fmt.Println(string(v), found)
	v, found, _ = c.Get(ctx, []byte("greeting")) // hit
	fmt.Println(string(v), found)
	_, found, _ = c.Get(ctx, []byte("nope"))
	fmt.Println(found)

	// After a write to L2, the proxy invalidates the key.
	c.Invalidate([]byte("greeting"))

	st := c.Stats()
	fmt.Println(st.Hits, st.Misses, st.Fills, st.Invalidations, st.Entries)
	// Output:
	// hello true
	// hello true
	// false
	// 1 2 1 1 0
}
