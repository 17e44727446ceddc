package proxy_test

// Security boundaries of the request path (DESIGN §9.7): the operator's upstream keys never
// reach a client, on any path, success or error; the client's key never reaches the
// upstream; a key only ever sees its own account.

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/proxy"
	"tollgate/edge/internal/sink/wal"
)

// requireNoSecret fails when any header or the body of resp contains secret.
func requireNoSecret(t *testing.T, what, secret string, resp response) {
	t.Helper()
	for name, values := range resp.header {
		for _, v := range values {
			require.NotContains(t, v, secret, "%s: secret in response header %s", what, name)
		}
	}
	require.NotContains(t, string(resp.body), secret, "%s: secret in response body", what)
}

func TestUpstreamKeyNeverReachesClient(t *testing.T) {
	h := newHarness(t, func(c *proxy.Config, _ *wal.Config) { c.BodyBytesMax = 64 << 10 })
	var sent []struct {
		what string
		resp response
	}
	add := func(what string, resp response) {
		sent = append(sent, struct {
			what string
			resp response
		}{what, resp})
	}
	for _, stream := range []bool{false, true} {
		for _, d := range []string{"output=5", "output=5 mode=error", "output=5 mode=truncate", "output=5 tool=lookup thinking=8",
			"status=400", "status=401", "status=403", "status=404", "status=413", "status=429", "status=500", "status=529"} {
			add(d, h.post("/v1/messages", keyRich, messagesBody("claude-haiku-4-5", stream, d)))
		}
	}
	add("count_tokens", h.post("/v1/messages/count_tokens", keyRich, `{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"hi"}]}`))
	add("models", h.get("/v1/models", keyRich))
	add("model", h.get("/v1/models/claude-haiku-4-5", keyRich))
	add("balance", h.get("/v1/balance", keyRich))
	add("no key", h.post("/v1/messages", "", messagesBody("claude-haiku-4-5", false, "output=5")))
	add("unknown key", h.post("/v1/messages", "sk-nope", messagesBody("claude-haiku-4-5", false, "output=5")))
	add("revoked key", h.post("/v1/messages", keyRevoked, messagesBody("claude-haiku-4-5", false, "output=5")))
	add("suspended", h.post("/v1/messages", keySuspended, messagesBody("claude-haiku-4-5", false, "output=5")))
	add("402", h.post("/v1/messages", keyEmpty, messagesBody("claude-haiku-4-5", false, "output=5")))
	add("malformed", h.post("/v1/messages", keyRich, `{"model":`))
	add("unknown model", h.post("/v1/messages", keyRich, messagesBody("gpt-5", false, "output=5")))
	add("too large", h.post("/v1/messages", keyRich, `{"x":"`+strings.Repeat("a", 70<<10)+`"}`))
	add("not found", h.get("/v2/anything", keyRich))
	add("bad method", h.get("/v1/messages", keyRich))
	for _, s := range sent {
		require.NotZero(t, s.resp.status, s.what)
		requireNoSecret(t, s.what, upstreamKey, s.resp)
	}

	// Upstream unreachable: the edge's own 502 names no key and no address with one.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := "http://" + ln.Addr().String()
	ln.Close()
	hd := newHarness(t, func(c *proxy.Config, _ *wal.Config) { c.UpstreamURL = dead })
	for _, stream := range []bool{false, true} {
		resp := hd.post("/v1/messages", keyRich, messagesBody("claude-haiku-4-5", stream, "output=5"))
		require.Equal(t, 502, resp.status)
		requireNoSecret(t, "upstream unreachable", upstreamKey, resp)
	}
}

// The client's key goes nowhere but the edge: not upstream (in any header, on any route),
// not back in an error message.
func TestClientKeyNeverReachesUpstream(t *testing.T) {
	h := newHarness(t)
	for _, hdr := range [][2]string{{"x-api-key", keyRich}, {"authorization", "Bearer " + keyRich}} {
		for _, tc := range []struct{ method, path, body string }{
			{"POST", "/v1/messages", messagesBody("claude-haiku-4-5", false, "output=5")},
			{"POST", "/v1/messages", messagesBody("claude-haiku-4-5", true, "output=5")},
			{"POST", "/v1/messages/count_tokens", `{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"hi"}]}`},
			{"GET", "/v1/models", ""},
		} {
			req, err := http.NewRequest(tc.method, h.url+tc.path, strings.NewReader(tc.body))
			require.NoError(t, err)
			req.Header.Set(hdr[0], hdr[1])
			req.Header.Set("content-type", "application/json")
			resp := h.do(req)
			require.Equal(t, 200, resp.status, "%s %s: %s", tc.method, tc.path, resp.body)
			requireNoSecret(t, tc.path, keyRich, resp)
		}
	}
	require.EqualValues(t, 8, h.mock.RequestCount())
	for _, up := range h.mock.Requests() {
		require.Equal(t, upstreamKey, up.Get("x-api-key"))
		for name, values := range up.Header {
			for _, v := range values {
				require.NotContains(t, v, keyRich, "client key sent upstream in %s", name)
			}
		}
	}
	for _, bad := range []string{"sk-test-rich-but-wrong", keyRevoked} {
		resp := h.post("/v1/messages", bad, messagesBody("claude-haiku-4-5", false, "output=5"))
		require.Equal(t, 401, resp.status)
		requireNoSecret(t, "401", bad, resp)
	}
}

// /v1/balance answers the caller's account whatever the request names.
func TestBalanceIsTheCallersAccount(t *testing.T) {
	h := newHarness(t)
	for _, path := range []string{"/v1/balance", "/v1/balance?account_id=acct-rich", "/v1/balance?account=acct-rich&account_id=acct-rich"} {
		req, err := http.NewRequest(http.MethodGet, h.url+path, nil)
		require.NoError(t, err)
		req.Header.Set("x-api-key", keyPoor)
		req.Header.Set("x-account-id", "acct-rich")
		resp := h.do(req)
		require.Equal(t, 200, resp.status, path)
		var b struct {
			AccountID           string `json:"account_id"`
			BalanceMicrocredits int64  `json:"balance_microcredits"`
		}
		require.NoError(t, json.Unmarshal(resp.body, &b))
		require.Equal(t, "acct-poor", b.AccountID, path)
		require.Equal(t, int64(50_000), b.BalanceMicrocredits, path)
	}
	for _, path := range []string{"/v1/balance/acct-rich", "/v1/accounts/acct-rich", "/v1/usage?account_id=acct-rich"} {
		resp := h.get(path, keyPoor)
		require.Equal(t, 404, resp.status, path)
		require.NotContains(t, string(resp.body), "1000000000000", path)
	}
}
