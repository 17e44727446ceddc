package meter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"tollgate/pkg/usage"
)

// These fuzz targets live inside the package so they can check the memory bound.

func seedStreams(f *testing.F) [][]byte {
	names, err := filepath.Glob("testdata/*.sse")
	require.NoError(f, err)
	var out [][]byte
	for _, n := range names {
		b, err := os.ReadFile(n)
		require.NoError(f, err)
		out = append(out, b, bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")), bytes.ReplaceAll(b, []byte("\n"), []byte("\r")))
	}
	return out
}

// FuzzScanner: arbitrary bytes in arbitrary chunkings never panic, stay within the memory
// bound, keep the Result's invariants, and give the same Result as one Write.
func FuzzScanner(f *testing.F) {
	for i, s := range seedStreams(f) {
		f.Add(s, []byte{byte(i*7 + 1), 64, 3})
	}
	f.Add([]byte("event: message_delta\r"), []byte{0})
	f.Add([]byte("data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"a\\u00e9\\ud83d\\ude42\"}}\n\n"), []byte{5, 1})
	f.Add([]byte(":\r\n\r\nevent:\ndata\n\ndata:\ndata: x\n\n"), []byte{2})
	f.Fuzz(func(t *testing.T, stream, cuts []byte) {
		var one Scanner
		n, err := one.Write(stream)
		require.NoError(t, err)
		require.Equal(t, len(stream), n)
		want := one.Result()

		var s Scanner
		rest := stream
		for i := 0; len(rest) > 0; i++ {
			c := len(rest)
			if len(cuts) > 0 {
				c = int(cuts[i%len(cuts)])
			}
			if c == 0 {
				_, _ = s.Write(nil)
				c = 1
			}
			c = min(c, len(rest))
			_, _ = s.Write(rest[:c])
			rest = rest[c:]
			if cap(s.data) > EventBytesMax {
				t.Fatalf("buffer grew to %d bytes", cap(s.data))
			}
		}
		got := s.Result()
		require.Equal(t, want, got)

		tk := got.Tokens
		for _, v := range []int64{tk.Input, tk.Output, tk.CacheWrite5m, tk.CacheWrite1h, tk.CacheRead, tk.Thinking, tk.WebSearchRequests} {
			require.GreaterOrEqual(t, v, int64(0))
			require.LessOrEqual(t, v, int64(2*CountMax))
		}
		require.LessOrEqual(t, tk.Thinking, tk.Output)
		require.GreaterOrEqual(t, got.TextBytes, int64(0))
		require.LessOrEqual(t, got.TextBytes, int64(len(stream))) // text decodes shorter than written
	})
}

// FuzzDeltaText: the fast path for the canonical delta form counts exactly what the general
// walk counts.
func FuzzDeltaText(f *testing.F) {
	f.Add(uint8(0), uint16(0), []byte(`Hello`))
	f.Add(uint8(1), uint16(3), []byte(`step \"one\"\n\u00e9\ud83d\ude42`))
	f.Add(uint8(2), uint16(12), []byte(`{\"query\": \"weather\"}`))
	f.Add(uint8(0), uint16(1), []byte(`bad \u12 escape \`))
	f.Fuzz(func(t *testing.T, kind uint8, index uint16, text []byte) {
		typ, key := [...][2]string{{"text_delta", "text"}, {"thinking_delta", "thinking"}, {"input_json_delta", "partial_json"}}[kind%3][0],
			[...]string{"text", "thinking", "partial_json"}[kind%3]
		p := fmt.Appendf(nil, `{"type":"content_block_delta","index":%d,"delta":{"type":"%s","%s":"%s"}}`, index, typ, key, text)
		if n, ok := deltaTextCanonical(p); ok {
			require.Equal(t, deltaTextWalk(p), n, "%s", p)
		}
		if json.Valid(p) && utf8.Valid(p) {
			var ref struct {
				Delta map[string]any `json:"delta"`
			}
			require.NoError(t, json.Unmarshal(p, &ref))
			s, _ := ref.Delta[key].(string)
			require.Equal(t, int64(len(s)), deltaText(p), "%s", p)
		}
	})
}

// FuzzFromJSON: never panics; on every well-formed JSON object it agrees with a reference
// written on encoding/json.
func FuzzFromJSON(f *testing.F) {
	for _, name := range []string{"message.json", "error.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		require.NoError(f, err)
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte(`{"usage":{"input_tokens":1,"input_tokens":null,"cache_creation":{"ephemeral_1h_input_tokens":5},"cache_creation":null},"usage":{"output_tokens":2}}`))
	f.Add([]byte(`{"model":"claude\u002d3","\u0075sage":{"output_tokens":7,"output_tokens_details":{"thinking_tokens":9}},"content":[{"text":"a\nb","text":"\ud83d\ude42"},{"type":"tool_use","input":{ "a" : [1, 2] }}]}`))
	f.Add([]byte(`{"type":"error","error":{"type":""}}`))
	f.Add([]byte(`[{"usage":{}}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := FromJSON(body)
		if err != nil {
			require.ErrorIs(t, err, ErrMalformed)
			require.False(t, got.Complete)
		}
		require.LessOrEqual(t, got.Tokens.Thinking, got.Tokens.Output)
		if !json.Valid(body) || body[skipWS(body, 0)] != '{' {
			return
		}
		require.NoError(t, err, "valid JSON object refused")
		want := refFromJSON(t, body)
		if !utf8.Valid(body) {
			// encoding/json counts invalid UTF-8 in text as U+FFFD; the walker counts bytes.
			got.TextBytes = want.TextBytes
		}
		require.Equal(t, want, got)
	})
}

// refFromJSON is FromJSON written independently on encoding/json, for the differential fuzz.
func refFromJSON(t *testing.T, body []byte) Result {
	var r Result
	var top map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(body, &top))
	r.MessageID = refString(top["id"])
	r.Model = refString(top["model"])
	r.StopReason = refString(top["stop_reason"])
	var errorObj bool
	if raw := top["error"]; len(raw) > 0 && raw[0] == '{' {
		errorObj = true
		r.ErrorType = refString(refObject(raw)["type"])
	}
	if r.ErrorType == "" && (errorObj || refString(top["type"]) == "error") {
		r.ErrorType = "error"
	}
	hasUsage := false
	if raw := top["usage"]; len(raw) > 0 && raw[0] == '{' {
		hasUsage = true
		refUsage(refObject(raw), &r.Tokens)
	}
	if raw := top["content"]; len(raw) > 0 && raw[0] == '[' {
		var blocks []json.RawMessage
		require.NoError(t, json.Unmarshal(raw, &blocks))
		for _, b := range blocks {
			if b[0] != '{' {
				continue
			}
			m := refObject(b)
			for _, k := range []string{"text", "thinking", "partial_json"} {
				r.TextBytes += int64(len(refString(m[k])))
			}
			r.TextBytes += int64(len(m["input"]))
		}
	}
	r.Tokens.Thinking = min(r.Tokens.Thinking, r.Tokens.Output)
	r.Complete = hasUsage && r.ErrorType == ""
	return r
}

func refObject(raw json.RawMessage) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if len(raw) > 0 && raw[0] == '{' {
		_ = json.Unmarshal(raw, &m)
	}
	return m
}

