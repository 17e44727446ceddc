package meter

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/bits"
)

// A small JSON walker, used instead of gjson on this path for two measured reasons: gjson's
// generic traversal (ForEach) costs about 2 ns per byte here because it parses every number
// as a float and every sibling value in full, which alone breaks the 1 GB/s budget of the
// stream scanner; and reading a string with escapes through gjson allocates its unescaped
// copy, while text deltas are full of \n and \" and the Scanner promises no allocation per
// Write. The walker reads only what metering needs, skips the rest, and never allocates
// except to decode a kept string or key that contains escapes (never seen in practice).
//
// It is strict about structure — objects and arrays balanced and closed, strings
// terminated, members separated — because that is what catches a cut-off or corrupted
// payload; it does not check the spelling of literals or numbers it skips. Every function
// takes the index of a value's first byte (after whitespace) and returns the index just past
// it, or -1 when it is malformed or cut off. It never reads out of bounds (fuzzed).

// skipWS returns the index of the first byte at or after i that is not JSON whitespace.
func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// specialWithin returns the index of the first '"' or '\\' among the (up to) window bytes at
// b[i:], or -1. It tests eight bytes per step (SWAR): in x ^ pattern a matching byte is zero,
// and the classic (y-lsb) &^ y & msb test marks the lowest zero byte exactly — false marks
// can only appear above a true one — so the lowest mark of either test is the first match.
// Short strings (keys, small deltas) end here without a function call.
func specialWithin(b []byte, i, window int) int {
	end := min(len(b), i+window)
	for ; i+8 <= end; i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		q := x ^ (lsb * '"')
		s := x ^ (lsb * '\\')
		if m := ((q - lsb) &^ q) | ((s - lsb) &^ s); m&msb != 0 {
			return i + bits.TrailingZeros64(m&msb)>>3
		}
	}
	for ; i < end; i++ {
		if b[i] == '"' || b[i] == '\\' {
			return i
		}
	}
	return -1
}

// scanString reads the string whose opening quote is b[i]. It returns the index just past
// the closing quote (-1 when unterminated) and the string's decoded length in UTF-8 bytes
// (bytes as they are, escapes as what they decode to, a lone surrogate as U+FFFD). Past a
// short window it switches to bytes.IndexByte (SIMD) and remembers where the next quote is,
// so a long string costs one pass whatever its escapes.
func scanString(b []byte, i int) (end int, n int64) {
	i++
	quote := -1 // the next '"' at or after i once searched for (it may turn out escaped)
	for {
		j := -1
		if quote < i {
			if j = specialWithin(b, i, 32); j < 0 {
				q := bytes.IndexByte(b[i:], '"')
				if q < 0 {
					return -1, n
				}
				quote = i + q
			}
		}
		if j < 0 {
			j = quote
			if k := bytes.IndexByte(b[i:quote], '\\'); k >= 0 {
				j = i + k
			}
		}
		n += int64(j - i)
		if b[j] == '"' {
			return j + 1, n
		}
		if j+1 >= len(b) {
			return -1, n
		}
		i, n = escape(b, j, n)
	}
}

// escape decodes the escape at b[i] (a backslash with at least one byte after it), adds its
// UTF-8 length to n and returns the index after it.
func escape(b []byte, i int, n int64) (int, int64) {
	if b[i+1] != 'u' {
		return i + 2, n + 1
	}
	cp, ok := hex4(b, i+2)
	if !ok {
		return i + 2, n + 1 // malformed: count one byte and move on
	}
	if cp >= 0xD800 && cp < 0xDC00 && i+12 <= len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
		if lo, ok := hex4(b, i+8); ok && lo >= 0xDC00 && lo < 0xE000 {
			return i + 12, n + 4 // a surrogate pair is one 4-byte code point
		}
	}
	switch {
	case cp < 0x80:
		n++
	case cp < 0x800:
		n += 2
	default:
		n += 3 // includes a lone surrogate, decoded as U+FFFD
	}
	return i + 6, n
}

// hex4 decodes the four hex digits at b[i:i+4].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// literalEnd marks the bytes that end a number or literal.
var literalEnd = [256]bool{',': true, '}': true, ']': true, ':': true, '"': true, '{': true, '[': true,
	' ': true, '\t': true, '\n': true, '\r': true}

