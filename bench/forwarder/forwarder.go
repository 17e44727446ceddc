// Package forwarder is a bare fasthttp reverse proxy: no authentication, no admission, no
// metering, no billing. It forwards every request to one upstream and streams the answer back
// as it arrives. The bench runs it beside the edge to show the floor of the edge's design: what
// any fasthttp proxy on this machine costs, so the edge's own overhead is what is left over.
package forwarder

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/valyala/fasthttp"
)

// Config of a Forwarder. Zero values take the defaults named on each field.
type Config struct {
	// Upstream is the base URL requests go to, e.g. "http://127.0.0.1:8070". Required.
	Upstream string
	// UpstreamKey, when set, replaces the client's x-api-key (and drops Authorization), as a
	// reseller's proxy would. Default: the client's key passes through.
	UpstreamKey string
	// UpstreamConnsMax bounds connections to the upstream. Default 20,000 (one per in-flight
	// stream, and the bench holds 10,000 at once).
	UpstreamConnsMax int
	// Timeout bounds each upstream exchange, reading a stream included. Default 10 min.
	Timeout time.Duration
	// ConnsMax bounds client connections; more are refused. Default 65,536.
	ConnsMax int
	// BodyBytesMax bounds request bodies. Default 32 MiB.
	BodyBytesMax int
}

// Forwarder forwards requests to one upstream. Safe for concurrent use.
type Forwarder struct {
	cfg    Config
	log    *slog.Logger
	host   string
	client *fasthttp.HostClient
}

// New checks cfg and returns a Forwarder.
func New(cfg Config, logger *slog.Logger) (*Forwarder, error) {
	u, err := url.Parse(cfg.Upstream)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("upstream: want http://HOST:PORT, got %q", cfg.Upstream)
	}
	if cfg.UpstreamConnsMax == 0 {
		cfg.UpstreamConnsMax = 20_000
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.ConnsMax == 0 {
		cfg.ConnsMax = 1 << 16
	}
	if cfg.BodyBytesMax == 0 {
		cfg.BodyBytesMax = 32 << 20
	}
	if cfg.UpstreamConnsMax < 0 || cfg.Timeout < 0 || cfg.ConnsMax < 0 || cfg.BodyBytesMax < 0 {
		return nil, errors.New("forwarder config: negative limit")
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	f := &Forwarder{cfg: cfg, log: logger, host: host}
	// Every option explicit: fasthttp's zero values mean "512 connections" or "unlimited".
	f.client = &fasthttp.HostClient{
		Addr:                      host,
		MaxConns:                  cfg.UpstreamConnsMax,
		MaxConnWaitTimeout:        time.Second,
		MaxIdleConnDuration:       30 * time.Second, // as the edge's default upstream-idle-conn-timeout
		MaxIdemponentCallAttempts: 1,
		ReadBufferSize:            8 << 10,
		WriteBufferSize:           8 << 10,
		ReadTimeout:               cfg.Timeout,
		WriteTimeout:              cfg.Timeout,
		MaxResponseBodySize:       64 << 20,
		StreamResponseBody:        true,
		DisablePathNormalizing:    true,
		NoDefaultUserAgentHeader:  true,
	}
	return f, nil
}

// hopByHop are the headers a proxy must not forward (RFC 9110 §7.6.1).
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Upgrade"}

// Handle forwards one request.
func (f *Forwarder) Handle(ctx *fasthttp.RequestCtx) {
	req := fasthttp.AcquireRequest()
	ctx.Request.CopyTo(req)
	req.SetHost(f.host)
	for _, h := range hopByHop {
		req.Header.Del(h)
	}
	// Compressed SSE would hide usage from a metering proxy; the floor pays the same.
	req.Header.Set("Accept-Encoding", "identity")
	if f.cfg.UpstreamKey != "" {
		req.Header.Del("Authorization")
		req.Header.Set("x-api-key", f.cfg.UpstreamKey)
	}
	req.SetTimeout(f.cfg.Timeout)

	resp := fasthttp.AcquireResponse()
	err := f.client.Do(req, resp)
	fasthttp.ReleaseRequest(req)
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		ctx.Error(`{"type":"error","error":{"type":"api_error","message":"upstream unreachable"}}`,
			fasthttp.StatusBadGateway)
		ctx.SetContentType("application/json")
		return
	}
	resp.Header.CopyTo(&ctx.Response.Header)
	for _, h := range hopByHop {
		ctx.Response.Header.Del(h)
	}
	body := resp.BodyStream()
	if body == nil { // already read in full
		ctx.Response.SetBody(resp.Body())
		fasthttp.ReleaseResponse(resp)
		return
	}
	if n := resp.Header.ContentLength(); n >= 0 {
		// Known length: fasthttp copies it straight to the client and closes the reader,
		// which hands resp back.
		ctx.Response.SetBodyStream(&upstreamBody{resp: resp, r: body}, n)
		return
	}
	// A stream (SSE): pass each read on and flush it at once, so tokens are not held back.
	ctx.Response.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer fasthttp.ReleaseResponse(resp)
		defer resp.CloseBodyStream()
		buf := make([]byte, 4<<10)
		for {
			n, rerr := body.Read(buf)
			if n > 0 {
				if _, err := w.Write(buf[:n]); err != nil {
					return // the client went away
				}
				if err := w.Flush(); err != nil {
					return
				}
			}
			if rerr != nil {
				if !errors.Is(rerr, io.EOF) {
					f.log.Debug("upstream_stream_cut", "error", rerr)
				}
				return
			}
		}
	})
}

// upstreamBody hands a streamed upstream body to fasthttp's server and releases the upstream
// response when the server closes it.
type upstreamBody struct {
	resp *fasthttp.Response
	r    io.Reader
}

func (b *upstreamBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *upstreamBody) Close() error {
	err := b.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(b.resp)
	return err
}

// Server returns a fasthttp server running Handle, with every limit set.
func (f *Forwarder) Server() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:               f.Handle,
		Name:                  "",
		Concurrency:           f.cfg.ConnsMax,
		ReadBufferSize:        8 << 10,
		WriteBufferSize:       8 << 10,
		ReadTimeout:           time.Minute,
		WriteTimeout:          0, // streams may last minutes; Timeout bounds them upstream
		IdleTimeout:           2 * time.Minute,
		MaxRequestBodySize:    f.cfg.BodyBytesMax,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		NoDefaultDate:         true,
		CloseOnShutdown:       true,
		TCPKeepalive:          true,
	}
}

// Run serves on ln until ctx is done, then shuts down (open streams get 5 s to finish).
func (f *Forwarder) Run(ctx context.Context, ln net.Listener) error {
	srv := f.Server()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.ShutdownWithContext(sctx)
	<-served
	f.client.CloseIdleConnections()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}
