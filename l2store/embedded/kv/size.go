package kv

import (
	"sort"
	"sync"
)

// Go's allocator rounds a small allocation up to a size class and a large
// one (over 32 KiB) up to whole 8 KiB pages. Large entries are accounted at
// the size they really take.
const (
	maxSmallAlloc = 32 << 10
	allocPageSize = 8 << 10
)

var sizeClasses struct {
	once  sync.Once
	sizes []int // ascending, the last one maxSmallAlloc
}

// allocSize returns the bytes the Go heap takes for make([]byte, n).
func allocSize(n int) int {
	if n > maxSmallAlloc {
		return (n + allocPageSize - 1) &^ (allocPageSize - 1)
	}
	sizeClasses.once.Do(probeSizeClasses)
	c := sizeClasses.sizes
	return c[sort.SearchInts(c, n)]
}

// probeSizeClasses learns the runtime's size classes: appending n bytes to
// a nil slice yields the capacity of n's size class.
func probeSizeClasses() {
	for n := 1; n <= maxSmallAlloc; {
		c := cap(append([]byte(nil), make([]byte, n)...))
		sizeClasses.sizes = append(sizeClasses.sizes, c)
		n = c + 1
	}
}
