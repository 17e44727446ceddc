package pricing_test

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/pkg/pricing"
	"tollgate/pkg/usage"
)

// list is one model's list prices in USD/MTok, copied by hand from Anthropic's published prices
// (not read from deploy/prices.yaml), so these tests also check the shipped table.
type list struct {
	in, out, cw5m, cw1h, read string
}

type wantModel struct {
	id      string
	aliases []string
	std     list
	long    *list // long context (> 200K input incl. cache, with the 1M beta)
}

var (
	opus4x   = list{"15", "75", "18.75", "30", "1.50"}
	opus45   = list{"5", "25", "6.25", "10", "0.50"} // Opus 4.5 through Opus 5
	sonnet   = list{"3", "15", "3.75", "6", "0.30"}
	sonnetLC = &list{"6", "22.50", "7.50", "12", "0.60"}
	fable5   = list{"10", "50", "12.50", "20", "1"}
	fable51  = list{"10", "50", "12.50", "20", "0.25"} // cache read 0.025× input
)

// wantModels are Anthropic's list prices as published on 2026-11-22 (platform.claude.com
// pricing page, model overviews and release notes). Models from Opus 4.6 on have no dated id.
var wantModels = []wantModel{
	{"claude-fable-5-1", nil, fable51, nil},
	{"claude-mythos-5-1", nil, fable51, nil},
	{"claude-fable-5", nil, fable5, nil},
	{"claude-mythos-5", nil, fable5, nil},
	{"claude-opus-5-5", nil, list{"4", "20", "5", "8", "0.20"}, nil},
	{"claude-opus-5", nil, opus45, nil},
	{"claude-opus-4-8", nil, opus45, nil},
	{"claude-opus-4-7", nil, opus45, nil},
	{"claude-opus-4-6", nil, opus45, nil},
	{"claude-sonnet-5-5", nil, list{"2", "10", "2.50", "4", "0.10"}, nil}, // cache read cut 2026-10-07
	{"claude-sonnet-5", nil, list{"2", "10", "2.50", "4", "0.20"}, nil},
	{"claude-sonnet-4-6", nil, sonnet, nil},
	{"claude-opus-4-5-20251101", []string{"claude-opus-4-5"}, opus45, nil},
	{"claude-opus-4-1-20250805", []string{"claude-opus-4-1"}, opus4x, nil},
	{"claude-opus-4-20250514", []string{"claude-opus-4-0", "claude-opus-4"}, opus4x, nil},
	{"claude-sonnet-4-5-20250929", []string{"claude-sonnet-4-5"}, sonnet, sonnetLC},
	{"claude-sonnet-4-20250514", []string{"claude-sonnet-4-0", "claude-sonnet-4"}, sonnet, sonnetLC},
	{"claude-3-7-sonnet-20250219", []string{"claude-3-7-sonnet-latest"}, sonnet, nil},
	{"claude-haiku-4-5-20251001", []string{"claude-haiku-4-5"}, list{"1", "5", "1.25", "2", "0.10"}, nil},
	{"claude-3-5-haiku-20241022", []string{"claude-3-5-haiku-latest"}, list{"0.80", "4", "1", "1.6", "0.08"}, nil},
	{"claude-3-haiku-20240307", []string{"claude-3-haiku"}, list{"0.25", "1.25", "0.30", "0.50", "0.03"}, nil},
}

const webSearchUSDPer1000 = "10"

// want returns the expected prices of the model with this id.
func want(t testing.TB, id string) wantModel {
	t.Helper()
	for _, w := range wantModels {
		if w.id == id {
			return w
		}
	}
	t.Fatalf("no expected prices for %s", id)
	return wantModel{}
}

func defaultTable(t testing.TB) *pricing.Table {
	t.Helper()
	tbl, err := pricing.Default()
	require.NoError(t, err)
	return tbl
}

func rat(s string) *big.Rat {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		panic("bad rational " + s)
	}
	return r
}

