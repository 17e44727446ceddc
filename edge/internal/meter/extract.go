package meter

import "tollgate/pkg/usage"

// What metering reads from each payload, on top of the walker in walk.go. Each parse fills a
// fields struct from one pass; callers apply it only when the payload was well-formed, so a
// corrupted event changes nothing. Duplicate keys: the last one wins, as in encoding/json.

// usageFields is one usage object as reported; absent fields stay !ok.
type usageFields struct {
	input, output, cacheRead, thinking, webSearch count
	cacheTotal, cache5m, cache1h                  count
}

// usageAt reads the usage object at b[v]. isObject is false for any other value.
func usageAt(b []byte, v int) (u usageFields, isObject bool, end int) {
	if v >= len(b) || b[v] != '{' {
		return u, false, skipValue(b, v)
	}
	end = members(b, v, func(key []byte, v int) int {
		var e int
		switch string(key) {
		case "input_tokens":
			u.input, e = countAt(b, v)
		case "output_tokens":
			u.output, e = countAt(b, v)
		case "cache_read_input_tokens":
			u.cacheRead, e = countAt(b, v)
		case "cache_creation_input_tokens":
			u.cacheTotal, e = countAt(b, v)
		case "cache_creation":
			u.cache5m, u.cache1h = count{}, count{}
			e = object(b, v, func(key []byte, v int) int {
				var e int
				switch string(key) {
				case "ephemeral_5m_input_tokens":
					u.cache5m, e = countAt(b, v)
				case "ephemeral_1h_input_tokens":
					u.cache1h, e = countAt(b, v)
				default:
					e = skipValue(b, v)
				}
				return e
			})
		case "server_tool_use":
			u.webSearch = count{}
			e = object(b, v, func(key []byte, v int) int {
				if string(key) == "web_search_requests" {
					var e int
					u.webSearch, e = countAt(b, v)
					return e
				}
				return skipValue(b, v)
			})
		case "output_tokens_details":
			u.thinking = count{}
			e = object(b, v, func(key []byte, v int) int {
				if string(key) == "thinking_tokens" {
					var e int
					u.thinking, e = countAt(b, v)
					return e
				}
				return skipValue(b, v)
			})
		default:
			e = skipValue(b, v)
		}
		return e
	})
	return u, true, end
}

// object walks b[v] with fn when it is an object and skips it otherwise.
func object(b []byte, v int, fn func(key []byte, v int) int) int {
	if v < len(b) && b[v] == '{' {
		return members(b, v, fn)
	}
	return skipValue(b, v)
}

// merge applies u to t by the rules in the package comment.
func (u *usageFields) merge(t *usage.Tokens) {
	set := func(dst *int64, c count) {
		if c.ok {
			*dst = c.n
		}
	}
	set(&t.Input, u.input)
	set(&t.Output, u.output)
	set(&t.CacheRead, u.cacheRead)
	set(&t.Thinking, u.thinking)
	set(&t.WebSearchRequests, u.webSearch)
	breakdown := u.cache5m.ok || u.cache1h.ok
	if !u.cacheTotal.ok && !breakdown {
		return
	}
	total, oneHour := t.CacheWrite5m+t.CacheWrite1h, t.CacheWrite1h
	if breakdown {
		oneHour = u.cache1h.n // a missing half of a breakdown is zero
		total = u.cache5m.n + u.cache1h.n
	}
	if u.cacheTotal.ok {
		total = u.cacheTotal.n
	}
	oneHour = min(oneHour, total)
	t.CacheWrite1h = oneHour
	t.CacheWrite5m = total - oneHour
}

// startFields is what a message_start carries.
type startFields struct {
	hasMessage      bool
	id, model, stop jstr
	usage           usageFields
}

func parseStart(b []byte) (f startFields, ok bool) {
	end := members(b, skipWS(b, 0), func(key []byte, v int) int {
		if string(key) != "message" {
			return skipValue(b, v)
		}
		f = startFields{hasMessage: v < len(b) && b[v] == '{'}
		return object(b, v, func(key []byte, v int) int {
			var e int
			switch string(key) {
			case "id":
				f.id, e = stringAt(b, v)
			case "model":
				f.model, e = stringAt(b, v)
			case "stop_reason":
				f.stop, e = stringAt(b, v)
			case "usage":
				f.usage, _, e = usageAt(b, v)
			default:
				e = skipValue(b, v)
			}
			return e
		})
	})
	return f, whole(b, end) && f.hasMessage
}

// deltaFields is what a message_delta carries.
type deltaFields struct {
	hasUsage bool
	usage    usageFields
	stop     jstr
}

