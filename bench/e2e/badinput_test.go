package e2e_test

// Bad input against the real edge binary, with its real server settings: each bad request is
// answered in the API's error shape (or the connection is closed), nothing reaches the
// upstream or the ledger, and the account's balance and ClickHouse rows show only the one good
// request sent afterwards. The proxy package tests the same cases in more detail
// (edge/internal/proxy/proxy_badinput_test.go).

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"tollgate/bench/stack"
)

// edgeError is the API's error shape.
type edgeError struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	RequestID string `json:"request_id"`
}

func requireEdgeError(t *testing.T, status int, errType string, code int, h http.Header, body []byte) {
	t.Helper()
	require.Equal(t, status, code, "%s", body)
	var e edgeError
	require.NoError(t, json.Unmarshal(body, &e), "%s", body)
	require.Equal(t, "error", e.Type, "%s", body)
	require.Equal(t, errType, e.Error.Type, "%s", body)
	require.NotEmpty(t, e.Error.Message)
	require.Equal(t, h.Get("request-id"), e.RequestID)
	_, err := uuid.Parse(e.RequestID)
	require.NoError(t, err)
}

// rawConn writes raw and reads the responses until the edge closes the connection. With
// stall the client then sends nothing more but keeps its side open (a slow client); without,
// it shuts its sending side. It fails if the edge keeps the connection open past a generous
// deadline: a slow client must be cut off by the edge.
func rawConn(t *testing.T, addr, raw string, stall bool) []*http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(30*time.Second)))
	_, err = io.WriteString(conn, raw)
	require.NoError(t, err)
	if !stall {
		require.NoError(t, conn.(*net.TCPConn).CloseWrite())
	}
	r := bufio.NewReader(conn)
	var out []*http.Response
	for {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "the edge kept the connection open: %v", err)
			return out
		}
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		out = append(out, resp)
	}
}

func bodyOf(t *testing.T, r *http.Response) []byte {
	b, err := io.ReadAll(r.Body)
	require.NoError(t, err)
	return b
}