// roundHalfUp returns floor(x + 1/2) for x >= 0.
func roundHalfUp(x *big.Rat) int64 {
	num := new(big.Int).Mul(x.Num(), big.NewInt(2))
	num.Add(num, x.Denom())
	den := new(big.Int).Mul(x.Denom(), big.NewInt(2))
	q := new(big.Int).Quo(num, den)
	if !q.IsInt64() {
		return math.MaxInt64
	}
	return q.Int64()
}

// reference prices a request the way DESIGN §2 describes it, in exact rationals, from the
// list price strings: USD = Σ tokens × list / 1e6 (halved for batch) + searches × fee / 1000;
// public µcr = USD × 0.7 × 200e6; upstream µUSD = USD × 1e6; each rounded half up once.
func reference(w wantModel, tok usage.Tokens, o pricing.Options, discount string) (pub, up int64, long bool) {
	p := w.std
	inputSide := tok.Input + tok.CacheWrite5m + tok.CacheWrite1h + tok.CacheRead
	if o.LongContextBeta && w.long != nil && inputSide > 200_000 {
		p, long = *w.long, true
	}
	thinking := min(tok.Thinking, tok.Output)
	usd := new(big.Rat)
	for _, c := range []struct {
		n     int64
		price string
	}{
		{tok.Input, p.in}, {tok.Output - thinking, p.out}, {thinking, p.out},
		{tok.CacheWrite5m, p.cw5m}, {tok.CacheWrite1h, p.cw1h}, {tok.CacheRead, p.read},
	} {
		term := new(big.Rat).Mul(rat(c.price), new(big.Rat).SetInt64(c.n))
		usd.Add(usd, term.Quo(term, rat("1000000")))
	}
	if o.Batch {
		usd.Quo(usd, rat("2"))
	}
	fee := new(big.Rat).Mul(rat(webSearchUSDPer1000), new(big.Rat).SetInt64(tok.WebSearchRequests))
	usd.Add(usd, fee.Quo(fee, rat("1000")))

	factor := new(big.Rat).Sub(rat("1"), rat(discount))
	public := new(big.Rat).Mul(usd, factor)
	public.Mul(public, rat("200000000"))
	upstream := new(big.Rat).Mul(usd, rat("1000000"))
	return roundHalfUp(public), roundHalfUp(upstream), long
}

func TestDefaultTable(t *testing.T) {
	tbl := defaultTable(t)
	require.NotEmpty(t, tbl.Version())
	require.Equal(t, int64(3000), tbl.DiscountBps())
	require.Len(t, tbl.Models(), len(wantModels))
	for _, w := range wantModels {
		t.Run(w.id, func(t *testing.T) {
			m, ok := tbl.Lookup(w.id, "")
			require.True(t, ok)
			require.Equal(t, w.id, m.ID)
			require.ElementsMatch(t, w.aliases, m.Aliases)
			require.Equal(t, w.long != nil, m.LongContext != nil)
			if m.LongContext != nil {
				require.Equal(t, int64(200_000), m.LongContext.ThresholdTokens)
			}
			for _, a := range w.aliases {
				byAlias, ok := tbl.Lookup("", a)
				require.True(t, ok, a)
				require.Same(t, m, byAlias)
				// The returned dated id wins over the requested alias...
				got, ok := tbl.Lookup(w.id, "claude-3-haiku")
				require.True(t, ok)
				require.Same(t, m, got)
				// ...and an unknown returned model falls back to the alias.
				got, ok = tbl.Lookup("claude-unknown-20990101", a)
				require.True(t, ok)
				require.Same(t, m, got)
			}
		})
	}
	for _, name := range []string{"", "claude-unknown", "CLAUDE-OPUS-4-5", "claude-opus-4-5 "} {
		_, ok := tbl.Lookup(name, name)
		require.False(t, ok, "%q", name)
	}
}

