package l2store

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Kind is the RESP type of a Reply.
type Kind uint8

// The kinds of RESP2 and RESP3 replies. Kinds that RESP2 lacks are sent to a
// RESP2 client the way Redis sends them: maps and sets as flat arrays,
// doubles and big numbers as bulk strings, booleans as integers, verbatim
// strings as bulk strings without their format prefix.
const (
	KindNull      Kind = iota // RESP2 "$-1", RESP3 "_"
	KindNullArray             // RESP2 "*-1", RESP3 "_"
	KindStatus                // "+OK"
	KindError                 // "-ERR ..."
	KindInt                   // ":1"
	KindBulk                  // "$3\r\nfoo"
	KindArray                 // "*n"
	KindMap                   // RESP3 "%n"; Elems holds key, value, key, value...
	KindSet                   // RESP3 "~n"
	KindPush                  // RESP3 ">n"
	KindDouble                // RESP3 ",1.5"; Str holds the text
	KindBool                  // RESP3 "#t"; Int is 1 or 0
	KindVerbatim              // RESP3 "=n\r\ntxt:..."; Str holds "txt:..."
	KindBigNumber             // RESP3 "(123..."; Str holds the digits
	// KindRaw is a reply already encoded, as a remote store received it:
	// Str holds its RESP bytes, in the protocol of the connection that asked
	// for it (see WithProto), and AppendRESP copies them unchanged.
	KindRaw
)

// Reply is one RESP reply. It is a plain value: copying it is cheap and the
// zero Reply is a null bulk string.
type Reply struct {
	Kind  Kind
	Int   int64   // KindInt, KindBool
	Str   []byte  // KindStatus, KindError (without the '-'), KindBulk, KindDouble, KindVerbatim, KindBigNumber
	Elems []Reply // KindArray, KindSet, KindPush, KindMap (keys and values interleaved)
}

// Replies shared by many commands. Their bytes must not be modified.
var (
	OK        = Status("OK")
	Null      = Reply{Kind: KindNull}
	NullArray = Reply{Kind: KindNullArray}
	EmptyBulk = Reply{Kind: KindBulk, Str: []byte{}}
	Zero      = Int(0)
	One       = Int(1)
)

// Status returns a simple-string reply.
func Status(s string) Reply { return Reply{Kind: KindStatus, Str: []byte(s)} }

// Error returns an error reply. msg is the text after '-', and must start
// with an error code such as "ERR ", "WRONGTYPE " or "OOM ".
func Error(msg string) Reply { return Reply{Kind: KindError, Str: []byte(msg)} }

// Errorf formats an error reply.
func Errorf(format string, args ...any) Reply { return Error(fmt.Sprintf(format, args...)) }

// Int returns an integer reply.
func Int(n int64) Reply { return Reply{Kind: KindInt, Int: n} }

// Bulk returns a bulk-string reply holding b (not copied).
func Bulk(b []byte) Reply { return Reply{Kind: KindBulk, Str: b} }

// BulkString returns a bulk-string reply holding s.
func BulkString(s string) Reply { return Reply{Kind: KindBulk, Str: []byte(s)} }

// Array returns an array reply.
func Array(elems ...Reply) Reply { return Reply{Kind: KindArray, Elems: elems} }

// Map returns a map reply from alternating keys and values.
func Map(kv ...Reply) Reply {
	if len(kv)%2 != 0 {
		panic("l2store: Map needs an even number of elements")
	}
	return Reply{Kind: KindMap, Elems: kv}
}

// IsError reports whether r is an error reply.
func (r Reply) IsError() bool {
	return r.Kind == KindError || r.Kind == KindRaw && len(r.Str) > 0 && r.Str[0] == '-'
}

// Raw returns a reply of already encoded RESP bytes (not copied).
func Raw(b []byte) Reply { return Reply{Kind: KindRaw, Str: b} }

// String returns a short human-readable form, for logs and test failures.
func (r Reply) String() string { return strconv.Quote(string(r.AppendRESP(nil, 3))) }

