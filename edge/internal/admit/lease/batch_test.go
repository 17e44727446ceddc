package lease_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/admit"
	"tollgate/edge/internal/admit/lease"
	"tollgate/edge/internal/admit/lease/leasetest"
	"tollgate/edge/internal/ledger"
	"tollgate/pkg/ledgerapi"
)

// warmLeases admits and finishes one request on each of n accounts, so that each holds a
// lease that was used; it returns the leases' ids.
func warmLeases(t *testing.T, f *leasetest.Ledger, a *lease.Admitter, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		acct := fmt.Sprint("a", i)
		f.SetBalance(acct, 1_000_000_000)
		tk, err := a.Admit(acct, 1000)
		require.NoError(t, err)
		a.Finish(tk, 1000)
		ids[i] = tk.LeaseID
	}
	return ids
}

func totalExtends(f *leasetest.Ledger, n int) int {
	total := 0
	for i := range n {
		total += f.ExtendsOf(fmt.Sprint("a", i))
	}
	return total
}

// The background refreshes of many leases coming due together take one ledgerd call per
// ledgerapi.ExtendBatchMax leases, and each lease gets its own result: new terms, or retired
// when ledgerd closed it, does not know it or suspended its account.
func TestBackgroundRefreshesAreBatched(t *testing.T) {
	const n = 600
	f := leasetest.New()
	f.SetTTL(10 * time.Second)
	c := newClock()
	a := newAdmitter(t, f, "e1", func(cfg *lease.Config) { cfg.Now = c.Now; cfg.CacheMax = 10 * n })
	ids := warmLeases(t, f, a, n)
	require.Equal(t, n, f.Count("grant"))
	// Refusals for three of them; the rest get a longer TTL from their extend.
	f.CloseLease(ids[0])
	f.ForgetLease(ids[1])
	f.SetSuspended("a2", true)
	f.SetTTL(30 * time.Second)

	c.Advance(6 * time.Second) // past half the TTL, used since the grant: the sweep refreshes them
	eventually(t, func() bool { return totalExtends(f, n) == n-3 }, "every lease extended once")
	batches := f.Batches() // the round's calls run concurrently: in any order
	slices.Sort(batches)
	require.Equal(t, []int{88, 256, 256}, batches, "⌈600/256⌉ calls, where single extends took 600")
	require.Zero(t, f.Count("extend"))

	// The new terms were applied: at 16 s the leases are past their first expiry (10 s) and
	// still admit locally.
	c.Advance(10 * time.Second)
	time.Sleep(50 * time.Millisecond) // a few sweeps at the new time
	for i := 3; i < n; i++ {
		tk, err := a.Admit(fmt.Sprint("a", i), 1000)
		require.NoError(t, err)
		require.Equal(t, ids[i], tk.LeaseID, "account a%d keeps its lease", i)
		a.Finish(tk, 10)
	}
	require.Equal(t, n, f.Count("grant"), "no new lease for the extended ones")
	// The refused ones were retired: a closed or unknown lease is replaced, a suspended
	// account refused.
	for i := range 2 {
		tk, err := a.Admit(fmt.Sprint("a", i), 1000)
		require.NoError(t, err)
		require.NotEqual(t, ids[i], tk.LeaseID)
		a.Finish(tk, 10)
	}
	_, err := a.Admit("a2", 1000)
	require.ErrorIs(t, err, admit.ErrSuspended)
}

// A ledgerd without the batch extend (edges upgraded first) gets one call per lease: the
// round that learnt it goes to single extends at once, and so do later rounds.
func TestBackgroundRefreshesFallBackToSingleExtends(t *testing.T) {
	const n = 10
	f := leasetest.New()
	f.SetBatch(false)
	f.SetTTL(10 * time.Second)
	c := newClock()
	a := newAdmitter(t, f, "e1", func(cfg *lease.Config) { cfg.Now = c.Now })
	warmLeases(t, f, a, n)

	c.Advance(6 * time.Second)
	eventually(t, func() bool { return totalExtends(f, n) == n }, "every lease extended by a single call")
	require.Equal(t, []int{n}, f.Batches(), "the batch was tried once")
	require.Equal(t, n, f.Count("extend"))

	for i := range n { // keep them in use, so the next sweep refreshes them again
		tk, err := a.Admit(fmt.Sprint("a", i), 1000)
		require.NoError(t, err)
		a.Finish(tk, 10)
	}
	c.Advance(6 * time.Second)
	eventually(t, func() bool { return totalExtends(f, n) == 2*n }, "extended again")
	require.Equal(t, []int{n}, f.Batches(), "not tried again before batchRetry")
	require.Equal(t, 2*n, f.Count("extend"))
}

