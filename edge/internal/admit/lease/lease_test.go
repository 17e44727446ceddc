package lease_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/admit"
	"tollgate/edge/internal/admit/lease"
	"tollgate/edge/internal/admit/lease/leasetest"
)

// clock is a settable test clock; it keeps time.Now's monotonic reading so Sub works.
type clock struct {
	base time.Time
	off  atomic.Int64
}

func newClock() *clock                   { return &clock{base: time.Now()} }
func (c *clock) Now() time.Time          { return c.base.Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }
func eventually(t *testing.T, f func() bool, msg string, args ...any) {
	t.Helper()
	require.Eventually(t, f, 10*time.Second, 5*time.Millisecond, append([]any{msg}, args...)...)
}

type opts func(*lease.Config)

func newAdmitter(t *testing.T, f *leasetest.Ledger, edge string, o ...opts) *lease.Admitter {
	t.Helper()
	cfg := lease.Config{EdgeID: edge, Timeout: time.Second, CacheMax: 1000, Window: 5 * time.Second,
		RecallPoll: 10 * time.Millisecond, RecallWait: 2 * time.Second, Registerer: prometheus.NewRegistry()}
	for _, fn := range o {
		fn(&cfg)
	}
	a, err := lease.New(cfg, f, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Close(ctx)
	})
	return a
}

// admissions reads tollgate_edge_lease_admissions_total{path} from reg.
func admissions(t *testing.T, reg *prometheus.Registry, path string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "tollgate_edge_lease_admissions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "path" && lp.GetValue() == path {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no admissions metric for path %s", path)
	return 0
}

func TestWarmAdmissionIsLocal(t *testing.T) {
	f := leasetest.New()
	f.SetBalance("a1", 1_000_000_000)
	reg := prometheus.NewRegistry()
	a := newAdmitter(t, f, "e1", func(cfg *lease.Config) { cfg.Registerer = reg })

	// The first request grants a lease of four holds; the next three are local.
	for i := range 4 {
		tk, err := a.Admit("a1", 1000)
		require.NoError(t, err, "request %d", i)
		require.NotEmpty(t, tk.LeaseID)
		require.Equal(t, int64(1000), tk.Hold)
		a.Finish(tk, 1000)
	}
	require.Equal(t, 1, f.Count("grant"))
	require.Equal(t, int64(4000), f.Wants()[0])
	require.Equal(t, float64(1), admissions(t, reg, "ledgerd"))
	require.Equal(t, float64(3), admissions(t, reg, "local"))
}

// A burst of requests for an account whose lease is cold waits on one call.
func TestConcurrentMissesShareOneCall(t *testing.T) {
	f := leasetest.New()
	f.SetBalance("a1", 1_000_000_000)
	entered, release := f.Block()
	a := newAdmitter(t, f, "e1")

	var wg sync.WaitGroup
	tickets := make(chan admit.Ticket, 21)
	errs := make(chan error, 21)
	admitOne := func(hold int64) {
		defer wg.Done()
		tk, err := a.Admit("a1", hold)
		if err != nil {
			errs <- err
			return
		}
		tickets <- tk
	}
	wg.Add(1)
	go admitOne(100_000) // its lease: 4 × 100,000
	<-entered            // the leader's grant is in flight and blocked
	for range 20 {
		wg.Add(1)
		go admitOne(1000) // these fit in what the leader's lease has left
	}
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, tickets, 21)
	require.Equal(t, 1, f.Count("grant"), "one call for the whole burst")
	require.Zero(t, f.Count("extend"))
	close(tickets)
	for tk := range tickets {
		a.Finish(tk, tk.Hold)
	}
}

func TestInsufficientSaysWhatIsAvailable(t *testing.T) {
	f := leasetest.New()
	f.SetBalance("a1", 5000)
	a := newAdmitter(t, f, "e1")

	_, err := a.Admit("a1", 6000)
	var ins *admit.InsufficientError
	require.ErrorAs(t, err, &ins)
	require.Equal(t, admit.InsufficientError{Hold: 6000, Available: 5000}, *ins)

	// Low balance: exactly the hold is granted (4 holds would be more than a quarter).
	tk, err := a.Admit("a1", 3000)
	require.NoError(t, err)
	require.Equal(t, int64(3000), f.Reserved("a1"))
	// While it runs, only 2000 are left to this node.
	_, err = a.Admit("a1", 2500)
	require.ErrorAs(t, err, &ins)
	require.Equal(t, admit.InsufficientError{Hold: 2500, Available: 2000}, *ins)
	a.Finish(tk, 1000)
	// The account is low, so the idle lease went back with its spend: 4000 are available.
	eventually(t, func() bool { return f.OpenLeases("a1") == 0 }, "tight lease released when idle")
	require.Equal(t, int64(1000), f.ReportedSpend("a1"))
	tk, err = a.Admit("a1", 4000)
	require.NoError(t, err)
	a.Finish(tk, 4000)
	_, err = a.Admit("a1", 1)
	require.ErrorAs(t, err, &ins)
	eventually(t, func() bool { return f.OpenLeases("a1") == 0 }, "released")
	require.Equal(t, int64(5000), f.ReportedSpend("a1"), "every micro-credit spent, none overdrawn")
}

