package mock

import (
	"bytes"
	"strconv"
	"strings"
	"time"
)

// rendered is a response body rendered once per spec and cached. It is immutable once built:
// many responses read it concurrently, each copying it and filling its own ids.
type rendered struct {
	body   []byte
	slots  []int   // offsets in body of id suffixes (idSuffixLen bytes) filled per response
	pieces []piece // written in order, one flush each
}

// piece is a part of a rendered body written and flushed on its own.
type piece struct {
	end int           // offset in body just past the piece
	at  time.Duration // when to write it, from the first write of the body
}

// size estimates the memory a rendered response holds, for the cache bound.
func (r *rendered) size() int64 {
	return int64(len(r.body)) + 8*int64(len(r.slots)) + 16*int64(len(r.pieces)) + 128
}

// idPlaceholder marks where a fresh id goes. Byte 0x01 cannot appear raw anywhere else in a
// rendered body: JSON escapes control characters in strings, and the mock's own text is ASCII.
var idPlaceholder = bytes.Repeat([]byte{0x01}, idSuffixLen)

const (
	fillerText   = "The quick brown fox jumps over the lazy dog. "
	thinkingText = "Let me think about this step by step. "
	signature    = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds2Q7fyOx" +
		"ebg2Dy7hDCggAeJ7Pp4QSq8DM9P0YRR4iwuJ8gtzu9nKA8jL4hXnW9lKmmGgMhtmQfDq7rdHKkJAWhEmDgFIgpe"
	toolInputJSON = `{"query":"mock"}`
	serviceTier   = "standard"
)

// render builds the response body of a spec whose status is 200.
func render(s *spec) *rendered {
	if s.stream {
		return renderStream(s)
	}
	return renderJSON(s)
}

// renderJSON builds a non-streaming Messages response.
func renderJSON(s *spec) *rendered {
	b := make([]byte, 0, 512+s.textBytes)
	b = append(b, `{"id":"msg_01`...)
	b = append(b, idPlaceholder...)
	b = append(b, `","type":"message","role":"assistant","model":`...)
	b = appendJSONString(b, s.model)
	b = append(b, `,"content":[`...)
	if s.thinking > 0 {
		b = append(b, `{"type":"thinking","thinking":`...)
		b = appendJSONString(b, repeatTo(thinkingText, thinkingBytes(s)))
		b = append(b, `,"signature":"`+signature+`"},`...)
	}
	b = append(b, `{"type":"text","text":`...)
	b = appendJSONString(b, repeatTo(fillerText, s.textBytes))
	b = append(b, '}')
	if s.tool != "" {
		b = append(b, `,{"type":"tool_use","id":"toolu_01`...)
		b = append(b, idPlaceholder...)
		b = append(b, `","name":`...)
		b = appendJSONString(b, s.tool)
		b = append(b, `,"input":`+toolInputJSON+`}`...)
	}
	b = append(b, `],"stop_reason":`...)
	b = appendJSONString(b, s.stop)
	b = append(b, `,"stop_sequence":null,"usage":`...)
	b = appendFullUsage(b, s)
	b = append(b, '}')

	if s.modes&modePadded != 0 {
		b = pad(make([]byte, 0, len(b)*2), b, true)
	}
	slots := findSlots(b)
	if s.modes&modeTruncate != 0 {
		b = b[:len(b)/2]
	}
	r := &rendered{body: b, slots: slots}
	if s.modes&modeSplit != 0 {
		// Arbitrary cut points; what matters is that the body arrives in several reads.
		for k := 1; k < 8; k++ {
			if end := len(b) * k / 8; end > 0 && (len(r.pieces) == 0 || end > r.pieces[len(r.pieces)-1].end) {
				r.pieces = append(r.pieces, piece{end: end})
			}
		}
	}
	r.pieces = append(r.pieces, piece{end: len(b)})
	return r
}

