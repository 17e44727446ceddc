// Package pricing turns a request's token usage into what the customer is charged (in
// micro-credits) and what the upstream charged the operator (in micro-dollars), from a
// versioned price table (deploy/prices.yaml).
//
// # Units
//
// The table holds the upstream's list prices in USD per million tokens (MTok). At load they
// become integers, exactly, or the load fails:
//
//   - upstream rate, µUSD per MTok = list × 1,000,000;
//   - public rate, µcr per MTok = list × (1 − discount_bps/10,000) × 200,000,000
//     (1 credit = $0.005, so $1 = 200 credits = 200,000,000 µcr).
//
// Fees per request (web search, listed per 1,000 requests) are kept per million requests so
// they join the same sum.
//
// # Rounding
//
// A request's charge is Σ count × rate-per-million over every category (input, plain output,
// thinking, cache write 5m, cache write 1h, cache read, web search requests), summed exactly in
// 128-bit integers, then divided by 1,000,000 once and rounded half up (x.5 µcr → x+1). Nothing
// is rounded per category, so splitting or reordering categories never changes a charge. Batch
// requests halve the token part inside the same sum (the divisor becomes 2,000,000 for tokens)
// so they too are rounded once; web search fees are per request and not batch-discounted, as
// the upstream does not discount them. The upstream cost in µUSD follows the same rule. Results
// saturate at math.MaxInt64 instead of wrapping.
//
// Holds (admission estimates) round up instead: see HoldCost.
//
// A Table is immutable once loaded and safe for concurrent use; reloading (SIGHUP) means
// loading a new Table and swapping the pointer. Lookup and Cost do not allocate.
package pricing

import (
	"math"
	"math/bits"

	"tollgate/pkg/usage"
)

// perMillion is the divisor of every rate: rates are per million tokens (or requests).
const perMillion = 1_000_000

// Options describe how a request was made, beyond its token counts.
type Options struct {
	// Batch is set for Message Batches usage, billed at half the token price.
	Batch bool
	// LongContextBeta is set when the client sent the 1M-context beta header. Long-context
	// rates apply only with it, and only above the model's threshold.
	LongContextBeta bool
}

// Rates are the prices of one model per million tokens: µcr/MTok for public rates, µUSD/MTok
// for upstream rates.
type Rates struct {
	Input        int64
	Output       int64
	CacheWrite5m int64
	CacheWrite1h int64
	CacheRead    int64
	Thinking     int64
}

// LongContext is a model's long-context pricing: every category switches to these rates when
// the request's input, cache writes and cache reads together exceed ThresholdTokens.
type LongContext struct {
	ThresholdTokens int64
	Public          Rates // µcr per MTok
	Upstream        Rates // µUSD per MTok
}

// Model is one priced model. It belongs to its Table and is shared by every goroutine using
// it: read it, never modify it.
type Model struct {
	ID          string   // dated id, as the upstream returns it
	Aliases     []string // names clients may request instead
	Public      Rates    // µcr per MTok, after the discount
	Upstream    Rates    // µUSD per MTok, list price
	LongContext *LongContext
}

// Charge is the price of one request.
type Charge struct {
	Microcredits     int64 // charged to the customer
	UpstreamMicroUSD int64 // what the upstream charges the operator, for margin reports
	LongContext      bool  // long-context rates applied
}

// Table is a loaded, validated price table. It is immutable and safe for concurrent use.
type Table struct {
	version     string
	discountBps int64
	// Web search fee per million requests: µcr (public) and µUSD (upstream).
	webSearchPublic   int64
	webSearchUpstream int64
	models            []*Model
	byName            map[string]*Model // dated ids and aliases
}

// Version is the table's version, stamped on usage records as price_version.
func (t *Table) Version() string { return t.version }

// DiscountBps is the discount below list price, in basis points (3000 = 30%).
func (t *Table) DiscountBps() int64 { return t.discountBps }

// Models lists the table's models in file order. The slice is the caller's; the models are
// shared and must not be modified.
func (t *Table) Models() []*Model {
	out := make([]*Model, len(t.models))
	copy(out, t.models)
	return out
}

// Lookup finds the price of a request: by the model the upstream returned (a dated id), else
// by the name the client requested (often an alias). Either may be empty. Unknown → false;
// the edge refuses such a request before forwarding it, since it could not be priced.
func (t *Table) Lookup(model, requested string) (*Model, bool) {
	if m, ok := t.byName[model]; ok {
		return m, true
	}
	m, ok := t.byName[requested]
	return m, ok
}

// WebSearchFee is the public price of one web search request in µcr, rounded up (it is meant
// for holds; Cost keeps the exact fee inside its single rounding).
func (t *Table) WebSearchFee() int64 {
	var a u128
	a.addMul(uint64(t.webSearchPublic), 1)
	return a.divRound(perMillion, true)
}

