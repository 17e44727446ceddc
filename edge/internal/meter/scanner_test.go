package meter_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/meter"
	"tollgate/pkg/usage"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return b
}

// scan feeds p to a fresh Scanner in one Write.
func scan(p []byte) meter.Result {
	var s meter.Scanner
	n, err := s.Write(p)
	if err != nil || n != len(p) {
		panic("Scanner.Write must accept everything")
	}
	return s.Result()
}

func crlf(p []byte) []byte { return bytes.ReplaceAll(p, []byte("\n"), []byte("\r\n")) }
func cr(p []byte) []byte   { return bytes.ReplaceAll(p, []byte("\n"), []byte("\r")) }

// event renders one SSE event.
func event(name, data string) string {
	if name == "" {
		return "data: " + data + "\n\n"
	}
	return "event: " + name + "\ndata: " + data + "\n\n"
}

const (
	plainModel = "claude-sonnet-4-5-20250929"
	plainID    = "msg_01HCsvGBaLKmdTQPnaN4fwTR"
	// plainText is the decoded text of plain.sse's deltas, in bytes: counted independently
	// (Python's json module) when the file was written.
	plainText = 453
	// lastDelta is the text of plain.sse's last content_block_delta.
	lastDelta = " calculation? 🙂"
)

var plainTokens = usage.Tokens{Input: 2095, Output: 187, CacheWrite5m: 512, CacheWrite1h: 1024, CacheRead: 12288}

// plainResult is what plain.sse reports.
var plainResult = meter.Result{
	Model: plainModel, MessageID: plainID, Tokens: plainTokens,
	StopReason: "end_turn", Complete: true, TextBytes: plainText,
}

// startEvent is a message_start with a 5m/1h cache-write split.
const startEvent = `{"type":"message_start","message":{"id":"msg_cache","type":"message","role":"assistant",` +
	`"model":"claude-opus-4-1-20250805","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":100,` +
	`"cache_creation_input_tokens":1536,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":512,` +
	`"ephemeral_1h_input_tokens":1024},"output_tokens":1}}}`

func deltaEvent(usageJSON string) string {
	return event("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":`+usageJSON+`}`)
}

func textDelta(text string) string {
	return event("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"`+text+`"}}`)
}

