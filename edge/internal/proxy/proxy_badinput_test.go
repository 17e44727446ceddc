package proxy_test

// Bad input, from clients and from the upstream, against the proxy with its real parts (auth
// cache, lease admitter, write-ahead log, Kafka producer on kfake, the bench mock or a raw
// TCP upstream). Every bad request must be answered in the API's error shape with nothing
// forwarded and nothing recorded; every bad upstream answer must reach the client as sent and
// be billed — on what was reported plus an estimate, marked estimated — never crash the edge
// or go unrecorded.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/proxy"
	"tollgate/edge/internal/sink/wal"
	"tollgate/pkg/usage"
)

// requireAPIError checks an edge error answer: status, JSON error shape with type, and the
// request id in header and body.
func requireAPIError(t *testing.T, status int, errType string, resp response) apiError {
	t.Helper()
	require.Equal(t, status, resp.status, "%s", resp.body)
	require.Equal(t, "application/json", resp.header.Get("content-type"))
	var e apiError
	require.NoError(t, json.Unmarshal(resp.body, &e), "%s", resp.body)
	require.Equal(t, "error", e.Type)
	require.Equal(t, errType, e.Error.Type, "%s", resp.body)
	require.NotEmpty(t, e.Error.Message)
	require.Equal(t, resp.header.Get("request-id"), e.RequestID)
	_, err := uuid.Parse(e.RequestID)
	require.NoError(t, err)
	return e
}

func TestMalformedBodiesRefusedInShape(t *testing.T) {
	h := newHarness(t)
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	for _, tc := range []struct{ name, body, message string }{
		{"empty", ``, "empty"},
		{"not JSON", `hello`, "malformed JSON"},
		{"truncated", `{"model":"claude-haiku-4-5","max_tokens":5,` + msgs, "malformed JSON"},
		{"trailing garbage", `{"model":"claude-haiku-4-5","max_tokens":5,` + msgs + `} x`, "malformed JSON"},
		{"two objects", `{"model":"claude-haiku-4-5","max_tokens":5,` + msgs + `}{}`, "malformed JSON"},
		{"byte order mark", "\xef\xbb\xbf{\"model\":\"claude-haiku-4-5\",\"max_tokens\":5," + msgs + "}", "malformed JSON"},
		{"NaN", `{"model":"claude-haiku-4-5","max_tokens":NaN,` + msgs + `}`, "malformed JSON"},
		{"single quotes", `{'model':'claude-haiku-4-5'}`, "malformed JSON"},
		{"raw control character", "{\"model\":\"claude-haiku-4-5\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"a\x01b\"}]}", "malformed JSON"},
		{"invalid UTF-8 in content", "{\"model\":\"claude-haiku-4-5\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"caf\xe9\"}]}", "UTF-8"},
		{"invalid UTF-8 in model", "{\"model\":\"claude-haiku-4-5\xff\",\"max_tokens\":5," + msgs + "}", "UTF-8"},
		{"surrogate bytes", "{\"model\":\"claude-haiku-4-5\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"\xed\xa0\x80\"}]}", "UTF-8"},
		{"array", `[` + msgs[11:] + `]`, "JSON object"},
		{"string", `"claude-haiku-4-5"`, "JSON object"},
		{"null", `null`, "JSON object"},
		{"missing model", `{"max_tokens":5,` + msgs + `}`, "model: Field required"},
		{"model null", `{"model":null,"max_tokens":5,` + msgs + `}`, "model"},
		{"model number", `{"model":4.5,"max_tokens":5,` + msgs + `}`, "model"},
		{"model object", `{"model":{"id":"claude-haiku-4-5"},"max_tokens":5,` + msgs + `}`, "model"},
		{"unknown model", `{"model":"claude-haiku-9","max_tokens":5,` + msgs + `}`, "not a model"},
		{"missing max_tokens", `{"model":"claude-haiku-4-5",` + msgs + `}`, "max_tokens: Field required"},
		{"max_tokens string", `{"model":"claude-haiku-4-5","max_tokens":"5",` + msgs + `}`, "max_tokens"},
		{"max_tokens bool", `{"model":"claude-haiku-4-5","max_tokens":true,` + msgs + `}`, "max_tokens"},
		{"max_tokens negative", `{"model":"claude-haiku-4-5","max_tokens":-5,` + msgs + `}`, "max_tokens"},
		{"max_tokens overflow", `{"model":"claude-haiku-4-5","max_tokens":9223372036854775808,` + msgs + `}`, "max_tokens"},
		{"missing messages", `{"model":"claude-haiku-4-5","max_tokens":5}`, "messages: Field required"},
		{"messages string", `{"model":"claude-haiku-4-5","max_tokens":5,"messages":"hi"}`, "messages"},
		{"stream number", `{"model":"claude-haiku-4-5","max_tokens":5,"stream":1,` + msgs + `}`, "stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, key := range []string{keyRich, keyEmpty} { // an empty account gets the 400 too, not a 402
				e := requireAPIError(t, 400, "invalid_request_error", h.post("/v1/messages", key, tc.body))
				require.Contains(t, e.Error.Message, tc.message)
			}
		})
	}
	require.Zero(t, h.mock.RequestCount(), "nothing malformed reached the upstream")
	require.Empty(t, h.records(), "nothing malformed is recorded or billed")
}

