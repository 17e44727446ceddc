package mock

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
)

// A typical load-test request: a short conversation with a directive, as the load generator
// sends it.
const benchBody = `{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":%s,` +
	`"system":"You are a helpful assistant.",` +
	`"messages":[{"role":"user","content":"Hello there, how are you today?"},` +
	`{"role":"assistant","content":"Fine, thanks."},` +
	`{"role":"user","content":[{"type":"text","text":"Tell me more.\nmock: input=1200 output=120 cache_read=900 thinking=40"}]}]}`

func benchRequest(stream bool) *fasthttp.Request {
	s := "false"
	if stream {
		s = "true"
	}
	var req fasthttp.Request
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("/v1/messages")
	req.Header.Set("x-api-key", "sk-bench")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.SetContentType("application/json")
	req.SetBodyString(fmt.Sprintf(benchBody, s))
	return &req
}

// BenchmarkHandler measures the handler alone: parse, resolve, cache hit, write the response
// (for streams, through fasthttp's stream writer and chunked encoding) to io.Discard.
func BenchmarkHandler(b *testing.B) {
	for _, tc := range []struct {
		name   string
		stream bool
	}{{"json", false}, {"stream", true}} {
		b.Run(tc.name, func(b *testing.B) {
			s := New(Config{RecordMax: -1}, slog.New(slog.DiscardHandler))
			req := benchRequest(tc.stream)
			var ctx fasthttp.RequestCtx
			bw := bufio.NewWriter(io.Discard)
			b.ReportAllocs()
			for b.Loop() {
				ctx.Init(req, nil, nil)
				s.handle(&ctx)
				if ctx.Response.StatusCode() != 200 {
					b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
				}
				if err := ctx.Response.Write(bw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkServer measures whole requests over loopback from a fasthttp client, as the load
// generator and the edge would send them.
func BenchmarkServer(b *testing.B) {
	for _, tc := range []struct {
		name   string
		stream bool
	}{{"json", false}, {"stream", true}} {
		b.Run(tc.name, func(b *testing.B) {
			s := New(Config{RecordMax: -1}, slog.New(slog.DiscardHandler))
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go func() { _ = s.Serve(ln) }()
			b.Cleanup(func() { _ = s.Close() })
			client := &fasthttp.HostClient{Addr: ln.Addr().String(), MaxConns: 64}
			proto := benchRequest(tc.stream)
			proto.SetHost(ln.Addr().String())
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var req fasthttp.Request
				var resp fasthttp.Response
				proto.CopyTo(&req)
				for pb.Next() {
					if err := client.Do(&req, &resp); err != nil {
						b.Error(err)
						return
					}
					if resp.StatusCode() != 200 {
						b.Errorf("status %d", resp.StatusCode())
						return
					}
				}
			})
		})
	}
}

// TestHandlerAllocs holds the non-streaming cache-hit path to its allocation budget: the
// mock must stay cheap next to the edge it load-tests.
func TestHandlerAllocs(t *testing.T) {
	s := New(Config{RecordMax: -1}, nil)
	req := benchRequest(false)
	var ctx fasthttp.RequestCtx
	allocs := testing.AllocsPerRun(200, func() {
		ctx.Init(req, nil, nil)
		s.handle(&ctx)
	})
	require.LessOrEqual(t, allocs, 8.0, "allocations per request")
}
