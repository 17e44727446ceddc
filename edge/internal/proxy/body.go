package proxy

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"strconv"
	"tollgate/edge/internal/jsonstr"
	"unicode/utf8"

	"tollgate/edge/internal/apierr"
)

// maxTokensMax bounds max_tokens: far above any model's limit (the upstream checks the real
// one), low enough that a hold can never overflow.
const maxTokensMax = 1 << 31

// messagesRequest is what admission needs from a Messages body. model aliases the body: it
// must not outlive the request handler.
type messagesRequest struct {
	model     string
	maxTokens int64
	stream    bool
}

// Parse errors: fixed messages so a flood of bad bodies allocates nothing.
var (
	errEmptyBody        = apierr.Invalid("request body is empty")
	errMalformedJSON    = apierr.Invalid("There was an error parsing the body of your request: malformed JSON")
	errInvalidUTF8      = apierr.Invalid("There was an error parsing the body of your request: invalid UTF-8")
	errNotObject        = apierr.Invalid("request body must be a JSON object")
	errModelMissing     = apierr.Invalid("model: Field required")
	errModelType        = apierr.Invalid("model: Input should be a non-empty string")
	errMaxTokensMissing = apierr.Invalid("max_tokens: Field required")
	errMaxTokensType    = apierr.Invalid("max_tokens: Input should be a positive integer")
	errMessagesMissing  = apierr.Invalid("messages: Field required")
	errMessagesType     = apierr.Invalid("messages: Input should be a valid list")
	errStreamType       = apierr.Invalid("stream: Input should be a valid boolean")
	// Anthropic bills fast mode and US-only inference at other rates than the price table
	// holds; nothing is served that cannot be priced, so they are refused before forwarding.
	errSpeed        = apierr.Invalid(`speed: only "standard" is available through this gateway`)
	errInferenceGeo = apierr.Invalid(`inference_geo: only "global" is available through this gateway`)
)

// parseMessages checks a POST /v1/messages body as far as the edge must: valid JSON, an
// object, a non-empty string model, a positive integer max_tokens, a messages array and, if
// present, a boolean stream. Everything else is the upstream's to judge. It reads the body in
// one pass (validJSON, which also collects the top-level members) plus the UTF-8 check, and
// allocates nothing unless a member it reads has escapes in its key or string value.
func parseMessages(body []byte) (messagesRequest, *apierr.Error) {
	var r messagesRequest
	if len(body) == 0 {
		return r, errEmptyBody
	}
	var model, maxTokens, messages, stream []byte
	var unpriced *apierr.Error
	ok := validJSON(body, func(k, v []byte) {
		// Later duplicates replace earlier ones, as JSON decoders take them.
		switch jsonstr.Text(k) {
		case "speed":
			if string(v) != "null" && jsonstr.Text(v) != "standard" {
				unpriced = errSpeed
			}
		case "inference_geo":
			if string(v) != "null" && jsonstr.Text(v) != "global" {
				unpriced = errInferenceGeo
			}
		case "model":
			model = v
		case "max_tokens":
			maxTokens = v
		case "messages":
			messages = v
		case "stream":
			stream = v
		}
	})
	if !ok {
		return r, errMalformedJSON
	}
	// JSON text is UTF-8 (RFC 8259 §8.1) and validJSON does not check it inside strings:
	// without this, invalid bytes would be forwarded, served and billed, or refused by the
	// upstream in its own way. A separate pass because utf8.Valid is vectorized for ASCII.
	if !utf8.Valid(body) {
		return r, errInvalidUTF8
	}
	if body[skipWS(body, 0)] != '{' {
		return r, errNotObject
	}
	m := jsonstr.Text(model) // "" when model is missing or not a string
	switch {
	case model == nil:
		return r, errModelMissing
	case m == "":
		return r, errModelType
	case maxTokens == nil:
		return r, errMaxTokensMissing
	case messages == nil:
		return r, errMessagesMissing
	case messages[0] != '[':
		return r, errMessagesType
	}
	if unpriced != nil {
		return r, unpriced
	}
	// The raw number, not a float: "1.5", "1e3" and out-of-range values are refused rather
	// than rounded; strings and other types fail to parse.
	n, err := strconv.ParseInt(jsonstr.View(maxTokens), 10, 64)
	if err != nil || n <= 0 || n > maxTokensMax {
		return r, errMaxTokensType
	}
	switch string(stream) {
	case "true":
		r.stream = true
	case "false", "null", "":
	default:
		return r, errStreamType
	}
	r.model = m
	r.maxTokens = n
	return r, nil
}

