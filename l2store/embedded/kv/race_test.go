//go:build race

package kv

// raceEnabled is set when the tests run under the race detector, which
// changes allocation counts and slows everything down.
const raceEnabled = true