func TestScanner(t *testing.T) {
	plain := readTestdata(t, "plain.sse")
	cutAt := func(marker string, extra int) []byte {
		i := bytes.Index(plain, []byte(marker))
		require.GreaterOrEqual(t, i, 0, marker)
		return plain[:i+extra]
	}
	seeded := meter.Result{Model: plainModel, MessageID: plainID,
		Tokens: usage.Tokens{Input: 2095, Output: 1, CacheWrite5m: 512, CacheWrite1h: 1024, CacheRead: 12288}}
	withText := func(r meter.Result, n int64) meter.Result { r.TextBytes = n; return r }
	cacheStart := event("message_start", startEvent)
	cacheResult := func(cw5m, cw1h int64) meter.Result {
		return meter.Result{Model: "claude-opus-4-1-20250805", MessageID: "msg_cache", StopReason: "end_turn", Complete: true,
			Tokens: usage.Tokens{Input: 100, Output: 50, CacheWrite5m: cw5m, CacheWrite1h: cw1h}}
	}
	big := strings.Repeat("x", 2<<20)
	garbage := "garbage without a colon\nid: 7\nretry: 10\n: keep-alive comment\neventually: x\ndat: y\n\x00\xff\xfe binary\nevents: message_delta\n"
	withGarbage := strings.ReplaceAll(string(plain), "\n\n", "\n\n"+garbage)

	tests := []struct {
		name   string
		stream []byte
		want   meter.Result
	}{
		{"plain LF", plain, plainResult},
		{"plain CRLF", crlf(plain), plainResult},
		{"plain lone CR", cr(plain), plainResult},
		{"mixed line endings", []byte(strings.Replace(strings.Replace(string(plain), "\n\n", "\r\n\r", 3), "\n", "\r\n", 5)), plainResult},
		{"thinking tokens, no cache breakdown means 5m", readTestdata(t, "thinking.sse"), meter.Result{
			Model: "claude-opus-4-5-20251101", MessageID: "msg_01JVjcY4fTuCpQmqfM5eQT8K", StopReason: "end_turn",
			Tokens:   usage.Tokens{Input: 86, Output: 412, CacheWrite5m: 300, Thinking: 301},
			Complete: true, TextBytes: 100}},
		{"web search grows input", readTestdata(t, "websearch.sse"), meter.Result{
			Model: "claude-sonnet-4-20250514", MessageID: "msg_01G8vUkhqXPhXQZ4mAVx1Cjm", StopReason: "end_turn",
			Tokens:   usage.Tokens{Input: 10682, Output: 510, WebSearchRequests: 1},
			Complete: true, TextBytes: 165}},
		{"padded JSON over several data lines", readTestdata(t, "padded.sse"), meter.Result{
			Model: "claude-3-5-haiku-20241022", MessageID: "msg_013Zva2CMHLNnXjNJJKqJ2EF", StopReason: "max_tokens",
			Tokens:   usage.Tokens{Input: 472, Output: 64, CacheWrite5m: 2048},
			Complete: true, TextBytes: 19}},
		{"data with no event name", readTestdata(t, "nameless.sse"), meter.Result{
			Model: "claude-3-haiku-20240307", MessageID: "msg_01NoEventNames", StopReason: "end_turn",
			Tokens: usage.Tokens{Input: 12, Output: 6}, Complete: true, TextBytes: 9}},
		{"mid-stream error", readTestdata(t, "error.sse"), meter.Result{
			Model: "claude-haiku-4-5-20251001", MessageID: "msg_01Aq9w938a90dw8q", ErrorType: "overloaded_error",
			Tokens: usage.Tokens{Input: 25, Output: 1}, TextBytes: 12}},
		{"error without a type", []byte(string(plain) + event("error", `{"type":"error"}`)), func() meter.Result {
			r := plainResult
			r.ErrorType, r.Complete = "error", false
			return r
		}()},
		{"truncated before content_block_stop", cutAt("event: content_block_stop", 0), withText(seeded, plainText)},
		{"truncated inside the last delta", cutAt(lastDelta, 3), withText(seeded, plainText-int64(len(lastDelta)))},
		{"truncated before message_delta's blank line", cutAt("event: message_stop", -1), func() meter.Result {
			r := withText(seeded, plainText)
			return r // the event never ended, so it never happened
		}()},
		{"message_delta without usage", []byte(cacheStart + event("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"}}`)),
			meter.Result{Model: "claude-opus-4-1-20250805", MessageID: "msg_cache", StopReason: "end_turn",
				Tokens: usage.Tokens{Input: 100, Output: 1, CacheWrite5m: 512, CacheWrite1h: 1024}}},
		{"message_delta only, no message_start", []byte(deltaEvent(`{"input_tokens":5,"output_tokens":50}`)),
			meter.Result{StopReason: "end_turn", Tokens: usage.Tokens{Input: 5, Output: 50}}},
		{"cache: delta keeps message_start's split", []byte(cacheStart + deltaEvent(`{"output_tokens":50,"cache_creation_input_tokens":1536}`)),
			cacheResult(512, 1024)},
		{"cache: delta grows the total, growth is 5m", []byte(cacheStart + deltaEvent(`{"output_tokens":50,"cache_creation_input_tokens":2048}`)),
			cacheResult(1024, 1024)},
		{"cache: delta total below the 1h part caps it", []byte(cacheStart + deltaEvent(`{"output_tokens":50,"cache_creation_input_tokens":600}`)),
			cacheResult(0, 600)},
		{"cache: delta with its own breakdown", []byte(cacheStart + deltaEvent(`{"output_tokens":50,"cache_creation_input_tokens":3000,"cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":2000}}`)),
			cacheResult(1000, 2000)},
		{"cache: null fields overwrite nothing", []byte(cacheStart + deltaEvent(`{"input_tokens":null,"output_tokens":50,"cache_creation_input_tokens":null,"cache_read_input_tokens":null,"server_tool_use":null}`)),
			cacheResult(512, 1024)},
		{"negative and absurd counts are ignored", []byte(cacheStart + deltaEvent(`{"input_tokens":-5,"output_tokens":50,"cache_read_input_tokens":1e300}`)),
			cacheResult(512, 1024)},
		{"garbage lines", []byte(withGarbage), plainResult},
		{"garbage data without a name", []byte("data: not json at all\n\ndata: [1,2,3]\n\n" + string(plain)), plainResult},
		{"empty message_delta is malformed", []byte(cacheStart + "event: message_delta\ndata\n\n" + deltaEvent(`{"output_tokens":50}`)),
			func() meter.Result { r := cacheResult(512, 1024); r.Complete = false; return r }()},
		{"malformed message_delta", []byte(cacheStart + event("message_delta", `{"type":"message_delta","usage":{"output_tokens":50`)),
			meter.Result{Model: "claude-opus-4-1-20250805", MessageID: "msg_cache",
				Tokens: usage.Tokens{Input: 100, Output: 1, CacheWrite5m: 512, CacheWrite1h: 1024}}},
		{"multiple data lines and empty data fields", []byte(cacheStart + "event: message_delta\ndata: {\"type\":\"message_delta\",\ndata\ndata:\ndata: \"usage\":{\"output_tokens\":50}}\n\n" + "data\n\n"),
			meter.Result{Model: "claude-opus-4-1-20250805", MessageID: "msg_cache", Complete: true, // "data" alone: an empty unnamed payload, ignored
				Tokens: usage.Tokens{Input: 100, Output: 50, CacheWrite5m: 512, CacheWrite1h: 1024}}},
		{"event name too long is ignored", []byte(cacheStart + event("message_delta"+strings.Repeat("_", 40), `{"type":"message_delta","usage":{"output_tokens":9}}`)),
			meter.Result{Model: "claude-opus-4-1-20250805", MessageID: "msg_cache",
				Tokens: usage.Tokens{Input: 100, Output: 1, CacheWrite5m: 512, CacheWrite1h: 1024}}},
		{"oversized comment, unknown field and ping are skipped", []byte(":" + big + "\nfoo: " + big + "\n" + event("ping", `{"type":"ping","pad":"`+big+`"}`) + string(plain)),
			plainResult},
		{"oversized message_delta is dropped", []byte(cacheStart + deltaEvent(`{"output_tokens":50,"pad":"`+big+`"}`)),
			meter.Result{Model: "claude-opus-4-1-20250805", MessageID: "msg_cache",
				Tokens: usage.Tokens{Input: 100, Output: 1, CacheWrite5m: 512, CacheWrite1h: 1024}}},
		{"oversized content delta counts its data size", []byte(cacheStart + textDelta(big) + deltaEvent(`{"output_tokens":50}`)),
			withText(cacheResult(512, 1024), int64(len(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}`)+len(big)))},
		{"oversized unnamed content delta counts its data size", []byte(cacheStart + strings.TrimPrefix(textDelta(big), "event: content_block_delta\n") + deltaEvent(`{"output_tokens":50}`)),
			withText(cacheResult(512, 1024), int64(len(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}`)+len(big)))},
		{"oversized unnamed event of unknown type is dropped", []byte(cacheStart + event("", `{"pad":"`+big+`","type":"message_delta"}`) + deltaEvent(`{"output_tokens":50}`)),
			func() meter.Result { r := cacheResult(512, 1024); r.Complete = false; return r }()},
		{"empty stream", nil, meter.Result{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, scan(tt.stream))
		})
	}
}

func TestScannerSplitAnywhere(t *testing.T) {
	plain := readTestdata(t, "plain.sse")
	streams := map[string][]byte{
		"plain LF":   plain,
		"plain CRLF": crlf(plain),
		"plain CR":   cr(plain),
		"thinking":   readTestdata(t, "thinking.sse"),
		"websearch":  readTestdata(t, "websearch.sse"),
		"padded":     crlf(readTestdata(t, "padded.sse")),
		"nameless":   readTestdata(t, "nameless.sse"),
		"error":      readTestdata(t, "error.sse"),
	}
	for name, stream := range streams {
		t.Run(name, func(t *testing.T) {
			want := scan(stream)
			require.NotZero(t, want.TextBytes)
			var s meter.Scanner
			for i := 0; i <= len(stream); i++ {
				s.Reset()
				_, _ = s.Write(stream[:i])
				_, _ = s.Write(stream[i:])
				if got := s.Result(); got != want {
					require.Equal(t, want, got, "split at %d", i)
				}
			}
			s.Reset()
			for i := range stream {
				_, _ = s.Write(stream[i : i+1])
			}
			require.Equal(t, want, s.Result(), "byte by byte")
		})
	}
}

func TestScannerResetReuses(t *testing.T) {
	var s meter.Scanner
	_, _ = s.Write(readTestdata(t, "error.sse"))
	require.Equal(t, "overloaded_error", s.Result().ErrorType)
	s.Reset()
	_, _ = s.Write(readTestdata(t, "plain.sse"))
	require.Equal(t, plainResult, s.Result())
	// Result does not change the Scanner.
	require.Equal(t, s.Result(), s.Result())
}

func TestScannerDoesNotRetainInput(t *testing.T) {
	stream := readTestdata(t, "plain.sse")
	var s meter.Scanner
	for _, e := range bytes.SplitAfter(stream, []byte("\n\n")) {
		_, _ = s.Write(e)
		for i := range e {
			e[i] = 'X' // the caller reuses its read buffer
		}
	}
	require.Equal(t, plainResult, s.Result())
}

func TestScannerAllocations(t *testing.T) {
	plain := readTestdata(t, "plain.sse")
	events := bytes.SplitAfter(plain, []byte("\n\n"))
	var s meter.Scanner
	feed := func() {
		s.Reset()
		for _, e := range events {
			_, _ = s.Write(e)
		}
	}
	feed()
	// A whole stream costs one allocation: the message id. The model string is reused.
	require.LessOrEqual(t, testing.AllocsPerRun(100, feed), 1.0)

	// Steady state: content deltas, ping, and events split mid-line allocate nothing.
	delta := []byte(textDelta(`a line with \"escapes\"\n and \u00e9 \ud83d\ude42`) + event("ping", `{"type": "ping"}`))
	require.Zero(t, testing.AllocsPerRun(100, func() {
		_, _ = s.Write(delta[:17])
		_, _ = s.Write(delta[17:])
	}))
	// A huge line of an event we do not keep is not buffered.
	huge := []byte(":" + strings.Repeat("x", 1<<20) + "\n")
	require.Zero(t, testing.AllocsPerRun(10, func() { _, _ = s.Write(huge) }))
}

func TestEstimateOutput(t *testing.T) {
	for _, tt := range []struct{ bytes, want int64 }{
		{-1, 0}, {0, 0}, {1, 1}, {2, 1}, {3, 1}, {4, 2}, {453, 151}, {454, 152},
		{1<<63 - 1, (1<<63-1)/3 + 1},
	} {
		require.Equal(t, tt.want, meter.EstimateOutput(tt.bytes), "bytes %d", tt.bytes)
	}
}
