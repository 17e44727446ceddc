package proxy

import (
	"bytes"
	"errors"
	"io"
	"time"

	"github.com/valyala/fasthttp"

	"tollgate/edge/internal/admit"
	"tollgate/edge/internal/apierr"
	"tollgate/edge/internal/hold"
	"tollgate/edge/internal/meter"
	"tollgate/edge/internal/metrics"
	"tollgate/edge/internal/reqid"
	"tollgate/pkg/pricing"
	"tollgate/pkg/usage"
)

// exchange is one POST /v1/messages in flight: what is needed to finish its usage record
// once the upstream's answer has passed. Pooled; owned by one request at a time. For a
// stream it outlives the handler: fasthttp reads the body through it and closes it when the
// response is written (or abandoned), and that close finishes the record.
type exchange struct {
	p *Proxy

	rec     usage.Record
	table   *pricing.Table // the table admission used: the record is priced by the same one
	model   *pricing.Model // the requested model's prices
	opts    pricing.Options
	ticket  admit.Ticket
	start   time.Time
	scratch []byte // upstream URI, drain and error-body buffers

	// inputEstimate is the prompt's tokens estimated from the body, billed when the upstream
	// served the request without reporting any of its input.
	inputEstimate int64

	// Streaming state.
	status   int // the upstream's status, sent to the client
	uresp    *fasthttp.Response
	body     io.Reader                    // the upstream body stream
	closer   fasthttp.ReadCloserWithError // the same stream, to interrupt a drain
	scan     meter.Scanner
	sawBytes bool
	eof      bool  // the upstream stream ended normally
	readErr  error // the upstream stream failed (cut off, timed out)
}

func (p *Proxy) acquireExchange() *exchange {
	if v := p.pool.Get(); v != nil {
		return v.(*exchange)
	}
	return &exchange{p: p, scratch: make([]byte, 0, 1024)}
}

// releaseExchange resets x for reuse. Nothing may refer to x afterwards.
func (p *Proxy) releaseExchange(x *exchange) {
	x.rec = usage.Record{}
	x.table, x.model, x.opts, x.ticket = nil, nil, pricing.Options{}, admit.Ticket{}
	x.inputEstimate = 0
	x.uresp, x.body, x.closer = nil, nil, nil
	x.status, x.sawBytes, x.eof, x.readErr = 0, false, false, nil
	x.scan.Reset()
	if cap(x.scratch) > 64<<10 {
		x.scratch = make([]byte, 0, 1024)
	}
	p.pool.Put(x)
}

// newRequestID sets a fresh edge request id on the response and returns it.
func newRequestID(ctx *fasthttp.RequestCtx) string {
	rid := reqid.New()
	ctx.Response.Header.Set("request-id", rid)
	return rid
}

// messages serves POST /v1/messages.
func (p *Proxy) messages(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	rid := newRequestID(ctx)
	fail := func(e *apierr.Error) {
		apierr.Write(ctx, e, rid)
		p.deps.Metrics.Request(metrics.RouteMessages, e.Status)
	}
	if p.stopping.Load() {
		ctx.SetConnectionClose()
		fail(apierr.ShuttingDown)
		return
	}
	pr, e := p.authenticate(ctx)
	if e != nil {
		fail(e)
		return
	}
	if ok, retry := pr.Allow(start.UnixNano()); !ok {
		fail(apierr.RateLimited(int((retry + time.Second - 1) / time.Second)))
		return
	}
	body := ctx.Request.Body()
	req, e := parseMessages(body)
	if e != nil {
		fail(e)
		return
	}
	table := p.deps.Prices.Load()
	opts := pricing.Options{LongContextBeta: hasContext1M(ctx.Request.Header.Peek("anthropic-beta"))}
	model, ok := table.Lookup("", req.model)
	if !ok {
		fail(apierr.Invalid("model: " + quote(req.model) + " is not a model this service offers"))
		return
	}
	in := hold.Scan(body)
	in.MaxTokens = req.maxTokens
	h := hold.Compute(in, hold.Rates{MaxInput: model.MaxInputRate(opts), Output: model.OutputRate(opts),
		WebSearchFee: table.WebSearchFee(), ContextTokens: hold.Context(model, opts)})

	// Room for the record first, so a request is never served without one.
	if !p.deps.Sink.Reserve() {
		fail(apierr.QueueFull)
		return
	}
	ticket, err := p.deps.Admitter.Admit(pr.AccountID, h)
	if err != nil {
		p.deps.Sink.Release()
		var ins *admit.InsufficientError
		switch {
		case errors.As(err, &ins):
			fail(apierr.Insufficient(ins.Hold, ins.Available))
		case errors.Is(err, admit.ErrSuspended):
			fail(apierr.Suspended)
		default:
			fail(apierr.LedgerDown)
		}
		return
	}

	x := p.acquireExchange()
	x.table, x.model, x.opts, x.ticket, x.start = table, model, opts, ticket, start
	x.inputEstimate = meter.EstimateInput(in.TextBytes) + in.Images*hold.ImageTokens
	x.rec = usage.Record{
		V:              usage.Version,
		RequestID:      rid,
		EdgeID:         p.cfg.EdgeID,
		AccountID:      pr.AccountID,
		KeyID:          pr.KeyID,
		LeaseID:        ticket.LeaseID,
		ModelRequested: internModel(model, req.model),
		TsStartMs:      start.UnixMilli(),
		Stream:         req.stream,
		PriceVersion:   table.Version(),
	}
	p.forward(ctx, x, req.stream)
}