// AppendRESP appends r encoded for a client speaking protocol version proto
// (2 or 3) to dst.
func (r Reply) AppendRESP(dst []byte, proto int) []byte {
	resp3 := proto >= 3
	switch r.Kind {
	case KindNull:
		if resp3 {
			return append(dst, "_\r\n"...)
		}
		return append(dst, "$-1\r\n"...)
	case KindNullArray:
		if resp3 {
			return append(dst, "_\r\n"...)
		}
		return append(dst, "*-1\r\n"...)
	case KindStatus:
		return appendLine(dst, '+', r.Str)
	case KindError:
		return appendLine(dst, '-', r.Str)
	case KindInt:
		return appendInt(dst, ':', r.Int)
	case KindBulk:
		return appendBulk(dst, '$', r.Str)
	case KindArray, KindSet, KindPush, KindMap:
		prefix, n := byte('*'), len(r.Elems)
		if resp3 {
			switch r.Kind {
			case KindSet:
				prefix = '~'
			case KindPush:
				prefix = '>'
			case KindMap:
				prefix, n = '%', n/2
			}
		}
		dst = appendInt(dst, prefix, int64(n))
		for i := range r.Elems {
			dst = r.Elems[i].AppendRESP(dst, proto)
		}
		return dst
	case KindDouble:
		if resp3 {
			return appendLine(dst, ',', r.Str)
		}
		return appendBulk(dst, '$', r.Str)
	case KindBool:
		if resp3 {
			if r.Int != 0 {
				return append(dst, "#t\r\n"...)
			}
			return append(dst, "#f\r\n"...)
		}
		return appendInt(dst, ':', r.Int)
	case KindVerbatim:
		if resp3 {
			return appendBulk(dst, '=', r.Str)
		}
		s := r.Str
		if len(s) >= 4 && s[3] == ':' {
			s = s[4:]
		}
		return appendBulk(dst, '$', s)
	case KindBigNumber:
		if resp3 {
			return appendLine(dst, '(', r.Str)
		}
		return appendBulk(dst, '$', r.Str)
	case KindRaw:
		return append(dst, r.Str...)
	}
	panic(fmt.Sprintf("l2store: unknown reply kind %d", r.Kind))
}

func appendLine(dst []byte, prefix byte, s []byte) []byte {
	dst = append(dst, prefix)
	dst = append(dst, s...)
	return append(dst, '\r', '\n')
}

func appendInt(dst []byte, prefix byte, n int64) []byte {
	dst = append(dst, prefix)
	dst = strconv.AppendInt(dst, n, 10)
	return append(dst, '\r', '\n')
}

func appendBulk(dst []byte, prefix byte, s []byte) []byte {
	dst = appendInt(dst, prefix, int64(len(s)))
	dst = append(dst, s...)
	return append(dst, '\r', '\n')
}

// ErrProtocol is returned by ReadReply for input that is not RESP.
var ErrProtocol = errors.New("l2store: protocol error")

// maxReadNesting bounds the depth of aggregate replies ReadReply accepts.
const maxReadNesting = 64

// ReadReply reads one RESP2 or RESP3 reply from r, keeping every kind
// distinct (a status stays a status, a set stays a set). Bulk strings are
// limited to maxBulk bytes and aggregates to maxBulk elements.
// RESP3 attributes ('|') are read and dropped, as clients do.
func ReadReply(r *bufio.Reader, maxBulk int64) (Reply, error) {
	return readReply(r, maxBulk, 0)
}

func readReply(r *bufio.Reader, maxBulk int64, depth int) (Reply, error) {
	if depth > maxReadNesting {
		return Reply{}, fmt.Errorf("%w: nesting too deep", ErrProtocol)
	}
	line, err := readLine(r)
	if err != nil {
		return Reply{}, err
	}
	if len(line) == 0 {
		return Reply{}, fmt.Errorf("%w: empty line", ErrProtocol)
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return Reply{Kind: KindStatus, Str: body}, nil
	case '-':
		return Reply{Kind: KindError, Str: body}, nil
	case ',':
		return Reply{Kind: KindDouble, Str: body}, nil
	case '(':
		return Reply{Kind: KindBigNumber, Str: body}, nil
	case '_':
		return Null, nil
	case '#':
		switch string(body) {
		case "t":
			return Reply{Kind: KindBool, Int: 1}, nil
		case "f":
			return Reply{Kind: KindBool, Int: 0}, nil
		}
		return Reply{}, fmt.Errorf("%w: bad boolean %q", ErrProtocol, body)
	case ':':
		n, err := strconv.ParseInt(string(body), 10, 64)
		if err != nil {
			return Reply{}, fmt.Errorf("%w: bad integer %q", ErrProtocol, body)
		}
		return Int(n), nil
	case '$', '=', '!':
		n, err := readLength(body, maxBulk)
		if err != nil {
			return Reply{}, err
		}
		if n < 0 {
			return Null, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return Reply{}, err
		}
		if buf[n] != '\r' || buf[n+1] != '\n' {
			return Reply{}, fmt.Errorf("%w: bulk string not terminated", ErrProtocol)
		}
		switch line[0] {
		case '=':
			return Reply{Kind: KindVerbatim, Str: buf[:n]}, nil
		case '!':
			return Reply{Kind: KindError, Str: buf[:n]}, nil
		}
		return Bulk(buf[:n]), nil
	case '*', '~', '>', '%', '|':
		n, err := readLength(body, maxBulk)
		if err != nil {
			return Reply{}, err
		}
		if n < 0 {
			return NullArray, nil
		}
		count := n
		kind := map[byte]Kind{'*': KindArray, '~': KindSet, '>': KindPush, '%': KindMap, '|': KindMap}[line[0]]
		if kind == KindMap {
			count *= 2
		}
		elems := make([]Reply, 0, min(count, 1024))
		for range count {
			e, err := readReply(r, maxBulk, depth+1)
			if err != nil {
				return Reply{}, err
			}
			elems = append(elems, e)
		}
		if line[0] == '|' {
			// An attribute annotates the reply that follows it.
			return readReply(r, maxBulk, depth)
		}
		return Reply{Kind: kind, Elems: elems}, nil
	}
	return Reply{}, fmt.Errorf("%w: unexpected type byte %q", ErrProtocol, line[0])
}

