package hold_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tidwall/gjson"

	"tollgate/edge/internal/hold"
	"tollgate/pkg/pricing"
	"tollgate/pkg/usage"
)

// Sonnet 4.5 at list prices, 30% off, 200,000,000 µcr per dollar: $6/MTok cache write 1h (the
// dearest input-side rate) and $15/MTok output; $10 per 1,000 web searches.
var sonnet = hold.Rates{MaxInput: 840_000_000, Output: 2_100_000_000, WebSearchFee: 1_400_000, ContextTokens: 200_000}

// ceilCost is tokens × rate / 1e6 rounded up, computed here without the pricing package.
func ceilCost(tokens, rate int64) int64 { return (tokens*rate + 999_999) / 1_000_000 }

func TestCompute(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   hold.Input
		r    hold.Rates
		want int64
	}{
		{
			// (1000 + 1024) × 840 µcr + 1024 × 2100 µcr.
			name: "text",
			in:   hold.Input{TextBytes: 1000, MaxTokens: 1024},
			r:    sonnet,
			want: 1_700_160 + 2_150_400,
		},
		{
			name: "images count 1,600 tokens each, not their bytes",
			in:   hold.Input{TextBytes: 500, Images: 3, MaxTokens: 100},
			r:    sonnet,
			want: ceilCost(500+1024+3*1600, 840_000_000) + ceilCost(100, 2_100_000_000),
		},
		{
			name: "a PDF may fill the context window",
			in:   hold.Input{TextBytes: 300, Documents: 1, MaxTokens: 4096},
			r:    sonnet,
			want: ceilCost(200_000, 840_000_000) + ceilCost(4096, 2_100_000_000),
		},
		{
			name: "long context with the beta",
			in:   hold.Input{TextBytes: 5_000_000, MaxTokens: 10},
			r:    hold.Rates{MaxInput: 1_680_000_000, Output: 3_150_000_000, ContextTokens: 1_000_000},
			want: ceilCost(1_000_000, 1_680_000_000) + ceilCost(10, 3_150_000_000),
		},
		{
			// 5 searches: 6 sampling steps over the prompt, 5 × 10,000 result tokens, 5 fees.
			name: "web search",
			in:   hold.Input{TextBytes: 976, WebSearches: 5, MaxTokens: 2048},
			r:    sonnet,
			want: ceilCost(6*2000+5*10_000, 840_000_000) + ceilCost(2048, 2_100_000_000) + 5*1_400_000,
		},
		{
			name: "web fetch limited by max_content_tokens",
			in:   hold.Input{TextBytes: 976, WebFetches: 2, WebFetchTokens: 2 * 5000, MaxTokens: 100},
			r:    sonnet,
			want: ceilCost(3*2000+10_000, 840_000_000) + ceilCost(100, 2_100_000_000),
		},
		{
			name: "server tool loop capped by the context per step",
			in:   hold.Input{TextBytes: 199_000, ToolUses: 2, MaxTokens: 100},
			r:    sonnet,
			want: ceilCost(3*200_000, 840_000_000) + ceilCost(100, 2_100_000_000),
		},
		{
			name: "interleaved thinking budget above max_tokens",
			in:   hold.Input{TextBytes: 0, ThinkingBudget: 32_000, MaxTokens: 16_000},
			r:    sonnet,
			want: ceilCost(1024, 840_000_000) + ceilCost(32_000, 2_100_000_000),
		},
		{
			name: "rounds each part up",
			in:   hold.Input{TextBytes: 1, MaxTokens: 1},
			r:    hold.Rates{MaxInput: 3, Output: 7, ContextTokens: 200_000},
			want: 2,
		},
		{
			name: "negative counts count as zero",
			in:   hold.Input{TextBytes: -5, Images: -1, WebSearches: -3, MaxTokens: -5},
			r:    hold.Rates{MaxInput: 1_000_000, Output: 1_000_000, WebSearchFee: 9, ContextTokens: 200_000},
			want: hold.OverheadTokens,
		},
		{
			name: "saturates",
			in:   hold.Input{TextBytes: math.MaxInt64, WebSearches: math.MaxInt64, MaxTokens: math.MaxInt64},
			r:    hold.Rates{MaxInput: 1 << 58, Output: 1 << 58, WebSearchFee: 1 << 40, ContextTokens: math.MaxInt64},
			want: math.MaxInt64,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, hold.Compute(tc.in, tc.r))
		})
	}
}

