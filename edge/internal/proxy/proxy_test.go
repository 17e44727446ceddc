package proxy_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/proxy"
	"tollgate/edge/internal/sink/wal"
	"tollgate/pkg/ledgerapi"
	"tollgate/pkg/pricing"
	"tollgate/pkg/usage"
)

// List prices in µUSD per million tokens (USD/MTok × 1e6), copied by hand from
// deploy/prices.yaml, so the tests check the edge against the price list rather than
// against the pricing code.
type listRates struct{ in, out, cw5, cw1, cr, think int64 }

var (
	haiku45 = listRates{in: 1_000_000, out: 5_000_000, cw5: 1_250_000, cw1: 2_000_000, cr: 100_000, think: 5_000_000}
	// Sonnet 4.5 above 200K input tokens with the 1M beta.
	sonnet45Long = listRates{in: 6_000_000, out: 22_500_000, cw5: 7_500_000, cw1: 12_000_000, cr: 600_000, think: 22_500_000}
)

// webSearchMicroUSD is the list fee of one web search: $10 per 1,000.
const webSearchMicroUSD = 10_000

// expectedCost prices tokens from the list: the public price is list × (1 − 30%) at 200
// credits per dollar, i.e. 140 µcr per µUSD; everything is summed exactly, then divided by a
// million once and rounded half up.
func expectedCost(tok usage.Tokens, r listRates) (microcredits, upstreamMicroUSD int64) {
	sum := tok.Input*r.in + (tok.Output-tok.Thinking)*r.out + tok.Thinking*r.think +
		tok.CacheWrite5m*r.cw5 + tok.CacheWrite1h*r.cw1 + tok.CacheRead*r.cr +
		tok.WebSearchRequests*webSearchMicroUSD*1_000_000
	return (sum*140 + 500_000) / 1_000_000, (sum + 500_000) / 1_000_000
}

func upstreamKeyID() string {
	sum := sha256.Sum256([]byte(upstreamKey))
	return "uk_" + hex.EncodeToString(sum[:6])
}

func priceVersion(t *testing.T) string {
	table, err := pricing.Default()
	require.NoError(t, err)
	return table.Version()
}

// usageDirective fixes the usage of a response. With web search, message_start reports
// input/(searches+1) = 333 and message_delta the full 1000; the 5m/1h cache split exists only
// in message_start; 900 text bytes come in 4 deltas of 225.
const usageDirective = "input=1000 output=120 cache_write_5m=300 cache_write_1h=200 cache_read=900 web_search=2 text_bytes=900 events=4"

var (
	fullUsage = usage.Tokens{Input: 1000, Output: 120, CacheWrite5m: 300, CacheWrite1h: 200, CacheRead: 900, WebSearchRequests: 2}
	// lean: message_delta carries output_tokens only, so input stays at message_start's 333
	// and web search is never reported.
	leanUsage = usage.Tokens{Input: 333, Output: 120, CacheWrite5m: 300, CacheWrite1h: 200, CacheRead: 900}
	// error / truncate: only message_start's usage arrives, plus 2 of the 4 text deltas (450
	// bytes): output is estimated as ceil(450/3) = 150.
	cutUsage = usage.Tokens{Input: 333, Output: 150, CacheWrite5m: 300, CacheWrite1h: 200, CacheRead: 900}
)

