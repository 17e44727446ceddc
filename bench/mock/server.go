// Package mock is a mock of the Anthropic Messages API: the upstream of load tests and of the
// integration tests of anything that proxies the API. It speaks the API's wire format (JSON and
// SSE) and takes the usage and behaviour of each response from a directive in the last user
// message ("mock: output=120 cache_read=900"), so a test knows the exact cost of a request
// however many proxies sit in between. README.md documents the directive.
//
// It must never be the bottleneck of a load test: requests are read with gjson, responses are
// rendered once per distinct spec and cached, and nothing is logged per request.
package mock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// ErrClosed is returned by Serve on a closed Server.
var ErrClosed = errors.New("mock server closed")

// Timeouts of the fasthttp server. There is no write timeout: a paced stream may rightly
// last minutes.
const (
	readTimeout  = 60 * time.Second
	idleTimeout  = 120 * time.Second
	closeTimeout = 5 * time.Second
	ioBufferSize = 16 << 10 // also bounds request headers; anthropic-beta lists can be long
)

// Server is the mock upstream. Its methods are safe for concurrent use.
type Server struct {
	cfg        Config
	log        *slog.Logger
	srv        *fasthttp.Server
	ids        *idGen
	cache      *cache
	rec        *recorder // nil when recording is off
	keys       map[string]struct{}
	count      atomic.Int64
	modelsBody []byte
	done       chan struct{} // closed by Close: paced writes and delays stop

	mu        sync.Mutex
	closed    bool
	listeners []net.Listener
	closeOnce sync.Once
	closeErr  error
}

// New returns a Server; a nil logger discards. It panics if cfg is invalid (check Config.Validate first): a bad
// config here is a programming error, not an input.
func New(cfg Config, logger *slog.Logger) *Server {
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("mock: invalid config: %v", err))
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:        cfg,
		log:        logger,
		ids:        newIDGen(),
		cache:      newCache(cfg.CacheBytesMax),
		modelsBody: renderModels(),
		done:       make(chan struct{}),
	}
	if cfg.RecordMax > 0 {
		s.rec = newRecorder(cfg.RecordMax)
	}
	if len(cfg.Keys) > 0 {
		s.keys = make(map[string]struct{}, len(cfg.Keys))
		for _, k := range cfg.Keys {
			s.keys[k] = struct{}{}
		}
	}
	s.srv = &fasthttp.Server{
		Handler:               s.handle,
		ErrorHandler:          s.handleParseError,
		Logger:                fasthttpLogger{logger},
		Concurrency:           cfg.ConnsMax,
		MaxRequestBodySize:    cfg.BodyBytesMax,
		ReadBufferSize:        ioBufferSize,
		WriteBufferSize:       ioBufferSize,
		ReadTimeout:           readTimeout,
		IdleTimeout:           idleTimeout,
		WriteTimeout:          0,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		CloseOnShutdown:       true,
		TCPKeepalive:          true,
	}
	return s
}

// Serve serves on ln until Close; it returns nil after Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrClosed
	}
	// Kept so Close can close it even if Close runs before fasthttp has registered it.
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	if err := s.srv.Serve(ln); err != nil {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// ListenAndServe listens on the TCP address addr and serves until Close.
func (s *Server) ListenAndServe(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	return s.Serve(ln)
}

// Close stops the server: it stops accepting, cuts short paced streams and delays, and waits up
// to 5 seconds for open responses to finish. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		listeners := s.listeners
		s.mu.Unlock()
		close(s.done)
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		if err := s.srv.ShutdownWithContext(ctx); err != nil {
			s.closeErr = fmt.Errorf("shut down: %w", err)
		}
		for _, ln := range listeners {
			_ = ln.Close() // usually closed already by the shutdown
		}
	})
	return s.closeErr
}

// LastRequest returns the last request received, and false if there was none (or recording is
// off).
func (s *Server) LastRequest() (Request, bool) {
	if s.rec == nil {
		return Request{}, false
	}
	return s.rec.last()
}

// Requests returns the last Config.RecordMax requests received, oldest first.
func (s *Server) Requests() []Request {
	if s.rec == nil {
		return nil
	}
	return s.rec.all()
}