// The rates the proxy passes come from the embedded price list; check the ones above are
// what it holds for Sonnet 4.5, so the examples stay honest.
func TestRatesFromPriceList(t *testing.T) {
	table, err := pricing.Default()
	require.NoError(t, err)
	m, ok := table.Lookup("", "claude-sonnet-4-5")
	require.True(t, ok)
	o := pricing.Options{}
	require.Equal(t, sonnet.MaxInput, m.MaxInputRate(o))
	require.Equal(t, sonnet.Output, m.OutputRate(o))
	require.Equal(t, sonnet.WebSearchFee, table.WebSearchFee())
	require.Equal(t, int64(hold.ContextTokens), hold.Context(m, o))

	// With the 1M beta the long-context rates and window bound the hold: $12 and $22.50.
	o.LongContextBeta = true
	require.Equal(t, int64(12*7*20_000_000), m.MaxInputRate(o))
	require.Equal(t, int64(2250*7*200_000), m.OutputRate(o))
	require.Equal(t, int64(hold.LongContextTokens), hold.Context(m, o))
	h, ok := table.Lookup("", "claude-haiku-4-5")
	require.True(t, ok)
	require.Equal(t, int64(hold.ContextTokens), hold.Context(h, o), "the beta does nothing for a model without long-context prices")
}

// shape is a request body as SDKs send it, with the sources of its media written out so the
// test knows their byte counts independently of the scanner.
type shape struct {
	name    string
	body    string
	sources []string // raw JSON of every image and non-text document source in body
	want    hold.Input
}

func imageSource(kb int) string {
	data := base64.StdEncoding.EncodeToString(make([]byte, kb<<10))
	return `{"type":"base64","media_type":"image/png","data":"` + data + `"}`
}

func shapes() []shape {
	img := imageSource(300)
	img2 := imageSource(40)
	urlImg := `{"type":"url","url":"https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"}`
	pdf := `{"type":"base64","media_type":"application/pdf","data":"` + base64.StdEncoding.EncodeToString(make([]byte, 64<<10)) + `"}`
	file := `{"type":"file","file_id":"file_011CNha8iCJcU1wXNR6q4V8w"}`
	return []shape{
		{
			name: "plain text",
			body: `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Hello, Claude"}]}`,
			want: hold.Input{},
		},
		{
			name: "system blocks with cache_control, multi-turn, stream",
			body: `{"model":"claude-sonnet-4-5","max_tokens":2048,"stream":true,` +
				`"system":[{"type":"text","text":"You are a helpful assistant.","cache_control":{"type":"ephemeral","ttl":"1h"}}],` +
				`"messages":[{"role":"user","content":[{"type":"text","text":"What is 2+2?"}]},` +
				`{"role":"assistant","content":[{"type":"text","text":"4"}]},` +
				`{"role":"user","content":"And times 3?"}]}`,
			want: hold.Input{},
		},
		{
			name: "base64 and URL images",
			body: `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":[` +
				`{"type":"image","source":` + img + `},{"type":"image","source":` + urlImg + `},` +
				`{"type":"text","text":"Compare these images."}]}]}`,
			sources: []string{img, urlImg},
			want:    hold.Input{Images: 2},
		},
		{
			name: "PDF, file and plain-text documents with citations",
			body: `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":[` +
				`{"type":"document","source":` + pdf + `,"citations":{"enabled":true}},` +
				`{"type":"document","source":` + file + `},` +
				`{"type":"document","source":{"type":"text","media_type":"text/plain","data":"The grass is green."},"title":"Facts"},` +
				`{"type":"text","text":"Summarize."}]}]}`,
			sources: []string{pdf, file},
			want:    hold.Input{Documents: 2},
		},
		{
			name: "client tools with a tool_result carrying an image",
			body: `{"model":"claude-opus-4-5","max_tokens":4096,` +
				`"tools":[{"name":"get_weather","description":"Get the weather","input_schema":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}},` +
				`{"type":"bash_20250124","name":"bash"},{"type":"text_editor_20250728","name":"str_replace_based_edit_tool"}],` +
				`"messages":[{"role":"user","content":"Weather in Paris?"},` +
				`{"role":"assistant","content":[{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{"location":"Paris"}}]},` +
				`{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":[{"type":"text","text":"15 C"},{"type":"image","source":` + img2 + `}]}]}]}`,
			sources: []string{img2},
			want:    hold.Input{Images: 1},
		},
		{
			name: "server tools: web search with max_uses, web fetch, code execution",
			body: `{"model":"claude-sonnet-4-5","max_tokens":2048,` +
				`"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":5,"allowed_domains":["example.com"]},` +
				`{"type":"web_fetch_20250910","name":"web_fetch","max_uses":2,"max_content_tokens":5000},` +
				`{"type":"code_execution_20250825","name":"code_execution"}],` +
				`"messages":[{"role":"user","content":"Find and chart the latest figures."}]}`,
			want: hold.Input{WebSearches: 5, WebFetches: 2, WebFetchTokens: 10_000, ToolUses: hold.ServerToolUsesDefault},
		},
		{
			name: "web search without max_uses and an MCP server",
			body: `{"model":"claude-sonnet-4-5","max_tokens":1000,"tools":[{"type":"web_search_20250305","name":"web_search"}],` +
				`"mcp_servers":[{"type":"url","url":"https://example-server.modelcontextprotocol.io/sse","name":"example-mcp"}],` +
				`"messages":[{"role":"user","content":"What tools do you have?"}]}`,
			want: hold.Input{WebSearches: hold.ServerToolUsesDefault, ToolUses: hold.ServerToolUsesDefault},
		},
		{
			name: "extended thinking with signed thinking blocks from the last turn",
			body: `{"model":"claude-sonnet-4-5","max_tokens":16000,"thinking":{"type":"enabled","budget_tokens":10000},` +
				`"messages":[{"role":"user","content":"Prove it."},{"role":"assistant","content":[` +
				`{"type":"thinking","thinking":"Let me think.","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},` +
				`{"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"},` +
				`{"type":"text","text":"Done."}]},{"role":"user","content":"Again."}]}`,
			want: hold.Input{ThinkingBudget: 10_000},
		},
	}
}