// sseEvent is one server-sent event before serialization.
type sseEvent struct {
	name string
	data []byte        // compact JSON
	at   time.Duration // when it is due, from the start of the stream
}

// renderStream builds a streaming Messages response: the events, then their serialization with
// the spec's modes, then the pieces that decide flushes and pacing.
func renderStream(s *spec) *rendered {
	evs := streamEvents(s)
	eol := "\n"
	if s.modes&modeCRLF != 0 {
		eol = "\r\n"
	}
	padded := s.modes&modePadded != 0

	size := 0
	for _, ev := range evs {
		size += len(ev.data)
	}
	b := make([]byte, 0, 2*size+64*len(evs))
	type span struct{ start, eventLineEnd, dataStart, dataEnd, end int }
	spans := make([]span, len(evs))
	for i, ev := range evs {
		var sp span
		sp.start = len(b)
		b = append(b, "event: "...)
		b = append(b, ev.name...)
		b = append(b, eol...)
		sp.eventLineEnd = len(b)
		b = append(b, "data: "...)
		sp.dataStart = len(b)
		if padded {
			b = pad(b, ev.data, false)
		} else {
			b = append(b, ev.data...)
		}
		sp.dataEnd = len(b)
		b = append(b, eol...)
		b = append(b, eol...)
		sp.end = len(b)
		spans[i] = sp
	}

	r := &rendered{body: b, slots: findSlots(b)}
	if s.modes&modeSplit == 0 {
		// One piece per run of events due at the same time: with no pacing, one write in all.
		for i, ev := range evs {
			if i+1 == len(evs) || evs[i+1].at != ev.at {
				r.pieces = append(r.pieces, piece{end: spans[i].end, at: ev.at})
			}
		}
		return r
	}

	// Split: cut every event at awkward places, so that a reader sees lines split mid-way, a
	// \r apart from its \n, and the end of one event in the same read as the start of the next.
	var cuts []int
	for _, sp := range spans {
		cuts = append(cuts, sp.start+3) // inside "event:"
		if s.modes&modeCRLF != 0 {
			cuts = append(cuts, sp.eventLineEnd-1) // between \r and \n
		} else {
			cuts = append(cuts, sp.eventLineEnd+2) // inside "data:"
		}
		cuts = append(cuts, sp.dataStart+(sp.dataEnd-sp.dataStart)/2, sp.end-1)
	}
	cuts = append(cuts, len(b))
	ev := 0
	start := 0
	for _, end := range cuts {
		if end <= start {
			continue
		}
		for spans[ev].end <= start {
			ev++
		}
		// A piece is due when the event holding its first byte is due.
		r.pieces = append(r.pieces, piece{end: end, at: evs[ev].at})
		start = end
	}
	return r
}

