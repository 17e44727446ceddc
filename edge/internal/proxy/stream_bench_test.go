package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"

	"tollgate/bench/forwarder"
	"tollgate/bench/mock"
	"tollgate/edge/internal/metrics"
	"tollgate/edge/internal/proxy"
	"tollgate/pkg/cputime"
	"tollgate/pkg/ledgerapi"
	"tollgate/pkg/usage"
)

// BenchmarkStream measures the CPU one streaming request costs the edge, and the same stream
// through the bare forwarder (bench/forwarder), the floor of any fasthttp proxy. As in bench
// compare, the mock upstream and the load generator run in another process (a child of this
// one), so this process does only the proxying: cpu-ns/op is its user+system CPU per stream,
// kernel, scheduler and garbage collector included, and B/op and allocs/op are the proxy's
// alone. streamConns streams run at once, as bench compare's closed loop does.
//
// chunks/op counts the chunks the client read per stream, one per write of the proxy, which is
// what most of the cost scales with (stream.go says why). The cases:
//
//   - sse20: 20 text deltas 2 ms apart. On an idle machine each event reaches the proxy in a
//     read of its own and leaves it as a chunk of its own, as a real model's tokens do (tens
//     of ms apart): chunks/op is 20 and the cost is the per-event floor. A busy machine
//     delays the proxy, events queue up, and chunks/op drops.
//   - sse20_tps24000: bench compare's stream20 request, deltas 0.25 ms apart. Go timers in the
//     mock fire in bunches and its writes merge, and a proxy that falls behind finds several
//     events waiting: the forwarder's pipe merges them, the edge takes every complete chunk
//     already received. chunks/op shows how far each got.
//   - sse1: one delta, unpaced: the fixed cost of a streaming request.
//
// The edge's sink discards records: the sink (the WAL in production) is measured on its own.
func BenchmarkStream(b *testing.B) {
	child := startLoadChild(b)
	edgeURL := startStreamEdge(b, child.mockURL)
	fwdURL := startStreamForwarder(b, child.mockURL)
	const tokens = "input=200 output=120 cache_read=900 "
	for _, bc := range []struct{ name, directive string }{
		{"sse20", tokens + "events=20 tps=3000"},
		{"sse20_tps24000", tokens + "events=20 tps=24000"},
		{"sse1", tokens + "events=1"},
	} {
		for _, target := range []struct{ name, url, key string }{
			{"forwarder", fwdURL, upstreamKey}, {"edge", edgeURL, keyRich},
		} {
			b.Run(bc.name+"/proxy="+target.name, func(b *testing.B) {
				child.run(b, target.url, target.key, bc.directive)
			})
		}
	}
}

// streamConns is how many streams the load generator keeps open at once.
const streamConns = 64

// loadChild is the process that runs the mock upstream and the load generator.
type loadChild struct {
	in      io.Writer
	out     *bufio.Reader
	mockURL string
}

// startLoadChild starts this test binary again as TestStreamLoadChild.
func startLoadChild(b *testing.B) *loadChild {
	cmd := exec.Command(os.Args[0], "-test.run=^TestStreamLoadChild$")
	cmd.Env = append(os.Environ(), "TOLLGATE_STREAM_LOAD_CHILD=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	require.NoError(b, err)
	out, err := cmd.StdoutPipe()
	require.NoError(b, err)
	require.NoError(b, cmd.Start())
	c := &loadChild{in: in, out: bufio.NewReader(out)}
	b.Cleanup(func() {
		in.Close()
		_ = cmd.Wait()
	})
	_, err = fmt.Fscanln(c.out, &c.mockURL)
	require.NoError(b, err)
	return c
}

// run has the child send b.N streams to url and measures this process meanwhile.
func (c *loadChild) run(b *testing.B, url, key, directive string) {
	b.ReportAllocs()
	runtime.GC()
	cpu0 := processCPU()
	b.ResetTimer()
	_, err := fmt.Fprintf(c.in, "%s %s %d %d %s\n", url, key, b.N, streamConns, directive)
	require.NoError(b, err)
	var status string
	var chunks int64
	_, err = fmt.Fscanln(c.out, &status, &chunks)
	require.NoError(b, err)
	b.StopTimer()
	require.Equal(b, "ok", status)
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(chunks)/float64(b.N), "chunks/op")
}