// The lease asked for follows the account's recent spend on the node.
func TestLeaseSizeFollowsSpend(t *testing.T) {
	f := leasetest.New()
	f.SetBalance("a1", 1_000_000_000_000)
	c := newClock()
	a := newAdmitter(t, f, "e1", func(cfg *lease.Config) { cfg.Now = c.Now; cfg.SizeMax = 10_000_000 })

	// 5,000 µcr per second (50 per 10 ms) for 3 seconds.
	for range 300 {
		tk, err := a.Admit("a1", 100)
		require.NoError(t, err)
		a.Finish(tk, 50)
		c.Advance(10 * time.Millisecond)
	}
	calls := f.Count("grant") + f.Count("extend")
	require.Less(t, calls, 30, "leases grew with the spend: far fewer calls than requests")
	biggest := slices.Max(f.Wants())
	// Window (5 s) × 5,000 µcr/s = 25,000, less what the lease still had when topped up.
	require.Greater(t, biggest, int64(10_000))
	require.LessOrEqual(t, biggest, int64(26_000))
}

// Requests that run long (streams) and arrive one after another grow the lease by doubling
// (each call asks room for as many again as are running): about log2(N) calls for N of them,
// not one per few requests.
func TestLeaseGrowsGeometricallyWithRunningRequests(t *testing.T) {
	f := leasetest.New()
	f.SetBalance("a1", 1_000_000_000_000)
	a := newAdmitter(t, f, "e1", func(cfg *lease.Config) { cfg.SizeMax = 10_000_000 })
	const n = 256
	tickets := make([]admit.Ticket, 0, n)
	for i := range n {
		tk, err := a.Admit("a1", 1000)
		require.NoError(t, err, "request %d", i)
		tickets = append(tickets, tk)
	}
	// 4 holds, then 8, 16, … 256: 7 calls; a background top-up may add a few.
	require.LessOrEqual(t, f.Count("grant")+f.Count("extend"), 12, "calls for %d running requests", n)
	for _, tk := range tickets {
		a.Finish(tk, 1000)
	}
}

// Two nodes share a small balance; requests alternate between them until one is refused.
// The refusal must be true: what is left cannot cover the hold (no credit is stuck in the
// other node's lease).
func TestBalanceSpreadOverNodesIsSpendable(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	for round := range 20 {
		f := leasetest.New()
		const hold, cost = 10_000, 3_000
		balance := int64(20_000 + rng.IntN(200_000))
		acct := fmt.Sprint("a", round)
		f.SetBalance(acct, balance)
		nodes := []*lease.Admitter{newAdmitter(t, f, "e1"), newAdmitter(t, f, "e2"), newAdmitter(t, f, "e3")}
		var spent int64
		for i := 0; ; i++ {
			n := nodes[rng.IntN(3)]
			tk, err := n.Admit(acct, hold)
			if err != nil {
				var ins *admit.InsufficientError
				require.ErrorAs(t, err, &ins, "seed %d", seed)
				require.Less(t, balance-spent, int64(hold), "seed %d round %d: refused after %d requests with %d left", seed, round, i, balance-spent)
				break
			}
			n.Finish(tk, cost)
			spent += cost
			require.LessOrEqual(t, spent, balance, "seed %d: overdrawn", seed)
		}
	}
}

func TestLedgerUnreachable(t *testing.T) {
	f := leasetest.New()
	f.SetBalance("a1", 1_000_000_000)
	a := newAdmitter(t, f, "e1")
	tk, err := a.Admit("a1", 1000) // lease of 4000
	require.NoError(t, err)
	a.Finish(tk, 1000)

	f.SetDown(true)
	for range 3 { // 3000 left in the lease
		tk, err := a.Admit("a1", 1000)
		require.NoError(t, err, "within the lease")
		a.Finish(tk, 1000)
	}
	_, err = a.Admit("a1", 1000)
	require.ErrorIs(t, err, admit.ErrUnavailable, "beyond the lease")

	f.SetDown(false)
	tk, err = a.Admit("a1", 1000)
	require.NoError(t, err)
	a.Finish(tk, 500)
}

