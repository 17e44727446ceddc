package mock_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/bench/mock"
)

func repeat(name string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = name
	}
	return out
}

func seq(parts ...[]string) []string { return slices.Concat(parts...) }

var (
	head   = []string{"message_start", "content_block_start", "ping"}
	tail   = []string{"content_block_stop", "message_delta", "message_stop"}
	deltas = func(n int) []string { return repeat("content_block_delta", n) }
)

// usageWant lists expected integers by path in a usage object; -1 means the field is absent.
type usageWant map[string]int64

func checkUsage(t *testing.T, usage any, want usageWant) {
	t.Helper()
	for path, v := range want {
		var p []any
		for _, part := range strings.Split(path, ".") {
			p = append(p, part)
		}
		require.Equal(t, v, num(t, usage, p...), "usage %s", path)
	}
}

func TestStreamModes(t *testing.T) {
	tests := []struct {
		name      string
		directive string
		maxTokens int
		names     []string
		start     usageWant // message_start usage
		delta     usageWant // message_delta usage; nil when there is no message_delta
		textBytes int
		stop      string
		crlf      bool
		padded    bool
	}{
		{
			name:      "usage and cache split",
			directive: "mock: input=100 output=50 cache_write_5m=10 cache_write_1h=20 cache_read=30",
			names:     seq(head, deltas(4), tail),
			start: usageWant{"input_tokens": 100, "output_tokens": 1, "cache_creation_input_tokens": 30,
				"cache_read_input_tokens": 30, "cache_creation.ephemeral_5m_input_tokens": 10,
				"cache_creation.ephemeral_1h_input_tokens": 20},
			delta: usageWant{"input_tokens": 100, "output_tokens": 50, "cache_creation_input_tokens": 30,
				"cache_read_input_tokens": 30, "cache_creation": -1, "server_tool_use": -1,
				"output_tokens_details": -1},
			textBytes: 200, stop: "end_turn",
		},
		{
			name:      "thinking",
			directive: "mock: input=5 output=60 thinking=20",
			names: seq(head, deltas(3), []string{"content_block_stop", "content_block_start"}, deltas(4),
				tail),
			start:     usageWant{"input_tokens": 5, "output_tokens": 1},
			delta:     usageWant{"output_tokens": 60, "output_tokens_details.thinking_tokens": 20},
			textBytes: 160, stop: "end_turn",
		},
		{
			name:      "tool use",
			directive: "mock: output=10 tool=get_weather",
			names: seq(head, deltas(4), []string{"content_block_stop", "content_block_start"}, deltas(2),
				tail),
			delta:     usageWant{"output_tokens": 10},
			textBytes: 40, stop: "tool_use",
		},
		{
			name:      "web search grows input",
			directive: "mock: input=300 output=4 web_search=2",
			names:     seq(head, deltas(4), tail),
			start:     usageWant{"input_tokens": 100},
			delta:     usageWant{"input_tokens": 300, "server_tool_use.web_search_requests": 2},
			textBytes: 16, stop: "end_turn",
		},
		{
			name:      "padded",
			directive: "mock: input=7 output=8 mode=padded",
			names:     seq(head, deltas(4), tail),
			start:     usageWant{"input_tokens": 7},
			delta:     usageWant{"output_tokens": 8},
			textBytes: 32, stop: "end_turn", padded: true,
		},
		{
			name:      "crlf",
			directive: "mock: output=8 mode=crlf",
			names:     seq(head, deltas(4), tail),
			delta:     usageWant{"output_tokens": 8},
			textBytes: 32, stop: "end_turn", crlf: true,
		},
		{
			name:      "split crlf padded with every block",
			directive: "mock: output=30 thinking=10 tool=t mode=split,crlf,padded events=3",
			names: seq(head, deltas(3), []string{"content_block_stop", "content_block_start"}, deltas(3),
				[]string{"content_block_stop", "content_block_start"}, deltas(2), tail),
			delta:     usageWant{"output_tokens": 30, "output_tokens_details.thinking_tokens": 10},
			textBytes: 80, stop: "tool_use", crlf: true, padded: true,
		},
		{
			name:      "error mid-stream",
			directive: "mock: output=12 events=6 mode=error",
			names:     seq(head, deltas(3), []string{"error"}),
			textBytes: 24,
		},
		{
			name:      "truncate",
			directive: "mock: output=12 events=5 mode=truncate",
			names:     seq(head, deltas(3)),
			textBytes: 28, // 3 of 5 deltas of 48 bytes: bytes [0, 48·3/5)
		},
		{
			name:      "lean message_delta",
			directive: "mock: input=9 output=11 cache_read=4 mode=lean",
			names:     seq(head, deltas(4), tail),
			start:     usageWant{"input_tokens": 9, "cache_read_input_tokens": 4},
			delta:     usageWant{"output_tokens": 11, "input_tokens": -1, "cache_read_input_tokens": -1},
			textBytes: 44, stop: "end_turn",
		},
		{
			name:      "events and text size",
			directive: "mock: output=3 events=10 text_bytes=1000",
			names:     seq(head, deltas(10), tail),
			delta:     usageWant{"output_tokens": 3},
			textBytes: 1000, stop: "end_turn",
		},
		{
			name:      "defaults hit max_tokens",
			directive: "", // the text is then 23 bytes: input 5
			maxTokens: 5,
			names:     seq(head, deltas(4), tail),
			start:     usageWant{"input_tokens": 5, "cache_creation_input_tokens": 0},
			delta:     usageWant{"output_tokens": 5},
			textBytes: 20, stop: "max_tokens",
		},
		{
			name:      "stop override",
			directive: "mock: output=2 stop=refusal",
			names:     seq(head, deltas(4), tail),
			delta:     usageWant{"output_tokens": 2},
			textBytes: 8, stop: "refusal",
		},
	}
	base, _ := mock.Start(t, mock.Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := tt.directive
			if text == "" {
				text = "say hello, no directive" // 23 bytes: input 5
			}
			maxTokens := tt.maxTokens
			if maxTokens == 0 {
				maxTokens = 1000
			}
			resp := postMessages(t, base, messagesBody("claude-sonnet-4-5", maxTokens, true, text))
			require.Equal(t, 200, resp.status, "%s", resp.body)
			require.Equal(t, "text/event-stream", resp.header.Get("content-type"))
			require.True(t, strings.HasPrefix(resp.header.Get("request-id"), "req_01"))

			if tt.crlf {
				require.Equal(t, bytes.Count(resp.body, []byte("\n")), bytes.Count(resp.body, []byte("\r\n")),
					"every line ends in CRLF")
			} else {
				require.NotContains(t, string(resp.body), "\r")
			}

			evs := parseSSE(t, resp.body)
			require.Equal(t, tt.names, names(evs))

			var text2 strings.Builder
			var stop string
			for i, ev := range evs {
				if tt.padded {
					require.Contains(t, ev.data, `"type" : `)
				} else {
					require.NotContains(t, ev.data, `" : `)
				}
				data := obj(t, ev.data)
				require.Equal(t, ev.name, data["type"], "event %d", i)
				switch ev.name {
				case "message_start":
					msg := dig(t, data, "message")
					require.True(t, strings.HasPrefix(dig(t, msg, "id").(string), "msg_01"))
					require.Equal(t, "claude-sonnet-4-5-20250929", dig(t, msg, "model"))
					require.Equal(t, "assistant", dig(t, msg, "role"))
					require.Equal(t, int64(1), num(t, msg, "usage", "output_tokens"))
					checkUsage(t, dig(t, msg, "usage"), tt.start)
				case "content_block_delta":
					if dig(t, data, "delta", "type") == "text_delta" {
						text2.WriteString(dig(t, data, "delta", "text").(string))
					}
				case "message_delta":
					require.NotNil(t, tt.delta, "unexpected message_delta")
					checkUsage(t, dig(t, data, "usage"), tt.delta)
					stop = dig(t, data, "delta", "stop_reason").(string)
				case "error":
					require.Equal(t, "overloaded_error", dig(t, data, "error", "type"))
				}
			}
			require.Equal(t, tt.textBytes, text2.Len())
			require.Equal(t, tt.stop, stop)
			checkBlocks(t, evs)
		})
	}
}

