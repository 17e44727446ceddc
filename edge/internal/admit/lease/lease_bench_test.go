package lease_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"tollgate/edge/internal/admit/lease"
	"tollgate/edge/internal/admit/lease/leasetest"
)

// BenchmarkAdmitWarm is the request path's admission with a warm lease: Admit and Finish of
// one request (budget: under 200 ns, 0 allocations).
func BenchmarkAdmitWarm(b *testing.B) {
	a := benchAdmitter(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		tk, err := a.Admit("acct_bench", 1000)
		if err != nil {
			b.Fatal(err)
		}
		a.Finish(tk, 700)
	}
}

// BenchmarkAdmitWarmParallel: every core admitting against one account's lease (the worst
// case for the shared counters).
func BenchmarkAdmitWarmParallel(b *testing.B) {
	a := benchAdmitter(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tk, err := a.Admit("acct_bench", 1000)
			if err != nil {
				b.Fatal(err)
			}
			a.Finish(tk, 700)
		}
	})
}

func benchAdmitter(b *testing.B) *lease.Admitter {
	f := leasetest.New()
	f.SetBalance("acct_bench", 1<<60)
	a, err := lease.New(lease.Config{EdgeID: "bench", SizeMax: 1 << 55, RecallPoll: time.Hour}, f, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = a.Close(context.Background()) })
	tk, err := a.Admit("acct_bench", 1<<38) // a lease of 10^12 µcr: never runs out here
	if err != nil {
		b.Fatal(err)
	}
	a.Finish(tk, 0)
	return a
}
