package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/store"
)

// testLeaseExtendBatch: a batch of extends gives exactly what the same extends one by one
// give — checked against a twin set of accounts extended one call at a time, and against
// figures worked out by hand from the grant rule — and a refused item (insufficient with a
// recall, suspended, closed, unknown) leaves the others applied and its recall marks
// committed.
func testLeaseExtendBatch(t *testing.T, s store.Store, c *Clock) {
	type twin struct {
		x, y, z        store.Account
		x1, x2, x3     store.Lease
		y1, y2, z1     store.Lease
		extends        []store.LeaseExtend
		edgeX, edgeOth string
	}
	grant := func(acct, edge string, want, minimum int64) store.Lease {
		t.Helper()
		l, err := s.GrantLease(ctx(), store.LeaseGrant{AccountID: acct, EdgeID: edge, Want: want, Min: minimum, TTL: time.Minute})
		require.NoError(t, err)
		return l
	}
	setUp := func(name string) *twin {
		w := &twin{edgeX: "e1-" + name, edgeOth: "e2-" + name}
		w.x, w.y, w.z = newAccount(t, s, 100), newAccount(t, s, 8), newAccount(t, s, 10)
		w.x1 = grant(w.x.ID, w.edgeX, 10*cr, 1)     // 10 (a quarter of 100 is more): 90 left
		w.x2 = grant(w.x.ID, w.edgeOth, 5*cr, 5*cr) // 5: 85 left
		w.x3 = grant(w.x.ID, w.edgeX, 1*cr, 1)      // 1, released below: 85 left
		_, err := s.ReleaseLease(ctx(), w.x3.ID, 0)
		require.NoError(t, err)
		w.y1 = grant(w.y.ID, w.edgeX, 2*cr, 2*cr)   // 2: 6 left
		w.y2 = grant(w.y.ID, w.edgeOth, 2*cr, 2*cr) // a quarter of 6 is 1.5, so min: 2, 4 left
		w.z1 = grant(w.z.ID, w.edgeX, 1*cr, 1)
		_, err = s.SetAccountStatus(ctx(), w.z.ID, store.StatusSuspended)
		require.NoError(t, err)
		w.extends = []store.LeaseExtend{
			{LeaseID: w.x1.ID, Want: 30 * cr, Min: 0, Spent: 3 * cr},
			{LeaseID: w.y1.ID, Want: 10 * cr, Min: 5 * cr, Spent: 1 * cr},
			{LeaseID: w.z1.ID, Want: 1 * cr, Min: 0, Spent: 0},
			{LeaseID: w.x3.ID, Want: 1 * cr, Min: 0, Spent: 0},
			{LeaseID: "lease_missing_" + name, Want: 1, Min: 1, Spent: 0},
			{LeaseID: w.x2.ID, Want: 100 * cr, Min: 20 * cr, Spent: 0},
			{LeaseID: w.y1.ID, Want: 1 * cr, Min: 0, Spent: 2 * cr},
		}
		return w
	}
	batch, single := setUp("batch"), setUp("single")
	c.Advance(10 * time.Second)
	expires := c.Now().Add(time.Minute)

	got, err := s.ExtendLeases(ctx(), batch.extends, time.Minute)
	require.NoError(t, err)
	require.Len(t, got, len(batch.extends))
	var want []store.LeaseExtendResult
	for _, e := range single.extends {
		l, err := s.ExtendLease(ctx(), e.LeaseID, e.Want, e.Min, e.Spent, time.Minute)
		want = append(want, store.LeaseExtendResult{Lease: l, Err: err})
	}

	// Worked out from the grant rule (amounts in µcr):
	open := func(granted, reported int64) ledger.Lease {
		return ledger.Lease{State: ledger.LeaseOpen, Granted: granted, Reported: reported, Reservation: granted}
	}
	type outcome struct {
		lease     ledger.Lease
		expires   time.Time
		available int64
		recall    int64
		err       error
	}
	expected := []outcome{
		// x1: a quarter of the 85 available (21.25) is less than the 30 wanted.
		{open(31_250_000, 3*cr), expires, 63_750_000, 0, nil},
		// y1: 4 available cannot cover 5; y2's 2, returned, could: recalled. The answer is
		// the lease as it was.
		{open(2*cr, 0), expires.Add(-10 * time.Second), 4 * cr, 2 * cr, store.ErrInsufficient},
		{ledger.Lease{}, time.Time{}, 0, 0, store.ErrSuspended},
		{ledger.Lease{}, time.Time{}, 0, 0, store.ErrLeaseClosed},
		{ledger.Lease{}, time.Time{}, 0, 0, store.ErrNotFound},
		// x2: a quarter of 63.75 is under the minimum of 20, which 63.75 covers: exactly 20.
		{open(25*cr, 0), expires, 43_750_000, 0, nil},
		// y1 again: a quarter of the 4 available is the 1 wanted.
		{open(3*cr, 2*cr), expires, 3 * cr, 0, nil},
	}
	shape := func(r store.LeaseExtendResult) outcome {
		o := outcome{lease: r.Lease.Lease, expires: r.Lease.ExpiresAt, available: r.Lease.AccountAvailable,
			recall: r.Lease.Recallable, err: r.Err}
		if r.Err != nil && !errors.Is(r.Err, store.ErrInsufficient) {
			o.available = 0 // a closed, suspended or unknown lease's answer carries no figures
		}
		return o
	}
	for i := range expected {
		require.Equal(t, expected[i], shape(want[i]), "one by one, extend %d", i)
		require.Equal(t, expected[i], shape(got[i]), "in a batch, extend %d", i)
		if got[i].Err == nil {
			require.Equal(t, batch.extends[i].LeaseID, got[i].Lease.ID)
		}
	}

	for _, pair := range [][2]store.Account{{batch.x, single.x}, {batch.y, single.y}, {batch.z, single.z}} {
		b, o := balance(t, s, pair[0].ID), balance(t, s, pair[1].ID)
		require.Equal(t, [3]int64{o.Balance, o.Reserved, o.Available()}, [3]int64{b.Balance, b.Reserved, b.Available()})
	}
	require.Equal(t, [2]int64{100 * cr, 56_250_000}, [2]int64{balance(t, s, batch.x.ID).Balance, balance(t, s, batch.x.ID).Reserved})
	require.Equal(t, [2]int64{8 * cr, 5 * cr}, [2]int64{balance(t, s, batch.y.ID).Balance, balance(t, s, batch.y.ID).Reserved})
	for _, w := range []*twin{batch, single} {
		ids, err := s.RecalledLeases(ctx(), w.edgeOth, 10)
		require.NoError(t, err)
		require.Equal(t, []string{w.y2.ID}, ids, "the refused item's recall committed with the batch")
	}

	// An empty batch changes nothing.
	none, err := s.ExtendLeases(ctx(), nil, time.Minute)
	require.NoError(t, err)
	require.Empty(t, none)
}