// TestBadRequestsChangeNothing sends slow clients, smuggling attempts, malformed and
// oversized requests to a real edge, then one good request, and checks that only the good one
// was charged (ledger balance) and recorded (ClickHouse).
func TestBadRequestsChangeNothing(t *testing.T) {
	const bodyMax = 64 << 10
	e := startStack(t, func(c *stack.Config) {
		c.ExtraEnv = append(c.ExtraEnv, "TOLLGATE_READ_TIMEOUT=1s", fmt.Sprintf("TOLLGATE_BODY_BYTES_MAX=%d", bodyMax))
	})
	const credits = 100
	acct, key := e.account(credits)
	addr := strings.TrimPrefix(e.s.EdgeURL(0), "http://")
	good := messageBody("claude-3-haiku", false, "input=100 output=20")

	t.Run("slow client: headers never finished", func(t *testing.T) {
		resps := rawConn(t, addr, "POST /v1/messages HTTP/1.1\r\nHost: edge\r\nx-api-key: "+key+"\r\n", true)
		require.Len(t, resps, 1)
		requireEdgeError(t, 408, "timeout_error", resps[0].StatusCode, resps[0].Header, bodyOf(t, resps[0]))
	})
	t.Run("slow client: body never finished", func(t *testing.T) {
		resps := rawConn(t, addr, fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: edge\r\nx-api-key: %s\r\n"+
			"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s", key, len(good), good[:len(good)/2]), true)
		require.Len(t, resps, 1)
		requireEdgeError(t, 408, "timeout_error", resps[0].StatusCode, resps[0].Header, bodyOf(t, resps[0]))
	})
	t.Run("smuggled request", func(t *testing.T) {
		chunk := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(good), good)
		hidden := fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: edge\r\nx-api-key: %s\r\ncontent-length: %d\r\n\r\n%s", key, len(good), good)
		resps := rawConn(t, addr, fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: edge\r\nx-api-key: %s\r\n"+
			"content-length: %d\r\ntransfer-encoding: chunked\r\n\r\n%s%s", key, len(chunk), chunk, hidden), false)
		require.Len(t, resps, 1, "one answer, then the connection is closed")
		requireEdgeError(t, 400, "invalid_request_error", resps[0].StatusCode, resps[0].Header, bodyOf(t, resps[0]))
	})
	t.Run("body over the limit", func(t *testing.T) {
		// Refused on its Content-Length, before the body is read (the proxy tests send whole
		// oversized bodies, chunked ones included).
		resps := rawConn(t, addr, fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: edge\r\nx-api-key: %s\r\n"+
			"content-length: %d\r\n\r\n%s", key, bodyMax+1, good), false)
		require.Len(t, resps, 1)
		requireEdgeError(t, 413, "request_too_large", resps[0].StatusCode, resps[0].Header, bodyOf(t, resps[0]))
	})
	t.Run("headers over the limit", func(t *testing.T) {
		resps := rawConn(t, addr, fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: edge\r\nx-api-key: %s\r\nx-pad: %s\r\n"+
			"content-length: %d\r\n\r\n%s", key, strings.Repeat("p", 32<<10), len(good), good), false)
		require.Len(t, resps, 1)
		requireEdgeError(t, 431, "invalid_request_error", resps[0].StatusCode, resps[0].Header, bodyOf(t, resps[0]))
	})
	for _, tc := range []struct {
		name, body string
		status     int
		errType    string
	}{
		{"malformed JSON", `{"model":"claude-3-haiku","max_tokens":`, 400, "invalid_request_error"},
		{"wrong types", `{"model":["claude-3-haiku"],"max_tokens":"20","messages":{}}`, 400, "invalid_request_error"},
		{"missing fields", `{"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error"},
		{"invalid UTF-8", strings.Replace(good, "Say hello.", "Say h\xe9llo.", 1), 400, "invalid_request_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post(0, key, tc.body)
			requireEdgeError(t, tc.status, tc.errType, r.Status, r.Header, r.Body)
		})
	}

	r := e.post(0, key, good)
	require.Equal(t, 200, r.Status, "%s", r.Body)
	cost := expectedCost(t, "claude-3-haiku", tokens{input: 100, output: 20})
	e.checkExact(acct, credits, 1, cost)
}

// TestUnknownKeyFloodSparesLedgerd floods a real edge with requests under a few unknown keys
// (and with keys too long to be real) and counts, in ledgerd's own metrics, the key lookups
// that reached it: one per distinct unknown key, however many requests carried it.
func TestUnknownKeyFloodSparesLedgerd(t *testing.T) {
	e := startStack(t, func(c *stack.Config) {
		// The longest allowed, so the flood never outlives the negative cache.
		c.ExtraEnv = append(c.ExtraEnv, "TOLLGATE_KEY_NEGATIVE_TTL=1m")
	})
	metrics := e.s.AdminURL() + "/metrics"
	const route = `route="GET /internal/v1/keys/{hash}"`
	before, err := metric(metrics, "ledgerd_http_requests_total", route)
	require.NoError(t, err)

	const keys, perKey = 5, 200
	body := messageBody("claude-3-haiku", false, "output=5")
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan string, keys*perKey+100)
	send := func(header, value string) {
		defer wg.Done()
		req, _ := http.NewRequest(http.MethodPost, e.s.EdgeURL(0)+"/v1/messages", strings.NewReader(body))
		req.Header.Set(header, value)
		resp, err := client.Do(req)
		if err != nil {
			errs <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var ae edgeError
		if resp.StatusCode != 401 || json.Unmarshal(b, &ae) != nil || ae.Error.Type != "authentication_error" {
			errs <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}
	}
	sem := make(chan struct{}, 32)
	for i := range keys * perKey {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			k := fmt.Sprintf("sk-tg-unknown-%d", i%keys)
			if i%2 == 0 {
				send("x-api-key", k)
			} else {
				send("Authorization", "Bearer "+k)
			}
		}()
	}
	for range 100 { // far longer than any real key: refused without a lookup
		wg.Add(1)
		go send("x-api-key", strings.Repeat("k", 8<<10))
	}
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Errorf("unexpected answer: %s", s)
	}
	after, err := metric(metrics, "ledgerd_http_requests_total", route)
	require.NoError(t, err)
	require.EqualValues(t, keys, after-before, "ledgerd key lookups for %d requests under %d unknown keys", keys*perKey+100, keys)
}