// TestCurrentModelPrices pins, with hand-computed numbers, the rates that break the usual
// cache ratios, and checks that undated models are found by the name a client requests.
func TestCurrentModelPrices(t *testing.T) {
	tbl := defaultTable(t)
	for _, tc := range []struct {
		id   string
		tok  usage.Tokens
		want int64 // µcr = list USD × 0.7 × 200e6 per MTok
	}{
		{"claude-fable-5-1", usage.Tokens{CacheRead: 1_000_000}, 35_000_000},      // $0.25
		{"claude-mythos-5-1", usage.Tokens{CacheRead: 1_000_000}, 35_000_000},     // $0.25
		{"claude-fable-5", usage.Tokens{CacheRead: 1_000_000}, 140_000_000},       // $1
		{"claude-fable-5", usage.Tokens{CacheWrite5m: 1_000_000}, 1_750_000_000},  // $12.50
		{"claude-opus-5-5", usage.Tokens{CacheRead: 1_000_000}, 28_000_000},       // $0.20
		{"claude-opus-5-5", usage.Tokens{CacheWrite1h: 1_000_000}, 1_120_000_000}, // $8
		{"claude-sonnet-5-5", usage.Tokens{CacheRead: 1_000_000}, 14_000_000},     // $0.10
		{"claude-sonnet-5", usage.Tokens{CacheRead: 1_000_000}, 28_000_000},       // $0.20
		{"claude-sonnet-5", usage.Tokens{Output: 1_000_000}, 1_400_000_000},       // $10
		{"claude-opus-4-6", usage.Tokens{Input: 1_000_000}, 700_000_000},          // $5
		{"claude-sonnet-4-6", usage.Tokens{CacheWrite5m: 1_000_000}, 525_000_000}, // $3.75
	} {
		m, ok := tbl.Lookup("", tc.id) // undated: the requested name is the id
		require.True(t, ok, tc.id)
		require.Equal(t, tc.id, m.ID)
		require.Empty(t, m.Aliases, tc.id)
		require.Equal(t, tc.want, tbl.Cost(m, tc.tok, pricing.Options{}).Microcredits, "%s %+v", tc.id, tc.tok)
	}

	// The whole 1M window is billed at standard rates: no long-context switch, even with the
	// beta header and far above 200K input.
	for _, id := range []string{"claude-opus-4-6", "claude-sonnet-4-6", "claude-sonnet-5-5", "claude-fable-5-1"} {
		m, _ := tbl.Lookup(id, "")
		require.Nil(t, m.LongContext, id)
		tok := usage.Tokens{Input: 900_000, Output: 1000}
		require.Equal(t,
			tbl.Cost(m, tok, pricing.Options{}),
			tbl.Cost(m, tok, pricing.Options{LongContextBeta: true}), id)
	}

	// Left out on purpose (no complete official price set): refused, never priced.
	for _, name := range []string{"claude-haiku-5-5", "claude-fable-5-2", "claude-mythos-5-2", "claude-mythos-preview"} {
		_, ok := tbl.Lookup(name, name)
		require.False(t, ok, name)
	}
}

// TestCostPerCategory prices each category of each model alone and compares it with the
// reference, at counts that exercise rounding.
func TestCostPerCategory(t *testing.T) {
	tbl := defaultTable(t)
	categories := []struct {
		name string
		tok  func(n int64) usage.Tokens
	}{
		{"input", func(n int64) usage.Tokens { return usage.Tokens{Input: n} }},
		{"output", func(n int64) usage.Tokens { return usage.Tokens{Output: n} }},
		{"thinking", func(n int64) usage.Tokens { return usage.Tokens{Output: n, Thinking: n} }},
		{"cache_write_5m", func(n int64) usage.Tokens { return usage.Tokens{CacheWrite5m: n} }},
		{"cache_write_1h", func(n int64) usage.Tokens { return usage.Tokens{CacheWrite1h: n} }},
		{"cache_read", func(n int64) usage.Tokens { return usage.Tokens{CacheRead: n} }},
		{"web_search", func(n int64) usage.Tokens { return usage.Tokens{WebSearchRequests: n} }},
	}
	counts := []int64{0, 1, 2, 3, 7, 50, 999, 1000, 123_457, 1_000_000, 199_999_999}
	for _, w := range wantModels {
		m, ok := tbl.Lookup(w.id, "")
		require.True(t, ok)
		for _, c := range categories {
			t.Run(w.id+"/"+c.name, func(t *testing.T) {
				for _, n := range counts {
					tok := c.tok(n)
					wantPub, wantUp, _ := reference(w, tok, pricing.Options{}, "0.30")
					got := tbl.Cost(m, tok, pricing.Options{})
					require.Equal(t, wantPub, got.Microcredits, "n=%d", n)
					require.Equal(t, wantUp, got.UpstreamMicroUSD, "n=%d", n)
					require.False(t, got.LongContext)
				}
			})
		}
	}
}