func TestExpiredLeaseIsNotUsed(t *testing.T) {
	f := leasetest.New()
	f.SetTTL(10 * time.Second)
	f.SetBalance("a1", 1_000_000_000)
	c := newClock()
	a := newAdmitter(t, f, "e1", func(cfg *lease.Config) { cfg.Now = c.Now })
	tk, err := a.Admit("a1", 1000)
	require.NoError(t, err)
	a.Finish(tk, 10)
	f.SetDown(true)
	c.Advance(10 * time.Second)
	// The sweep retires it; a request then needs ledgerd.
	eventually(t, func() bool {
		tk, err := a.Admit("a1", 1000)
		if err == nil {
			a.Finish(tk, 0)
		}
		return errors.Is(err, admit.ErrUnavailable)
	}, "an expired lease admits nothing, whatever it has left")
	f.SetDown(false)
}

// A request that costs more than its hold overdraws the lease; the node must obtain the
// deficit before admitting more, so an account that cannot cover it is refused.
func TestOverrunIsRecoveredBeforeMoreIsAdmitted(t *testing.T) {
	f := leasetest.New()
	f.SetBalance("a1", 10_000)
	a := newAdmitter(t, f, "e1")
	tk, err := a.Admit("a1", 2500) // a quarter of 10,000: exactly 2500 granted
	require.NoError(t, err)
	a.Finish(tk, 9000) // estimate error: the lease absorbs it
	_, err = a.Admit("a1", 2000)
	var ins *admit.InsufficientError
	require.ErrorAs(t, err, &ins, "9000 spent, 1000 left: a 2000 hold cannot be covered")
	require.Equal(t, admit.InsufficientError{Hold: 2000, Available: 1000}, *ins)
	require.NoError(t, a.Close(context.Background()))
	require.Equal(t, int64(9000), f.ReportedSpend("a1"))
}

func TestRecalledLeaseIsReturned(t *testing.T) {
	f := leasetest.New()
	f.SetBalance("a1", 1_000_000)
	a := newAdmitter(t, f, "e1")
	tk, err := a.Admit("a1", 1000)
	require.NoError(t, err)
	f.RecallAll()
	time.Sleep(50 * time.Millisecond) // several polls: the running request keeps it open
	require.Equal(t, 1, f.OpenLeases("a1"))
	a.Finish(tk, 700)
	eventually(t, func() bool { return f.OpenLeases("a1") == 0 }, "recalled lease released once idle")
	require.Equal(t, int64(700), f.ReportedSpend("a1"))
	// The next request gets a new lease.
	tk, err = a.Admit("a1", 1000)
	require.NoError(t, err)
	a.Finish(tk, 1)
	require.Equal(t, 2, f.Count("grant"))
}

func TestEvictedLeasesAreReturned(t *testing.T) {
	f := leasetest.New()
	a := newAdmitter(t, f, "e1", func(cfg *lease.Config) { cfg.CacheMax = 5 })
	var want int64
	for i := range 200 {
		acct := fmt.Sprint("a", i)
		f.SetBalance(acct, 1_000_000)
		tk, err := a.Admit(acct, 1000)
		require.NoError(t, err)
		a.Finish(tk, int64(i))
		want += int64(i)
	}
	// At most the 5 cached accounts keep their lease; every other was released with its spend.
	eventually(t, func() bool {
		open, _ := f.Leases()
		return open <= 5
	}, "leases of accounts that left the cache are released")
	require.NoError(t, a.Close(context.Background()))
	open, got := f.Leases()
	require.Zero(t, open, "Close returns the rest")
	require.Equal(t, want, got, "every spend reported exactly once")
}

func TestCloseReturnsLeasesWithSpend(t *testing.T) {
	f := leasetest.New()
	f.SetBalance("a1", 1_000_000_000)
	f.SetBalance("a2", 1_000_000_000)
	a := newAdmitter(t, f, "e1")
	for i := range 10 {
		for _, acct := range []string{"a1", "a2"} {
			tk, err := a.Admit(acct, 1000)
			require.NoError(t, err)
			a.Finish(tk, int64(100+i))
		}
	}
	require.NoError(t, a.Close(context.Background()))
	require.Zero(t, f.OpenLeases("a1")+f.OpenLeases("a2"))
	require.Equal(t, int64(1045), f.ReportedSpend("a1"))
	require.Equal(t, int64(1045), f.ReportedSpend("a2"))
	require.NoError(t, a.Close(context.Background()), "idempotent")
}

