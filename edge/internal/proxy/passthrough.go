package proxy

import (
	"context"
	"strconv"

	"github.com/valyala/fasthttp"

	"tollgate/edge/internal/apierr"
	"tollgate/edge/internal/metrics"
	"tollgate/pkg/money"
)

// passthrough serves the free, unrecorded endpoints (count_tokens, models): authenticated,
// then forwarded like a message without metering.
func (p *Proxy) passthrough(ctx *fasthttp.RequestCtx, route metrics.Route) {
	rid := newRequestID(ctx)
	fail := func(e *apierr.Error) {
		apierr.Write(ctx, e, rid)
		p.deps.Metrics.Request(route, e.Status)
	}
	if p.stopping.Load() {
		ctx.SetConnectionClose()
		fail(apierr.ShuttingDown)
		return
	}
	if _, e := p.authenticate(ctx); e != nil {
		fail(e)
		return
	}
	x := p.acquireExchange()
	defer p.releaseExchange(x)
	ureq := fasthttp.AcquireRequest()
	x.scratch = p.prepareUpstream(ctx, ureq, p.pickKey(), x.scratch)
	uresp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(uresp)
	err := p.hc.Do(ureq, uresp)
	fasthttp.ReleaseRequest(ureq)
	if err != nil {
		fail(upstreamError(err))
		return
	}
	ctx.Response.SetStatusCode(uresp.StatusCode())
	if id := copyResponseHeaders(&ctx.Response.Header, &uresp.Header); len(id) > 0 {
		ctx.Response.Header.SetBytesV("upstream-request-id", id)
	}
	ctx.Response.SetBody(uresp.Body())
	p.deps.Metrics.Request(route, uresp.StatusCode())
}

// balance serves GET /v1/balance: the caller's account, straight from ledgerd.
func (p *Proxy) balance(ctx *fasthttp.RequestCtx) {
	rid := newRequestID(ctx)
	fail := func(e *apierr.Error) {
		apierr.Write(ctx, e, rid)
		p.deps.Metrics.Request(metrics.RouteBalance, e.Status)
	}
	pr, e := p.authenticate(ctx)
	if e != nil {
		fail(e)
		return
	}
	c, cancel := context.WithTimeout(context.Background(), p.cfg.LedgerTimeout)
	defer cancel()
	b, err := p.deps.Balances.Balance(c, pr.AccountID)
	if err != nil {
		fail(apierr.LedgerDown)
		return
	}
	out := make([]byte, 0, 256)
	out = append(out, `{"account_id":`...)
	out = apierr.AppendString(out, b.AccountID)
	out = append(out, `,"balance_microcredits":`...)
	out = strconv.AppendInt(out, b.BalanceMicrocredits, 10)
	out = append(out, `,"available_microcredits":`...)
	out = strconv.AppendInt(out, b.AvailableMicrocredits, 10)
	out = append(out, `,"credits":"`...)
	out = append(out, money.FormatCredits(b.BalanceMicrocredits)...)
	out = append(out, `"}`...)
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.SetBody(out)
	p.deps.Metrics.Request(metrics.RouteBalance, 200)
}
