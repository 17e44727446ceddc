package meter

import (
	"bytes"
	"strings"
)

// Scanner meters an Anthropic SSE stream incrementally: feed it every chunk the upstream sends,
// in order, as it is forwarded, then read Result. It implements the SSE line rules (LF, CRLF
// and lone CR endings, split anywhere across Writes; "field: value" with one optional space;
// data lines joined with "\n"; comments and unknown fields ignored; an event ends at a blank
// line, and an unfinished last event is discarded) and looks only at the events that carry
// facts: message_start, message_delta, error, plus a cheap text count of
// content_block_delta. An event is recognised by its name, or by its JSON "type" when it has
// no name (or the SSE default name "message").
//
// Memory: the Scanner keeps at most EventBytesMax of one event's data, and none of events it
// does not parse beyond TextEventBytesMax; lines of other events and fields are counted and
// discarded as they pass. It allocates only when its buffer first grows and, once per
// stream, for the message id (a new model string too). The zero value is ready to use; Reset
// readies it for another stream and keeps its buffer. A Scanner is not safe for concurrent
// use.
type Scanner struct {
	res           Result // Complete and the Thinking cap are applied by Result
	sawStart      bool   // a valid message_start was applied
	sawDeltaUsage bool   // a valid message_delta with a usage object was applied
	dropped       bool   // an event we must parse was oversized or malformed
	model         string // the last model string, kept across Reset to avoid reallocating it

	// Line state.
	crPending bool // the last byte was '\r': a '\n' right after it ends nothing more
	mode      lineMode
	skipSpace bool // the value's optional leading space has not been passed yet
	field     [fieldBytesMax + 1]byte
	fieldLen  int

	// Event state.
	kind      kind // from the last event field; kindNone when there was none
	name      [EventNameBytesMax]byte
	nameLen   int
	nameLong  bool
	hasData   bool  // a data field was seen: the event will be dispatched
	lost      bool  // some data bytes were not kept (limit, or an event we do not parse)
	dataBytes int64 // all data bytes of the event, kept or not, with the joining newlines
	data      []byte
}

// fieldBytesMax is the longest field name we act on ("event"); longer names are ignored.
const fieldBytesMax = len("event")

type lineMode uint8

const (
	modeField  lineMode = iota // reading the field name, up to the colon
	modeEvent                  // reading an event name
	modeData                   // reading a data value
	modeIgnore                 // a comment or a field we do not use
)

// kind is what an event means to metering.
type kind uint8

const (
	kindNone  kind = iota // no name: decided by the payload's "type"
	kindStart             // message_start
	kindDelta             // message_delta
	kindError             // error
	kindText              // content_block_delta: only its text bytes are counted
	kindOther             // ping, content_block_start/stop, message_stop, unknown names
)

func kindOf(name string) kind {
	switch name {
	case "", "message":
		return kindNone
	case "message_start":
		return kindStart
	case "message_delta":
		return kindDelta
	case "error":
		return kindError
	case "content_block_delta":
		return kindText
	}
	return kindOther
}

var newline = []byte{'\n'}

// Write scans p. It never fails and never retains p; it always returns len(p), nil.
func (s *Scanner) Write(p []byte) (int, error) {
	n := len(p)
	if s.crPending && len(p) > 0 {
		s.crPending = false
		if p[0] == '\n' {
			p = p[1:]
		}
	}
	// lf and cr are the next '\n' and '\r' at or after off, -1 when p has none left. Each is
	// searched for again only once passed, so a chunk full of one kind of ending is still
	// scanned once.
	lf, cr := -2, -2
	off := 0
	for off < len(p) {
		if lf != -1 && lf < off {
			lf = indexFrom(p, off, '\n')
		}
		if cr != -1 && cr < off {
			cr = indexFrom(p, off, '\r')
		}
		end := lf
		if cr >= 0 && (end < 0 || cr < end) {
			end = cr
		}
		if end < 0 {
			s.line(p[off:])
			break
		}
		if s.mode == modeField && s.fieldLen == 0 {
			s.wholeLine(p[off:end])
		} else {
			s.line(p[off:end])
			s.endLine()
		}
		off = end + 1
		if p[end] == '\r' {
			if off == len(p) {
				s.crPending = true
			} else if p[off] == '\n' {
				off++
			}
		}
	}
	return n, nil
}

// colon is bytes.IndexByte(p, ':') for the few bytes of a field name, without a call.
func colon(p []byte) int {
	for i, c := range p {
		if c == ':' {
			return i
		}
	}
	return -1
}

func indexFrom(p []byte, off int, c byte) int {
	if i := bytes.IndexByte(p[off:], c); i >= 0 {
		return off + i
	}
	return -1
}

// wholeLine handles a line that arrived in one piece, the usual case, without the per-byte
// bookkeeping line needs to resume a split line. It must act exactly as line+endLine (the
// split-point tests compare the two).
func (s *Scanner) wholeLine(l []byte) {
	switch {
	case len(l) == 0:
		s.dispatch()
	case hasPrefix(l, "data:"):
		v := l[len("data:"):]
		if len(v) > 0 && v[0] == ' ' {
			v = v[1:]
		}
		if s.hasData {
			s.appendData(newline)
		}
		s.hasData = true
		s.appendData(v)
	case hasPrefix(l, "event:"):
		v := l[len("event:"):]
		if len(v) > 0 && v[0] == ' ' {
			v = v[1:]
		}
		s.kind = kindOther
		if len(v) <= EventNameBytesMax {
			s.kind = kindOf(str(v))
		}
	default:
		s.line(l)
		s.endLine()
	}
}

