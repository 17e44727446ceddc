package proxy

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
)

func TestIsHopByHop(t *testing.T) {
	for name, want := range map[string]bool{
		"Connection": true, "connection": true, "Keep-Alive": true, "Proxy-Authorization": true,
		"Proxy-Authenticate": true, "Proxy-Connection": true, "proxy-anything": true, "TE": true,
		"Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
		"Content-Type": false, "Anthropic-Version": false, "X-Api-Key": false, "Proxy": false,
		"Tea": false, "Te-X": false, "Upgrades": false, "": false,
	} {
		require.Equal(t, want, isHopByHop([]byte(name)), name)
	}
}

func TestListedInConnection(t *testing.T) {
	conn := []byte("keep-alive, X-Hop ,\tx-other,")
	require.True(t, listedInConnection(conn, []byte("X-Hop")))
	require.True(t, listedInConnection(conn, []byte("x-hop")))
	require.True(t, listedInConnection(conn, []byte("X-Other")))
	require.False(t, listedInConnection(conn, []byte("X-Ho")))
	require.False(t, listedInConnection(nil, []byte("X-Hop")))
}

func TestCopyRequestHeaders(t *testing.T) {
	var src, dst fasthttp.RequestHeader
	src.SetMethod("POST")
	src.SetRequestURI("/v1/messages?beta=true")
	for _, kv := range [][2]string{
		{"Host", "edge.example"},
		{"X-Api-Key", "sk-client"},
		{"Authorization", "Bearer sk-client"},
		{"Anthropic-Version", "2023-06-01"},
		{"Anthropic-Beta", "context-1m-2025-08-07"},
		{"Content-Type", "application/json"},
		{"User-Agent", "sdk/1.0"},
		{"Accept-Encoding", "gzip, br"},
		{"Connection", "keep-alive, X-Hop"},
		{"X-Hop", "1"},
		{"Keep-Alive", "timeout=5"},
		{"Proxy-Authorization", "Basic x"},
		{"TE", "trailers"},
		{"Upgrade", "h2c"},
		{"X-Custom", "kept"},
	} {
		src.Add(kv[0], kv[1])
	}
	copyRequestHeaders(&dst, &src)

	got := map[string]string{}
	for k, v := range dst.All() {
		got[string(k)] = string(v)
	}
	require.Equal(t, map[string]string{
		"Anthropic-Version": "2023-06-01",
		"Anthropic-Beta":    "context-1m-2025-08-07",
		"Content-Type":      "application/json",
		"User-Agent":        "sdk/1.0",
		"X-Custom":          "kept",
	}, got)
}

func TestCopyResponseHeaders(t *testing.T) {
	var src, dst fasthttp.ResponseHeader
	src.SetStatusCode(200)
	src.SetContentType("text/event-stream")
	src.Set("Request-Id", "req_upstream")
	src.Set("Anthropic-Organization-Id", "org-operator")
	src.Set("Anthropic-Ratelimit-Requests-Remaining", "99")
	src.Set("Retry-After", "3")
	src.Set("Connection", "X-Drop")
	src.Set("X-Drop", "1")
	src.Set("Keep-Alive", "timeout=5")
	src.Set("Cache-Control", "no-cache")

	id := copyResponseHeaders(&dst, &src)
	require.Equal(t, "req_upstream", string(id))
	got := map[string]string{}
	for k, v := range dst.All() {
		got[string(k)] = string(v)
	}
	require.Equal(t, map[string]string{
		"Content-Type":                           "text/event-stream",
		"Anthropic-Ratelimit-Requests-Remaining": "99",
		"Retry-After":                            "3",
		"Cache-Control":                          "no-cache",
	}, got)
}

func TestHasContext1M(t *testing.T) {
	for v, want := range map[string]bool{
		"context-1m-2025-08-07":                               true,
		"prompt-caching-2024-07-31, context-1m-2025-08-07":    true,
		"prompt-caching-2024-07-31 ,\tcontext-1m-2026-01-01 ": true,
		"prompt-caching-2024-07-31":                           false,
		"xcontext-1m":                                         false,
		"":                                                    false,
	} {
		require.Equal(t, want, hasContext1M([]byte(v)), v)
	}
}

func TestHeaderFiltersAllocateNothing(t *testing.T) {
	var src, dst fasthttp.RequestHeader
	src.Add("Anthropic-Version", "2023-06-01")
	src.Add("X-Api-Key", "sk")
	src.Add("Connection", "keep-alive, X-Hop")
	copyRequestHeaders(&dst, &src) // warm dst's buffers
	allocs := testing.AllocsPerRun(100, func() {
		dst.Reset()
		copyRequestHeaders(&dst, &src)
	})
	require.Zero(t, allocs)
}

// FuzzRequestHeaders feeds arbitrary header names and values through the request filter:
// credentials and hop-by-hop headers never come out, whatever their case or the Connection
// header says.
func FuzzRequestHeaders(f *testing.F) {
	f.Add("X-Api-Key", "sk", "keep-alive, X-Foo", "X-Foo")
	f.Add("authorization", "Bearer sk", "close", "Te")
	f.Add("PROXY-AUTHORIZATION", "x", "", "Upgrade")
	f.Fuzz(func(t *testing.T, name, value, connection, other string) {
		var src, dst fasthttp.RequestHeader
		src.Add(name, value)
		src.Add(other, value)
		src.Add("Connection", connection)
		copyRequestHeaders(&dst, &src)
		conn := connectionValue(src.Peek("Connection"))
		for k := range dst.All() {
			require.False(t, isHopByHop(k), "%s forwarded", k)
			require.False(t, equalFold(k, "x-api-key") || equalFold(k, "authorization"), "%s forwarded", k)
			require.False(t, len(conn) > 0 && listedInConnection(conn, k), "%s named in Connection forwarded", k)
		}
	})
}