// rawExchange sends raw bytes on a fresh connection, shuts its sending side (so the edge
// sees the end of what the client sends), and returns every response the edge wrote before
// it closed the connection (or until the deadline).
func rawExchange(t *testing.T, addr string, raw string) ([]*http.Response, [][]byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(20*time.Second)))
	_, err = io.WriteString(conn, raw)
	require.NoError(t, err)
	require.NoError(t, conn.(*net.TCPConn).CloseWrite())
	r := bufio.NewReader(conn)
	var resps []*http.Response
	var bodies [][]byte
	for {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			var ne net.Error
			require.False(t, errorsAs(err, &ne) && ne.Timeout(), "the edge kept the connection open: %v", err)
			return resps, bodies
		}
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		resps = append(resps, resp)
		bodies = append(bodies, b)
	}
}

func errorsAs(err error, target *net.Error) bool {
	ne, ok := err.(net.Error)
	if ok {
		*target = ne
	}
	return ok
}

func asResponse(resp *http.Response, body []byte) response {
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

// TestConflictingFramingRefused: a request with both Content-Length and Transfer-Encoding can
// be framed two ways, which is how requests are smuggled past a proxy in front of the edge
// (RFC 9112 §6.1: refuse it, or at least close the connection after answering). The edge
// answers 400 in the API's shape, closes the connection, and never serves what was hidden in
// the body.
func TestConflictingFramingRefused(t *testing.T) {
	h := newHarness(t)
	addr := strings.TrimPrefix(h.url, "http://")
	good := messagesBody("claude-haiku-4-5", false, "output=5")
	smuggled := fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s",
		keyRich, len(good), good)
	chunk := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(good), good)
	for _, tc := range []struct{ name, head string }{
		{"CL then TE", fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n", len(chunk))},
		{"TE then CL", fmt.Sprintf("Transfer-Encoding: chunked\r\nContent-Length: %d\r\n", len(chunk))},
		{"lower case, short CL", "transfer-encoding: chunked\r\ncontent-length: 4\r\n"},
		{"TE identity with CL", fmt.Sprintf("Transfer-Encoding: identity\r\nContent-Length: %d\r\n", len(chunk))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: edge\r\nx-api-key: %s\r\ncontent-type: application/json\r\n%s\r\n%s%s",
				keyRich, tc.head, chunk, smuggled)
			resps, bodies := rawExchange(t, addr, raw)
			require.NotEmpty(t, resps)
			require.Len(t, resps, 1, "the edge answered more than one request on a connection with ambiguous framing")
			requireAPIError(t, 400, "invalid_request_error", asResponse(resps[0], bodies[0]))
		})
	}
	for _, tc := range []struct{ name, head string }{
		{"two Content-Length", "Content-Length: 4\r\nContent-Length: 5\r\n"},
		{"two Transfer-Encoding", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"},
		{"unknown Transfer-Encoding", "Transfer-Encoding: gzip, chunked\r\n"},
		{"bad Content-Length", "Content-Length: 4x\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: edge\r\nx-api-key: %s\r\n%s\r\n%s", keyRich, tc.head, chunk)
			resps, bodies := rawExchange(t, addr, raw)
			require.Len(t, resps, 1)
			requireAPIError(t, 400, "invalid_request_error", asResponse(resps[0], bodies[0]))
		})
	}
	require.Zero(t, h.mock.RequestCount(), "nothing reached the upstream")
	require.Empty(t, h.records())
}

