// Package hold computes a request's hold: an upper estimate of what it can cost, taken
// before it is forwarded (DESIGN §3 step 2) so an account cannot spend credit it does not
// have. Scan reads what the bound needs from the body; Compute is pure arithmetic over
// pricing's rates.
//
// # The rule
//
//	prompt  = min(text bytes + OverheadTokens + images × ImageTokens + documents × context,
//	              context)
//	uses    = web searches + web fetches + other server-tool uses the request allows
//	results = web searches × WebSearchTokens + web fetch content + other uses × ServerToolTokens
//	input   = min(prompt × (1 + uses) + results, context × (1 + uses))
//	output  = max(max_tokens, thinking.budget_tokens)
//	hold    = input at the model's dearest input-side rate + output at its dearest
//	          output-side rate + web searches × the web search fee
//
// each part rounded up (pricing.HoldCost), so the hold never falls short by rounding.
//
// Why each part bounds what the upstream can bill:
//
//   - Text: every token of text is at least one byte of the JSON body (a token never covers
//     less than one byte of UTF-8, and JSON escaping only adds bytes), so the body's bytes —
//     less the base64 of images and documents, which are not tokenized as text — bound the
//     text tokens, system prompt and tool definitions included. OverheadTokens covers what
//     the upstream adds to the prompt itself (the tool-use system prompt is a few hundred).
//   - Images: the upstream scales every image to about 1.15 megapixels, about 1,600 tokens
//     (ImageTokens), whatever its size in the body.
//   - Documents: a PDF (base64, URL or file) becomes text plus one image per page, up to 100
//     pages, which can fill the context window; no cheaper bound is known without parsing
//     it, so a PDF's allowance is the whole context. Plain-text documents are text.
//   - Context: the upstream refuses a prompt longer than the model's context window (200K
//     tokens; 1M for models priced for long context, when the client sent the context-1m
//     beta), cache reads and writes included.
//   - Server tools run a loop on the upstream: each use feeds results back as input and
//     samples again over the whole prompt, so each use may read the prompt again and add its
//     results. Uses are bounded by the tool's max_uses (ServerToolUsesDefault when absent).
//   - Output: max_tokens bounds the output, thinking included; with interleaved thinking the
//     thinking budget may exceed it, so the larger of the two is taken.
//   - Any input token may turn out to be a cache write, hence the dearest input-side rate.
//
// # Known limits
//
// The bound is only as good as these allowances: a server tool used beyond
// ServerToolUsesDefault times when max_uses is absent, search results or tool output longer
// than their allowance, or an upstream change to image sizing can make a request cost more
// than its hold. Credit leases absorb that (DESIGN §3: the overdraft is bounded by that one
// request). In the other direction the bound is loose for PDFs (a whole context window) and
// for server tools over long prompts (every use re-reads the prompt at the dearest rate).
package hold

import (
	"strings"
	"tollgate/edge/internal/jsonstr"

	"tollgate/pkg/pricing"
)

// Allowances, in tokens unless noted.
const (
	// OverheadTokens is added to the prompt for tokens the upstream adds itself.
	OverheadTokens = 1024
	// ImageTokens bounds one image: the upstream resizes images to about 1.15 megapixels,
	// which its documentation puts at about 1,600 tokens.
	ImageTokens = 1600
	// ContextTokens and LongContextTokens are the context windows: the most prompt tokens
	// (input, cache writes and cache reads together) one sampling step can take.
	ContextTokens     = 200_000
	LongContextTokens = 1_000_000
	// WebSearchTokens is the allowance per web search for the results it feeds back.
	WebSearchTokens = 10_000
	// WebFetchTokens is the allowance per web fetch without max_content_tokens.
	WebFetchTokens = 50_000
	// ServerToolTokens is the allowance per use of another server tool (code execution,
	// MCP connector tools) for the output it feeds back.
	ServerToolTokens = 10_000
	// ServerToolUsesDefault is how many uses a server tool without max_uses is assumed to
	// make (the upstream sets no limit of its own).
	ServerToolUsesDefault = 10
)

// Input is what the hold needs from a Messages request body.
type Input struct {
	TextBytes      int64 // body bytes outside the sources of images and documents
	Images         int64 // image blocks
	Documents      int64 // document blocks whose source is not plain text (PDFs, files, URLs)
	WebSearches    int64 // most web searches the request's tools allow
	WebFetches     int64 // most web fetches the request's tools allow
	WebFetchTokens int64 // most tokens those fetches may bring in
	ToolUses       int64 // most uses of other server tools (code execution, MCP servers)
	ThinkingBudget int64 // thinking.budget_tokens, 0 when absent
	MaxTokens      int64 // max_tokens, as the proxy validated it
}

// Rates are a model's prices for the request's options: its dearest input-side and
// output-side rates in µcr per million tokens ((*pricing.Model).MaxInputRate and OutputRate),
// the web search fee in µcr per search ((*pricing.Table).WebSearchFee) and its context window
// in tokens (Context).
type Rates struct {
	MaxInput      int64
	Output        int64
	WebSearchFee  int64
	ContextTokens int64
}

