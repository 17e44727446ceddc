package pricing_test

import (
	"testing"

	"tollgate/pkg/pricing"
	"tollgate/pkg/usage"
)

var benchSink int64

func BenchmarkLookup(b *testing.B) {
	tbl := defaultTable(b)
	b.ReportAllocs()
	for b.Loop() {
		// The common edge case: upstream returns the dated id.
		m, ok := tbl.Lookup("claude-sonnet-4-5-20250929", "claude-sonnet-4-5")
		if !ok {
			b.Fatal("lookup")
		}
		benchSink += m.Public.Input
	}
}

func BenchmarkLookupFallback(b *testing.B) {
	tbl := defaultTable(b)
	b.ReportAllocs()
	for b.Loop() {
		m, ok := tbl.Lookup("claude-unknown-20990101", "claude-3-haiku")
		if !ok {
			b.Fatal("lookup")
		}
		benchSink += m.Public.Input
	}
}

func BenchmarkCost(b *testing.B) {
	tbl := defaultTable(b)
	m, _ := tbl.Lookup("claude-sonnet-4-5", "")
	tok := usage.Tokens{Input: 250_000, Output: 3000, Thinking: 1000, CacheRead: 9000, CacheWrite5m: 100, WebSearchRequests: 2}
	o := pricing.Options{LongContextBeta: true}
	b.ReportAllocs()
	for b.Loop() {
		benchSink += tbl.Cost(m, tok, o).Microcredits
	}
}