// line takes the next piece of the current line (no line ending).
func (s *Scanner) line(seg []byte) {
	if s.mode == modeField {
		// A field we act on has a colon within fieldBytesMax+1 bytes of the line start.
		n := min(len(seg), len(s.field)-s.fieldLen)
		i := colon(seg[:n])
		if i < 0 {
			s.fieldLen += copy(s.field[s.fieldLen:], seg[:n])
			if s.fieldLen > fieldBytesMax {
				s.mode = modeIgnore
			}
			return
		}
		s.fieldLen += copy(s.field[s.fieldLen:], seg[:i])
		s.startValue()
		seg = seg[i+1:]
	}
	if s.mode == modeIgnore || len(seg) == 0 {
		return
	}
	if s.skipSpace {
		s.skipSpace = false
		if seg[0] == ' ' {
			seg = seg[1:]
		}
	}
	switch s.mode {
	case modeEvent:
		c := copy(s.name[s.nameLen:], seg)
		s.nameLen += c
		if c < len(seg) {
			s.nameLong = true
		}
	case modeData:
		s.appendData(seg)
	}
}

// startValue acts on the field name once the colon (or the line end) is reached.
func (s *Scanner) startValue() {
	s.skipSpace = true
	switch string(s.field[:s.fieldLen]) {
	case "event":
		s.mode = modeEvent
		s.nameLen = 0
		s.nameLong = false
	case "data":
		s.mode = modeData
		if s.hasData {
			s.appendData(newline)
		}
		s.hasData = true
	default:
		s.mode = modeIgnore // a comment (empty name), id, retry or anything else
	}
}

func (s *Scanner) endLine() {
	if s.mode == modeField {
		if s.fieldLen == 0 {
			s.dispatch()
			return
		}
		s.startValue() // a line without a colon is a field name with an empty value
	}
	if s.mode == modeEvent {
		s.kind = kindOther
		if !s.nameLong {
			s.kind = kindOf(str(s.name[:s.nameLen]))
		}
	}
	s.mode = modeField
	s.fieldLen = 0
}

// appendData keeps v as event data when the event is one we read and the limit allows.
func (s *Scanner) appendData(v []byte) {
	s.dataBytes += int64(len(v))
	if s.lost || len(v) == 0 {
		return
	}
	limit := EventBytesMax
	switch s.kind {
	case kindOther:
		s.lost = true
		return
	case kindText:
		limit = TextEventBytesMax
	}
	if room := max(limit-len(s.data), 0); len(v) > room {
		v = v[:room] // keep the prefix: an unnamed event's type may still be read from it
		s.lost = true
	}
	if len(s.data)+len(v) > cap(s.data) {
		c := max(2*cap(s.data), len(s.data)+len(v), dataBytesInitial)
		grown := make([]byte, len(s.data), min(c, EventBytesMax))
		copy(grown, s.data)
		s.data = grown
	}
	s.data = append(s.data, v...)
}

// dispatch handles the event ended by a blank line and clears the event state.
func (s *Scanner) dispatch() {
	if s.hasData {
		s.handle()
	}
	s.kind = kindNone
	s.nameLen = 0
	s.nameLong = false
	s.hasData = false
	s.lost = false
	s.dataBytes = 0
	s.data = s.data[:0]
}

func (s *Scanner) handle() {
	p := s.data
	k := s.kind
	if k == kindNone {
		// The type is read even from a cut-off prefix, as long as it comes first.
		if t, ok := typeOf(p); ok {
			k = kindOf(str(t))
			if k == kindNone {
				k = kindOther
			}
		} else if s.lost {
			s.dropped = true // too big to tell what it was: it may have carried usage
			return
		} else {
			return // not an event of this API
		}
	}
	switch k {
	case kindStart:
		f, ok := parseStart(p)
		if s.lost || !ok {
			s.dropped = true
			return
		}
		s.sawStart = true
		if f.id.ok {
			s.res.MessageID = f.id.own(strings.Clone)
		}
		if f.model.ok {
			if m := f.model.q; plain(m) && str(m[1:len(m)-1]) == s.model {
				s.res.Model = s.model // the usual case: no allocation
			} else {
				s.model = f.model.own(strings.Clone)
				s.res.Model = s.model
			}
		}
		if f.stop.ok {
			s.res.StopReason = f.stop.own(internStop)
		}
		f.usage.merge(&s.res.Tokens)
	case kindDelta:
		f, ok := parseDelta(p)
		if s.lost || !ok {
			s.dropped = true
			return
		}
		if f.hasUsage {
			s.sawDeltaUsage = true
			f.usage.merge(&s.res.Tokens)
		}
		if f.stop.ok {
			s.res.StopReason = f.stop.own(internStop)
		}
	case kindError:
		t := ""
		if !s.lost {
			t = errorType(p)
		}
		if s.res.ErrorType == "" { // the first error is the cause
			s.res.ErrorType = internError(t)
		}
	case kindText:
		if s.lost {
			s.res.TextBytes += s.dataBytes
		} else {
			s.res.TextBytes += deltaText(p)
		}
	}
}

// Result returns what the stream has reported so far. It may be called at any time and does
// not change the Scanner.
func (s *Scanner) Result() Result {
	r := s.res
	r.Complete = s.sawStart && s.sawDeltaUsage && !s.dropped && r.ErrorType == ""
	finish(&r)
	return r
}

// Reset readies the Scanner for a new stream. It keeps the data buffer unless one huge event
// grew it past retainBytesMax.
func (s *Scanner) Reset() {
	data := s.data[:0]
	if cap(data) > retainBytesMax {
		data = nil
	}
	*s = Scanner{data: data, model: s.model}
}
