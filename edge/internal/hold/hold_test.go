package hold_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/hold"
	"tollgate/pkg/pricing"
	"tollgate/pkg/usage"
)

func TestCompute(t *testing.T) {
	for _, tc := range []struct {
		name  string
		req   hold.Request
		rates hold.Rates
		want  int64
	}{
		{
			// (1000 + 1024) tokens × 840,000,000 µcr/MTok = 1,700,160 µcr, plus
			// 1024 tokens × 2,100,000,000 µcr/MTok = 2,150,400 µcr.
			name:  "sonnet 4.5 list rates",
			req:   hold.Request{BodyBytes: 1000, MaxTokens: 1024},
			rates: hold.Rates{MaxInput: 840_000_000, Output: 2_100_000_000},
			want:  3_850_560,
		},
		{
			// Each part rounds up on its own: ceil(1025×3/1e6) + ceil(1×7/1e6) = 1 + 1.
			name:  "rounds each part up",
			req:   hold.Request{BodyBytes: 1, MaxTokens: 1},
			rates: hold.Rates{MaxInput: 3, Output: 7},
			want:  2,
		},
		{
			name:  "negative inputs count as zero",
			req:   hold.Request{BodyBytes: -5, MaxTokens: -5},
			rates: hold.Rates{MaxInput: 1_000_000, Output: 1_000_000},
			want:  hold.OverheadTokens,
		},
		{
			name:  "saturates",
			req:   hold.Request{BodyBytes: math.MaxInt64, MaxTokens: math.MaxInt64},
			rates: hold.Rates{MaxInput: 1 << 58, Output: 1 << 58},
			want:  math.MaxInt64,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, hold.Compute(tc.req, tc.rates))
		})
	}
}

// The rates the proxy passes come from the embedded price list; check the ones above are
// what it holds for Sonnet 4.5, so the example stays honest: $6/MTok (cache write 1h, the
// dearest input-side rate) and $15/MTok output, 30% off, at 200,000,000 µcr per dollar.
func TestRatesFromPriceList(t *testing.T) {
	table, err := pricing.Default()
	require.NoError(t, err)
	m, ok := table.Lookup("", "claude-sonnet-4-5")
	require.True(t, ok)
	o := pricing.Options{}
	require.Equal(t, int64(6*7*20_000_000), m.MaxInputRate(o))
	require.Equal(t, int64(15*7*20_000_000), m.OutputRate(o))

	// With the 1M beta the long-context rates bound the hold: $12 and $22.50.
	o.LongContextBeta = true
	require.Equal(t, int64(12*7*20_000_000), m.MaxInputRate(o))
	require.Equal(t, int64(2250*7*200_000), m.OutputRate(o))
}

// The hold covers the charge of any usage the request could report within its bounds.
func TestHoldCoversWorstCaseCharge(t *testing.T) {
	table, err := pricing.Default()
	require.NoError(t, err)
	for _, name := range []string{"claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-3-5-haiku-latest"} {
		m, ok := table.Lookup("", name)
		if !ok {
			continue
		}
		for _, lc := range []bool{false, true} {
			o := pricing.Options{LongContextBeta: lc}
			req := hold.Request{BodyBytes: 300_000, MaxTokens: 8192}
			h := hold.Compute(req, hold.Rates{MaxInput: m.MaxInputRate(o), Output: m.OutputRate(o)})
			inputTokens := req.BodyBytes + hold.OverheadTokens
			for _, tok := range []struct{ in, cw5, cw1, cr, out, think int64 }{
				{in: inputTokens, out: req.MaxTokens},
				{cw1: inputTokens, out: req.MaxTokens, think: req.MaxTokens},
				{cw5: inputTokens / 2, cr: inputTokens / 2, out: req.MaxTokens},
			} {
				c := table.Cost(m, usageOf(tok.in, tok.cw5, tok.cw1, tok.cr, tok.out, tok.think), o)
				require.LessOrEqual(t, c.Microcredits, h, "%s lc=%v %+v", name, lc, tok)
			}
		}
	}
}

func usageOf(in, cw5, cw1, cr, out, think int64) usage.Tokens {
	return usage.Tokens{Input: in, CacheWrite5m: cw5, CacheWrite1h: cw1, CacheRead: cr, Output: out, Thinking: think}
}