func TestMessagesInEveryMockMode(t *testing.T) {
	h := newHarness(t)
	type want struct {
		status    int
		usage     *usage.Tokens // nil: only check the cost matches the recorded usage
		estimated bool
		errorType string
		stop      string
	}
	ok := func(u usage.Tokens) want { return want{status: 200, usage: &u, stop: "end_turn"} }
	cut := func(errorType string) want {
		return want{status: 200, usage: &cutUsage, estimated: true, errorType: errorType}
	}
	cases := []struct {
		mode      string
		stream    want
		nonStream want
	}{
		{"", ok(fullUsage), ok(fullUsage)},
		{"crlf", ok(fullUsage), ok(fullUsage)},
		{"padded", ok(fullUsage), ok(fullUsage)},
		{"split", ok(fullUsage), ok(fullUsage)},
		{"crlf,padded,split", ok(fullUsage), ok(fullUsage)},
		{"lean", ok(leanUsage), ok(fullUsage)},
		{"error", cut("overloaded_error"), want{status: 529, usage: &usage.Tokens{}, errorType: "overloaded_error"}},
		{"error,crlf,split", cut("overloaded_error"), want{status: 529, usage: &usage.Tokens{}, errorType: "overloaded_error"}},
		{"truncate", cut(""), want{status: 200, estimated: true}},
	}

	type sent struct {
		name string
		want want
		resp response
	}
	var all []sent
	for _, tc := range cases {
		for _, stream := range []bool{true, false} {
			directive := usageDirective
			if tc.mode != "" {
				directive += " mode=" + tc.mode
			}
			w := tc.nonStream
			if stream {
				w = tc.stream
			}
			resp := h.post("/v1/messages", keyRich, messagesBody("claude-haiku-4-5", stream, directive))
			name := fmt.Sprintf("mode=%q stream=%v", tc.mode, stream)
			require.Equal(t, w.status, resp.status, "%s: %s", name, resp.body)
			all = append(all, sent{name: name, want: w, resp: resp})
		}
	}

	recs := byRequestID(t, h.records())
	require.Len(t, recs, len(all), "exactly one record per request")
	seqs := map[uint64]bool{}
	for _, s := range all {
		rid := s.resp.header.Get("request-id")
		id, err := uuid.Parse(rid)
		require.NoError(t, err, s.name)
		require.Equal(t, uuid.Version(7), id.Version(), s.name)
		rec, found := recs[rid]
		require.True(t, found, "%s: no record for %s", s.name, rid)

		require.Equal(t, usage.Version, rec.V)
		require.Equal(t, "edge-test", rec.EdgeID)
		require.False(t, seqs[rec.Seq], "%s: seq %d reused", s.name, rec.Seq)
		seqs[rec.Seq] = true
		require.Equal(t, "acct-rich", rec.AccountID)
		require.Equal(t, "key-rich", rec.KeyID)
		require.Equal(t, "claude-haiku-4-5-20251001", rec.Model, "as the upstream returned it")
		require.Equal(t, "claude-haiku-4-5", rec.ModelRequested)
		require.Equal(t, s.want.status, rec.Status, s.name)
		require.Equal(t, strings.Contains(s.name, "stream=true"), rec.Stream, s.name)
		require.Equal(t, s.want.estimated, rec.Estimated, s.name)
		require.Equal(t, s.want.errorType, rec.ErrorType, s.name)
		if s.want.usage != nil {
			require.Equal(t, s.want.stop, rec.StopReason, s.name)
			require.Equal(t, *s.want.usage, rec.Usage, s.name)
		}
		cost, upstream := expectedCost(rec.Usage, haiku45)
		if s.want.usage != nil {
			cost, upstream = expectedCost(*s.want.usage, haiku45)
		}
		require.Equal(t, cost, rec.CostMicrocredits, s.name)
		require.Equal(t, upstream, rec.UpstreamCostMicroUSD, s.name)
		require.Equal(t, priceVersion(t), rec.PriceVersion)
		require.Equal(t, upstreamKeyID(), rec.UpstreamKeyID)
		require.Equal(t, s.resp.header.Get("upstream-request-id"), rec.UpstreamRequestID, s.name)
		require.True(t, strings.HasPrefix(rec.UpstreamRequestID, "req_"), s.name)
		require.LessOrEqual(t, rec.TsStartMs, rec.TsEndMs)
		require.Equal(t, "acct-rich", h.ledger.LeaseAccount(rec.LeaseID), "%s: admitted from a lease ledgerd granted the account", s.name)
	}
	// The hand-computed totals, as a check on expectedCost itself.
	c, u := expectedCost(fullUsage, haiku45)
	require.Equal(t, int64(3_145_100), c)
	require.Equal(t, int64(22_465), u)
}