func TestBalanceIsNetOfHolds(t *testing.T) {
	f := leasetest.New()
	f.SetBalance("a1", 1_000_000)
	a := newAdmitter(t, f, "e1")
	tk, err := a.Admit("a1", 10_000) // lease of 40,000
	require.NoError(t, err)
	b, err := a.Balance(context.Background(), "a1")
	require.NoError(t, err)
	require.Equal(t, int64(1_000_000), b.BalanceMicrocredits)
	// ledgerd reserves the whole lease; this node knows only the running hold is taken.
	require.Equal(t, int64(990_000), b.AvailableMicrocredits)
	a.Finish(tk, 4000)
	b, err = a.Balance(context.Background(), "a1")
	require.NoError(t, err)
	require.Equal(t, int64(996_000), b.AvailableMicrocredits)
}

func TestSuspendedAccount(t *testing.T) {
	f := leasetest.New()
	a := newAdmitter(t, f, "e1")
	_, err := a.Admit("nobody", 10)
	require.ErrorIs(t, err, admit.ErrUnavailable, "an account ledgerd does not know")
	require.False(t, errors.Is(err, admit.ErrSuspended))
}

// Many goroutines on two nodes admit and finish against one account: the books add up.
func TestConcurrentAdmissionsAddUp(t *testing.T) {
	f := leasetest.New()
	const balance = 5_000_000
	f.SetBalance("a1", balance)
	nodes := []*lease.Admitter{newAdmitter(t, f, "e1"), newAdmitter(t, f, "e2")}
	var spent atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := nodes[w%2]
			for {
				tk, err := n.Admit("a1", 20_000)
				if err != nil {
					return
				}
				spent.Add(7_000)
				n.Finish(tk, 7_000)
			}
		}()
	}
	wg.Wait()
	require.LessOrEqual(t, spent.Load(), int64(balance))
	for _, n := range nodes {
		require.NoError(t, n.Close(context.Background()))
	}
	require.Equal(t, spent.Load(), f.ReportedSpend("a1"))
	require.Greater(t, spent.Load(), int64(balance-20_000*16), "refusals came only when holds in flight filled what was left")
}

func TestAdmitAllocatesNothingWithAWarmLease(t *testing.T) {
	f := leasetest.New()
	f.SetBalance("a1", 1<<50)
	a := newAdmitter(t, f, "e1", func(cfg *lease.Config) { cfg.SizeMax = 1 << 40 })
	tk, err := a.Admit("a1", 1<<30) // a lease of 4 × 2^30
	require.NoError(t, err)
	a.Finish(tk, 0)
	allocs := testing.AllocsPerRun(1000, func() {
		tk, err := a.Admit("a1", 1)
		if err != nil {
			panic(err)
		}
		a.Finish(tk, 1)
	})
	require.Zero(t, allocs)
}

// A lease nobody used for half its TTL goes back; one with a request running (a long stream)
// is extended instead, however long the request takes.
func TestIdleLeaseReturnedBusyLeaseKept(t *testing.T) {
	f := leasetest.New()
	f.SetTTL(10 * time.Second)
	f.SetBalance("idle", 1_000_000)
	f.SetBalance("busy", 1_000_000)
	c := newClock()
	a := newAdmitter(t, f, "e1", func(cfg *lease.Config) { cfg.Now = c.Now })
	tk, err := a.Admit("idle", 1000)
	require.NoError(t, err)
	a.Finish(tk, 100)
	running, err := a.Admit("busy", 1000)
	require.NoError(t, err)

	for range 6 { // six TTLs: each time the busy lease is in the second half of its life
		before := f.ExtendsOf("busy")
		c.Advance(6 * time.Second)
		eventually(t, func() bool { return f.ExtendsOf("busy") > before }, "the busy lease is extended")
	}
	eventually(t, func() bool { return f.OpenLeases("idle") == 0 }, "idle lease released")
	require.Equal(t, int64(100), f.ReportedSpend("idle"))
	require.Equal(t, 1, f.OpenLeases("busy"), "the running request's lease is kept")
	a.Finish(running, 700)
	tk, err = a.Admit("busy", 1000)
	require.NoError(t, err, "and it is still usable")
	a.Finish(tk, 1)
	require.Equal(t, 2, f.Count("grant"))
}