// streamEvents lists the events of a stream, each with the time it is due.
func streamEvents(s *spec) []sseEvent {
	var evs []sseEvent
	var at time.Duration
	add := func(name string, data []byte) {
		evs = append(evs, sseEvent{name: name, data: data, at: at})
	}

	// Token deltas are spread evenly: delta i of n is due at ttft + i·(output/n)/tps.
	thinkingDeltas := 0
	if s.thinking > 0 {
		thinkingDeltas = min(thinkingDeltasDefault, thinkingBytes(s))
	}
	toolDeltas := 0
	if s.tool != "" {
		toolDeltas = 2
	}
	tokenDeltas := thinkingDeltas + s.events + toolDeltas
	var perDelta time.Duration
	if s.tps > 0 {
		perDelta = time.Duration(float64(s.output) / float64(tokenDeltas) / s.tps * float64(time.Second))
	}
	deltaIndex := 0
	tokenDelta := func(index int, delta []byte) {
		at = s.ttft + time.Duration(deltaIndex)*perDelta
		deltaIndex++
		add("content_block_delta", blockDelta(index, delta))
	}

	start := []byte(`{"type":"message_start","message":{"model":`)
	start = appendJSONString(start, s.model)
	start = append(start, `,"id":"msg_01`...)
	start = append(start, idPlaceholder...)
	start = append(start, `","type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,"usage":`...)
	start = appendStartUsage(start, s)
	start = append(start, `}}`...)
	add("message_start", start)

	index := 0
	blockStart := func(block string) {
		add("content_block_start", []byte(`{"type":"content_block_start","index":`+strconv.Itoa(index)+`,"content_block":`+block+`}`))
		if index == 0 {
			add("ping", []byte(`{"type": "ping"}`)) // the API writes this one with a space
		}
	}
	blockStop := func() {
		add("content_block_stop", []byte(`{"type":"content_block_stop","index":`+strconv.Itoa(index)+`}`))
		index++
	}

	if s.thinking > 0 {
		blockStart(`{"type":"thinking","thinking":"","signature":""}`)
		text := repeatTo(thinkingText, thinkingBytes(s))
		for i := range thinkingDeltas {
			part := text[len(text)*i/thinkingDeltas : len(text)*(i+1)/thinkingDeltas]
			tokenDelta(index, deltaJSON(`{"type":"thinking_delta","thinking":`, part))
		}
		add("content_block_delta", blockDelta(index, []byte(`{"type":"signature_delta","signature":"`+signature+`"}`)))
		blockStop()
	}

	blockStart(`{"type":"text","text":""}`)
	text := repeatTo(fillerText, s.textBytes)
	sent := s.events
	if s.modes&(modeError|modeTruncate) != 0 {
		sent = (s.events + 1) / 2
	}
	for i := range sent {
		part := text[len(text)*i/s.events : len(text)*(i+1)/s.events]
		tokenDelta(index, deltaJSON(`{"type":"text_delta","text":`, part))
	}
	switch {
	case s.modes&modeError != 0:
		add("error", []byte(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`))
		return evs
	case s.modes&modeTruncate != 0:
		return evs
	}
	blockStop()

	if s.tool != "" {
		block := []byte(`{"type":"tool_use","id":"toolu_01`)
		block = append(block, idPlaceholder...)
		block = append(block, `","name":`...)
		block = appendJSONString(block, s.tool)
		block = append(block, `,"input":{}}`...)
		blockStart(string(block))
		half := len(toolInputJSON) / 2
		for _, part := range []string{toolInputJSON[:half], toolInputJSON[half:]} {
			tokenDelta(index, deltaJSON(`{"type":"input_json_delta","partial_json":`, part))
		}
		blockStop()
	}

	delta := []byte(`{"type":"message_delta","delta":{"stop_reason":`)
	delta = appendJSONString(delta, s.stop)
	delta = append(delta, `,"stop_sequence":null},"usage":`...)
	delta = appendDeltaUsage(delta, s)
	delta = append(delta, '}')
	add("message_delta", delta)
	add("message_stop", []byte(`{"type":"message_stop"}`))
	return evs
}

// deltaJSON returns the delta object {…"key":value} from its opening and its string value.
func deltaJSON(opening, value string) []byte {
	b := appendJSONString([]byte(opening), value)
	return append(b, '}')
}

func blockDelta(index int, delta []byte) []byte {
	b := make([]byte, 0, len(delta)+64)
	b = append(b, `{"type":"content_block_delta","index":`...)
	b = strconv.AppendInt(b, int64(index), 10)
	b = append(b, `,"delta":`...)
	b = append(b, delta...)
	return append(b, '}')
}

func thinkingBytes(s *spec) int {
	return int(max(1, min(s.thinking*bytesPerToken, thinkingTextBytesMax)))
}

// startUsageInput is the input count message_start reports. With web search the API reports
// the prompt first and the larger total, search results included, in message_delta.
func startUsageInput(s *spec) int64 {
	if s.webSearch > 0 {
		return s.input / (s.webSearch + 1)
	}
	return s.input
}

// appendStartUsage writes message_start's usage: output_tokens is 1 there, as the API sends it.
func appendStartUsage(b []byte, s *spec) []byte {
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, startUsageInput(s), 10)
	b = appendCacheUsage(b, s, true)
	b = append(b, `,"output_tokens":1,"service_tier":"`+serviceTier+`"}`...)
	return b
}

// appendDeltaUsage writes message_delta's usage: cumulative counts, without the 5m/1h split.
func appendDeltaUsage(b []byte, s *spec) []byte {
	if s.modes&modeLean != 0 {
		b = append(b, `{"output_tokens":`...)
		b = strconv.AppendInt(b, s.output, 10)
		return append(b, '}')
	}
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, s.input, 10)
	b = appendCacheUsage(b, s, false)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, s.output, 10)
	b = appendExtraUsage(b, s)
	return append(b, '}')
}