// TestCostRandomMixes compares whole requests with the reference over random usage and
// options. The seed is printed so a failure replays.
func TestCostRandomMixes(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	tbl := defaultTable(t)
	count := func() int64 {
		switch rng.IntN(4) {
		case 0:
			return 0
		case 1:
			return rng.Int64N(100)
		case 2:
			return rng.Int64N(300_000)
		default:
			return rng.Int64N(1 << 40)
		}
	}
	for i := 0; i < 20_000; i++ {
		w := wantModels[rng.IntN(len(wantModels))]
		m, _ := tbl.Lookup(w.id, "")
		tok := usage.Tokens{
			Input: count(), Output: count(), CacheWrite5m: count(), CacheWrite1h: count(),
			CacheRead: count(), Thinking: count(), WebSearchRequests: rng.Int64N(20),
		}
		o := pricing.Options{Batch: rng.IntN(2) == 0, LongContextBeta: rng.IntN(2) == 0}
		wantPub, wantUp, wantLong := reference(w, tok, o, "0.30")
		got := tbl.Cost(m, tok, o)
		require.Equal(t, pricing.Charge{Microcredits: wantPub, UpstreamMicroUSD: wantUp, LongContext: wantLong}, got,
			"seed %d iteration %d model %s tokens %+v options %+v", seed, i, w.id, tok, o)
	}
}

func TestCostRounding(t *testing.T) {
	tbl := defaultTable(t)
	haiku3, _ := tbl.Lookup("claude-3-haiku-20240307", "")

	// One cache-read token on Haiku 3: $0.03/MTok × 0.7 × 200 = 4.2 µcr → 4; upstream 0.03 µUSD → 0.
	require.Equal(t, pricing.Charge{Microcredits: 4, UpstreamMicroUSD: 0},
		tbl.Cost(haiku3, usage.Tokens{CacheRead: 1}, pricing.Options{}))
	// Three: 12.6 µcr → 13 (rounded once, not 3 × 4 = 12).
	require.Equal(t, int64(13), tbl.Cost(haiku3, usage.Tokens{CacheRead: 3}, pricing.Options{}).Microcredits)
	// Exactly .5 rounds up: 50 tokens × 0.03 µUSD = 1.5 µUSD → 2.
	require.Equal(t, int64(2), tbl.Cost(haiku3, usage.Tokens{CacheRead: 50}, pricing.Options{}).UpstreamMicroUSD)
	// Exactly .5 rounds up in µcr: batch input on Haiku 3 is 35/2 = 17.5 µcr per token.
	require.Equal(t, int64(18), tbl.Cost(haiku3, usage.Tokens{Input: 1}, pricing.Options{Batch: true}).Microcredits)
	// Below .5 rounds down: 2 cache reads = 8.4 µcr → 8.
	require.Equal(t, int64(8), tbl.Cost(haiku3, usage.Tokens{CacheRead: 2}, pricing.Options{}).Microcredits)

	// Rounded once over all categories: three categories at 0.4 µcr each sum to 1.2 → 1,
	// where rounding each category first would give 0.
	tbl2 := load(t, tableYAML(`discount_bps: 0`, `
      input: "0.002"
      output: "0.002"
      cache_write_5m: "0.002"
      cache_write_1h: "1"
      cache_read: "1"`, ""))
	m, _ := tbl2.Lookup("test-model", "")
	require.Equal(t, int64(1), tbl2.Cost(m, usage.Tokens{Input: 1, Output: 1, CacheWrite5m: 1}, pricing.Options{}).Microcredits)
	// Four tokens at 0.4 µcr: 1.6 → 2.
	require.Equal(t, int64(2), tbl2.Cost(m, usage.Tokens{Input: 2, Output: 1, CacheWrite5m: 1}, pricing.Options{}).Microcredits)
}

