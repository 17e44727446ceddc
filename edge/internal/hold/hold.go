// Package hold computes a request's hold: an upper estimate of what it can cost, taken
// before it is forwarded (DESIGN §3 step 2) so an account cannot spend credit it does not
// have. It is pure arithmetic over pricing's rates; the proxy gathers the inputs.
//
// The bound, stage 1:
//
//	input  = (body bytes + OverheadTokens) tokens at the model's dearest input-side rate
//	output = max_tokens at the model's dearest output-side rate
//
// Every token of text is at least one byte of the JSON body (a token never covers less than
// one byte, and JSON escaping only adds bytes), so body bytes bound text tokens. Any input
// token may turn out to be a cache write, hence the dearest input-side rate. max_tokens
// bounds output, thinking included. OverheadTokens covers what the upstream adds to the
// prompt itself (the tool-use system prompt is a few hundred tokens). Images and documents
// are over-counted by this bound (base64 bytes, not tokens) and server tools (web search
// fees) are not counted: per-block allowances replace the byte bound in the next stage.
// Each part is rounded up (pricing.HoldCost), so the hold never falls short by rounding.
package hold

import "tollgate/pkg/pricing"

// OverheadTokens is added to the input bound for prompt tokens the upstream adds.
const OverheadTokens = 1024

// Request is what the hold needs to know about one request.
type Request struct {
	BodyBytes int64 // size of the request body
	MaxTokens int64 // the request's max_tokens
}

// Rates are a model's dearest rates in micro-credits per million tokens, as
// (*pricing.Model).MaxInputRate and OutputRate give them for the request's options.
type Rates struct {
	MaxInput int64
	Output   int64
}

// Compute returns the hold in micro-credits. It saturates instead of overflowing.
func Compute(r Request, rates Rates) int64 {
	in := pricing.HoldCost(rates.MaxInput, satAdd(max(r.BodyBytes, 0), OverheadTokens))
	out := pricing.HoldCost(rates.Output, r.MaxTokens)
	return satAdd(in, out)
}

func satAdd(a, b int64) int64 {
	const maxInt64 = 1<<63 - 1
	if b > 0 && a > maxInt64-b {
		return maxInt64
	}
	return a + b
}