// Cost prices one request's usage. Output includes Thinking (as Anthropic reports it): plain
// output (Output − Thinking) is billed at the output rate and thinking at the thinking rate,
// never both; a Thinking above Output is capped at Output. Negative counts are billed as zero.
// m must come from this table's Lookup.
func (t *Table) Cost(m *Model, tok usage.Tokens, o Options) Charge {
	public, upstream := &m.Public, &m.Upstream
	long := o.LongContextBeta && m.LongContext != nil &&
		inputSide(tok) > uint64(m.LongContext.ThresholdTokens)
	if long {
		public, upstream = &m.LongContext.Public, &m.LongContext.Upstream
	}

	output := nonNeg(tok.Output)
	thinking := min(nonNeg(tok.Thinking), output)
	q := quantities{
		input:        nonNeg(tok.Input),
		output:       output - thinking,
		thinking:     thinking,
		cacheWrite5m: nonNeg(tok.CacheWrite5m),
		cacheWrite1h: nonNeg(tok.CacheWrite1h),
		cacheRead:    nonNeg(tok.CacheRead),
	}
	searches := nonNeg(tok.WebSearchRequests)

	var pubFees, upFees u128
	pubFees.addMul(searches, uint64(t.webSearchPublic))
	upFees.addMul(searches, uint64(t.webSearchUpstream))
	return Charge{
		Microcredits:     total(q.price(public), pubFees, o.Batch),
		UpstreamMicroUSD: total(q.price(upstream), upFees, o.Batch),
		LongContext:      long,
	}
}

// MaxInputRate is the dearest input-side public rate (input, cache writes, cache read) in µcr
// per MTok: at admission any input token may turn out to be a cache write. With
// LongContextBeta and a long-context model it is the long-context rate, since the threshold
// may be crossed. Batch halves it, rounded up.
func (m *Model) MaxInputRate(o Options) int64 {
	r := m.holdRates(o)
	return batchRate(max(r.Input, r.CacheWrite5m, r.CacheWrite1h, r.CacheRead), o.Batch)
}

// OutputRate is the dearest output-side public rate (output, thinking) in µcr per MTok, under
// the same rules as MaxInputRate.
func (m *Model) OutputRate(o Options) int64 {
	r := m.holdRates(o)
	return batchRate(max(r.Output, r.Thinking), o.Batch)
}

// HoldCost is tokens × ratePerMTok / 1,000,000 rounded UP, for admission holds, which must not
// fall short of the charge. Negative inputs count as zero; the result saturates at
// math.MaxInt64.
func HoldCost(ratePerMTok, tokens int64) int64 {
	var a u128
	a.addMul(nonNeg(ratePerMTok), nonNeg(tokens))
	return a.divRound(perMillion, true)
}

func (m *Model) holdRates(o Options) *Rates {
	if o.LongContextBeta && m.LongContext != nil {
		return &m.LongContext.Public
	}
	return &m.Public
}

func batchRate(rate int64, batch bool) int64 {
	if batch {
		return rate/2 + rate%2 // half, rounded up
	}
	return rate
}

// quantities are a request's billable counts per category, already split and clamped.
type quantities struct {
	input, output, thinking, cacheWrite5m, cacheWrite1h, cacheRead uint64
}

// price returns Σ count × rate, exactly.
func (q *quantities) price(r *Rates) u128 {
	var a u128
	a.addMul(q.input, uint64(r.Input))
	a.addMul(q.output, uint64(r.Output))
	a.addMul(q.thinking, uint64(r.Thinking))
	a.addMul(q.cacheWrite5m, uint64(r.CacheWrite5m))
	a.addMul(q.cacheWrite1h, uint64(r.CacheWrite1h))
	a.addMul(q.cacheRead, uint64(r.CacheRead))
	return a
}

// total divides tokens+fees by a million once, rounding half up. For batch the token part is
// halved inside the same division: (tokens + 2·fees) / 2,000,000.
func total(tokens, fees u128, batch bool) int64 {
	div := uint64(perMillion)
	if batch {
		fees.double()
		div *= 2
	}
	tokens.add(fees)
	return tokens.divRound(div, false)
}

// inputSide is the input the long-context threshold is measured on: input plus cache writes
// plus cache reads, saturating instead of wrapping.
func inputSide(tok usage.Tokens) uint64 {
	sum := nonNeg(tok.Input)
	for _, n := range [...]int64{tok.CacheWrite5m, tok.CacheWrite1h, tok.CacheRead} {
		var carry uint64
		sum, carry = bits.Add64(sum, nonNeg(n), 0)
		if carry != 0 {
			return math.MaxUint64
		}
	}
	return sum
}