// validJSON reports whether b is one JSON text as gjson.Valid judges it — RFC 8259, except
// that UTF-8 inside strings is left to the caller — and calls member with the raw key and
// value of each member of the top-level object, before it knows the rest of b is valid.
//
// It replaces gjson.Valid for two reasons (FuzzValidJSON holds the two to the same answers).
// Speed: gjson tests string bytes one at a time (about 1 GB/s), and prompts and base64 media
// are nearly all string bytes, searched here with bytes.IndexByte and eight bytes at a time.
// Safety: gjson.Valid recurses once per nesting level, so 32 MiB of '[' (the default body
// limit) overflowed the goroutine stack, which is fatal to the whole edge; here nesting costs
// a bit per level, on the stack up to 512 levels and on the heap past them.
func validJSON(b []byte, member func(key, val []byte)) bool {
	var small [8]uint64 // bit d set: the container open at depth d is an object
	open := small[:]
	depth := 0
	rootObject := false
	var key []byte // the top-level member being read
	start := 0     // where its value starts
	i := skipWS(b, 0)
	for {
		// A value starts at b[i], after its key if it is an object's.
		if depth > 0 && isObject(open, depth-1) {
			k, end := i, 0
			if end, i = memberValue(b, i); i < 0 {
				return false
			}
			if depth == 1 {
				key, start = b[k:end], i
			}
		}
		if i >= len(b) {
			return false
		}
		switch c := b[i]; c {
		case '{', '[':
			if depth>>6 == len(open) {
				open = append(open, 0)
			}
			bit := uint64(1) << (depth & 63)
			if c == '{' {
				open[depth>>6] |= bit
			} else {
				open[depth>>6] &^= bit
			}
			if depth++; depth == 1 {
				rootObject = c == '{'
			}
			i = skipWS(b, i+1)
			if i >= len(b) || b[i] != c+2 { // '{'+2 is '}', '['+2 is ']'
				continue
			}
			depth--
			i++
		case '"':
			i = validString(b, i+1)
		case 't':
			i = literal(b, i, "true")
		case 'f':
			i = literal(b, i, "false")
		case 'n':
			i = literal(b, i, "null")
		default:
			i = validNumber(b, i)
		}
		// A value ends at b[i]: close the containers it ends, up to the next value.
		for {
			if i < 0 {
				return false
			}
			if depth == 0 {
				return skipWS(b, i) == len(b)
			}
			if depth == 1 && rootObject {
				member(key, b[start:i])
			}
			if i = skipWS(b, i); i >= len(b) {
				return false
			}
			obj := isObject(open, depth-1)
			if c := b[i]; c == ',' {
				i = skipWS(b, i+1)
				break
			} else if obj && c == '}' || !obj && c == ']' {
				depth--
				i++
				continue
			}
			return false
		}
	}
}

// isObject reports whether the container open at depth d is an object.
func isObject(open []uint64, d int) bool { return open[d>>6]>>(d&63)&1 == 1 }

// memberValue reads a member's key at b[i] and the colon after it, and returns the index
// just past the key and the index of the value (-1 when malformed).
func memberValue(b []byte, i int) (keyEnd, value int) {
	if i >= len(b) || b[i] != '"' {
		return 0, -1
	}
	if keyEnd = validString(b, i+1); keyEnd < 0 {
		return 0, -1
	}
	if i = skipWS(b, keyEnd); i >= len(b) || b[i] != ':' {
		return 0, -1
	}
	return keyEnd, skipWS(b, i+1)
}

// validString returns the index just past the closing quote of the string whose contents
// start at b[i], or -1 when it is unterminated or has a control character or a bad escape.
// The bytes up to the next one that needs a look ('"', '\\' or a control character) are
// searched in a register first (special), which is all a key or escape-dense text needs;
// past 32 bytes the run is searched by bytes.IndexByte (vectorized) for the closing quote and
// a backslash before it, and by hasControl. The quote found is remembered until passed, so a
// long string costs one pass whatever its escapes.
func validString(b []byte, i int) int {
	quote := -1 // the next '"' at or after i once searched for (it may turn out escaped)
	for {
		j := special(b, i, i+32)
		if j < 0 {
			if quote < i {
				q := bytes.IndexByte(b[i:], '"')
				if q < 0 {
					return -1
				}
				quote = i + q
			}
			j = quote
			if k := bytes.IndexByte(b[i:j], '\\'); k >= 0 {
				j = i + k
			}
			if hasControl(b[i:j]) {
				return -1
			}
		}
		switch {
		case b[j] == '"':
			return j + 1
		case b[j] < 0x20:
			return -1
		}
		n := escapeLen(b, j)
		if n == 0 {
			return -1
		}
		i = j + n
	}
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// special returns the index of the first '"', '\\' or control character in b[i:end], or -1.
// It tests eight bytes at a time (SWAR): in x ^ pattern a byte equal to the pattern's is
// zero; (y-lsb) &^ y & msb marks the lowest zero byte of y exactly, and (x-lsb*0x20) &^ x &
// msb the lowest byte below 0x20 (a mark above the lowest can be false, never one below), so
// the lowest mark of the three is the first byte sought.
func special(b []byte, i, end int) int {
	end = min(end, len(b))
	for ; i+8 <= end; i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		q := x ^ (lsb * '"')
		s := x ^ (lsb * '\\')
		if m := ((q-lsb)&^q | (s-lsb)&^s | (x-lsb*0x20)&^x) & msb; m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for ; i < end; i++ {
		if c := b[i]; c == '"' || c == '\\' || c < 0x20 {
			return i
		}
	}
	return -1
}

// hasControl reports whether s holds a byte below 0x20, eight bytes at a time as in special.
func hasControl(s []byte) bool {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := binary.LittleEndian.Uint64(s[i:])
		if (x-lsb*0x20)&^x&msb != 0 {
			return true
		}
	}
	for ; i < len(s); i++ {
		if s[i] < 0x20 {
			return true
		}
	}
	return false
}

// escapeLen is the length of the escape whose backslash is b[i], 0 when it is not one.
func escapeLen(b []byte, i int) int {
	if i+1 >= len(b) {
		return 0
	}
	switch b[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2
	case 'u':
		if i+6 <= len(b) && isHex(b[i+2]) && isHex(b[i+3]) && isHex(b[i+4]) && isHex(b[i+5]) {
			return 6
		}
	}
	return 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// validNumber returns the index just past the number at b[i], or -1: an optional minus, an
// integer without leading zeros, an optional fraction and an optional exponent.
func validNumber(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		if i = digits(b, i+1); b[i-1] == '.' {
			return -1
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

// digits returns the index of the first byte at or after i that is not a decimal digit.
func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// literal returns the index just past the literal lit at b[i], or -1.
func literal(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// skipWS returns the index of the first byte at or after i that is not JSON whitespace.
func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}
