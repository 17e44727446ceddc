// Package meter reads what an Anthropic-compatible upstream reported about one request —
// model, message id, token usage, stop reason, error — from a non-streaming JSON body
// (FromJSON) or from an SSE stream while it is forwarded (Scanner). It is pure code: no I/O,
// no clocks, no logging, so the proxy owns every side effect and this core can be fuzzed.
//
// Usage field rules, shared by both paths (DESIGN §3 step 4):
//   - A usage object overwrites every count present in it; a missing, null, negative or
//     absurd (> CountMax) count leaves the previous value. In a stream, message_start seeds
//     the counts and each message_delta overwrites them: its counts are cumulative and may
//     exceed message_start's (web search feeds results back as input).
//   - cache_creation_input_tokens is the cache-write total. The breakdown
//     cache_creation.ephemeral_{5m,1h}_input_tokens says how much of it is 1h; the rest is
//     5m. Without a breakdown the 1h part stays what it was (zero unless an earlier usage
//     object, in practice message_start, gave one) and the rest of the total is 5m. So a
//     message_start without a breakdown bills all cache writes as 5m, and a message_delta that
//     raises the total keeps message_start's 1h part and puts the growth in 5m. The 1h part is
//     capped at the total. When a breakdown comes without a total, the total is their sum.
//   - Thinking is output_tokens_details.thinking_tokens. Output includes it; a Result never
//     has Thinking > Output.
//   - Web search requests are server_tool_use.web_search_requests.
//
// Budget (BenchmarkScanner, BenchmarkFromJSON; 2-core development machine): a realistic
// 20-event, 3 KB stream costs about 2–2.5 µs of CPU (1.2–1.5 GB/s) and one allocation, the
// message id; content deltas cost no allocation. Memory per in-flight stream is the Scanner
// (272 bytes) plus its data buffer: 4 KiB normally, at most EventBytesMax while an
// oversized event is read, and Reset gives back buffers over 64 KiB. JSON is read with the
// small walker in walk.go rather than gjson; walk.go says why.
package meter

import (
	"strings"
	"unsafe"

	"tollgate/pkg/usage"
)

// Limits. Every byte the Scanner keeps is bounded by these; nothing else is buffered.
const (
	// EventBytesMax bounds the data of one event the Scanner must parse (message_start,
	// message_delta, error, and events without a name until their type is known). A larger
	// one is dropped and makes the Result not Complete: real ones are a few hundred bytes.
	EventBytesMax = 1 << 20
	// TextEventBytesMax bounds how much of a content_block_delta's data is kept to count its
	// text exactly. A larger delta is not kept at all: its whole data size counts as text,
	// which overstates by the envelope (under 100 bytes, < 1% at this size) — good enough
	// for an estimate, and it keeps big deltas at memory speed.
	TextEventBytesMax = 16 << 10
	// EventNameBytesMax bounds an event name; a longer name is an event we ignore.
	EventNameBytesMax = 32
	// CountMax is the largest token or request count accepted from the upstream. Larger
	// values are nonsense and would overflow pricing, so they are ignored like a missing
	// field.
	CountMax = 1 << 40
	// retainBytesMax is the largest buffer Reset keeps for reuse, so one huge event does not
	// pin a megabyte in every pooled Scanner.
	retainBytesMax = 64 << 10
	// dataBytesInitial is the first buffer size: it fits every ordinary event.
	dataBytesInitial = 4 << 10
)

// Result is what the upstream reported for one request. Strings in it are owned by the
// Result (they never alias a caller's buffer).
type Result struct {
	Model      string       // "model" from message_start / the JSON body
	MessageID  string       // "id" from message_start / the JSON body
	Tokens     usage.Tokens // Output includes Thinking
	StopReason string       // from message_delta / the JSON body; "" when none was seen
	ErrorType  string       // type of an `event: error` payload or of a JSON error body
	// Complete says the counts are final as the upstream reported them: for a stream,
	// message_start and a message_delta with usage were both seen and parsed, no event we
	// must parse was dropped, and no error event came; for a JSON body, it was valid JSON
	// with a usage object and no error.
	Complete bool
	// TextBytes is the decoded bytes of text, thinking and tool-input JSON seen (stream:
	// text_delta / thinking_delta / input_json_delta; JSON: content text, thinking and
	// tool_use input). It feeds EstimateOutput when the upstream never reported final usage.
	TextBytes int64
}

// EstimateOutput returns an output-token estimate for textBytes of generated text, for a
// stream cut off before it reported final usage. The rule is ceil(textBytes / 3): English
// averages about 4 bytes per token and code or JSON about 3, so this errs towards charging
// for what was delivered rather than giving it away; CJK (3 bytes per character, about one
// token each) comes out close. TextBytes already covers the whole stream, so callers should
// bill max(reported output, estimate), not their sum.
func EstimateOutput(textBytes int64) int64 {
	if textBytes <= 0 {
		return 0
	}
	n := textBytes / 3
	if textBytes%3 != 0 {
		n++
	}
	return n
}

// EstimateInput returns an input-token estimate for a prompt of textBytes bytes of text
// (the request body outside image and document sources), for an answer that was served but
// never reported its usage at all. The rule is ceil(textBytes / 4): about 4 bytes per token
// for English, and the JSON around the text makes up for denser scripts. Images are the
// caller's to add.
func EstimateInput(textBytes int64) int64 {
	if textBytes <= 0 {
		return 0
	}
	return (textBytes + 3) / 4
}

// finish applies the invariants every Result keeps.
func finish(r *Result) {
	r.Tokens.Thinking = min(r.Tokens.Thinking, r.Tokens.Output)
}

// internStop returns s as an owned string, without allocating for the stop reasons the API
// documents (the Scanner promises no allocation per stream beyond the message id).
func internStop(s string) string {
	switch s {
	case "end_turn":
		return "end_turn"
	case "max_tokens":
		return "max_tokens"
	case "stop_sequence":
		return "stop_sequence"
	case "tool_use":
		return "tool_use"
	case "pause_turn":
		return "pause_turn"
	case "refusal":
		return "refusal"
	case "model_context_window_exceeded":
		return "model_context_window_exceeded"
	}
	return strings.Clone(s)
}

// internError is internStop for the API's error types.
func internError(s string) string {
	switch s {
	case "invalid_request_error":
		return "invalid_request_error"
	case "authentication_error":
		return "authentication_error"
	case "billing_error":
		return "billing_error"
	case "permission_error":
		return "permission_error"
	case "not_found_error":
		return "not_found_error"
	case "request_too_large":
		return "request_too_large"
	case "rate_limit_error":
		return "rate_limit_error"
	case "api_error":
		return "api_error"
	case "overloaded_error":
		return "overloaded_error"
	case "timeout_error":
		return "timeout_error"
	case "", "error":
		return "error" // an error without a usable type still is one
	}
	return strings.Clone(s)
}

// str views b as a string without copying. It must not outlive the next change to b: every
// string kept in a Result is cloned or interned.
func str(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
