package commands

import "testing"

func BenchmarkLookup(b *testing.B) {
	name := []byte("ZUNIONSTORE")
	b.ReportAllocs()
	for b.Loop() {
		if Lookup(name) == nil {
			b.Fatal("not found")
		}
	}
}

func BenchmarkKeysMSet(b *testing.B) {
	m := Lookup([]byte("mset"))
	a := args("MSET", "k1", "v1", "k2", "v2", "k3", "v3")
	dst := make([][]byte, 0, 8)
	b.ReportAllocs()
	for b.Loop() {
		dst = m.Keys(dst[:0], a)
	}
}

// BenchmarkCommandDocs is what redis-cli costs the proxy at start-up.
func BenchmarkCommandDocs(b *testing.B) {
	a := args("COMMAND", "DOCS")
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = Command(a, nil).AppendRESP(buf[:0], 3)
	}
	b.ReportMetric(float64(len(buf)), "reply-bytes")
}