func TestCostThinking(t *testing.T) {
	// A table with a thinking rate distinct from output, to see the split.
	tbl := load(t, tableYAML(`discount_bps: 0`, `
      input: "1"
      output: "5"
      thinking: "2"
      cache_write_5m: "1"
      cache_write_1h: "1"
      cache_read: "1"`, ""))
	m, _ := tbl.Lookup("test-model", "")
	// Rates in µcr/token at discount 0: output 5 × 200 = 1000, thinking 2 × 200 = 400.
	for _, tc := range []struct {
		name             string
		output, thinking int64
		want             int64
	}{
		{"no thinking", 1000, 0, 1000 * 1000},
		{"split", 1000, 400, 600*1000 + 400*400},
		{"all thinking", 1000, 1000, 1000 * 400},
		{"thinking above output is capped", 1000, 5000, 1000 * 400},
		{"negative thinking is zero", 1000, -3, 1000 * 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tbl.Cost(m, usage.Tokens{Output: tc.output, Thinking: tc.thinking}, pricing.Options{})
			require.Equal(t, tc.want, got.Microcredits)
		})
	}
	require.Equal(t, int64(400_000_000), m.Public.Thinking)
	require.Equal(t, int64(2_000_000), m.Upstream.Thinking)

	// Without a thinking rate it defaults to output, so the split never changes the price.
	def := defaultTable(t)
	opus, _ := def.Lookup("claude-opus-4-5", "")
	require.Equal(t, opus.Public.Output, opus.Public.Thinking)
	require.Equal(t,
		def.Cost(opus, usage.Tokens{Output: 12_345}, pricing.Options{}),
		def.Cost(opus, usage.Tokens{Output: 12_345, Thinking: 10_000}, pricing.Options{}))
}

func TestCostLongContext(t *testing.T) {
	tbl := defaultTable(t)
	beta := pricing.Options{LongContextBeta: true}
	sonnet := want(t, "claude-sonnet-4-5-20250929")
	m, _ := tbl.Lookup(sonnet.id, "")
	opus, _ := tbl.Lookup("claude-opus-4-5", "")

	// Input side includes cache writes and reads.
	atThreshold := usage.Tokens{Input: 50_000, CacheWrite5m: 50_000, CacheWrite1h: 50_000, CacheRead: 50_000, Output: 1000, Thinking: 100}
	above := atThreshold
	above.CacheRead++

	for _, tc := range []struct {
		name     string
		model    *pricing.Model
		tok      usage.Tokens
		o        pricing.Options
		wantLong bool
	}{
		{"exactly threshold", m, atThreshold, beta, false},
		{"threshold + 1", m, above, beta, true},
		{"above without beta header", m, above, pricing.Options{}, false},
		{"above with batch", m, above, pricing.Options{LongContextBeta: true, Batch: true}, true},
		{"model without long context", opus, above, beta, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tbl.Cost(tc.model, tc.tok, tc.o)
			require.Equal(t, tc.wantLong, got.LongContext)
			w := sonnet
			if tc.model == opus {
				w = want(t, "claude-opus-4-5-20251101")
			}
			wantPub, wantUp, wantLong := reference(w, tc.tok, tc.o, "0.30")
			require.Equal(t, tc.wantLong, wantLong)
			require.Equal(t, wantPub, got.Microcredits)
			require.Equal(t, wantUp, got.UpstreamMicroUSD)
		})
	}

	// Every category switches: output alone, above the threshold, is priced at 22.50 not 15.
	out := tbl.Cost(m, usage.Tokens{Input: 200_001, Output: 1_000_000}, beta)
	std := tbl.Cost(m, usage.Tokens{Input: 200_001, Output: 1_000_000}, pricing.Options{})
	// 200,001 × 6 × 140 + 1e6 × 22.5 × 140 µcr, against 200,001 × 3 × 140 + 1e6 × 15 × 140.
	require.Equal(t, int64(200_001*6*140+3_150_000_000), out.Microcredits)
	require.Equal(t, int64(200_001*3*140+2_100_000_000), std.Microcredits)
}