// checkBlocks checks the content block framing: indexes count up from 0, every delta belongs
// to the open block and matches its type, thinking ends with a signature.
func checkBlocks(t *testing.T, evs []sseEvent) {
	t.Helper()
	open, next := -1, 0
	var blockType string
	var sawSignature bool
	for _, ev := range evs {
		data := obj(t, ev.data)
		switch ev.name {
		case "content_block_start":
			require.Equal(t, -1, open, "block started inside another")
			require.Equal(t, int64(next), num(t, data, "index"))
			open, next = next, next+1
			blockType = dig(t, data, "content_block", "type").(string)
			if blockType == "tool_use" {
				require.True(t, strings.HasPrefix(dig(t, data, "content_block", "id").(string), "toolu_01"))
			}
			sawSignature = false
		case "content_block_delta":
			require.Equal(t, int64(open), num(t, data, "index"))
			dt := dig(t, data, "delta", "type").(string)
			switch blockType {
			case "text":
				require.Equal(t, "text_delta", dt)
			case "thinking":
				require.Contains(t, []string{"thinking_delta", "signature_delta"}, dt)
				sawSignature = sawSignature || dt == "signature_delta"
			case "tool_use":
				require.Equal(t, "input_json_delta", dt)
			}
		case "content_block_stop":
			require.Equal(t, int64(open), num(t, data, "index"))
			if blockType == "thinking" {
				require.True(t, sawSignature)
			}
			open = -1
		}
	}
}