// RequestCount returns how many requests the server has handled, for tests that check a proxy
// did (or did not) call the upstream.
func (s *Server) RequestCount() int64 {
	return s.count.Load()
}

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	// Health probes (of `make run`, of orchestrators) are neither counted nor recorded, so they
	// cannot disturb what a test reads from LastRequest or RequestCount.
	if string(ctx.Path()) == "/healthz" {
		ctx.Response.Header.SetContentType("application/json")
		ctx.Response.SetBodyString(`{"status":"ok"}`)
		return
	}
	s.count.Add(1)
	if s.rec != nil {
		s.rec.add(recordRequest(ctx))
	}
	var rid [6 + idSuffixLen]byte
	requestID := s.ids.requestID(rid[:0])
	ctx.Response.Header.SetBytesV("request-id", requestID)

	path := string(ctx.Path()) // no allocation: compared, not kept
	var err *apiError
	switch {
	case path == "/v1/messages":
		err = s.messages(ctx, requestID)
	case path == "/v1/messages/count_tokens":
		err = s.countTokens(ctx)
	case path == "/v1/models" || strings.HasPrefix(path, "/v1/models/"):
		err = s.models(ctx, path)
	default:
		err = &apiError{status: 404, message: "Not found"}
	}
	if err != nil {
		writeError(ctx, requestID, err)
	}
}

// check applies what every endpoint checks first: method, key, version header.
func (s *Server) check(ctx *fasthttp.RequestCtx, method string) *apiError {
	if string(ctx.Method()) != method {
		return &apiError{status: 405, message: "Method Not Allowed"}
	}
	key := ctx.Request.Header.Peek("x-api-key")
	if len(key) == 0 {
		return &apiError{status: 401, message: "x-api-key header is required"}
	}
	if s.keys != nil {
		if _, ok := s.keys[string(key)]; !ok {
			return &apiError{status: 401, message: "invalid x-api-key"}
		}
	}
	if s.cfg.RequireVersion && len(ctx.Request.Header.Peek("anthropic-version")) == 0 {
		return invalid("anthropic-version: header is required")
	}
	return nil
}