// skipValue returns the index just past the value at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		end, _ := scanString(b, i)
		return end
	case '{', '[':
	default:
		j := i
		for j < len(b) && !literalEnd[b[j]] {
			j++
		}
		if j == i {
			return -1 // a stray delimiter where a value belongs
		}
		return j
	}
	depth := 0
	for i < len(b) {
		switch b[i] {
		case '"':
			end, _ := scanString(b, i)
			if end < 0 {
				return -1
			}
			i = end
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
		i++
	}
	return -1
}

// members walks the object at b[i]: for each member it calls fn with the key (raw unless it
// has escapes) and the index of the value; fn returns the index just past the value or -1.
// Duplicate keys are all passed in order, so callers that assign get "last wins", as
// encoding/json does.
func members(b []byte, i int, fn func(key []byte, v int) int) int {
	if i >= len(b) || b[i] != '{' {
		return -1
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return -1
		}
		e, n := scanString(b, i)
		if e < 0 {
			return -1
		}
		key := b[i+1 : e-1]
		if n != int64(len(key)) { // every escape decodes shorter than it is written
			key = []byte(decode(b[i:e]))
		}
		i = skipWS(b, e)
		if i >= len(b) || b[i] != ':' {
			return -1
		}
		if i = fn(key, skipWS(b, i+1)); i < 0 {
			return -1
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return -1
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return i + 1
		default:
			return -1
		}
	}
}

// elements walks the array at b[i] like members.
func elements(b []byte, i int, fn func(v int) int) int {
	if i >= len(b) || b[i] != '[' {
		return -1
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1
	}
	for {
		if i = fn(i); i < 0 {
			return -1
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return -1
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case ']':
			return i + 1
		default:
			return -1
		}
	}
}

// whole reports whether end is the end of a well-formed value followed only by whitespace.
func whole(b []byte, end int) bool {
	return end >= 0 && skipWS(b, end) == len(b)
}

// plain reports whether a string's raw bytes are its value: no escapes, all ASCII.
func plain(raw []byte) bool {
	for _, c := range raw {
		if c == '\\' || c >= 0x80 {
			return false
		}
	}
	return true
}

// decode returns the value of the quoted JSON string q. It allocates; callers use it only for
// strings with escapes or non-ASCII bytes (encoding/json then also turns invalid UTF-8 into
// U+FFFD, as every consumer of the record expects).
func decode(q []byte) string {
	var s string
	if json.Unmarshal(q, &s) != nil {
		return ""
	}
	return s
}

// jstr is a string value seen by the walker: the quoted raw bytes, aliasing the input.
type jstr struct {
	q  []byte // with the quotes; nil when absent or not a string
	ok bool
}

// stringAt reads a string value at b[v]. A value of another type gives !ok (last wins).
func stringAt(b []byte, v int) (jstr, int) {
	if v < len(b) && b[v] == '"' {
		e, _ := scanString(b, v)
		if e < 0 {
			return jstr{}, -1
		}
		return jstr{q: b[v:e], ok: true}, e
	}
	return jstr{}, skipValue(b, v)
}

// own returns the string as one owned by the caller: intern maps known values to constants
// and clones anything else.
func (j jstr) own(intern func(string) string) string {
	if !j.ok {
		return ""
	}
	raw := j.q[1 : len(j.q)-1]
	if plain(raw) {
		return intern(str(raw))
	}
	return intern(decode(j.q))
}

// is reports whether the string's value is v, without allocating when it has no escapes.
func (j jstr) is(v string) bool {
	if !j.ok {
		return false
	}
	if raw := j.q[1 : len(j.q)-1]; plain(raw) {
		return string(raw) == v
	}
	return decode(j.q) == v
}

// count is a token or request count seen by the walker.
type count struct {
	n  int64
	ok bool
}

// countAt reads a count at b[v]: a JSON integer without sign, fraction or exponent, at most
// CountMax. Anything else (null, negative, fractional, huge, another type) gives !ok: a
// missing field.
func countAt(b []byte, v int) (count, int) {
	end := skipValue(b, v)
	if end < 0 {
		return count{}, -1
	}
	raw := b[v:end]
	if len(raw) == 0 || len(raw) > 13 { // CountMax has 13 digits
		return count{}, end
	}
	var n int64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return count{}, end
		}
		n = n*10 + int64(c-'0')
	}
	if n > CountMax {
		return count{}, end
	}
	return count{n: n, ok: true}, end
}