func TestJSONModes(t *testing.T) {
	tests := []struct {
		name      string
		directive string
		usage     usageWant
		content   []string // block types
		stop      string
		check     func(t *testing.T, body []byte, msg map[string]any)
	}{
		{
			name:      "usage and cache split",
			directive: "mock: input=100 output=50 cache_write_5m=10 cache_write_1h=20 cache_read=30",
			usage: usageWant{"input_tokens": 100, "output_tokens": 50, "cache_creation_input_tokens": 30,
				"cache_read_input_tokens": 30, "cache_creation.ephemeral_5m_input_tokens": 10,
				"cache_creation.ephemeral_1h_input_tokens": 20, "server_tool_use": -1,
				"output_tokens_details": -1},
			content: []string{"text"}, stop: "end_turn",
			check: func(t *testing.T, _ []byte, msg map[string]any) {
				require.Len(t, dig(t, msg, "content", 0, "text").(string), 200)
			},
		},
		{
			name:      "thinking and tool and web search",
			directive: "mock: output=40 thinking=12 tool=lookup web_search=3",
			usage: usageWant{"output_tokens": 40, "output_tokens_details.thinking_tokens": 12,
				"server_tool_use.web_search_requests": 3},
			content: []string{"thinking", "text", "tool_use"}, stop: "tool_use",
			check: func(t *testing.T, _ []byte, msg map[string]any) {
				require.NotEmpty(t, dig(t, msg, "content", 0, "signature"))
				require.Equal(t, "lookup", dig(t, msg, "content", 2, "name"))
				require.Equal(t, "mock", dig(t, msg, "content", 2, "input", "query"))
				require.True(t, strings.HasPrefix(dig(t, msg, "content", 2, "id").(string), "toolu_01"))
			},
		},
		{
			name:      "padded",
			directive: "mock: output=3 mode=padded",
			usage:     usageWant{"output_tokens": 3},
			content:   []string{"text"}, stop: "end_turn",
			check: func(t *testing.T, body []byte, _ map[string]any) {
				require.Contains(t, string(body), "\n")
				require.Contains(t, string(body), `"type" : "message"`)
			},
		},
		{
			name:      "split",
			directive: "mock: output=3 mode=split,crlf",
			usage:     usageWant{"output_tokens": 3},
			content:   []string{"text"}, stop: "end_turn",
		},
	}
	base, _ := mock.Start(t, mock.Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := postMessages(t, base, messagesBody("claude-opus-4-5", 1000, false, tt.directive))
			require.Equal(t, 200, resp.status, "%s", resp.body)
			require.Equal(t, "application/json", resp.header.Get("content-type"))
			msg := obj(t, string(resp.body))
			require.Equal(t, "message", msg["type"])
			require.Equal(t, "claude-opus-4-5-20251101", msg["model"])
			require.True(t, strings.HasPrefix(msg["id"].(string), "msg_01"))
			require.Equal(t, tt.stop, msg["stop_reason"])
			checkUsage(t, msg["usage"], tt.usage)
			var types []string
			for _, b := range msg["content"].([]any) {
				types = append(types, dig(t, b, "type").(string))
			}
			require.Equal(t, tt.content, types)
			if tt.check != nil {
				tt.check(t, resp.body, msg)
			}
		})
	}

	t.Run("truncate", func(t *testing.T) {
		resp := postMessages(t, base, messagesBody("claude-opus-4-5", 1000, false, "mock: output=3 mode=truncate"))
		require.Equal(t, 200, resp.status)
		require.False(t, json.Valid(resp.body))
		require.True(t, bytes.HasPrefix(resp.body, []byte(`{"id":"msg_01`)))
	})
	t.Run("error mode answers 529", func(t *testing.T) {
		resp := postMessages(t, base, messagesBody("claude-opus-4-5", 1000, false, "mock: mode=error"))
		require.Equal(t, 529, resp.status)
		require.Equal(t, "overloaded_error", dig(t, obj(t, string(resp.body)), "error", "type"))
	})
}