func TestScanRealShapes(t *testing.T) {
	for _, s := range shapes() {
		t.Run(s.name, func(t *testing.T) {
			require.True(t, gjson.Valid(s.body))
			want := s.want
			want.TextBytes = int64(len(s.body))
			for _, src := range s.sources {
				require.Contains(t, s.body, src)
				want.TextBytes -= int64(len(src))
			}
			require.Equal(t, want, hold.Scan([]byte(s.body)))
		})
	}
}

// A request with a large image is held for the image's token allowance, not its bytes: the
// stage-1 byte bound held a 5 MB screenshot for millions of tokens and refused it with 402.
func TestLargeImageHoldIsSmall(t *testing.T) {
	src := imageSource(5 << 10)
	body := `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":[{"type":"image","source":` +
		src + `},{"type":"text","text":"What is in this screenshot?"}]}]}`
	in := hold.Scan([]byte(body))
	in.MaxTokens = 1024
	got := hold.Compute(in, sonnet)
	textBytes := int64(len(body) - len(src))
	require.Equal(t, ceilCost(textBytes+1024+1600, 840_000_000)+ceilCost(1024, 2_100_000_000), got)
	require.Less(t, got, int64(10_000_000), "under 10 credits, where the byte bound was over 5,000")
}

// For every shape and every model, the hold covers the charge of the worst usage the request
// could report within the allowances: all prompt tokens as 1h cache writes, all output as
// thinking, every search made.
func TestHoldCoversWorstCaseCharge(t *testing.T) {
	table, err := pricing.Default()
	require.NoError(t, err)
	for _, s := range shapes() {
		in := hold.Scan([]byte(s.body))
		in.MaxTokens = gjson.Get(s.body, "max_tokens").Int()
		for _, m := range table.Models() {
			for _, lc := range []bool{false, true} {
				o := pricing.Options{LongContextBeta: lc}
				r := hold.Rates{MaxInput: m.MaxInputRate(o), Output: m.OutputRate(o), WebSearchFee: table.WebSearchFee(), ContextTokens: hold.Context(m, o)}
				h := hold.Compute(in, r)
				ctx := r.ContextTokens
				prompt := min(in.TextBytes+hold.OverheadTokens+in.Images*hold.ImageTokens+in.Documents*ctx, ctx)
				steps := 1 + in.WebSearches + in.WebFetches + in.ToolUses
				input := min(prompt*steps+in.WebSearches*hold.WebSearchTokens+in.WebFetchTokens+in.ToolUses*hold.ServerToolTokens, ctx*steps)
				out := max(in.MaxTokens, in.ThinkingBudget)
				for _, u := range []usage.Tokens{
					{Input: input, Output: out, WebSearchRequests: in.WebSearches},
					{CacheWrite1h: input, Output: out, Thinking: out, WebSearchRequests: in.WebSearches},
					{CacheWrite5m: input / 2, CacheRead: input / 2, Output: out},
				} {
					c := table.Cost(m, u, o)
					require.LessOrEqual(t, c.Microcredits, h, "%s %s lc=%v %+v", s.name, m.ID, lc, u)
				}
			}
		}
	}
}

