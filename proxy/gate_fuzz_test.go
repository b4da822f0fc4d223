package proxy

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/tidwall/redcon"
)

// FuzzGate checks, for any input, that the gate hands redcon only
// canonical RESP that redcon parses without a protocol error, that the
// result does not depend on how the input is chunked, and that its buffer
// stays bounded.
func FuzzGate(f *testing.F) {
	for _, s := range []string{
		"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
		"PING\r\nSET \"a\\x00\" 'b'\r\n",
		"*1\r\n$4\r\nPINGxx*0\r\n*-1\r\n",
		"*1\rx$4\ryPING\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$-1\r\n",
		"*1\r\n+x\r\n",
		"\"unbalanced\r\n",
		"*99999999999\r\n",
	} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		lim := &gateLimits{maxBulk: 1 << 16, maxArgs: 64, maxQueryBuf: 1 << 20}
		whole, wholeReply, wholeErr := gateOutput(t, [][]byte{in}, lim)
		var chunks [][]byte
		step := int(split%16) + 1
		for i := 0; i < len(in); i += step {
			chunks = append(chunks, in[i:min(i+step, len(in))])
		}
		pieces, piecesReply, piecesErr := gateOutput(t, chunks, lim)
		if !bytes.Equal(whole, pieces) || wholeReply != piecesReply || !errors.Is(piecesErr, wholeErr) {
			t.Fatalf("chunking changed the result:\nwhole  %q %q %v\npieces %q %q %v", whole, wholeReply, wholeErr, pieces, piecesReply, piecesErr)
		}
		rd := redcon.NewReader(bytes.NewReader(whole))
		for {
			_, err := rd.ReadCommand()
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				t.Fatalf("redcon could not parse the gate's output %q: %v", whole, err)
			}
		}
	})
}

func gateOutput(t *testing.T, chunks [][]byte, lim *gateLimits) (out []byte, reply string, err error) {
	sc := &scriptConn{}
	for _, c := range chunks {
		sc.chunks = append(sc.chunks, append([]byte(nil), c...))
	}
	g := newGate(sc, lim)
	buf := make([]byte, 512)
	for {
		n, rerr := g.Read(buf)
		out = append(out, buf[:n]...)
		if cap(g.in) > gateMaxBufferSize {
			t.Fatalf("input buffer grew to %d", cap(g.in))
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	g.Close()
	return out, sc.written.String(), err
}
