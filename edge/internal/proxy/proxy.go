// Package proxy is the edge's request path (DESIGN §3): authenticate, admit, forward to the
// upstream, stream the answer back as it arrives, meter it, price it and hand the usage
// record to the sink. It is a fasthttp handler.
//
// Hot path rules, which every change here must keep: nothing is logged per request (facts
// go to the usage record and to metrics); no goroutine is started per request; buffers and
// per-request state are pooled; bodies are read with gjson and records written with
// append-style encoders; the only network call is the upstream's (auth and admission are
// answered from caches in steady state).
package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"tollgate/edge/internal/admit"
	"tollgate/edge/internal/apierr"
	"tollgate/edge/internal/auth"
	"tollgate/edge/internal/metrics"
	"tollgate/edge/internal/sink"
	"tollgate/pkg/ledgerapi"
	"tollgate/pkg/pricing"
)

// Config of the proxy. Every field is required; units are in the names.
type Config struct {
	EdgeID string
	// UpstreamURL is the upstream base URL; client paths are appended to its path.
	UpstreamURL string
	// UpstreamKeys are the operator's keys, used round-robin.
	UpstreamKeys []string

	UpstreamDialTimeout      time.Duration
	UpstreamWriteTimeout     time.Duration
	UpstreamReadTimeout      time.Duration // whole response, streams included
	UpstreamConnsMax         int
	UpstreamConnWaitTimeout  time.Duration
	UpstreamIdleConnTimeout  time.Duration
	UpstreamResponseBytesMax int // non-streaming bodies

	// BodyBytesMax is the server's request body limit, quoted in 413 answers.
	BodyBytesMax int
	// DrainTimeout and DrainsMax bound reading abandoned streams to their end.
	DrainTimeout time.Duration
	DrainsMax    int
	// LedgerTimeout bounds the balance call of GET /v1/balance.
	LedgerTimeout time.Duration
}

// Authenticator resolves API keys; *auth.Authenticator implements it.
type Authenticator interface {
	Authenticate(key []byte) (*auth.Principal, error)
}

// BalanceReader serves GET /v1/balance; *ledger.Client implements it.
type BalanceReader interface {
	Balance(ctx context.Context, accountID string) (ledgerapi.Balance, error)
}

// Deps are the proxy's collaborators.
type Deps struct {
	Auth     Authenticator
	Admitter admit.Admitter
	// Prices is read once per request, so a reload (SIGHUP) swaps it without a lock.
	Prices   *atomic.Pointer[pricing.Table]
	Sink     sink.Sink
	Balances BalanceReader
	// Metrics takes the request facts; the proxy has no logger, since nothing on the request
	// path is logged.
	Metrics *metrics.Edge
}

type upstreamKey struct {
	key []byte
	id  string // short hash: goes into usage records, the key never does
}

// Proxy is the request handler. Safe for concurrent use.
type Proxy struct {
	cfg  Config
	deps Deps

	hc     *fasthttp.HostClient
	prefix []byte // scheme://host[:port]/base-path, without a trailing slash
	keys   []upstreamKey
	next   atomic.Uint64 // round-robin position in keys

	// seq numbers this node's records. It starts at the node's start time in µs, so it
	// keeps increasing across restarts under a fixed edge id until the WAL (next stage)
	// persists it; Unix µs stays below 2^53, which every JSON reader keeps exact.
	seq atomic.Uint64

	drains   chan struct{} // semaphore: one token per running drain
	stopping atomic.Bool
	pool     sync.Pool // *exchange
}