func TestCostBatchAndWebSearch(t *testing.T) {
	tbl := defaultTable(t)
	opus, _ := tbl.Lookup("claude-opus-4-1", "")

	// Batch halves tokens: 1M input at $15 list → $10.50 public = 2,100,000,000 µcr, half 1,050,000,000.
	require.Equal(t, int64(2_100_000_000), tbl.Cost(opus, usage.Tokens{Input: 1_000_000}, pricing.Options{}).Microcredits)
	require.Equal(t,
		pricing.Charge{Microcredits: 1_050_000_000, UpstreamMicroUSD: 7_500_000},
		tbl.Cost(opus, usage.Tokens{Input: 1_000_000}, pricing.Options{Batch: true}))

	// Web search: $10 per 1,000 = $0.01 each; public 0.01 × 0.7 × 200 credits = 1.4 credits.
	require.Equal(t, int64(1_400_000), tbl.WebSearchFee())
	require.Equal(t,
		pricing.Charge{Microcredits: 3 * 1_400_000, UpstreamMicroUSD: 3 * 10_000},
		tbl.Cost(opus, usage.Tokens{WebSearchRequests: 3}, pricing.Options{}))
	// Fees are per request and not batch-discounted.
	require.Equal(t,
		pricing.Charge{Microcredits: 1_050_000_000 + 1_400_000, UpstreamMicroUSD: 7_500_000 + 10_000},
		tbl.Cost(opus, usage.Tokens{Input: 1_000_000, WebSearchRequests: 1}, pricing.Options{Batch: true}))
}

func TestCostHugeAndInvalidCounts(t *testing.T) {
	tbl := defaultTable(t)
	w := want(t, "claude-opus-4-1-20250805") // the dearest rates
	m, _ := tbl.Lookup(w.id, "")
	const n = 1 << 40
	huge := usage.Tokens{Input: n, Output: n, CacheWrite5m: n, CacheWrite1h: n, CacheRead: n, Thinking: n / 2, WebSearchRequests: n}
	for _, o := range []pricing.Options{{}, {Batch: true}} {
		wantPub, wantUp, _ := reference(w, huge, o, "0.30")
		got := tbl.Cost(m, huge, o)
		require.Equal(t, wantPub, got.Microcredits)
		require.Equal(t, wantUp, got.UpstreamMicroUSD)
		require.Greater(t, got.Microcredits, int64(1)<<50) // no wrap-around
	}

	// Counts that cannot be charged in int64 saturate rather than wrap.
	maxed := usage.Tokens{Input: math.MaxInt64, Output: math.MaxInt64, CacheRead: math.MaxInt64, WebSearchRequests: math.MaxInt64}
	got := tbl.Cost(m, maxed, pricing.Options{LongContextBeta: true})
	require.Equal(t, int64(math.MaxInt64), got.Microcredits)
	require.Equal(t, int64(math.MaxInt64), got.UpstreamMicroUSD)
	sonnet, _ := tbl.Lookup("claude-sonnet-4", "")
	require.True(t, tbl.Cost(sonnet, maxed, pricing.Options{LongContextBeta: true}).LongContext)

	// Negative counts are billed as zero.
	neg := usage.Tokens{Input: -1, Output: -5, CacheWrite5m: -1, CacheWrite1h: -1, CacheRead: -1, Thinking: -1, WebSearchRequests: -1}
	require.Equal(t, pricing.Charge{}, tbl.Cost(m, neg, pricing.Options{Batch: true, LongContextBeta: true}))
}

