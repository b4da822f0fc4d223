package l2store

import (
	"bufio"
	"strconv"
	"strings"
	"testing"
)

func TestReadRaw(t *testing.T) {
	const maxBulk = 1 << 20
	valid := []struct{ name, in string }{
		{"status", "+OK\r\n"},
		{"error", "-ERR wrong\r\n"},
		{"integer", ":-12\r\n"},
		{"bulk", "$5\r\nhe\r\nl\r\n"},
		{"empty bulk", "$0\r\n\r\n"},
		{"null bulk", "$-1\r\n"},
		{"null array", "*-1\r\n"},
		{"empty array", "*0\r\n"},
		{"nested", "*3\r\n*2\r\n:1\r\n$1\r\na\r\n*0\r\n+x\r\n"},
		{"map", "%2\r\n+a\r\n:1\r\n$1\r\nb\r\n*1\r\n_\r\n"},
		{"set", "~2\r\n,1.5\r\n#t\r\n"},
		{"push", ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nhi!\r\n"},
		{"attribute", "|1\r\n+key\r\n*2\r\n:1\r\n:2\r\n$3\r\nabc\r\n"},
		{"verbatim and blob error", "*2\r\n=8\r\ntxt:text\r\n!5\r\nERR x\r\n"},
		{"big number", "(123456789012345678901234567890\r\n"},
		{"long line", "+" + strings.Repeat("m", 100) + "\r\n"},
	}
	for _, tt := range valid {
		t.Run(tt.name, func(t *testing.T) {
			// A small buffer makes lines span several reads; a second
			// reply behind the first must stay unread.
			r := bufio.NewReaderSize(strings.NewReader(tt.in+"+NEXT\r\n"), 16)
			got, err := ReadRaw(r, nil, maxBulk)
			if err != nil || string(got) != tt.in {
				t.Fatalf("ReadRaw = %q, %v; want %q", got, err, tt.in)
			}
			if next, err := ReadRaw(r, nil, maxBulk); err != nil || string(next) != "+NEXT\r\n" {
				t.Fatalf("next reply = %q, %v", next, err)
			}
		})
	}
	invalid := []struct{ name, in string }{
		{"unknown type", "?1\r\n"},
		{"empty line", "\r\n"},
		{"no CR", "+OK\n"},
		{"bad length", "$x\r\n"},
		{"negative length", "*-2\r\n"},
		{"bulk too long", "$" + strconv.Itoa(maxBulk+1) + "\r\n"},
		{"bulk not terminated", "$2\r\nabcd"},
		{"truncated bulk", "$10\r\nabc"},
		{"truncated array", "*2\r\n:1\r\n"},
		{"truncated line", "+OK"},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadRaw(bufio.NewReaderSize(strings.NewReader(tt.in), 16), nil, maxBulk)
			if err == nil {
				t.Fatalf("ReadRaw(%q) = %q, want an error", tt.in, got)
			}
		})
	}
}