// TestStreamBytesPassUnchanged compares what a client receives through the edge with what
// the upstream sends directly, byte for byte apart from the per-response ids.
func TestStreamBytesPassUnchanged(t *testing.T) {
	h := newHarness(t)
	ids := regexp.MustCompile(`(msg|toolu)_01[0-9A-Za-z]+`)
	for _, mode := range []string{"", "crlf,padded", "split", "truncate"} {
		directive := "output=300 tool=lookup"
		if mode != "" {
			directive += " mode=" + mode
		}
		body := messagesBody("claude-haiku-4-5", true, directive)
		via := h.post("/v1/messages", keyRich, body)
		require.Equal(t, 200, via.status)
		req, err := http.NewRequest(http.MethodPost, h.mockURL+"/v1/messages", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("x-api-key", upstreamKey)
		direct := h.do(req)
		require.Equal(t, 200, direct.status)
		require.Equal(t, "text/event-stream", via.header.Get("content-type"))
		require.Equal(t, ids.ReplaceAllString(string(direct.body), "ID"), ids.ReplaceAllString(string(via.body), "ID"), mode)
	}
}

func TestHeadersForwardedAndStripped(t *testing.T) {
	h := newHarness(t)
	req, err := http.NewRequest(http.MethodPost, h.url+"/v1/messages?beta=true",
		strings.NewReader(messagesBody("claude-haiku-4-5", false, "output=5")))
	require.NoError(t, err)
	for k, v := range map[string]string{
		"Authorization":       "Bearer " + keyRich, // the bearer form current SDKs send
		"Anthropic-Version":   "2026-10-21",
		"Anthropic-Beta":      "prompt-caching-2024-07-31",
		"Content-Type":        "application/json",
		"User-Agent":          "Anthropic/TS 1.0",
		"Accept-Encoding":     "gzip, br",
		"Connection":          "keep-alive, X-Hop",
		"X-Hop":               "1",
		"Keep-Alive":          "timeout=5",
		"Proxy-Authorization": "Basic eDp5",
		"Te":                  "trailers",
		"X-Stainless-Retry":   "0",
	} {
		req.Header.Set(k, v)
	}
	resp := h.do(req)
	require.Equal(t, 200, resp.status, string(resp.body))

	up, ok := h.mock.LastRequest()
	require.True(t, ok)
	require.Equal(t, "/v1/messages", up.Path)
	require.Equal(t, "beta=true", up.Query)
	require.Equal(t, upstreamKey, up.Get("x-api-key"), "the operator's key goes upstream")
	require.Empty(t, up.Get("authorization"), "the client's key never reaches the upstream")
	require.Equal(t, "identity", up.Get("accept-encoding"))
	require.Equal(t, "2026-10-21", up.Get("anthropic-version"))
	require.Equal(t, "prompt-caching-2024-07-31", up.Get("anthropic-beta"))
	require.Equal(t, "Anthropic/TS 1.0", up.Get("user-agent"))
	require.Equal(t, "0", up.Get("x-stainless-retry"))
	for _, name := range []string{"x-hop", "keep-alive", "proxy-authorization", "te"} {
		require.Empty(t, up.Get(name), name)
	}
	for name, values := range up.Header {
		for _, v := range values {
			require.NotContains(t, v, keyRich, "client key leaked upstream in %s", name)
		}
	}

	require.NotEmpty(t, resp.header.Get("request-id"))
	require.True(t, strings.HasPrefix(resp.header.Get("upstream-request-id"), "req_"))
	require.NotEqual(t, resp.header.Get("request-id"), resp.header.Get("upstream-request-id"))
	for name, values := range resp.header {
		for _, v := range values {
			require.NotContains(t, v, upstreamKey, "upstream key leaked to the client in %s", name)
		}
	}
	require.NotContains(t, string(resp.body), upstreamKey)
	require.Len(t, h.records(), 1)
}

// disconnectMidStream sends a paced stream (40 deltas over about a second), reads until the
// first delta and resets the connection, so the edge's next write fails at once.
func disconnectMidStream(t *testing.T, h *harness) {
	t.Helper()
	body := messagesBody("claude-haiku-4-5", true, "input=500 output=400 text_bytes=4000 events=40 tps=400")
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	require.NoError(t, err)
	fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: edge\r\nx-api-key: %s\r\nanthropic-version: 2023-06-01\r\n"+
		"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s", keyRich, len(body), body)
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		if strings.HasPrefix(line, "event: content_block_delta") {
			break
		}
	}
	require.NoError(t, conn.(*net.TCPConn).SetLinger(0))
	require.NoError(t, conn.Close())
}