// appendFullUsage writes the usage of a non-streaming response.
func appendFullUsage(b []byte, s *spec) []byte {
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, s.input, 10)
	b = appendCacheUsage(b, s, true)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, s.output, 10)
	b = append(b, `,"service_tier":"`+serviceTier+`"`...)
	b = appendExtraUsage(b, s)
	return append(b, '}')
}

func appendCacheUsage(b []byte, s *spec, split bool) []byte {
	b = append(b, `,"cache_creation_input_tokens":`...)
	b = strconv.AppendInt(b, s.cacheWrite5m+s.cacheWrite1h, 10)
	b = append(b, `,"cache_read_input_tokens":`...)
	b = strconv.AppendInt(b, s.cacheRead, 10)
	if split {
		b = append(b, `,"cache_creation":{"ephemeral_5m_input_tokens":`...)
		b = strconv.AppendInt(b, s.cacheWrite5m, 10)
		b = append(b, `,"ephemeral_1h_input_tokens":`...)
		b = strconv.AppendInt(b, s.cacheWrite1h, 10)
		b = append(b, '}')
	}
	return b
}

// appendExtraUsage writes the usage fields the API only sends when they apply.
func appendExtraUsage(b []byte, s *spec) []byte {
	if s.webSearch > 0 {
		b = append(b, `,"server_tool_use":{"web_search_requests":`...)
		b = strconv.AppendInt(b, s.webSearch, 10)
		b = append(b, '}')
	}
	if s.thinking > 0 {
		b = append(b, `,"output_tokens_details":{"thinking_tokens":`...)
		b = strconv.AppendInt(b, s.thinking, 10)
		b = append(b, '}')
	}
	return b
}

// repeatTo returns unit repeated and cut to exactly n bytes.
func repeatTo(unit string, n int) string {
	return strings.Repeat(unit, n/len(unit)+1)[:n]
}

func findSlots(b []byte) []int {
	var slots []int
	for off := 0; ; {
		i := bytes.Index(b[off:], idPlaceholder)
		if i < 0 {
			return slots
		}
		slots = append(slots, off+i)
		off += i + idSuffixLen
	}
}

// pad re-spaces compact JSON the way some encoders and proxies do: spaces around ':' and ',',
// inside braces and brackets, and with newlines when multiline. Strings are left untouched.
// SSE data must stay on one line, so streams use multiline=false.
func pad(dst, src []byte, multiline bool) []byte {
	open, sep, closing := "  ", " , ", " "
	if multiline {
		open, sep, closing = "\n  ", " ,\n  ", "\n"
	}
	inString, escaped := false, false
	for _, c := range src {
		if inString {
			dst = append(dst, c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
			dst = append(dst, c)
		case '{', '[':
			dst = append(dst, c)
			dst = append(dst, open...)
		case '}', ']':
			dst = append(dst, closing...)
			dst = append(dst, c)
		case ':':
			dst = append(dst, " : "...)
		case ',':
			dst = append(dst, sep...)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// appendJSONString appends s as a JSON string, escaping what JSON requires.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