func (s *Server) messages(ctx *fasthttp.RequestCtx, requestID []byte) *apiError {
	if err := s.check(ctx, fasthttp.MethodPost); err != nil {
		return err
	}
	r, aerr := parseRequest(ctx.PostBody(), true)
	if aerr != nil {
		return aerr
	}
	sp, err := resolve(&r, &s.cfg)
	if err != nil {
		return invalid("mock directive: %v", err)
	}

	delay := sp.latency
	if !sp.stream {
		delay += sp.ttft + generationTime(&sp)
	}
	if !s.sleep(delay) {
		return &apiError{status: 529, message: "Overloaded (mock shutting down)"}
	}
	if sp.status != 200 {
		ctx.Response.Header.Set("retry-after", strconv.FormatInt(sp.retryAfter, 10))
		return &apiError{status: sp.status, message: statusMessage(sp.status)}
	}

	rr, ok := s.cache.get(&sp)
	if !ok {
		rr = render(&sp)
		s.cache.put(&sp, rr)
	}
	contentType := "application/json"
	if sp.stream {
		contentType = "text/event-stream"
	}
	if sp.modes&modeSplit != 0 {
		s.writeSplit(ctx, contentType, requestID, rr)
		return nil
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentType(contentType)
	if sp.stream {
		ctx.Response.Header.Set("cache-control", "no-cache")
		ctx.SetBodyStreamWriter(s.bodyWriter(rr))
		return nil
	}
	ctx.Response.SetBody(rr.body) // copies; the ids are filled in the copy
	s.fillSlots(ctx.Response.Body(), rr.slots)
	return nil
}

// generationTime is how long generating the output takes at the spec's pace.
func generationTime(sp *spec) time.Duration {
	if sp.tps <= 0 {
		return 0
	}
	return time.Duration(float64(sp.output) / sp.tps * float64(time.Second))
}

// statusMessage is the error message of a status a directive asked for.
func statusMessage(status int) string {
	switch status {
	case 429:
		return "Number of request tokens has exceeded your per-minute rate limit (mock)"
	case 529:
		return "Overloaded"
	case 500:
		return "Internal server error"
	}
	return "mock: status " + strconv.Itoa(status) + " requested by directive"
}

// bodyWriter returns the fasthttp stream writer of a rendered body: it copies the body, fills
// this response's ids, and writes the pieces, each flushed, each waiting until it is due.
func (s *Server) bodyWriter(rr *rendered) fasthttp.StreamWriter {
	return func(w *bufio.Writer) {
		bp := getBuffer()
		buf := append((*bp)[:0], rr.body...)
		s.fillSlots(buf, rr.slots)
		start := time.Now()
		prev := 0
		for _, p := range rr.pieces {
			if p.at > 0 && !s.sleep(time.Until(start.Add(p.at))) {
				break
			}
			if _, err := w.Write(buf[prev:p.end]); err != nil {
				break // the client is gone
			}
			if err := w.Flush(); err != nil {
				break
			}
			prev = p.end
		}
		*bp = buf
		putBuffer(bp)
	}
}

// writeSplit answers over the raw connection, each piece in a chunk of its own. It exists
// because the pipe behind SetBodyStreamWriter merges flushes that come faster than the server
// reads them, and split mode promises readers chunk (and so read) boundaries at awkward
// places. A client reading chunk by chunk (fasthttp's streamed body does) sees exactly the
// pieces, whatever TCP does with them. The connection is closed after the response.
func (s *Server) writeSplit(ctx *fasthttp.RequestCtx, contentType string, requestID []byte, rr *rendered) {
	head := make([]byte, 0, 256)
	head = append(head, "HTTP/1.1 200 OK\r\ncontent-type: "...)
	head = append(head, contentType...)
	head = append(head, "\r\ncache-control: no-cache\r\nrequest-id: "...)
	head = append(head, requestID...) // copied: the ctx is gone when the hijack handler runs
	head = append(head, "\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"...)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		if _, err := c.Write(head); err != nil {
			return
		}
		buf := append([]byte(nil), rr.body...)
		s.fillSlots(buf, rr.slots)
		chunk := head[:0]
		start := time.Now()
		prev := 0
		for _, p := range rr.pieces {
			if p.at > 0 && !s.sleep(time.Until(start.Add(p.at))) {
				return
			}
			chunk = strconv.AppendInt(chunk[:0], int64(p.end-prev), 16)
			chunk = append(chunk, "\r\n"...)
			chunk = append(chunk, buf[prev:p.end]...)
			chunk = append(chunk, "\r\n"...)
			if _, err := c.Write(chunk); err != nil {
				return // the client is gone
			}
			prev = p.end
		}
		_, _ = c.Write([]byte("0\r\n\r\n"))
	})
}

// fillSlots writes fresh ids at the slot offsets; a slot cut short by a truncated body gets the
// part that fits.
func (s *Server) fillSlots(buf []byte, slots []int) {
	var id [idSuffixLen]byte
	for _, off := range slots {
		if off >= len(buf) {
			continue
		}
		s.ids.fill(id[:])
		copy(buf[off:], id[:])
	}
}

// sleep waits d, and reports false if the server closed meanwhile.
func (s *Server) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

// bufferPool holds body copies of streamed responses. Buffers over bufferPoolMax are dropped
// rather than pooled, so one huge response does not pin its memory.
var bufferPool sync.Pool

const bufferPoolMax = 1 << 20

func getBuffer() *[]byte {
	if bp, ok := bufferPool.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 0, 4096)
	return &b
}

func putBuffer(bp *[]byte) {
	if cap(*bp) <= bufferPoolMax {
		bufferPool.Put(bp)
	}
}