// Scan reads keys and strings as JSON decoders do: escapes decoded, the last of duplicate
// members, escaped quotes inside strings, any whitespace.
func TestScanReadsJSONAsDecoders(t *testing.T) {
	for _, tc := range []struct {
		name  string
		body  string
		media string // the one source counted, "" for none
		want  hold.Input
	}{
		{
			name:  "escaped key and type",
			body:  `{"m\u0065ssages":[{"role":"user","content":[{"type":"im\u0061ge","source":{"type":"url","url":"u"}}]}]}`,
			media: `{"type":"url","url":"u"}`,
			want:  hold.Input{Images: 1},
		},
		{
			name: "the last content of a message counts",
			body: `{"messages":[{"role":"user","content":[{"type":"image","source":"S"}],"content":"no image"}]}`,
			want: hold.Input{},
		},
		{
			name:  "the last source of a block counts",
			body:  `{"messages":[{"role":"user","content":[{"type":"image","source":"first","source":"second"}]}]}`,
			media: `"second"`,
			want:  hold.Input{Images: 1},
		},
		{
			name:  "quotes and brackets inside strings",
			body:  `{"messages":[{"role":"user","content":[{"type":"text","text":"a\\\"}]{\"type\":\"image\"\\"},{"type":"image","source":"x\"y"}]}]}`,
			media: `"x\"y"`,
			want:  hold.Input{Images: 1},
		},
		{
			name: "members of nested objects are not the request's",
			body: `{"metadata":{"thinking":{"budget_tokens":5},"tools":[{"type":"web_search_20250305"}]},"messages":[]}`,
			want: hold.Input{},
		},
		{
			name: "the last budget_tokens counts",
			body: `{"thinking":{"type":"enabled","budget_tokens":1,"budget_tokens":5000},"messages":[]}`,
			want: hold.Input{ThinkingBudget: 5000},
		},
		{
			name: "the last type, max_uses and max_content_tokens of a tool count",
			body: `{"tools":[{"type":"custom","type":"web_fetch_20250910","max_uses":1,"max_uses":3,"max_content_tokens":1,"max_content_tokens":100},` +
				`{"type":"web_search_20250305","type":"custom","max_uses":9}],"messages":[]}`,
			want: hold.Input{WebFetches: 3, WebFetchTokens: 300},
		},
		{
			name: "an MCP server list that is not a list counts as one server",
			body: `{"mcp_servers":{"type":"url"},"messages":[]}`,
			want: hold.Input{ToolUses: hold.ServerToolUsesDefault},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.True(t, gjson.Valid(tc.body))
			want := tc.want
			want.TextBytes = int64(len(tc.body) - len(tc.media))
			require.Equal(t, want, hold.Scan([]byte(tc.body)))
		})
	}
}

// Whitespace between tokens changes nothing but the text bytes.
func TestScanIndented(t *testing.T) {
	for _, s := range shapes() {
		var b bytes.Buffer
		require.NoError(t, json.Indent(&b, []byte(s.body), " \r", "\t "))
		got := hold.Scan(b.Bytes())
		require.LessOrEqual(t, got.TextBytes, int64(b.Len()))
		got.TextBytes = 0
		require.Equal(t, s.want, got, s.name)
	}
}

func TestScanAllocatesNothing(t *testing.T) {
	var body []byte
	for _, s := range shapes() {
		if strings.HasPrefix(s.name, "client tools") {
			body = []byte(s.body)
		}
	}
	require.NotNil(t, body)
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = hold.Scan(body) }))
}

// FuzzScan: whatever a client sends, Scan neither panics nor reports counts out of range
// (the proxy only passes it valid JSON, which the seeds are).
func FuzzScan(f *testing.F) {
	for _, s := range shapes() {
		f.Add([]byte(s.body))
	}
	f.Add([]byte(`{"messages":[{"content":[{"type":"tool_result","content":[{"type":"tool_result","content":[{"type":"image","source":1}]}]}]}]}`))
	f.Add([]byte(`{"tools":[{"type":"web_fetch_x","max_uses":-3,"max_content_tokens":1e30}],"thinking":{"budget_tokens":-1}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		in := hold.Scan(body)
		if in.TextBytes < 0 || in.TextBytes > int64(len(body)) || in.Images < 0 || in.Documents < 0 ||
			in.WebSearches < 0 || in.WebFetches < 0 || in.WebFetchTokens < 0 || in.ToolUses < 0 || in.ThinkingBudget < 0 {
			t.Fatalf("out of range: %+v for %q", in, body)
		}
		in.MaxTokens = 1
		if hold.Compute(in, sonnet) <= 0 {
			t.Fatalf("non-positive hold for %+v", in)
		}
	})
}