// A chunked request without Content-Length is ordinary HTTP/1.1 and is served.
func TestChunkedRequestServed(t *testing.T) {
	h := newHarness(t)
	body := messagesBody("claude-haiku-4-5", false, "output=5")
	raw := fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: edge\r\nx-api-key: %s\r\ncontent-type: application/json\r\n"+
		"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", keyRich, len(body), body)
	resps, bodies := rawExchange(t, strings.TrimPrefix(h.url, "http://"), raw)
	require.Len(t, resps, 1)
	require.Equal(t, 200, resps[0].StatusCode, "%s", bodies[0])
	require.Len(t, h.records(), 1)
}

func TestOversizedRequestsRefusedInShape(t *testing.T) {
	const limit = 64 << 10
	h := newHarness(t, func(c *proxy.Config, _ *wal.Config) { c.BodyBytesMax = limit })
	addr := strings.TrimPrefix(h.url, "http://")
	big := `{"model":"claude-haiku-4-5","max_tokens":5,"messages":[{"role":"user","content":"` + strings.Repeat("a", limit) + `"}]}`

	t.Run("body over the limit", func(t *testing.T) {
		e := requireAPIError(t, 413, "request_too_large", h.post("/v1/messages", keyRich, big))
		require.Contains(t, e.Error.Message, "65536 bytes")
	})
	t.Run("chunked body over the limit", func(t *testing.T) {
		raw := fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: edge\r\nx-api-key: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n",
			keyRich, len(big), big)
		resps, bodies := rawExchange(t, addr, raw)
		require.Len(t, resps, 1)
		requireAPIError(t, 413, "request_too_large", asResponse(resps[0], bodies[0]))
	})
	t.Run("declared length over the limit, body never sent", func(t *testing.T) {
		// Refused from the header alone: the edge neither waits for nor buffers 10 GB.
		raw := fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: edge\r\nx-api-key: %s\r\nContent-Length: 10000000000\r\n\r\n{", keyRich)
		resps, bodies := rawExchange(t, addr, raw)
		require.Len(t, resps, 1)
		requireAPIError(t, 413, "request_too_large", asResponse(resps[0], bodies[0]))
	})
	t.Run("headers over the limit", func(t *testing.T) {
		// The harness reads headers into a 16 KiB buffer (the edge's -header-bytes-max).
		raw := fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: edge\r\nx-api-key: %s\r\nx-padding: %s\r\nContent-Length: 2\r\n\r\n{}",
			keyRich, strings.Repeat("p", 20<<10))
		resps, bodies := rawExchange(t, addr, raw)
		require.Len(t, resps, 1)
		requireAPIError(t, 431, "invalid_request_error", asResponse(resps[0], bodies[0]))
	})
	t.Run("body at the limit is served", func(t *testing.T) {
		pad := limit - len(messagesBody("claude-haiku-4-5", false, "output=5 ")) - 1
		body := messagesBody("claude-haiku-4-5", false, "output=5 "+strings.Repeat(" ", pad))
		require.LessOrEqual(t, len(body), limit)
		resp := h.post("/v1/messages", keyRich, body)
		require.Equal(t, 200, resp.status, "%s", resp.body)
	})
	require.EqualValues(t, 1, h.mock.RequestCount(), "only the request within the limit was forwarded")
	require.Len(t, h.records(), 1)
}

// rawUpstream is an upstream that answers every request with the bytes answer returns for
// it, then closes the connection: a stand-in for an upstream (or something in between) that
// misbehaves on the wire.
func rawUpstream(t *testing.T, answer func(req *http.Request, body []byte) []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				body, _ := io.ReadAll(req.Body)
				c.Write(answer(req, body)) //nolint:errcheck // the edge may have gone
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// chunked frames parts as an HTTP/1.1 chunked body, each part one chunk; end adds the
// terminating chunk (without it the body is cut off).
func chunked(end bool, parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		fmt.Fprintf(&b, "%x\r\n%s\r\n", len(p), p)
	}
	if end {
		b.WriteString("0\r\n\r\n")
	}
	return b.String()
}