// A failed batch call leaves the leases usable until their local expiry; the sweep asks
// again and, once ledgerd answers, they are extended.
func TestFailedBatchKeepsLeases(t *testing.T) {
	const n = 5
	f := leasetest.New()
	f.SetTTL(10 * time.Second)
	c := newClock()
	a := newAdmitter(t, f, "e1", func(cfg *lease.Config) { cfg.Now = c.Now })
	ids := warmLeases(t, f, a, n)
	f.SetDown(true)
	c.Advance(6 * time.Second)
	eventually(t, func() bool { return f.Count("extend_batch") > 0 }, "a batch was tried")
	for i := range n {
		tk, err := a.Admit(fmt.Sprint("a", i), 1000)
		require.NoError(t, err, "within the lease while ledgerd is down")
		require.Equal(t, ids[i], tk.LeaseID)
		a.Finish(tk, 10)
	}
	f.SetDown(false)
	eventually(t, func() bool { return totalExtends(f, n) == n }, "extended once ledgerd answers")
	require.Zero(t, f.Count("extend"))
}

// The extend a request waits for stays a single call, made at once: batching is only for
// the background.
func TestRequestExtendIsNotBatched(t *testing.T) {
	f := leasetest.New()
	f.SetBalance("a1", 1_000_000_000)
	a := newAdmitter(t, f, "e1")
	running, err := a.Admit("a1", 1000) // a lease of 4,000
	require.NoError(t, err)
	tk, err := a.Admit("a1", 10_000) // needs more: extended by at least the shortfall
	require.NoError(t, err)
	require.Equal(t, running.LeaseID, tk.LeaseID)
	require.Equal(t, 1, f.Count("extend"))
	a.Finish(running, 1000)
	a.Finish(tk, 1000)
}

// slowBatches is a ledger whose batch extend waits for its context.
type slowBatches struct {
	*leasetest.Ledger
	mu      sync.Mutex
	calls   int
	entered chan struct{}
	ended   chan error
}

func (s *slowBatches) ExtendMany(ctx context.Context, _ []ledgerapi.ExtendItem) ([]ledger.ExtendResult, error) {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	s.entered <- struct{}{}
	<-ctx.Done()
	s.ended <- ctx.Err()
	return nil, ctx.Err()
}

// Close stops the batcher: a batch call in flight is cancelled rather than waited for, and
// no call follows.
func TestCloseStopsBatcher(t *testing.T) {
	f := &slowBatches{Ledger: leasetest.New(), entered: make(chan struct{}, 1), ended: make(chan error, 1)}
	f.SetTTL(10 * time.Second)
	c := newClock()
	a, err := lease.New(lease.Config{EdgeID: "e1", Timeout: time.Minute, Now: c.Now, RecallPoll: 10 * time.Millisecond,
		Registerer: prometheus.NewRegistry()}, f, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	warmLeases(t, f.Ledger, a, 3)
	c.Advance(6 * time.Second)
	select {
	case <-f.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no batch call")
	}
	start := time.Now()
	require.NoError(t, a.Close(context.Background()))
	require.Less(t, time.Since(start), 10*time.Second, "Close waited for the call's timeout (1 minute)")
	require.True(t, errors.Is(<-f.ended, context.Canceled))
	time.Sleep(100 * time.Millisecond)
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Equal(t, 1, f.calls, "no batch call after Close")
	open, _ := f.Leases()
	require.Zero(t, open, "Close still returned the leases")
}