// forward sends the request upstream and answers the client. It owns x from here on: it
// finishes and releases it, or hands it to fasthttp as the response body stream.
func (p *Proxy) forward(ctx *fasthttp.RequestCtx, x *exchange, stream bool) {
	key := p.pickKey()
	x.rec.UpstreamKeyID = key.id
	ureq := fasthttp.AcquireRequest()
	x.scratch = p.prepareUpstream(ctx, ureq, key, x.scratch)
	uresp := fasthttp.AcquireResponse()
	uresp.StreamBody = stream
	sent := time.Now()
	err := p.hc.Do(ureq, uresp)
	fasthttp.ReleaseRequest(ureq) // the body it referenced is ctx's, which lives on
	p.deps.Metrics.UpstreamSeconds.Observe(time.Since(sent).Seconds())
	if err != nil {
		fasthttp.ReleaseResponse(uresp)
		e := upstreamError(err)
		apierr.Write(ctx, e, x.rec.RequestID)
		x.rec.TtfbMs = time.Since(x.start).Milliseconds()
		x.finish(e.Status, meter.Result{ErrorType: e.Type}, false)
		return
	}

	status := uresp.StatusCode()
	ctx.Response.SetStatusCode(status)
	if id := copyResponseHeaders(&ctx.Response.Header, &uresp.Header); len(id) > 0 {
		ctx.Response.Header.SetBytesV("upstream-request-id", id)
		x.rec.UpstreamRequestID = string(id)
	}
	ok := status >= 200 && status < 300

	if stream && ok && bytes.HasPrefix(uresp.Header.ContentType(), []byte("text/event-stream")) {
		// From here fasthttp pulls the body through x.Read and calls x.CloseWithError when
		// the response is done; that finishes the record (stream.go).
		x.status = status
		x.uresp = uresp
		x.body = uresp.BodyStream()
		x.closer, _ = x.body.(fasthttp.ReadCloserWithError)
		ctx.Response.SetBodyStream(x, -1)
		return
	}

	// A whole body: a non-streaming answer, or an error answer to a streaming request.
	var body []byte
	if uresp.StreamBody {
		var rerr error
		x.scratch, rerr = readAll(x.scratch[:0], uresp.BodyStream(), p.cfg.UpstreamResponseBytesMax)
		uresp.CloseBodyStream() //nolint:errcheck // read errors are handled below
		if rerr != nil {
			fasthttp.ReleaseResponse(uresp)
			ctx.Response.Header.Del("upstream-request-id")
			e := upstreamError(rerr)
			ctx.Response.ResetBody()
			apierr.Write(ctx, e, x.rec.RequestID)
			x.finish(e.Status, meter.Result{ErrorType: e.Type}, false)
			return
		}
		body = x.scratch
	} else {
		body = uresp.Body()
	}
	x.rec.TtfbMs = time.Since(x.start).Milliseconds()
	res, _ := meter.FromJSON(body) // a malformed body is not Complete, which finish handles
	ctx.Response.SetBody(body)
	fasthttp.ReleaseResponse(uresp)
	x.finish(status, res, ok)
}

// finish prices what the upstream reported, completes the record, settles admission and
// hands the record to the sink. served says the upstream served the request (2xx): then
// usage it did not fully report is estimated; a refused request costs only what it
// reported (usually nothing). x is released.
func (x *exchange) finish(status int, res meter.Result, served bool) {
	p := x.p
	tok := res.Tokens
	if served && !res.Complete {
		// The estimate already covers every byte of text seen, so it replaces a smaller
		// reported output rather than adding to it.
		tok.Output = max(tok.Output, meter.EstimateOutput(res.TextBytes))
		if tok.Input == 0 && tok.CacheWrite5m == 0 && tok.CacheWrite1h == 0 && tok.CacheRead == 0 {
			// Nothing about the prompt came back (garbage, or no usage anywhere): bill an
			// estimate of it rather than serve the prompt for free.
			tok.Input = x.inputEstimate
		}
		x.rec.Estimated = true
		p.deps.Metrics.Estimated.Inc()
	}
	model := x.model
	if m, ok := x.table.Lookup(res.Model, ""); ok {
		model = m
	}
	charge := x.table.Cost(model, tok, x.opts)

	r := &x.rec
	r.Seq = p.seq.Add(1)
	r.Model = res.Model
	if r.Model == "" {
		r.Model = model.ID // nothing came back: record the model that was priced
	}
	r.TsEndMs = time.Now().UnixMilli()
	r.Status = status
	r.StopReason = res.StopReason
	r.ErrorType = res.ErrorType
	r.Usage = tok
	r.CostMicrocredits = charge.Microcredits
	r.UpstreamCostMicroUSD = charge.UpstreamMicroUSD

	p.deps.Admitter.Finish(x.ticket, charge.Microcredits)
	p.deps.Sink.Append(r)
	p.deps.Metrics.Request(metrics.RouteMessages, status)
	p.releaseExchange(x)
}

// internModel returns the table's own string for the requested name (an id or alias), so
// the record does not keep a copy of the request body's.
func internModel(m *pricing.Model, requested string) string {
	if requested == m.ID {
		return m.ID
	}
	for _, a := range m.Aliases {
		if a == requested {
			return a
		}
	}
	return m.ID
}

// readAll appends r to dst up to limit bytes; more is an error.
func readAll(dst []byte, r io.Reader, limit int) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if len(dst) > limit {
			return dst, fasthttp.ErrBodyTooLarge
		}
		if errors.Is(err, io.EOF) {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

// quote renders client input for an error message, bounded.
func quote(s string) string {
	const max = 100
	if len(s) > max {
		s = s[:max] + "…"
	}
	return `"` + s + `"`
}