func TestSplitArrivesInManyFlushes(t *testing.T) {
	base, _ := mock.Start(t, mock.Config{})

	// Unpaced, unsplit: the whole stream is one flush.
	_, chunks := rawChunks(t, base, messagesBody("claude-haiku-4-5", 100, true, "mock: output=8"))
	require.Len(t, chunks, 1)
	whole := chunks[0]

	_, chunks = rawChunks(t, base, messagesBody("claude-haiku-4-5", 100, true, "mock: output=8 mode=split,crlf"))
	require.Greater(t, len(chunks), 30)
	joined := bytes.Join(chunks, nil)
	var eventEnds []int
	for off := 0; ; {
		i := bytes.Index(joined[off:], []byte("\r\n\r\n"))
		if i < 0 {
			break
		}
		off += i + 4
		eventEnds = append(eventEnds, off)
	}
	var crBeforeLF, midLine, eventsShareFlush bool
	chunkStart := 0
	for i, c := range chunks {
		if i+1 < len(chunks) && bytes.HasSuffix(c, []byte("\r")) && bytes.HasPrefix(chunks[i+1], []byte("\n")) {
			crBeforeLF = true
		}
		if !bytes.HasSuffix(c, []byte("\n")) && !bytes.HasSuffix(c, []byte("\r")) {
			midLine = true
		}
		for _, e := range eventEnds {
			if chunkStart < e && e < chunkStart+len(c) {
				eventsShareFlush = true
			}
		}
		chunkStart += len(c)
	}
	require.True(t, crBeforeLF, "a \\r and its \\n in different flushes")
	require.True(t, midLine, "a flush ending mid-line")
	require.True(t, eventsShareFlush, "the end of one event and the start of the next in one flush")

	wholeEvs := parseSSE(t, whole)
	splitEvs := parseSSE(t, joined)
	require.Equal(t, names(wholeEvs), names(splitEvs))

	// Split and paced: still one chunk per piece.
	_, pacedChunks := rawChunks(t, base, messagesBody("claude-haiku-4-5", 100, true,
		"mock: output=8 mode=split,crlf ttft_ms=1 tps=100000"))
	require.Len(t, pacedChunks, len(chunks))
}

func TestPacedStream(t *testing.T) {
	// How pacing spaces the writes is checked on the rendered pieces (TestRenderPacing in the
	// package); here, that a paced stream is still a correct stream, through both writers.
	base, _ := mock.Start(t, mock.Config{TTFT: time.Millisecond, TPS: 100_000})
	for _, directive := range []string{"mock: output=8 events=6", "mock: output=8 events=6 mode=split", "mock: output=8 tps=50000 ttft_ms=2"} {
		resp := postMessages(t, base, messagesBody("claude-haiku-4-5", 100, true, directive))
		require.Equal(t, 200, resp.status)
		evs := parseSSE(t, resp.body)
		require.Equal(t, "message_start", evs[0].name)
		require.Equal(t, "message_stop", evs[len(evs)-1].name)
		checkBlocks(t, evs)
	}
}

func TestErrorStatuses(t *testing.T) {
	base, _ := mock.Start(t, mock.Config{})
	tests := []struct {
		directive  string
		stream     bool
		status     int
		errType    string
		retryAfter string
	}{
		{"mock: status=429", false, 429, "rate_limit_error", "1"},
		{"mock: status=429 retry_after=7", true, 429, "rate_limit_error", "7"},
		{"mock: status=529 retry_after=3", true, 529, "overloaded_error", "3"},
		{"mock: status=529", false, 529, "overloaded_error", "1"},
		{"mock: status=500", false, 500, "api_error", "1"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s stream=%v", tt.directive, tt.stream), func(t *testing.T) {
			resp := postMessages(t, base, messagesBody("claude-sonnet-4-5", 100, tt.stream, tt.directive))
			require.Equal(t, tt.status, resp.status)
			require.Equal(t, tt.retryAfter, resp.header.Get("retry-after"))
			require.Equal(t, "application/json", resp.header.Get("content-type"))
			e := obj(t, string(resp.body))
			require.Equal(t, "error", e["type"])
			require.Equal(t, tt.errType, dig(t, e, "error", "type"))
			require.NotEmpty(t, dig(t, e, "error", "message"))
			require.Equal(t, resp.header.Get("request-id"), e["request_id"])
		})
	}
}