func parseDelta(b []byte) (f deltaFields, ok bool) {
	end := members(b, skipWS(b, 0), func(key []byte, v int) int {
		var e int
		switch string(key) {
		case "usage":
			f.usage, f.hasUsage, e = usageAt(b, v)
		case "delta":
			f.stop = jstr{}
			e = object(b, v, func(key []byte, v int) int {
				if string(key) == "stop_reason" {
					var e int
					f.stop, e = stringAt(b, v)
					return e
				}
				return skipValue(b, v)
			})
		default:
			e = skipValue(b, v)
		}
		return e
	})
	return f, whole(b, end)
}

// errorTypeAt reads error.type from the error object at b[v].
func errorTypeAt(b []byte, v int) (t jstr, end int) {
	end = object(b, v, func(key []byte, v int) int {
		if string(key) == "type" {
			var e int
			t, e = stringAt(b, v)
			return e
		}
		return skipValue(b, v)
	})
	return t, end
}

// errorType reads error.type from an error event; empty when there is none.
func errorType(b []byte) string {
	var t jstr
	members(b, skipWS(b, 0), func(key []byte, v int) int {
		if string(key) == "error" {
			var e int
			t, e = errorTypeAt(b, v)
			return e
		}
		return skipValue(b, v)
	})
	return t.own(internError)
}

// typeOf returns the top-level "type" of a payload without copying (it aliases b), read
// even from a cut-off prefix as long as "type" comes before the cut. found is false when
// there is no string "type".
func typeOf(b []byte) (t []byte, found bool) {
	members(b, skipWS(b, 0), func(key []byte, v int) int {
		if string(key) != "type" {
			return skipValue(b, v)
		}
		s, e := stringAt(b, v)
		t, found = nil, s.ok
		if s.ok {
			t = s.q[1 : len(s.q)-1]
		}
		return e
	})
	return t, found
}

// textIn returns the text bytes in the object at b[v] (a delta or a content block): the
// decoded length of its "text", "thinking" and "partial_json" strings plus the raw length of
// its "input" value (a tool call's arguments in a JSON body, the same bytes a stream sends
// as partial_json). On a malformed object it returns what it counted before the fault.
func textIn(b []byte, v int) (n int64, end int) {
	var text, thinking, partial, input int64
	end = members(b, v, func(key []byte, v int) int {
		var dst *int64
		switch string(key) {
		case "text":
			dst = &text
		case "thinking":
			dst = &thinking
		case "partial_json":
			dst = &partial
		case "input":
			e := skipValue(b, v)
			input = 0
			if e >= 0 {
				input = int64(e - v)
			}
			return e
		default:
			return skipValue(b, v)
		}
		*dst = 0
		if v < len(b) && b[v] == '"' {
			e, m := scanString(b, v)
			if e >= 0 {
				*dst = m
			}
			return e
		}
		return skipValue(b, v)
	})
	return text + thinking + partial + input, end
}

// deltaText returns the text bytes of a content_block_delta payload: those of its "delta".
func deltaText(b []byte) int64 {
	if n, ok := deltaTextCanonical(b); ok {
		return n
	}
	return deltaTextWalk(b)
}

// deltaTextWalk is deltaText for any form of the payload.
func deltaTextWalk(b []byte) int64 {
	var n int64
	members(b, skipWS(b, 0), func(key []byte, v int) int {
		if string(key) != "delta" {
			return skipValue(b, v)
		}
		var end int
		n, end = textIn(b, v)
		return end
	})
	return n
}

// deltaTextCanonical is deltaText for the exact compact form the API sends, e.g.
// {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"…"}}, which
// it reads in one pass over the text instead of walking seven members; ok is false for any
// other form, which then takes the general walk. Both give the same count (fuzzed).
func deltaTextCanonical(b []byte) (n int64, ok bool) {
	const head, mid = `{"type":"content_block_delta","index":`, `,"delta":{"type":"`
	if !hasPrefix(b, head) {
		return 0, false
	}
	i := len(head)
	j := i
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	if j == i || !hasPrefix(b[j:], mid) {
		return 0, false
	}
	i = j + len(mid)
	switch {
	case hasPrefix(b[i:], `text_delta","text":"`):
		i += len(`text_delta","text":`)
	case hasPrefix(b[i:], `thinking_delta","thinking":"`):
		i += len(`thinking_delta","thinking":`)
	case hasPrefix(b[i:], `input_json_delta","partial_json":"`):
		i += len(`input_json_delta","partial_json":`)
	default:
		return 0, false
	}
	end, n := scanString(b, i)
	if end < 0 || string(b[end:]) != "}}" {
		return 0, false
	}
	return n, true
}

func hasPrefix(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && string(b[:len(prefix)]) == prefix
}