func TestHoldRates(t *testing.T) {
	tbl := defaultTable(t)
	opus, _ := tbl.Lookup("claude-opus-4-5", "")
	sonnet, _ := tbl.Lookup("claude-sonnet-4-5", "")
	haiku3, _ := tbl.Lookup("claude-3-haiku", "")

	// µcr/MTok = list × 0.7 × 200e6 = list × 140e6.
	require.Equal(t, int64(10*140_000_000), opus.MaxInputRate(pricing.Options{})) // cache write 1h, $10
	require.Equal(t, int64(25*140_000_000), opus.OutputRate(pricing.Options{}))
	require.Equal(t, int64(6*140_000_000), sonnet.MaxInputRate(pricing.Options{}))
	require.Equal(t, int64(12*140_000_000), sonnet.MaxInputRate(pricing.Options{LongContextBeta: true}))
	require.Equal(t, int64(3_150_000_000), sonnet.OutputRate(pricing.Options{LongContextBeta: true}))
	require.Equal(t, int64(10*70_000_000), opus.MaxInputRate(pricing.Options{Batch: true}))
	require.Equal(t, int64(25*70_000_000), opus.OutputRate(pricing.Options{Batch: true}))
	// Haiku 3: cache write 1h $0.50 → 70,000,000.
	require.Equal(t, int64(70_000_000), haiku3.MaxInputRate(pricing.Options{}))
	require.Equal(t, int64(35_000_000), haiku3.MaxInputRate(pricing.Options{Batch: true}))
	// Batch half of an odd rate rounds up: at 99.99% off, $0.00005/MTok is 1 µcr/MTok.
	odd := load(t, tableYAML(`discount_bps: 9999`, `
      input: "0.00005"
      output: "0.00015"
      cache_write_5m: "0"
      cache_write_1h: "0"
      cache_read: "0"`, ""))
	oddModel, _ := odd.Lookup("test-alias", "")
	require.Equal(t, int64(1), oddModel.MaxInputRate(pricing.Options{Batch: true}))
	require.Equal(t, int64(2), oddModel.OutputRate(pricing.Options{Batch: true}))

	for _, tc := range []struct {
		name         string
		rate, tokens int64
		want         int64
	}{
		{"zero", 4_200_000, 0, 0},
		{"fraction rounds up", 4_200_000, 1, 5},
		{"exact", 4_200_000, 5, 21},
		{"just above", 1_000_001, 1_000_000, 1_000_001},
		{"negative tokens", 1_000_000, -10, 0},
		{"negative rate", -1, 10, 0},
		{"saturates", math.MaxInt64, math.MaxInt64, math.MaxInt64},
		{"large exact", 3_500_000_000, 1 << 40, 3_500 * (1 << 40)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, pricing.HoldCost(tc.rate, tc.tokens))
		})
	}

	// A hold at the dearest rates always covers the charge.
	tok := usage.Tokens{Input: 123_457, Output: 98_765, Thinking: 4321}
	hold := pricing.HoldCost(opus.MaxInputRate(pricing.Options{}), 123_457) + pricing.HoldCost(opus.OutputRate(pricing.Options{}), 98_765)
	require.GreaterOrEqual(t, hold, tbl.Cost(opus, tok, pricing.Options{}).Microcredits)
}

func TestZeroAllocs(t *testing.T) {
	tbl := defaultTable(t)
	model, requested := "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"
	tok := usage.Tokens{Input: 250_000, Output: 3000, Thinking: 1000, CacheRead: 9000, CacheWrite5m: 100, WebSearchRequests: 2}
	var sink int64
	allocs := testing.AllocsPerRun(1000, func() {
		m, ok := tbl.Lookup(model, requested)
		if !ok {
			panic("lookup")
		}
		c := tbl.Cost(m, tok, pricing.Options{LongContextBeta: true})
		sink += c.Microcredits + pricing.HoldCost(m.MaxInputRate(pricing.Options{}), 1000)
	})
	require.Zero(t, allocs)
	require.NotZero(t, sink)
}