// New builds the proxy and its upstream client.
func New(cfg Config, deps Deps) (*Proxy, error) {
	u, err := url.Parse(cfg.UpstreamURL)
	if err != nil {
		return nil, fmt.Errorf("parse upstream url: %w", err)
	}
	if len(cfg.UpstreamKeys) == 0 {
		return nil, errors.New("no upstream keys")
	}
	isTLS := u.Scheme == "https"
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if isTLS {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	p := &Proxy{
		cfg:    cfg,
		deps:   deps,
		prefix: []byte(u.Scheme + "://" + u.Host + strings.TrimRight(u.EscapedPath(), "/")),
		drains: make(chan struct{}, cfg.DrainsMax),
	}
	p.seq.Store(uint64(time.Now().UnixMicro()))
	for _, k := range cfg.UpstreamKeys {
		sum := sha256.Sum256([]byte(k))
		p.keys = append(p.keys, upstreamKey{key: []byte(k), id: "uk_" + hex.EncodeToString(sum[:6])})
	}
	dialTimeout := cfg.UpstreamDialTimeout
	// Every option is set explicitly: fasthttp treats several zero values as "unlimited".
	p.hc = &fasthttp.HostClient{
		Addr:  addr,
		IsTLS: isTLS,
		DialTimeout: func(addr string, timeout time.Duration) (net.Conn, error) {
			// timeout is what is left of a request deadline; 0 when there is none.
			if timeout <= 0 || timeout > dialTimeout {
				timeout = dialTimeout
			}
			return fasthttp.DialTimeout(addr, timeout)
		},
		MaxConns:                      cfg.UpstreamConnsMax,
		MaxConnWaitTimeout:            cfg.UpstreamConnWaitTimeout,
		MaxIdleConnDuration:           cfg.UpstreamIdleConnTimeout,
		MaxConnDuration:               0, // keep connections while they work
		MaxIdemponentCallAttempts:     1, // never resend a request: it may already be billed upstream
		ReadBufferSize:                16 << 10,
		WriteBufferSize:               16 << 10,
		ReadTimeout:                   cfg.UpstreamReadTimeout,
		WriteTimeout:                  cfg.UpstreamWriteTimeout,
		MaxResponseBodySize:           cfg.UpstreamResponseBytesMax,
		NoDefaultUserAgentHeader:      true, // the client's User-Agent passes through
		DisablePathNormalizing:        true, // the client's path passes through as sent
		DisableHeaderNamesNormalizing: false,
		SecureErrorLogMessage:         true,
		ConnPoolStrategy:              fasthttp.LIFO,
		RetryIfErr:                    func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
	}
	return p, nil
}

// Handle is the fasthttp request handler.
func (p *Proxy) Handle(ctx *fasthttp.RequestCtx) {
	if framingConflict(ctx.Request.Header.RawHeaders()) {
		ctx.SetConnectionClose()
		p.refuse(ctx, metrics.RouteOther, errFramingConflict)
		return
	}
	path := ctx.Path()
	switch string(path) {
	case "/v1/messages":
		if !ctx.IsPost() {
			p.refuse(ctx, metrics.RouteMessages, apierr.BadMethod)
			return
		}
		p.messages(ctx)
	case "/v1/messages/count_tokens":
		if !ctx.IsPost() {
			p.refuse(ctx, metrics.RouteCountTokens, apierr.BadMethod)
			return
		}
		p.passthrough(ctx, metrics.RouteCountTokens)
	case "/v1/balance":
		if !ctx.IsGet() {
			p.refuse(ctx, metrics.RouteBalance, apierr.BadMethod)
			return
		}
		p.balance(ctx)
	default:
		if string(path) == "/v1/models" || strings.HasPrefix(string(path), "/v1/models/") {
			if !ctx.IsGet() {
				p.refuse(ctx, metrics.RouteModels, apierr.BadMethod)
				return
			}
			p.passthrough(ctx, metrics.RouteModels)
			return
		}
		p.refuse(ctx, metrics.RouteOther, apierr.NotFound)
	}
}

// HandleError answers requests fasthttp could not read (the server's ErrorHandler), in the
// API's error shape.
func (p *Proxy) HandleError(ctx *fasthttp.RequestCtx, err error) {
	var e *apierr.Error
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		e = apierr.TooLarge(p.cfg.BodyBytesMax)
	case errors.As(err, &small):
		e = &apierr.Error{Status: 431, Type: apierr.TypeInvalidRequest, Message: "request headers too large"}
	case errors.As(err, &netErr) && netErr.Timeout():
		// A slow or idle client: answered and cut off, not waited for.
		p.refuse(ctx, metrics.RouteOther, &apierr.Error{Status: 408, Type: apierr.TypeTimeout, Message: "timed out reading the request"})
		return
	default:
		e = apierr.Invalid("malformed HTTP request")
	}
	p.refuse(ctx, metrics.RouteOther, e)
	lingerClose(ctx)
}

// refuse answers with an edge error under a fresh request id.
func (p *Proxy) refuse(ctx *fasthttp.RequestCtx, route metrics.Route, e *apierr.Error) {
	rid := newRequestID(ctx)
	apierr.Write(ctx, e, rid)
	p.deps.Metrics.Request(route, e.Status)
}

// authenticate resolves the request's key to a principal, or to the error to answer.
func (p *Proxy) authenticate(ctx *fasthttp.RequestCtx) (*auth.Principal, *apierr.Error) {
	key := auth.KeyFromHeaders(ctx.Request.Header.Peek("x-api-key"), ctx.Request.Header.Peek(fasthttp.HeaderAuthorization))
	pr, err := p.deps.Auth.Authenticate(key)
	switch {
	case err == nil:
		return pr, nil
	case errors.Is(err, auth.ErrMissingKey):
		return nil, apierr.MissingKey
	case errors.Is(err, auth.ErrUnknownKey):
		return nil, apierr.InvalidKey
	case errors.Is(err, auth.ErrRevoked):
		return nil, apierr.RevokedKey
	case errors.Is(err, auth.ErrSuspended):
		return nil, apierr.Suspended
	default:
		return nil, apierr.LedgerDown
	}
}

// pickKey returns the next upstream key, round-robin.
func (p *Proxy) pickKey() *upstreamKey {
	n := p.next.Add(1)
	return &p.keys[n%uint64(len(p.keys))]
}

// prepareUpstream fills ureq from the client request: method, URI (upstream prefix + the
// client's path and query, as sent), forwardable headers, the operator's key, identity
// encoding, and the body without copying it (ureq must be released before ctx is). scratch
// is a reusable buffer, returned grown.
func (p *Proxy) prepareUpstream(ctx *fasthttp.RequestCtx, ureq *fasthttp.Request, key *upstreamKey, scratch []byte) []byte {
	scratch = append(append(scratch[:0], p.prefix...), ctx.RequestURI()...)
	ureq.SetRequestURIBytes(scratch)
	ureq.Header.SetMethodBytes(ctx.Method())
	copyRequestHeaders(&ureq.Header, &ctx.Request.Header)
	ureq.Header.SetBytesV("x-api-key", key.key)
	ureq.Header.Set(fasthttp.HeaderAcceptEncoding, "identity")
	ureq.SetBodyRaw(ctx.Request.Body())
	return scratch
}

// upstreamError maps a failed upstream call to the edge's answer.
func upstreamError(err error) *apierr.Error {
	switch {
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return apierr.UpstreamBusy
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout):
		return apierr.UpstreamTimeout
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return apierr.UpstreamTimeout
	}
	return apierr.UpstreamDown
}

// BeginShutdown makes new requests answer 503 (retry elsewhere) while in-flight ones finish.
func (p *Proxy) BeginShutdown() { p.stopping.Store(true) }

// Close drops idle upstream connections.
func (p *Proxy) Close() { p.hc.CloseIdleConnections() }
