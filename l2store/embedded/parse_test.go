package embedded

import "testing"

func TestIsOpt(t *testing.T) {
	tests := []struct {
		arg, opt string
		want     bool
	}{
		{"nx", "nx", true},
		{"NX", "nx", true},
		{"Nx", "nx", true},
		{"nx\x00anything", "nx", true}, // Redis sees a C string
		{"n", "nx", false},
		{"nxx", "nx", false},
		{"\x00nx", "nx", false},
		{"", "nx", false},
		{"KEEPTTL", "keepttl", true},
		{"keepttl\x00", "keepttl", true},
	}
	for _, tt := range tests {
		if got := isOpt([]byte(tt.arg), tt.opt); got != tt.want {
			t.Errorf("isOpt(%q, %q) = %v, want %v", tt.arg, tt.opt, got, tt.want)
		}
	}
}
