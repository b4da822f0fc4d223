package breaker_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/sidecache/sidecache/breaker"
	"github.com/sidecache/sidecache/l2store"
)

func Example() {
	// The L2; in sidecache, l2store.Store.Get.
	down := breaker.GetterFunc(func(context.Context, []byte) (l2store.Item, bool, error) {
		return l2store.Item{}, false, l2store.ErrUnavailable
	})
	b, err := breaker.New(down, breaker.Settings{MinRequests: 4, RetryBudget: breaker.Off})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		_, _, err := b.Get(ctx, []byte("k"))
		fmt.Println(errors.Is(err, breaker.ErrOpen), err)
	}
	// Writes and other commands go through Call.
	_, err = breaker.Call(b, ctx, func(context.Context) (string, error) { return "OK", nil })
	fmt.Println(err)

	st := b.Stats()
	fmt.Println(st.State, st.Reason, b.Degraded())
	// Output:
	// false l2store: upstream unavailable
	// false l2store: upstream unavailable
	// false l2store: upstream unavailable
	// false l2store: upstream unavailable
	// true breaker: open: error ratio 1.00 >= 0.50 over 4 calls
	// breaker: open: error ratio 1.00 >= 0.50 over 4 calls
	// open errors true
}