const sseHead = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nrequest-id: req_raw\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"

func jsonAnswer(body string) string {
	return fmt.Sprintf("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nrequest-id: req_raw\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s",
		len(body), body)
}

const (
	evStart        = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_raw\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-haiku-4-5-20251001\",\"content\":[],\"usage\":{\"input_tokens\":100,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\n"
	evStartNoUsage = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_raw\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-haiku-4-5-20251001\",\"content\":[]}}\n\n"
	evBlock        = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
	evDeltaNoUsage = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n"
	evStop         = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
)

func evText(n int) string {
	return "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"" +
		strings.Repeat("t", n) + "\"}}\n\n"
}

// ceilDiv is ⌈a/b⌉.
func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// TestBadUpstreamAnswersBilledOnAnEstimate: whatever the upstream sends with a 2xx, the
// client gets it as sent and the request is billed: on the usage that was reported, with
// output at least ⌈text bytes / 3⌉ and, when no input was reported at all, input estimated as
// ⌈request text bytes / 4⌉ — and the record says estimated.
func TestBadUpstreamAnswersBilledOnAnEstimate(t *testing.T) {
	oversized := "event: message_delta\ndata: {\"type\":\"message_delta\"," + strings.Repeat(" ", 2<<20) +
		"\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n"
	garbage := "\x00\xff\xfe garbage\r\n:::\ndata: {not json\n\nevent: message_start\ndata: [1,2\n\n" +
		"event: \xffweird\ndata: " + strings.Repeat("z", 3000) + "\n\n"
	for _, tc := range []struct {
		name   string
		stream bool
		answer string
		// usage reported: inputEstimated replaces Input when true.
		want           usage.Tokens
		inputEstimated bool
		cut            bool // the client sees the stream cut off
	}{
		{name: "garbage SSE", stream: true, answer: sseHead + chunked(true, garbage),
			want: usage.Tokens{}, inputEstimated: true},
		{name: "stream cut mid-chunk", stream: true, cut: true,
			// The last chunk promises more bytes than arrive before the connection closes.
			answer: sseHead + chunked(false, evStart, evBlock, evText(300)) + "400\r\nevent: message_delta\ndata: {\"type\":\"message_del",
			want:   usage.Tokens{Input: 100, CacheRead: 10, Output: 100}},
		{name: "stream cut between chunks", stream: true,
			// fasthttp reads a connection closed where a chunk size was due as a clean end, so
			// the client gets a terminated response; the missing message_delta still makes the
			// record estimated.
			answer: sseHead + chunked(false, evStart, evBlock, evText(300), "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tok"),
			want:   usage.Tokens{Input: 100, CacheRead: 10, Output: 100}},
		{name: "stream ends without message_delta", stream: true,
			answer: sseHead + chunked(true, evStart, evBlock, evText(31)),
			want:   usage.Tokens{Input: 100, CacheRead: 10, Output: 11}},
		{name: "oversized message_delta line", stream: true,
			answer: sseHead + chunked(true, evStart, evBlock, evText(30), oversized, evStop),
			want:   usage.Tokens{Input: 100, CacheRead: 10, Output: 10}},
		{name: "stream without usage", stream: true,
			answer: sseHead + chunked(true, evStartNoUsage, evBlock, evText(90), evDeltaNoUsage, evStop),
			want:   usage.Tokens{Output: 30}, inputEstimated: true},
		{name: "JSON cut in half", stream: false,
			answer: jsonAnswer(`{"id":"msg_raw","type":"message","conten`),
			want:   usage.Tokens{}, inputEstimated: true},
		{name: "JSON without usage", stream: false,
			answer: jsonAnswer(`{"id":"msg_raw","type":"message","role":"assistant","content":[{"type":"text","text":"` + strings.Repeat("j", 30) + `"}]}`),
			want:   usage.Tokens{Output: 10}, inputEstimated: true},
		{name: "not JSON at all", stream: false,
			answer: jsonAnswer("<html>oops"),
			want:   usage.Tokens{}, inputEstimated: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answer := tc.answer
			up := rawUpstream(t, func(*http.Request, []byte) []byte { return []byte(answer) })
			h := newHarness(t, func(c *proxy.Config, _ *wal.Config) { c.UpstreamURL = up })
			body := messagesBody("claude-haiku-4-5", tc.stream, "anything")
			resp, err := h.postRaw("/v1/messages", keyRich, body)
			if tc.cut {
				require.Error(t, err, "the client must see the cut")
			} else {
				require.NoError(t, err)
				require.Equal(t, 200, resp.status)
				_, wantBody, _ := strings.Cut(answer, "\r\n\r\n")
				if tc.stream {
					wantBody = dechunk(t, wantBody+"0\r\n\r\n")
				}
				require.True(t, bytes.Equal([]byte(wantBody), resp.body), "the client gets the upstream's bytes unchanged")
			}
			// The edge survived: it still serves.
			recs := h.records()
			require.Len(t, recs, 1, "exactly one record: billed, not dropped")
			rec := recs[0]
			require.True(t, rec.Estimated)
			want := tc.want
			if tc.inputEstimated {
				want.Input = ceilDiv(int64(len(body)), 4)
			}
			require.Equal(t, want, rec.Usage)
			cost, _ := expectedCost(want, haiku45)
			require.Equal(t, cost, rec.CostMicrocredits)
			require.Positive(t, rec.CostMicrocredits, "a served answer is never free")
			require.Equal(t, 200, rec.Status)
		})
	}
}

