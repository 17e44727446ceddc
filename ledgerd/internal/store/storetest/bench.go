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
