package l1_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sidecache/sidecache/l1"
)

func Example() {
	// The next tier; in sidecache it is the origin shield, which asks the
	// breaker and L2.
	next := l1.GetterFunc(func(_ context.Context, key []byte, _ bool) (l1.Item, bool, error) {
		if string(key) != "greeting" {
			return l1.Item{}, false, nil // a miss: not cached
		}
		return l1.Item{Value: []byte("hello"), Expires: time.Now().Add(time.Minute)}, true, nil
	})
	c, err := l1.New(next, l1.Config{MaxBytes: 1 << 20, TTL: 5 * time.Second})
	if err != nil {
		panic(err)
	}
	defer c.Close()
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

func ExampleCache_Lookup() {
	errDown := errors.New("L2 down")
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var down bool
	next := l1.GetterFunc(func(_ context.Context, key []byte, hasStale bool) (l1.Item, bool, error) {
		if down {
			return l1.Item{}, false, errDown
		}
		return l1.Item{Value: []byte("v")}, true, nil
	})
	c, err := l1.New(next, l1.Config{
		TTL:      10 * time.Second,
		StaleFor: time.Minute, // keep entries a minute past freshness, for failures
		Now:      func() time.Time { return now },
	})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	ctx := context.Background()
	show := func() {
		r, err := c.Lookup(ctx, []byte("k"))
		fmt.Printf("%q %v cause=%v err=%v\n", r.Value, r.Outcome, r.Cause, err)
	}
	show() // from the next tier
	show() // fresh in L1
	down = true
	now = now.Add(30 * time.Second)
	show() // stale, answering for the failure
	now = now.Add(time.Minute)
	show() // past the stale window: the error
	// Output:
	// "v" next cause=<nil> err=<nil>
	// "v" hit cause=<nil> err=<nil>
	// "v" stale cause=L2 down err=<nil>
	// "" miss cause=<nil> err=L2 down
}