func TestValidation(t *testing.T) {
	base, _ := mock.Start(t, mock.Config{Keys: []string{"sk-test"}, RequireVersion: true, BodyBytesMax: 4096})
	valid := messagesBody("claude-sonnet-4-5", 10, false, "hi")
	tests := []struct {
		name    string
		method  string
		path    string
		body    string
		header  map[string]string
		status  int
		errType string
		message string
	}{
		{name: "malformed JSON", body: `{"model":`, status: 400, errType: "invalid_request_error"},
		{name: "not an object", body: `[1]`, status: 400, errType: "invalid_request_error"},
		{name: "missing model", body: `{"max_tokens":1,"messages":[{"role":"user","content":"x"}]}`,
			status: 400, errType: "invalid_request_error", message: "model: Field required"},
		{name: "missing max_tokens", body: `{"model":"m","messages":[{"role":"user","content":"x"}]}`,
			status: 400, errType: "invalid_request_error", message: "max_tokens: Field required"},
		{name: "max_tokens zero", body: `{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}`,
			status: 400, errType: "invalid_request_error", message: "max_tokens"},
		{name: "max_tokens fraction", body: `{"model":"m","max_tokens":1.5,"messages":[{"role":"user","content":"x"}]}`,
			status: 400, errType: "invalid_request_error", message: "max_tokens"},
		{name: "missing messages", body: `{"model":"m","max_tokens":1}`,
			status: 400, errType: "invalid_request_error", message: "messages: Field required"},
		{name: "empty messages", body: `{"model":"m","max_tokens":1,"messages":[]}`,
			status: 400, errType: "invalid_request_error", message: "messages"},
		{name: "bad role", body: `{"model":"m","max_tokens":1,"messages":[{"role":"robot","content":"x"}]}`,
			status: 400, errType: "invalid_request_error", message: "role"},
		{name: "stream not bool", body: `{"model":"m","max_tokens":1,"stream":"yes","messages":[{"role":"user","content":"x"}]}`,
			status: 400, errType: "invalid_request_error", message: "stream"},
		{name: "bad directive", body: messagesBody("m", 10, false, "mock: outptu=3"),
			status: 400, errType: "invalid_request_error", message: "mock directive"},
		{name: "contradictory directive", body: messagesBody("m", 10, false, "mock: output=3 thinking=5"),
			status: 400, errType: "invalid_request_error", message: "thinking"},
		{name: "missing key", body: valid, header: map[string]string{"anthropic-version": "2023-06-01"},
			status: 401, errType: "authentication_error"},
		{name: "unknown key", body: valid, header: map[string]string{"x-api-key": "nope", "anthropic-version": "2023-06-01"},
			status: 401, errType: "authentication_error"},
		{name: "missing version", body: valid, header: map[string]string{"x-api-key": "sk-test"},
			status: 400, errType: "invalid_request_error", message: "anthropic-version"},
		{name: "body too large", body: messagesBody("m", 10, false, strings.Repeat("x", 5000)),
			status: 413, errType: "request_too_large"},
		{name: "wrong method", method: "GET", status: 405, errType: "invalid_request_error"},
		{name: "unknown path", path: "/v1/complete", status: 404, errType: "not_found_error"},
		{name: "unknown model id", method: "GET", path: "/v1/models/gpt-4", status: 404, errType: "not_found_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path, header := tt.method, tt.path, tt.header
			if method == "" {
				method = "POST"
			}
			if path == "" {
				path = "/v1/messages"
			}
			if header == nil {
				header = apiHeaders
			}
			resp := do(t, method, base+path, tt.body, header)
			require.Equal(t, tt.status, resp.status, "%s", resp.body)
			e := obj(t, string(resp.body))
			require.Equal(t, "error", e["type"])
			require.Equal(t, tt.errType, dig(t, e, "error", "type"))
			require.Contains(t, dig(t, e, "error", "message"), tt.message)
			require.True(t, strings.HasPrefix(e["request_id"].(string), "req_01"))
			require.Equal(t, resp.header.Get("request-id"), e["request_id"])
		})
	}
}

