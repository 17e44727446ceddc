package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/store"
)

// BenchGrantExtend measures what an edge waits for when a lease runs dry: one GrantLease and
// one ExtendLease of that lease per iteration, one after the other on an account whose
// balance never runs low (the common path: no refusal, no recall). The leases stay open, as
// they would on busy edges, so the leases table grows as it does in production.
func BenchGrantExtend(b *testing.B, s store.Store) {
	ctx := context.Background()
	a, err := s.CreateAccount(ctx, "bench")
	require.NoError(b, err)
	const credits = 1_000_000_000 // 10^15 µcr: the leases below never exhaust it
	_, _, err = s.TopUp(ctx, store.TopUp{AccountID: a.ID, OrderID: "bench-" + a.ID, Credits: credits,
		MicroUSD: credits * 5000, Method: "admin"})
	require.NoError(b, err)
	g := store.LeaseGrant{AccountID: a.ID, EdgeID: "edge-bench", Want: 2_000_000, Min: 100_000, TTL: time.Minute}
	b.ReportAllocs()
	for b.Loop() {
		l, err := s.GrantLease(ctx, g)
		if err != nil {
			b.Fatalf("grant: %v", err)
		}
		if _, err := s.ExtendLease(ctx, l.ID, 2_000_000, 100_000, 50_000, time.Minute); err != nil {
			b.Fatalf("extend: %v", err)
		}
	}
	b.StopTimer()
	require.NoError(b, s.Check(ctx), "books must balance after the benchmark")
}

// BenchRefresh measures the edges' background refreshes on stores open opens: per
// iteration, 256 open leases (the edge's batch size), on as many accounts, are extended with
// want 0 (a refresh of the expiry, what most background extends are) — one ExtendLease each
// (sub-benchmark single) or one ExtendLeases for all (batch). It reports the cost per extend
// (ns/extend).
func BenchRefresh(b *testing.B, open func(b *testing.B) store.Store) {
	for _, batch := range []bool{false, true} {
		b.Run(map[bool]string{false: "single", true: "batch"}[batch], func(b *testing.B) { benchRefresh(b, open(b), batch) })
	}
}

func benchRefresh(b *testing.B, s store.Store, batch bool) {
	const leases = 256
	ctx := context.Background()
	extends := make([]store.LeaseExtend, leases)
	for i := range extends {
		a, err := s.CreateAccount(ctx, "bench")
		require.NoError(b, err)
		_, _, err = s.TopUp(ctx, store.TopUp{AccountID: a.ID, OrderID: "bench-" + a.ID, Credits: 1000, MicroUSD: 1000 * 5000, Method: "admin"})
		require.NoError(b, err)
		l, err := s.GrantLease(ctx, store.LeaseGrant{AccountID: a.ID, EdgeID: "edge-bench", Want: 2_000_000, Min: 1, TTL: time.Minute})
		require.NoError(b, err)
		extends[i] = store.LeaseExtend{LeaseID: l.ID}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if batch {
			if _, err := s.ExtendLeases(ctx, extends, time.Minute); err != nil {
				b.Fatalf("extend batch: %v", err)
			}
			continue
		}
		for _, e := range extends {
			if _, err := s.ExtendLease(ctx, e.LeaseID, e.Want, e.Min, e.Spent, time.Minute); err != nil {
				b.Fatalf("extend: %v", err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*leases), "ns/extend")
	b.StopTimer()
	require.NoError(b, s.Check(ctx), "books must balance after the benchmark")
}