// postRaw is post without failing on transport errors (a cut stream is one).
func (h *harness) postRaw(path, key, body string) (response, error) {
	req, err := http.NewRequest(http.MethodPost, h.url+path, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set("x-api-key", key)
	resp, err := h.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}, err
}

func dechunk(t *testing.T, s string) string {
	t.Helper()
	r := bufio.NewReader(strings.NewReader(s))
	var out strings.Builder
	for {
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		var n int
		_, err = fmt.Sscanf(strings.TrimSpace(line), "%x", &n)
		require.NoError(t, err)
		if n == 0 {
			return out.String()
		}
		buf := make([]byte, n+2)
		_, err = io.ReadFull(r, buf)
		require.NoError(t, err)
		out.Write(buf[:n])
	}
}

// FuzzRawRequest sends arbitrary bytes as a client connection to the proxy with its real
// parts and the mock upstream: whatever arrives, the edge must not crash or hang, and every
// answer it gives that is not a success must be in the API's error shape.
func FuzzRawRequest(f *testing.F) {
	good := messagesBody("claude-haiku-4-5", false, "output=5")
	f.Add(fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: e\r\nx-api-key: %s\r\ncontent-length: %d\r\n\r\n%s", keyRich, len(good), good))
	f.Add(fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: e\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", keyRich, len(good), good))
	f.Add(fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: e\r\nx-api-key: %s\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", keyRich))
	f.Add(fmt.Sprintf("GET /v1/balance HTTP/1.1\r\nHost: e\r\nx-api-key: %s\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: e\r\n\r\n", keyRich))
	f.Add("POST /v1/messages HTTP/1.0\r\nx-api-key: " + keyRich + "\r\ncontent-length: 9\r\n\r\n{\"model\":")
	f.Add("\x00\xff GARBAGE\r\n\r\n")
	// A mutated mock directive may ask for long delays: the upstream read timeout keeps every
	// answer well inside the client's deadline below.
	h := newHarness(f, func(c *proxy.Config, _ *wal.Config) { c.UpstreamReadTimeout = 2 * time.Second })
	addr := strings.TrimPrefix(h.url, "http://")
	f.Fuzz(func(t *testing.T, raw string) {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
		_, _ = io.WriteString(conn, raw) // the edge may close before reading it all
		_ = conn.(*net.TCPConn).CloseWrite()
		r := bufio.NewReader(conn)
		for {
			resp, err := http.ReadResponse(r, nil)
			if err != nil {
				var ne net.Error
				require.False(t, errorsAs(err, &ne) && ne.Timeout(), "the edge hung on %q", raw)
				return // closed
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return // a cut stream; the edge closed it
			}
			if resp.StatusCode >= 400 {
				var e apiError
				require.NoError(t, json.Unmarshal(body, &e), "status %d not in the API's shape for %q: %s", resp.StatusCode, raw, body)
				require.Equal(t, "error", e.Type)
				require.NotEmpty(t, e.Error.Type)
			}
		}
	})
}