func TestModelAliases(t *testing.T) {
	base, _ := mock.Start(t, mock.Config{})
	for requested, answered := range map[string]string{
		"claude-sonnet-4-5":          "claude-sonnet-4-5-20250929",
		"claude-opus-4-5":            "claude-opus-4-5-20251101",
		"claude-haiku-4-5":           "claude-haiku-4-5-20251001",
		"claude-sonnet-4-0":          "claude-sonnet-4-20250514",
		"claude-sonnet-4":            "claude-sonnet-4-20250514",
		"claude-opus-4-1":            "claude-opus-4-1-20250805",
		"claude-opus-4-0":            "claude-opus-4-20250514",
		"claude-3-7-sonnet-latest":   "claude-3-7-sonnet-20250219",
		"claude-3-5-haiku-latest":    "claude-3-5-haiku-20241022",
		"claude-3-haiku":             "claude-3-haiku-20240307",
		"claude-sonnet-4-5-20250929": "claude-sonnet-4-5-20250929",
		"claude-future-9-20300101":   "claude-future-9-20300101",
	} {
		for _, stream := range []bool{false, true} {
			resp := postMessages(t, base, messagesBody(requested, 10, stream, "mock: output=1"))
			require.Equal(t, 200, resp.status)
			if stream {
				msg := dig(t, obj(t, parseSSE(t, resp.body)[0].data), "message")
				require.Equal(t, answered, dig(t, msg, "model"), requested)
			} else {
				require.Equal(t, answered, obj(t, string(resp.body))["model"], requested)
			}
		}
	}
}