func refString(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

var digits = regexp.MustCompile(`^[0-9]+$`)

func refCount(m map[string]json.RawMessage, key string) (int64, bool) {
	raw, ok := m[key]
	if !ok || !digits.Match(raw) {
		return 0, false
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n > CountMax {
		return 0, false
	}
	return n, true
}

// refUsage restates the merge rules of the package comment.
func refUsage(u map[string]json.RawMessage, t *usage.Tokens) {
	for key, dst := range map[string]*int64{"input_tokens": &t.Input, "output_tokens": &t.Output, "cache_read_input_tokens": &t.CacheRead} {
		if n, ok := refCount(u, key); ok {
			*dst = n
		}
	}
	if n, ok := refCount(refObject(u["output_tokens_details"]), "thinking_tokens"); ok {
		t.Thinking = n
	}
	if n, ok := refCount(refObject(u["server_tool_use"]), "web_search_requests"); ok {
		t.WebSearchRequests = n
	}
	cc := refObject(u["cache_creation"])
	b5, ok5 := refCount(cc, "ephemeral_5m_input_tokens")
	b1, ok1 := refCount(cc, "ephemeral_1h_input_tokens")
	total, okTotal := refCount(u, "cache_creation_input_tokens")
	if !okTotal && !ok5 && !ok1 {
		return
	}
	oneHour := t.CacheWrite1h
	if ok5 || ok1 {
		oneHour = b1
	}
	if !okTotal {
		total = t.CacheWrite5m + t.CacheWrite1h
		if ok5 || ok1 {
			total = b5 + b1
		}
	}
	oneHour = min(oneHour, total)
	t.CacheWrite1h, t.CacheWrite5m = oneHour, total-oneHour
}
