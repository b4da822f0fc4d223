//go:build !race

package test

// raceEnabled reports whether the tests run with the race detector; the
// sidecache binary is then built with -race too.
const raceEnabled = false