func (s *Server) countTokens(ctx *fasthttp.RequestCtx) *apiError {
	if err := s.check(ctx, fasthttp.MethodPost); err != nil {
		return err
	}
	r, aerr := parseRequest(ctx.PostBody(), false)
	if aerr != nil {
		return aerr
	}
	sp, err := resolve(&r, &s.cfg)
	if err != nil {
		return invalid("mock directive: %v", err)
	}
	// count_tokens counts the whole prompt; caching only decides how a request is billed.
	n := sp.input + sp.cacheWrite5m + sp.cacheWrite1h + sp.cacheRead
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentType("application/json")
	var buf [40]byte
	b := append(buf[:0], `{"input_tokens":`...)
	b = strconv.AppendInt(b, n, 10)
	ctx.Response.SetBody(append(b, '}'))
	return nil
}

func (s *Server) models(ctx *fasthttp.RequestCtx, path string) *apiError {
	if err := s.check(ctx, fasthttp.MethodGet); err != nil {
		return err
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentType("application/json")
	if path == "/v1/models" {
		ctx.Response.SetBody(s.modelsBody)
		return nil
	}
	id := answeredModel(strings.TrimPrefix(path, "/v1/models/"))
	for _, m := range models {
		if m.id == id {
			ctx.Response.SetBody(appendModel(nil, m))
			return nil
		}
	}
	return &apiError{status: 404, message: "model: " + id}
}

func renderModels() []byte {
	b := []byte(`{"data":[`)
	for i, m := range models {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendModel(b, m)
	}
	b = append(b, `],"has_more":false,"first_id":`...)
	b = appendJSONString(b, models[0].id)
	b = append(b, `,"last_id":`...)
	b = appendJSONString(b, models[len(models)-1].id)
	return append(b, '}')
}

func appendModel(b []byte, m model) []byte {
	b = append(b, `{"type":"model","id":`...)
	b = appendJSONString(b, m.id)
	b = append(b, `,"display_name":`...)
	b = appendJSONString(b, m.displayName)
	b = append(b, `,"created_at":`...)
	b = appendJSONString(b, m.createdAt)
	return append(b, '}')
}

// writeError answers err in Anthropic's shape, replacing any body set so far.
func writeError(ctx *fasthttp.RequestCtx, requestID []byte, err *apiError) {
	typ, ok := errorTypes[err.status]
	if !ok {
		typ = "api_error"
	}
	if err.status == 429 || err.status == 529 {
		ctx.Response.Header.Set("x-should-retry", "true")
	}
	ctx.SetStatusCode(err.status)
	ctx.Response.Header.SetContentType("application/json")
	b := []byte(`{"type":"error","error":{"type":`)
	b = appendJSONString(b, typ)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, err.message)
	b = append(b, `},"request_id":`...)
	b = appendJSONString(b, string(requestID))
	ctx.Response.SetBody(append(b, '}'))
}

// handleParseError answers requests fasthttp could not read, in the API's shape.
func (s *Server) handleParseError(ctx *fasthttp.RequestCtx, err error) {
	var rid [6 + idSuffixLen]byte
	requestID := s.ids.requestID(rid[:0])
	ctx.Response.Header.SetBytesV("request-id", requestID)
	var aerr *apiError
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		aerr = &apiError{status: 413, message: "Request exceeds the maximum allowed number of bytes"}
	case errors.As(err, &small):
		aerr = invalid("request headers too large")
	case errors.As(err, &netErr) && netErr.Timeout():
		aerr = invalid("request timeout")
	default:
		aerr = invalid("malformed HTTP request")
	}
	writeError(ctx, requestID, aerr)
}

func recordRequest(ctx *fasthttp.RequestCtx) Request {
	req := Request{
		Method: string(ctx.Method()),
		Path:   string(ctx.Path()),
		Query:  string(ctx.URI().QueryString()),
		Header: make(map[string][]string),
	}
	for k, v := range ctx.Request.Header.All() {
		name := strings.ToLower(string(k))
		req.Header[name] = append(req.Header[name], string(v))
	}
	body := ctx.PostBody()
	req.Body = append([]byte(nil), body[:min(len(body), recordBodyBytesMax)]...)
	return req
}

// fasthttpLogger routes fasthttp's own messages (accept errors and the like) to slog.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Warn("http_server_error", "detail", fmt.Sprintf(format, args...))
}
