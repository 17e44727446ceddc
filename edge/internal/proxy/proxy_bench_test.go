package proxy_test

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"tollgate/edge/internal/proxy"
	"tollgate/edge/internal/sink/wal"
)

// BenchmarkMessages measures a request through the edge against the same request sent to the
// mock directly (the baseline), so the difference is the edge's overhead: auth and admission
// from cache, body checks, forwarding, metering, pricing and the usage record. Run with
// -benchmem; allocations include the mock's and the client's, which the baseline shows.
func BenchmarkMessages(b *testing.B) {
	h := newHarness(b, func(_ *proxy.Config, w *wal.Config) {
		w.SegmentBytes = 16 << 20
		w.BytesMax = 1 << 30
		w.BatchMax = 5000
	})
	for _, bc := range []struct {
		name   string
		stream bool
	}{{"json", false}, {"stream", true}} {
		body := []byte(messagesBody("claude-haiku-4-5", bc.stream, "input=1000 output=200 cache_read=500"))
		for _, target := range []struct {
			name, url, key string
		}{{"direct", h.mockURL, upstreamKey}, {"edge", h.url, keyRich}} {
			b.Run(bc.name+"/"+target.name, func(b *testing.B) {
				c := &fasthttp.Client{ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, MaxConnsPerHost: 64}
				req := fasthttp.AcquireRequest()
				resp := fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				req.SetRequestURI(target.url + "/v1/messages")
				req.Header.SetMethod(fasthttp.MethodPost)
				req.Header.Set("x-api-key", target.key)
				req.Header.Set("anthropic-version", "2023-06-01")
				req.Header.SetContentType("application/json")
				req.SetBody(body)
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if err := c.Do(req, resp); err != nil {
						b.Fatal(err)
					}
					if resp.StatusCode() != 200 {
						b.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
					}
				}
			})
		}
	}
}
