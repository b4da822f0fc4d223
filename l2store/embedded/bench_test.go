package embedded

import (
	"context"
	"fmt"
	"testing"
)

// The benchmarks report allocations per command; their timings are for
// comparison between runs on one machine only.

func benchStore(b *testing.B) *Store {
	s, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	for i := range 10000 {
		s.Do(ctx, [][]byte{[]byte("SET"), fmt.Appendf(nil, "key:%012d", i), make([]byte, 128)})
	}
	return s
}

func BenchmarkStore(b *testing.B) {
	ctx := context.Background()
	key := []byte("key:000000001234")
	val := make([]byte, 128)
	benches := []struct {
		name string
		args [][]byte
	}{
		{"GET", [][]byte{[]byte("GET"), key}},
		{"SET", [][]byte{[]byte("SET"), key, val}},
		{"SET-EX", [][]byte{[]byte("SET"), key, val, []byte("EX"), []byte("100")}},
		{"INCR", [][]byte{[]byte("INCR"), []byte("counter")}},
		{"INCRBYFLOAT", [][]byte{[]byte("INCRBYFLOAT"), []byte("float"), []byte("0.1")}},
		{"TTL", [][]byte{[]byte("TTL"), key}},
		{"MGET-10", append([][]byte{[]byte("MGET")}, keys(10)...)},
		{"MSET-10", append([][]byte{[]byte("MSET")}, pairs(10, val)...)},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			s := benchStore(b)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Do(ctx, bb.args); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("Get", func(b *testing.B) {
		s := benchStore(b)
		b.ReportAllocs()
		for b.Loop() {
			if _, ok, err := s.Get(ctx, key); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("Get-parallel", func(b *testing.B) {
		s := benchStore(b)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s.Get(ctx, key)
			}
		})
	})
}

func keys(n int) [][]byte {
	var out [][]byte
	for i := range n {
		out = append(out, fmt.Appendf(nil, "key:%012d", i))
	}
	return out
}

func pairs(n int, val []byte) [][]byte {
	var out [][]byte
	for _, k := range keys(n) {
		out = append(out, k, val)
	}
	return out
}