// Context is the context window that bounds a request to m with options o.
func Context(m *pricing.Model, o pricing.Options) int64 {
	if o.LongContextBeta && m.LongContext != nil {
		return LongContextTokens
	}
	return ContextTokens
}

// Compute returns the hold in micro-credits. It saturates instead of overflowing; negative
// counts count as zero.
func Compute(in Input, r Rates) int64 {
	ctx := max(r.ContextTokens, 1)
	prompt := satAdd(satAdd(nonNeg(in.TextBytes), OverheadTokens),
		satAdd(satMul(nonNeg(in.Images), ImageTokens), satMul(nonNeg(in.Documents), ctx)))
	prompt = min(prompt, ctx)
	uses := satAdd(satAdd(nonNeg(in.WebSearches), nonNeg(in.WebFetches)), nonNeg(in.ToolUses))
	results := satAdd(satAdd(satMul(nonNeg(in.WebSearches), WebSearchTokens), nonNeg(in.WebFetchTokens)),
		satMul(nonNeg(in.ToolUses), ServerToolTokens))
	steps := satAdd(uses, 1)
	input := min(satAdd(satMul(prompt, steps), results), satMul(ctx, steps))
	output := max(nonNeg(in.MaxTokens), nonNeg(in.ThinkingBudget))
	h := satAdd(pricing.HoldCost(r.MaxInput, input), pricing.HoldCost(r.Output, output))
	return satAdd(h, satMul(nonNeg(in.WebSearches), nonNeg(r.WebSearchFee)))
}

// Scan reads a Messages request body for the hold. body must be valid JSON (the proxy checks
// it first); it is only read, never retained, and Scan does not allocate for ordinary bodies.
// MaxTokens is left to the caller, which has validated it.
func Scan(body []byte) Input {
	var in Input
	var media int64
	for k, v := range each(body[skipWS(body, 0):]) {
		switch jsonstr.Text(k) {
		case "messages":
			for _, m := range each(v) {
				if c := field(m, "content"); isArray(c) {
					media += scanBlocks(c, &in, true)
				}
			}
		case "tools":
			for _, t := range each(v) {
				scanTool(t, &in)
			}
		case "mcp_servers":
			// Tools of remote MCP servers run on the upstream like server tools. A value
			// that is not a list counts as one server; the upstream refuses it anyway.
			for range each(v) {
				in.ToolUses = satAdd(in.ToolUses, ServerToolUsesDefault)
			}
		case "thinking":
			in.ThinkingBudget = max(integer(field(v, "budget_tokens")), 0)
		}
	}
	in.TextBytes = max(int64(len(body))-media, 0)
	return in
}

// scanBlocks counts the images and documents of a content array and returns the bytes of
// their sources. Tool results nest content blocks one level (nested is false inside).
func scanBlocks(blocks []byte, in *Input, nested bool) int64 {
	var media int64
	for _, b := range each(blocks) {
		// One pass over the block: its source may be megabytes of base64.
		var typ, source, content []byte
		for k, v := range each(b) {
			switch jsonstr.Text(k) {
			case "type":
				typ = v
			case "source":
				source = v
			case "content":
				content = v
			}
		}
		switch jsonstr.Text(typ) {
		case "image":
			in.Images++
			media += int64(len(source))
		case "document":
			switch jsonstr.Text(field(source, "type")) {
			case "text", "content": // plain text, or text blocks: counted as text
			default:
				in.Documents++
				media += int64(len(source))
			}
		case "tool_result":
			if nested && isArray(content) {
				media += scanBlocks(content, in, false)
			}
		}
	}
	return media
}

// scanTool counts what a server tool may do; client tools (custom, bash, text editor,
// computer use, memory) run on the client and are only text here.
func scanTool(t []byte, in *Input) {
	typ := jsonstr.Text(field(t, "type"))
	uses := func() int64 {
		if n := field(t, "max_uses"); n != nil {
			return max(integer(n), 0)
		}
		return ServerToolUsesDefault
	}
	switch {
	case strings.HasPrefix(typ, "web_search_"):
		in.WebSearches = satAdd(in.WebSearches, uses())
	case strings.HasPrefix(typ, "web_fetch_"):
		n := uses()
		per := int64(WebFetchTokens)
		if m := field(t, "max_content_tokens"); m != nil {
			per = max(integer(m), 0)
		}
		in.WebFetches = satAdd(in.WebFetches, n)
		in.WebFetchTokens = satAdd(in.WebFetchTokens, satMul(n, per))
	case strings.HasPrefix(typ, "code_execution_"), strings.HasPrefix(typ, "tool_search_tool_"):
		in.ToolUses = satAdd(in.ToolUses, uses())
	}
}

const maxInt64 = 1<<63 - 1

func nonNeg(v int64) int64 { return max(v, 0) }

func satAdd(a, b int64) int64 {
	if b > 0 && a > maxInt64-b {
		return maxInt64
	}
	return a + b
}

func satMul(a, b int64) int64 {
	if a > 0 && b > 0 && a > maxInt64/b {
		return maxInt64
	}
	return a * b
}