func TestDefaults(t *testing.T) {
	base, _ := mock.Start(t, mock.Config{})
	body := `{"model":"claude-sonnet-4-5","max_tokens":100,"system":"You are terse.",` + // 14 bytes
		`"messages":[{"role":"user","content":"What is two plus two?"},` + // 21 bytes
		`{"role":"assistant","content":[{"type":"text","text":"Four."}]},` + // 5 bytes
		`{"role":"user","content":[{"type":"text","text":"And three?"}]}]}` // 10 bytes
	resp := postMessages(t, base, body)
	require.Equal(t, 200, resp.status)
	msg := obj(t, string(resp.body))
	checkUsage(t, msg["usage"], usageWant{"input_tokens": 50 / 4, "output_tokens": 16,
		"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
	require.Equal(t, "end_turn", msg["stop_reason"])

	// The request enables thinking and says nothing about it: a small thinking block.
	body = `{"model":"claude-sonnet-4-5","max_tokens":100,"thinking":{"type":"enabled","budget_tokens":1024},` +
		`"messages":[{"role":"user","content":"x"}]}`
	msg = obj(t, string(postMessages(t, base, body).body))
	checkUsage(t, msg["usage"], usageWant{"input_tokens": 1, "output_tokens": 8 + 16,
		"output_tokens_details.thinking_tokens": 8})
	require.Equal(t, "thinking", dig(t, msg, "content", 0, "type"))

	// Only the last user message's directive counts; earlier ones are history.
	body = `{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[` +
		`{"role":"user","content":"mock: output=99"},{"role":"assistant","content":"ok"},` +
		`{"role":"user","content":[{"type":"image","source":{}},{"type":"text","text":"hm\nmock: output=7"}]}]}`
	msg = obj(t, string(postMessages(t, base, body).body))
	require.Equal(t, int64(7), num(t, msg, "usage", "output_tokens"))
}

func TestIDsDifferPerResponse(t *testing.T) {
	base, _ := mock.Start(t, mock.Config{})
	seen := map[string]bool{}
	for range 3 {
		for _, stream := range []bool{false, true} {
			resp := postMessages(t, base, messagesBody("claude-sonnet-4-5", 10, stream, "mock: output=2 tool=x"))
			rid := resp.header.Get("request-id")
			require.False(t, seen[rid])
			seen[rid] = true
			body := string(resp.body)
			for _, prefix := range []string{`"msg_01`, `"toolu_01`} {
				i := strings.Index(body, prefix)
				require.GreaterOrEqual(t, i, 0)
				id := body[i : i+len(prefix)+22]
				require.False(t, seen[id], id)
				seen[id] = true
			}
		}
	}
}

func TestCountTokensAndModels(t *testing.T) {
	base, _ := mock.Start(t, mock.Config{})
	count := func(body string) int64 {
		resp := do(t, "POST", base+"/v1/messages/count_tokens", body, apiHeaders)
		require.Equal(t, 200, resp.status, "%s", resp.body)
		return num(t, obj(t, string(resp.body)), "input_tokens")
	}
	require.Equal(t, int64(10+5+6+7), count(`{"model":"claude-sonnet-4-5","messages":[{"role":"user",`+
		`"content":"mock: input=10 cache_write_5m=5 cache_write_1h=6 cache_read=7"}]}`))
	require.Equal(t, int64(2), count(`{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"12345678"}]}`))

	resp := do(t, "GET", base+"/v1/models", "", apiHeaders)
	require.Equal(t, 200, resp.status)
	list := obj(t, string(resp.body))
	var ids []string
	for _, m := range list["data"].([]any) {
		require.Equal(t, "model", dig(t, m, "type"))
		require.NotEmpty(t, dig(t, m, "display_name"))
		ids = append(ids, dig(t, m, "id").(string))
	}
	require.Contains(t, ids, "claude-sonnet-4-5-20250929")
	require.Equal(t, false, list["has_more"])
	require.Equal(t, ids[0], list["first_id"])

	resp = do(t, "GET", base+"/v1/models/claude-haiku-4-5", "", apiHeaders)
	require.Equal(t, 200, resp.status)
	require.Equal(t, "claude-haiku-4-5-20251001", obj(t, string(resp.body))["id"])
}

func TestRecordsRequests(t *testing.T) {
	base, srv := mock.Start(t, mock.Config{RecordMax: 2})
	_, ok := srv.LastRequest()
	require.False(t, ok)

	body := messagesBody("claude-sonnet-4-5", 10, false, "mock: output=1")
	for i := range 3 {
		resp := do(t, "POST", fmt.Sprintf("%s/v1/messages?beta=true&n=%d", base, i), body, map[string]string{
			"x-api-key":         "sk-upstream",
			"anthropic-version": "2023-06-01",
			"anthropic-beta":    "prompt-caching-2024-07-31,context-1m-2025-08-07",
			"accept-encoding":   "identity",
			"content-type":      "application/json",
		})
		require.Equal(t, 200, resp.status)
	}
	require.Equal(t, int64(3), srv.RequestCount())

	last, ok := srv.LastRequest()
	require.True(t, ok)
	require.Equal(t, "POST", last.Method)
	require.Equal(t, "/v1/messages", last.Path)
	require.Equal(t, "beta=true&n=2", last.Query)
	require.Equal(t, "sk-upstream", last.Get("X-Api-Key"))
	require.Equal(t, []string{"sk-upstream"}, last.Header["x-api-key"])
	require.Equal(t, "2023-06-01", last.Get("anthropic-version"))
	require.Equal(t, "prompt-caching-2024-07-31,context-1m-2025-08-07", last.Get("anthropic-beta"))
	require.Equal(t, "identity", last.Get("accept-encoding"))
	require.Empty(t, last.Get("authorization"))
	require.Equal(t, "application/json", last.Get("content-type"))
	require.Equal(t, strings.TrimPrefix(base, "http://"), last.Get("host"))
	require.Equal(t, fmt.Sprint(len(body)), last.Get("content-length"))
	require.Equal(t, body, string(last.Body))

	all := srv.Requests()
	require.Len(t, all, 2)
	require.Equal(t, "beta=true&n=1", all[0].Query)
	require.Equal(t, "beta=true&n=2", all[1].Query)
}

func TestCloseCutsDelays(t *testing.T) {
	base, srv := mock.Start(t, mock.Config{})
	status := make(chan int, 1)
	go func() {
		body := messagesBody("claude-sonnet-4-5", 10, false, "mock: latency_ms=600000")
		req, _ := http.NewRequest("POST", base+"/v1/messages", strings.NewReader(body))
		req.Header.Set("x-api-key", "k")
		resp, err := client.Do(req)
		if err != nil {
			status <- -1
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	require.Eventually(t, func() bool { return srv.RequestCount() == 1 }, 10*time.Second, time.Millisecond)
	require.NoError(t, srv.Close())
	require.Equal(t, 529, <-status, "the delayed request is answered, not left hanging")
	require.NoError(t, srv.Close(), "idempotent")
}