// ReadRaw appends one reply read from r to dst, byte for byte, as a
// proxy forwards it: only the framing is parsed (line types, bulk lengths,
// aggregate counts). A RESP3 attribute stays with the reply it annotates.
// Bulk strings and lines longer than maxBulk are errors. It walks the reply
// without recursion: pending counts the replies still to read.
func ReadRaw(r *bufio.Reader, dst []byte, maxBulk int64) ([]byte, error) {
	for pending := int64(1); pending > 0; pending-- {
		start := len(dst)
		var err error
		if dst, err = readLineTo(r, dst, maxBulk); err != nil {
			return nil, err
		}
		line := dst[start : len(dst)-2]
		if len(line) == 0 {
			return nil, fmt.Errorf("%w: empty line", ErrProtocol)
		}
		switch line[0] {
		case '+', '-', ':', ',', '_', '#', '(':
		case '$', '=', '!':
			n, err := readLength(line[1:], maxBulk)
			if err != nil {
				return nil, err
			}
			if n < 0 {
				continue
			}
			at := len(dst)
			dst = append(dst, make([]byte, n+2)...)
			if _, err := io.ReadFull(r, dst[at:]); err != nil {
				return nil, err
			}
			if dst[len(dst)-2] != '\r' || dst[len(dst)-1] != '\n' {
				return nil, fmt.Errorf("%w: bulk string not terminated", ErrProtocol)
			}
		case '*', '~', '>', '%', '|':
			n, err := readLength(line[1:], maxRawElems)
			if err != nil {
				return nil, err
			}
			if n < 0 {
				continue
			}
			if line[0] == '%' || line[0] == '|' {
				n *= 2
			}
			if line[0] == '|' {
				n++ // an attribute comes before the reply it annotates
			}
			if pending += n; pending > maxRawElems {
				return nil, fmt.Errorf("%w: reply too large", ErrProtocol)
			}
		default:
			return nil, fmt.Errorf("%w: unexpected type byte %q", ErrProtocol, line[0])
		}
	}
	return dst, nil
}

// maxRawElems bounds the elements a reply read by ReadRaw may still
// announce.
const maxRawElems = 1 << 32

// readLineTo appends one CRLF-terminated line read from r, terminator
// included, of at most max bytes.
func readLineTo(r *bufio.Reader, dst []byte, max int64) ([]byte, error) {
	start := len(dst)
	for {
		chunk, err := r.ReadSlice('\n')
		dst = append(dst, chunk...)
		if int64(len(dst)-start) > max {
			return nil, fmt.Errorf("%w: line too long", ErrProtocol)
		}
		switch err {
		case nil:
			if len(dst)-start < 2 || dst[len(dst)-2] != '\r' {
				return nil, fmt.Errorf("%w: line not terminated by CRLF", ErrProtocol)
			}
			return dst, nil
		case bufio.ErrBufferFull:
			continue
		default:
			if err == io.EOF && len(dst) > start {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

func readLength(b []byte, max int64) (int64, error) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || n < -1 || n > max {
		return 0, fmt.Errorf("%w: bad length %q", ErrProtocol, b)
	}
	return n, nil
}

// readLine returns one CRLF-terminated line without its terminator, as a
// fresh slice.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, fmt.Errorf("%w: line too long", ErrProtocol)
	}
	if err != nil {
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("%w: line not terminated by CRLF", ErrProtocol)
	}
	return append([]byte(nil), line[:len(line)-2]...), nil
}