func TestClientDisconnectMidStreamStillBillsFullUsage(t *testing.T) {
	h := newHarness(t)
	disconnectMidStream(t, h)
	recs := h.records()
	require.Len(t, recs, 1)
	rec := recs[0]
	want := usage.Tokens{Input: 500, Output: 400}
	require.Equal(t, want, rec.Usage, "the drain read the stream to its end")
	require.False(t, rec.Estimated)
	require.Equal(t, "end_turn", rec.StopReason)
	cost, _ := expectedCost(want, haiku45)
	require.Equal(t, cost, rec.CostMicrocredits)
	require.Equal(t, float64(1), counter(t, h.metrics, "tollgate_edge_drains_total", map[string]string{"outcome": "completed"}))
}

// When a drain cannot run (too many already) or does not finish in time, the stream is billed
// on what it reported plus the output estimate, and the record says so.
func TestAbandonedStreamThatCannotBeDrainedIsEstimated(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opt     option
		outcome string
	}{
		{"no drain slot", func(c *proxy.Config, _ *wal.Config) { c.DrainsMax = 0 }, "refused"},
		{"drain timeout", func(c *proxy.Config, _ *wal.Config) { c.DrainTimeout = time.Millisecond }, "cut"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.opt)
			disconnectMidStream(t, h)
			recs := h.records()
			require.Len(t, recs, 1)
			rec := recs[0]
			require.True(t, rec.Estimated)
			require.Equal(t, int64(500), rec.Usage.Input, "from message_start")
			require.Less(t, rec.Usage.Output, int64(400), "the rest of the stream was never seen")
			require.Positive(t, rec.Usage.Output)
			cost, _ := expectedCost(rec.Usage, haiku45)
			require.Equal(t, cost, rec.CostMicrocredits)
			require.Equal(t, float64(1), counter(t, h.metrics, "tollgate_edge_drains_total", map[string]string{"outcome": tc.outcome}))
		})
	}
}

func TestUpstreamErrorsPassThroughUnchanged(t *testing.T) {
	h := newHarness(t)
	for _, stream := range []bool{false, true} {
		resp := h.post("/v1/messages", keyRich, messagesBody("claude-haiku-4-5", stream, "status=429 retry_after=7"))
		require.Equal(t, 429, resp.status)
		require.Equal(t, "7", resp.header.Get("retry-after"))
		var e struct {
			Type  string `json:"type"`
			Error struct{ Type, Message string }
		}
		require.NoError(t, json.Unmarshal(resp.body, &e))
		require.Equal(t, "error", e.Type)
		require.Equal(t, "rate_limit_error", e.Error.Type)
		require.Contains(t, e.Error.Message, "(mock)", "the upstream's own message")
	}
	recs := h.records()
	require.Len(t, recs, 2)
	for _, rec := range recs {
		require.Equal(t, 429, rec.Status)
		require.Equal(t, "rate_limit_error", rec.ErrorType)
		require.Zero(t, rec.CostMicrocredits, "a refused request costs nothing")
		require.False(t, rec.Estimated)
	}
}

func TestLongContextBeta(t *testing.T) {
	h := newHarness(t)
	body := messagesBody("claude-sonnet-4-5", false, "input=250000 output=100")
	resp := h.post("/v1/messages", keyRich, body, "anthropic-beta", "context-1m-2025-08-07")
	require.Equal(t, 200, resp.status, string(resp.body))
	recs := h.records()
	require.Len(t, recs, 1)
	cost, up := expectedCost(usage.Tokens{Input: 250000, Output: 100}, sonnet45Long)
	require.Equal(t, cost, recs[0].CostMicrocredits)
	require.Equal(t, up, recs[0].UpstreamCostMicroUSD)
}

type apiError struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	RequestID string `json:"request_id"`
}

