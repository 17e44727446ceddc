package e2e_test

import (
	"math/big"
	"testing"
)

// listPrice is Anthropic's published list price in USD per million tokens, written out here
// independently of deploy/prices.yaml so the end-to-end test does not check the code against
// itself.
type listPrice struct {
	input, output, cw5m, cw1h, read string
}

var listPrices = map[string]listPrice{
	"claude-sonnet-4-5": {"3", "15", "3.75", "6", "0.30"},
	"claude-3-haiku":    {"0.25", "1.25", "0.30", "0.50", "0.03"},
	"claude-opus-4-5":   {"5", "25", "6.25", "10", "0.50"},
}

// tokens of one request as the mock upstream was told to report them.
type tokens struct {
	input, output, cw5m, cw1h, read, thinking, webSearch int64
}

// expectedCost is the public price in micro-credits: list price × (1 − 30%) with
// 1 USD = 200 credits = 200,000,000 µcr, summed exactly and rounded once, half up.
// Thinking is part of output and billed at the output rate (the table's default).
func expectedCost(t *testing.T, model string, u tokens) int64 {
	t.Helper()
	p, ok := listPrices[model]
	if !ok {
		t.Fatalf("no list price for %s in the test table", model)
	}
	rat := func(s string) *big.Rat {
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			t.Fatalf("bad price %q", s)
		}
		return r
	}
	usd := new(big.Rat)
	add := func(n int64, price string) {
		usd.Add(usd, new(big.Rat).Mul(big.NewRat(n, 1_000_000), rat(price)))
	}
	add(u.input, p.input)
	add(u.output, p.output) // thinking included, same rate
	add(u.cw5m, p.cw5m)
	add(u.cw1h, p.cw1h)
	add(u.read, p.read)
	usd.Add(usd, big.NewRat(u.webSearch*10, 1000)) // $10 per 1,000 searches
	micro := usd.Mul(usd, big.NewRat(7*200_000_000, 10))
	// round half up
	q, r := new(big.Int).QuoRem(micro.Num(), micro.Denom(), new(big.Int))
	if new(big.Int).Mul(r, big.NewInt(2)).Cmp(micro.Denom()) >= 0 {
		q.Add(q, big.NewInt(1))
	}
	return q.Int64()
}

func TestExpectedCostSelfCheck(t *testing.T) {
	// 1M input tokens of Sonnet 4.5 at $3 list, 30% off = $2.10 = 420 credits.
	if got := expectedCost(t, "claude-sonnet-4-5", tokens{input: 1_000_000}); got != 420_000_000 {
		t.Fatalf("got %d", got)
	}
	// One cache-read token of Haiku 3: $0.03/M × 0.7 × 200e6 / 1e6 = 4.2 µcr → 4.
	if got := expectedCost(t, "claude-3-haiku", tokens{read: 1}); got != 4 {
		t.Fatalf("got %d", got)
	}
	// Five: 21 µcr exactly.
	if got := expectedCost(t, "claude-3-haiku", tokens{read: 5}); got != 21 {
		t.Fatalf("got %d", got)
	}
	// One web search: $0.01 × 0.7 = 1.4 credits.
	if got := expectedCost(t, "claude-sonnet-4-5", tokens{webSearch: 1}); got != 1_400_000 {
		t.Fatalf("got %d", got)
	}
}
