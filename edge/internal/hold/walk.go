package hold

import (
	"bytes"
	"encoding/binary"
	"iter"
	"math/bits"
	"tollgate/edge/internal/jsonstr"

	"github.com/tidwall/gjson"
)

// A small reader of the JSON values of a body the proxy has validated, so that Scan costs
// one pass and no allocation. gjson's ForEach decodes every string it passes into a new
// string, and a prompt full of \n and \" was copied on every request only to be stepped over.
// Here a value is its raw bytes in the body; the few strings Scan compares are decoded only
// when they hold an escape, and then by gjson, so what Scan reads is what gjson reads.
//
// On bytes that are not valid JSON the reader never reads out of bounds and always makes
// progress (FuzzScan); what it reads from them is meaningless, as Scan's contract allows.

// skipWS returns the index of the first byte at or after i that is not JSON whitespace.
func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string whose opening quote is b[i] (len(b) when
// it is unterminated). A quote after an odd run of backslashes is part of the string.
func stringEnd(b []byte, i int) int {
	i++
	for {
		q := quote(b, i)
		if q < 0 {
			return len(b)
		}
		i = q + 1
		n := 0
		for k := q - 1; b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return i
		}
	}
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// quote returns the index of the first '"' at or after i, or -1. Keys and short values end
// within a few words, so the first 32 bytes are searched eight at a time in a register
// (SWAR: in x ^ pattern a quote is a zero byte, and (y-lsb) &^ y & msb marks the lowest zero
// byte exactly); past them bytes.IndexByte, vectorized but dearer to start, takes over.
func quote(b []byte, i int) int {
	end := min(len(b), i+32)
	for ; i+8 <= end; i += 8 {
		y := binary.LittleEndian.Uint64(b[i:]) ^ (lsb * '"')
		if m := (y - lsb) &^ y & msb; m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for ; i < end; i++ {
		if b[i] == '"' {
			return i
		}
	}
	if q := bytes.IndexByte(b[i:], '"'); q >= 0 {
		return i + q
	}
	return -1
}

// delim marks the bytes that end a number or literal.
var delim = [256]bool{',': true, '}': true, ']': true, ':': true, '"': true, '{': true, '[': true,
	' ': true, '\t': true, '\n': true, '\r': true}

// valueEnd returns the index just past the value at b[i] (i itself when there is none).
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = stringEnd(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return i
	}
	for i < len(b) && !delim[b[i]] {
		i++
	}
	return i
}

// each yields the members of the object v with their raw keys (quotes included), or the
// elements of the array v with nil keys, or v itself once with a nil key when it is neither:
// what gjson's ForEach passes, without decoding any of it.
func each(v []byte) iter.Seq2[[]byte, []byte] {
	return func(yield func(key, val []byte) bool) {
		if len(v) == 0 {
			return
		}
		if v[0] != '{' && v[0] != '[' {
			yield(nil, v)
			return
		}
		obj := v[0] == '{'
		for i := 1; ; i++ {
			i = skipWS(v, i)
			var key []byte
			if obj {
				if i >= len(v) || v[i] != '"' {
					return
				}
				e := stringEnd(v, i)
				key = v[i:e]
				if i = skipWS(v, e); i >= len(v) || v[i] != ':' {
					return
				}
				i = skipWS(v, i+1)
			}
			e := valueEnd(v, i)
			if e == i || !yield(key, v[i:e]) {
				return
			}
			if i = skipWS(v, e); i >= len(v) || v[i] != ',' {
				return
			}
		}
	}
}

// integer is the JSON value v read as gjson's Result.Int reads it: numbers truncated,
// numeric strings parsed, true as 1, anything else 0.
func integer(v []byte) int64 {
	return gjson.Parse(jsonstr.View(v)).Int()
}

// field is obj's member named key, the last one as JSON decoders take it (nil when obj is not
// an object or has none).
func field(obj []byte, key string) []byte {
	var out []byte
	if len(obj) > 0 && obj[0] == '{' {
		for k, v := range each(obj) {
			if jsonstr.Text(k) == key {
				out = v
			}
		}
	}
	return out
}

// isArray reports whether the raw value v is an array.
func isArray(v []byte) bool { return len(v) > 0 && v[0] == '[' }