func TestEdgeErrorsInAnthropicShape(t *testing.T) {
	h := newHarness(t, func(c *proxy.Config, _ *wal.Config) { c.BodyBytesMax = 64 << 10 })
	good := messagesBody("claude-haiku-4-5", false, "output=5")
	for _, tc := range []struct {
		name, method, path, key, body string
		status                        int
		errType, message              string
	}{
		{"no key", "POST", "/v1/messages", "", good, 401, "authentication_error", "missing API key"},
		{"unknown key", "POST", "/v1/messages", "sk-nope", good, 401, "authentication_error", "invalid x-api-key"},
		{"revoked key", "POST", "/v1/messages", keyRevoked, good, 401, "authentication_error", "revoked"},
		{"suspended account", "POST", "/v1/messages", keySuspended, good, 403, "permission_error", "suspended"},
		{"empty balance", "POST", "/v1/messages", keyEmpty, good, 402, "billing_error", "available 0.000000 credits"},
		{"hold over balance", "POST", "/v1/messages", keyPoor, good, 402, "billing_error", "may cost 1.038520 credits, available 0.050000 credits"},
		{"malformed JSON", "POST", "/v1/messages", keyRich, `{"model":`, 400, "invalid_request_error", "malformed JSON"},
		{"missing model", "POST", "/v1/messages", keyRich, `{"max_tokens":5,"messages":[]}`, 400, "invalid_request_error", "model: Field required"},
		{"missing max_tokens", "POST", "/v1/messages", keyRich, `{"model":"claude-haiku-4-5","messages":[]}`, 400, "invalid_request_error", "max_tokens: Field required"},
		{"unknown model", "POST", "/v1/messages", keyRich, messagesBody("gpt-5", false, "output=5"), 400, "invalid_request_error", `"gpt-5" is not a model`},
		{"body too large", "POST", "/v1/messages", keyRich, `{"x":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "request_too_large", "65536 bytes"},
		{"wrong method", "GET", "/v1/messages", keyRich, "", 405, "invalid_request_error", "method not allowed"},
		{"unknown path", "GET", "/v2/whatever", keyRich, "", 404, "not_found_error", "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, h.url+tc.path, strings.NewReader(tc.body))
			require.NoError(t, err)
			if tc.key != "" {
				req.Header.Set("x-api-key", tc.key)
			}
			resp := h.do(req)
			require.Equal(t, tc.status, resp.status, string(resp.body))
			require.Equal(t, "application/json", resp.header.Get("content-type"))
			var e apiError
			require.NoError(t, json.Unmarshal(resp.body, &e), string(resp.body))
			require.Equal(t, "error", e.Type)
			require.Equal(t, tc.errType, e.Error.Type)
			require.Contains(t, e.Error.Message, tc.message)
			require.Equal(t, resp.header.Get("request-id"), e.RequestID)
			_, err = uuid.Parse(e.RequestID)
			require.NoError(t, err)
		})
	}
	require.Zero(t, h.mock.RequestCount(), "nothing refused by the edge reached the upstream")
	require.Empty(t, h.records(), "nothing refused by the edge is recorded")
}

// The 402 above quotes the hold: (body bytes + 1024) tokens at Haiku 4.5's dearest input
// rate (cache write 1h, $2 → 280 µcr per token) plus max_tokens at the output rate ($5 → 700).
func TestHoldQuotedIn402(t *testing.T) {
	body := messagesBody("claude-haiku-4-5", false, "output=5")
	hold := int64(len(body)+1024)*280 + 1024*700
	require.Equal(t, int64(1_038_520), hold, "update the 402 case above if the test body changes")
}

func TestUnknownKeyFloodReachesLedgerOnce(t *testing.T) {
	h := newHarness(t)
	body := messagesBody("claude-haiku-4-5", false, "output=5")
	var wg sync.WaitGroup
	statuses := make(chan int, 200)
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, h.url+"/v1/messages", strings.NewReader(body))
			req.Header.Set("authorization", "Bearer sk-flood")
			resp, err := h.client.Do(req)
			if err != nil {
				statuses <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		require.Equal(t, 401, s)
	}
	require.Equal(t, int32(1), h.ledger.keyCalls.Load())
	require.Zero(t, h.mock.RequestCount())
}

func TestQueueFullRefusesWith503(t *testing.T) {
	// The smallest log the WAL allows; every reservation it has room for is taken.
	h := newHarness(t, func(_ *proxy.Config, w *wal.Config) { w.SegmentBytes = 4 << 10; w.BytesMax = 8 << 10 })
	taken := 0
	for h.wal.Reserve() {
		taken++
	}
	require.Positive(t, taken)
	resp := h.post("/v1/messages", keyRich, messagesBody("claude-haiku-4-5", false, "output=5"))
	require.Equal(t, 503, resp.status)
	require.NotEmpty(t, resp.header.Get("retry-after"))
	var e apiError
	require.NoError(t, json.Unmarshal(resp.body, &e))
	require.Equal(t, "api_error", e.Error.Type)
	require.Zero(t, h.mock.RequestCount(), "refused, not served unbilled")
	for range taken {
		h.wal.Release()
	}
}

func TestUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := "http://" + ln.Addr().String()
	ln.Close()
	h := newHarness(t, func(c *proxy.Config, _ *wal.Config) { c.UpstreamURL = dead })
	resp := h.post("/v1/messages", keyRich, messagesBody("claude-haiku-4-5", true, "output=5"))
	require.Equal(t, 502, resp.status)
	var e apiError
	require.NoError(t, json.Unmarshal(resp.body, &e))
	require.Equal(t, "api_error", e.Error.Type)
	recs := h.records()
	require.Len(t, recs, 1, "a forwarded request is recorded even when it failed")
	require.Equal(t, 502, recs[0].Status)
	require.Zero(t, recs[0].CostMicrocredits)
}

func TestBalance(t *testing.T) {
	h := newHarness(t)
	resp := h.get("/v1/balance", keyPoor)
	require.Equal(t, 200, resp.status)
	require.NotEmpty(t, resp.header.Get("request-id"))
	var b struct {
		AccountID             string `json:"account_id"`
		BalanceMicrocredits   int64  `json:"balance_microcredits"`
		AvailableMicrocredits int64  `json:"available_microcredits"`
		Credits               string `json:"credits"`
	}
	require.NoError(t, json.Unmarshal(resp.body, &b))
	require.Equal(t, "acct-poor", b.AccountID)
	require.Equal(t, int64(50_000), b.BalanceMicrocredits)
	require.Equal(t, int64(50_000), b.AvailableMicrocredits)
	require.Equal(t, "0.050000", b.Credits)

	require.Equal(t, 401, h.get("/v1/balance", "").status)
	require.Empty(t, h.records())
}

func TestCountTokensAndModelsAreFreePassthrough(t *testing.T) {
	h := newHarness(t)
	resp := h.post("/v1/messages/count_tokens", keyRich, `{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"hi\nmock: input=42"}]}`)
	require.Equal(t, 200, resp.status, string(resp.body))
	require.JSONEq(t, `{"input_tokens":42}`, string(resp.body))
	require.NotEmpty(t, resp.header.Get("request-id"))

	resp = h.get("/v1/models", keyRich)
	require.Equal(t, 200, resp.status)
	require.Contains(t, string(resp.body), "claude-haiku-4-5")
	up, ok := h.mock.LastRequest()
	require.True(t, ok)
	require.Equal(t, upstreamKey, up.Get("x-api-key"))

	require.Equal(t, 401, h.get("/v1/models", "sk-nope").status)
	require.Empty(t, h.records(), "free endpoints are not recorded")
}

func TestPerKeyRateLimit(t *testing.T) {
	h := newHarness(t)
	const limited = "sk-test-limited"
	h.ledger.add(limited, ledgerapi.Key{KeyID: "key-lim", AccountID: "acct-lim", AccountStatus: ledgerapi.StatusActive,
		RateLimitRPM: 2}, 1_000_000_000)
	body := messagesBody("claude-haiku-4-5", false, "output=5")
	require.Equal(t, 200, h.post("/v1/messages", limited, body).status)
	require.Equal(t, 200, h.post("/v1/messages", limited, body).status)
	resp := h.post("/v1/messages", limited, body)
	require.Equal(t, 429, resp.status)
	var e apiError
	require.NoError(t, json.Unmarshal(resp.body, &e))
	require.Equal(t, "rate_limit_error", e.Error.Type)
	retry := resp.header.Get("retry-after")
	require.NotEmpty(t, retry)
	require.Len(t, h.records(), 2, "the refused request is not recorded")
}