// testLeaseExtendBatchConcurrent: two edges send batches at once over the same accounts,
// their leases in random orders, with minimums that some accounts cannot cover, while a
// third party grants and releases: no batch fails (on PostgreSQL a lock-order cycle would
// be a "deadlock detected" error), no account goes below zero, every reservation is what
// its lease was granted, and the books audit.
func testLeaseExtendBatchConcurrent(t *testing.T, s store.Store, _ *Clock) {
	const accounts, rounds = 8, 15
	seed := rand.Uint64()
	var accts []store.Account
	leases := map[string][]string{} // edge → its leases, one per account
	for i := range accounts {
		a := newAccount(t, s, int64(2+i))
		accts = append(accts, a)
		for _, edge := range []string{"e1", "e2"} {
			l, err := s.GrantLease(ctx(), store.LeaseGrant{AccountID: a.ID, EdgeID: edge, Want: 100_000, Min: 1, TTL: time.Minute})
			require.NoError(t, err)
			leases[edge] = append(leases[edge], l.ID)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3*rounds)
	for w, edge := range []string{"e1", "e2"} {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for r := range rounds {
				ids := append([]string(nil), leases[edge]...)
				rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
				extends := make([]store.LeaseExtend, len(ids))
				for i, id := range ids {
					want := rng.Int64N(2 * cr)
					extends[i] = store.LeaseExtend{LeaseID: id, Want: want, Min: rng.Int64N(want + 1), Spent: 0}
				}
				res, err := s.ExtendLeases(ctx(), extends, time.Minute)
				if err != nil {
					errs <- fmt.Errorf("seed %d edge %s round %d: %w", seed, edge, r, err)
					return
				}
				for i, x := range res {
					if x.Err != nil && !errors.Is(x.Err, store.ErrInsufficient) {
						errs <- fmt.Errorf("seed %d edge %s round %d item %d: %w", seed, edge, r, i, x.Err)
					}
					if x.Err == nil && x.Lease.AccountAvailable < 0 {
						errs <- fmt.Errorf("seed %d: %s left %d available", seed, x.Lease.AccountID, x.Lease.AccountAvailable)
					}
				}
			}
		})
	}
	wg.Go(func() { // a third node's grants and releases on the same accounts
		for r := range rounds {
			a := accts[r%accounts]
			l, err := s.GrantLease(ctx(), store.LeaseGrant{AccountID: a.ID, EdgeID: "e3", Want: 50_000, Min: 1, TTL: time.Minute})
			if errors.Is(err, store.ErrInsufficient) {
				continue
			}
			if err == nil {
				_, err = s.ReleaseLease(ctx(), l.ID, 0)
			}
			if err != nil {
				errs <- fmt.Errorf("seed %d: third node: %w", seed, err)
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for _, a := range accts {
		got := balance(t, s, a.ID)
		require.GreaterOrEqual(t, got.Available(), int64(0), "seed %d: %s", seed, a.ID)
		require.Equal(t, a.Balance, got.Balance)
	}
}