// TestStreamLoadChild is BenchmarkStream's child process; run alone, it does nothing. It
// serves the mock, prints its URL, then for each line "url key n streams directive…" on
// stdin sends n streaming requests to url, streams at once, reading each answer chunk by
// chunk, and prints "ok chunks".
func TestStreamLoadChild(t *testing.T) {
	if os.Getenv("TOLLGATE_STREAM_LOAD_CHILD") == "" {
		t.Skip("the child process of BenchmarkStream")
	}
	mockURL, _ := mock.Start(t, mock.Config{Keys: []string{upstreamKey}, RecordMax: -1})
	fmt.Println(mockURL)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.SplitN(in.Text(), " ", 5)
		require.Len(t, f, 5)
		n, err := strconv.Atoi(f[2])
		require.NoError(t, err)
		streams, err := strconv.Atoi(f[3])
		require.NoError(t, err)
		chunks, err := sendStreams(f[0], f[1], n, streams, []byte(messagesBody("claude-haiku-4-5", true, f[4])))
		if err != nil {
			fmt.Println("error", 0)
			t.Fatal(err)
		}
		fmt.Println("ok", chunks)
	}
}

// sendStreams sends n requests, streams at a time, and returns how many chunks were read.
func sendStreams(url, key string, n, streams int, body []byte) (int64, error) {
	c := &fasthttp.HostClient{Addr: url[len("http://"):], ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, MaxConns: streams, StreamResponseBody: true}
	var next, chunks atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for range streams {
		wg.Go(func() {
			req := fasthttp.AcquireRequest()
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(url + "/v1/messages")
			req.Header.SetMethod(fasthttp.MethodPost)
			req.Header.Set("x-api-key", key)
			req.Header.Set("anthropic-version", "2023-06-01")
			req.Header.SetContentType("application/json")
			req.SetBody(body)
			buf := make([]byte, 32<<10)
			for next.Add(1) <= int64(n) {
				if err := c.Do(req, resp); err != nil {
					errs <- err
					return
				}
				if resp.StatusCode() != 200 {
					errs <- fmt.Errorf("status %d", resp.StatusCode())
					return
				}
				r := resp.BodyStream()
				for {
					k, err := r.Read(buf)
					if k > 0 {
						chunks.Add(1)
					}
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						errs <- err
						return
					}
				}
				if err := resp.CloseBodyStream(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return chunks.Load(), <-errs
}

// processCPU is the user+system CPU this process has used, in ns.
func processCPU() int64 {
	d, err := cputime.Self()
	if err != nil {
		panic(err)
	}
	return d.Nanoseconds()
}

// discardSink takes records and drops them.
type discardSink struct{}

func (discardSink) Reserve() bool        { return true }
func (discardSink) Append(*usage.Record) {}
func (discardSink) Release()             {}

// startStreamEdge runs the edge with its real auth cache and lease admitter, a fake ledger
// and a discarding sink, and returns its base URL.
func startStreamEdge(b *testing.B, mockURL string) string {
	fl := newFakeLedger()
	fl.add(keyRich, ledgerapi.Key{KeyID: "key-rich", AccountID: "acct-rich", AccountStatus: ledgerapi.StatusActive}, 1_000_000_000_000)
	m := metrics.New()
	authn, adm := authAndAdmitter(b, fl, "edge-bench", m)
	cfg := testProxyConfig("edge-bench", mockURL, 1024)
	p, err := proxy.New(cfg, proxy.Deps{Auth: authn, Admitter: adm, Prices: testPrices(b), Sink: discardSink{},
		Balances: adm, Metrics: m})
	require.NoError(b, err)
	b.Cleanup(p.Close)
	return serve(b, edgeServer(p, cfg))
}

// startStreamForwarder runs bench/forwarder and returns its base URL.
func startStreamForwarder(b *testing.B, mockURL string) string {
	f, err := forwarder.New(forwarder.Config{Upstream: mockURL, UpstreamKey: upstreamKey}, slog.New(slog.DiscardHandler))
	require.NoError(b, err)
	srv := f.Server()
	srv.Logger = quietLogger{}
	return serve(b, srv)
}

// serve runs srv on a free port until the benchmark ends.
func serve(b *testing.B, srv *fasthttp.Server) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	go srv.Serve(ln) //nolint:errcheck // ends at shutdown
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.ShutdownWithContext(ctx)
	})
	return "http://" + ln.Addr().String()
}
