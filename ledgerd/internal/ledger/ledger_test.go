package ledger_test

import (
	"flag"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/ledger"
)

const cr = ledger.MicrocreditsPerCredit

func TestCheckBalanced(t *testing.T) {
	for _, tc := range []struct {
		name string
		ps   []ledger.Posting
		ok   bool
	}{
		{"empty", nil, true},
		{"pair", []ledger.Posting{{"a", 5, 1}, {"b", -5, -1}}, true},
		{"three", []ledger.Posting{{"a", 5, 0}, {"b", -3, 2}, {"c", -2, -2}}, true},
		{"unbalanced credits", []ledger.Posting{{"a", 5, 0}, {"b", -4, 0}}, false},
		{"unbalanced USD", []ledger.Posting{{"a", 5, 1}, {"b", -5, 0}}, false},
		{"same account twice", []ledger.Posting{{"a", 5, 0}, {"a", -5, 0}}, false},
		{"no account", []ledger.Posting{{"", 0, 0}}, false},
		{"overflow", []ledger.Posting{{"a", 1 << 62, 0}, {"b", 1 << 62, 0}, {"c", -(1 << 62), 0}, {"d", -(1 << 62), 0}}, false},
		{"USD overflow", []ledger.Posting{{"a", 0, 1 << 62}, {"b", 0, 1 << 62}, {"c", 0, -(1 << 62)}, {"d", 0, -(1 << 62)}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ledger.CheckBalanced(tc.ps)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, ledger.ErrInvariant)
			}
		})
	}
}

func TestPaidMicrocredits(t *testing.T) {
	for _, tc := range []struct {
		name              string
		credits, usd      int64 // µcr, µ$
		wantPaid, wantBon int64
	}{
		{"credits_1k at base", 1000 * cr, 5_000_000, 1000 * cr, 0},
		{"credits_105k: 100k paid, 5k bonus", 105_000 * cr, 500_000_000, 100_000 * cr, 5000 * cr},
		{"credits_275k: 250k paid, 25k bonus", 275_000 * cr, 1_250_000_000, 250_000 * cr, 25_000 * cr},
		{"free grant is all bonus", 10 * cr, 0, 0, 10 * cr},
		{"premium price has no bonus", 100 * cr, 1_000_000, 100 * cr, 0},
		{"one micro-dollar short of base", 1 * cr, 4999, 4999 * 200, 1*cr - 4999*200},
		{"huge amount does not overflow", 1 * cr, 999_999_999_999_999_999, 1 * cr, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			paid, bonus := ledger.PaidMicrocredits(tc.credits, tc.usd)
			require.Equal(t, tc.wantPaid, paid)
			require.Equal(t, tc.wantBon, bonus)
		})
	}
}

func TestPostings(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   func() ([]ledger.Posting, error)
		want []ledger.Posting
		err  error
	}{
		{"paid top-up at base", func() ([]ledger.Posting, error) { return ledger.TopUpPostings("a1", 1000*cr, 5_000_000, "card", 0) },
			[]ledger.Posting{{"customer:a1", 1000 * cr, 5_000_000}, {"cash:card", -1000 * cr, -5_000_000}}, nil},
		{"tier bonus from the bonus account", func() ([]ledger.Posting, error) {
			return ledger.TopUpPostings("a1", 105_000*cr, 500_000_000, "admin", 0)
		}, []ledger.Posting{{"customer:a1", 105_000 * cr, 500_000_000}, {"cash:admin", -100_000 * cr, -500_000_000}, {"bonus", -5000 * cr, 0}}, nil},
		{"grant", func() ([]ledger.Posting, error) { return ledger.TopUpPostings("a1", 10*cr, 0, "admin", 0) },
			[]ledger.Posting{{"customer:a1", 10 * cr, 0}, {"bonus", -10 * cr, 0}}, nil},
		{"top-up covering an overdraft recognizes revenue", func() ([]ledger.Posting, error) {
			return ledger.TopUpPostings("a1", 1000*cr, 5_000_000, "admin", 15_000)
		}, []ledger.Posting{{"customer:a1", 1000 * cr, 4_985_000}, {"cash:admin", -1000 * cr, -5_000_000}, {"revenue", 0, 15_000}}, nil},
		{"recognized beyond paid", func() ([]ledger.Posting, error) { return ledger.TopUpPostings("a1", 1, 5, "admin", 6) }, nil, ledger.ErrInvariant},
		{"usage", func() ([]ledger.Posting, error) { return ledger.UsagePostings("a1", 2*cr, 10_000) },
			[]ledger.Posting{{"customer:a1", -2 * cr, -10_000}, {"revenue", 2 * cr, 10_000}}, nil},
		{"free usage has no postings", func() ([]ledger.Posting, error) { return ledger.UsagePostings("a1", 0, 0) }, nil, nil},
		{"negative usage", func() ([]ledger.Posting, error) { return ledger.UsagePostings("a1", -1, 0) }, nil, ledger.ErrInvariant},
		{"refund", func() ([]ledger.Posting, error) { return ledger.RefundPostings("a1", 5*cr, 25_000) },
			[]ledger.Posting{{"customer:a1", -5 * cr, -25_000}, {"refunds", 5 * cr, 25_000}}, nil},
		{"forfeit", func() ([]ledger.Posting, error) { return ledger.ForfeitPostings("a1", 5*cr, 25_000) },
			[]ledger.Posting{{"customer:a1", -5 * cr, -25_000}, {"forfeits", 5 * cr, 25_000}}, nil},
		{"empty forfeit", func() ([]ledger.Posting, error) { return ledger.ForfeitPostings("a1", 0, 0) }, nil, ledger.ErrInvariant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps, err := tc.fn()
			require.ErrorIs(t, err, tc.err)
			if tc.err == nil {
				require.Equal(t, tc.want, ps)
				require.NoError(t, ledger.CheckBalanced(ps))
			}
		})
	}
}

func TestReverse(t *testing.T) {
	lots := []ledger.Lot{
		{ID: "old", Microcredits: 1000 * cr, MicroUSD: 5_000_000, Remaining: 400 * cr},
		{ID: "dup", Microcredits: 105_000 * cr, MicroUSD: 500_000_000, Remaining: 105_000 * cr},
	}
	bal := int64(105_400 * cr)
	nb, take, err := ledger.Reverse(bal, 0, lots, "dup")
	require.NoError(t, err)
	require.Equal(t, int64(400*cr), nb)
	require.Equal(t, ledger.Take{LotID: "dup", Microcredits: 105_000 * cr, MicroUSD: 500_000_000}, take)

	_, _, err = ledger.Reverse(bal, 0, lots, "old") // partly used
	require.ErrorIs(t, err, ledger.ErrLotUsed)
	_, _, err = ledger.Reverse(bal, 0, lots, "gone") // not open any more
	require.ErrorIs(t, err, ledger.ErrLotUsed)
	_, _, err = ledger.Reverse(bal, 401*cr, lots, "dup") // held credit is not refundable
	require.ErrorIs(t, err, ledger.ErrInsufficient)
	_, _, err = ledger.Reverse(bal+1, 0, lots, "dup")
	require.ErrorIs(t, err, ledger.ErrInvariant)
}

func TestForfeit(t *testing.T) {
	lots := []ledger.Lot{
		{ID: "a", Microcredits: 1000 * cr, MicroUSD: 5_000_000, Remaining: 400 * cr},
		{ID: "b", Microcredits: 105_000 * cr, MicroUSD: 500_000_000, Remaining: 105_000 * cr},
	}
	nb, n, takes, err := ledger.Forfeit(105_400*cr, lots)
	require.NoError(t, err)
	require.Zero(t, nb)
	require.Equal(t, int64(105_400*cr), n)
	require.Equal(t, []ledger.Take{{"b", 105_000 * cr, 500_000_000, 0}, {"a", 400 * cr, 2_000_000, 0}}, takes)
	require.Equal(t, int64(502_000_000), ledger.SumUSD(takes))

	// An overdrawn account has nothing to forfeit; its debt stays.
	nb, n, takes, err = ledger.Forfeit(-3*cr, nil)
	require.NoError(t, err)
	require.Equal(t, int64(-3*cr), nb)
	require.Zero(t, n)
	require.Empty(t, takes)
}

// The credits_105k plan: 105,000 credits for $500, so one credit is worth 500/105000 µ$·10⁶ =
// 4761.904… µ$. Revenue is recognized cumulatively with floor, so the per-credit amounts
// alternate between 4761 and 4762 and the whole lot recognizes exactly $500.
func TestChargeRecognizesAtLotPrice(t *testing.T) {
	lot := ledger.Lot{ID: "L", Microcredits: 105_000 * cr, MicroUSD: 500_000_000, Remaining: 105_000 * cr}
	bal, takes, err := ledger.Charge(105_000*cr, []ledger.Lot{lot}, 1*cr)
	require.NoError(t, err)
	require.Equal(t, int64(104_999*cr), bal)
	require.Equal(t, []ledger.Take{{"L", 1 * cr, 4761, 104_999 * cr}}, takes)

	lot.Remaining = takes[0].RemainingAfter
	bal, takes, err = ledger.Charge(bal, []ledger.Lot{lot}, 1*cr)
	require.NoError(t, err)
	require.Equal(t, int64(9523-4761), takes[0].MicroUSD) // floor(2·500e6/105000) − 4761

	lot.Remaining = takes[0].RemainingAfter
	bal, takes, err = ledger.Charge(bal, []ledger.Lot{lot}, bal)
	require.NoError(t, err)
	require.Zero(t, bal)
	require.Equal(t, int64(500_000_000-9523), takes[0].MicroUSD)
}

func TestChargeOldestFirstAndOverdraft(t *testing.T) {
	lots := []ledger.Lot{
		{ID: "old", Microcredits: 1000 * cr, MicroUSD: 5_000_000, Remaining: 10 * cr},
		{ID: "new", Microcredits: 275_000 * cr, MicroUSD: 1_250_000_000, Remaining: 275_000 * cr},
	}
	bal, takes, err := ledger.Charge(275_010*cr, lots, 30*cr)
	require.NoError(t, err)
	require.Equal(t, int64(274_980*cr), bal)
	// old: 10 credits at $0.005 = 50,000 µ$; new: 20 credits at 1250/275000 = 90,909.09… → 90,909.
	require.Equal(t, []ledger.Take{
		{"old", 10 * cr, 50_000, 0},
		{"new", 20 * cr, 90_909, 274_980 * cr},
	}, takes)

	// Charging more than the lots hold overdraws the balance; lots cover what they hold.
	one := []ledger.Lot{{ID: "x", Microcredits: 10 * cr, MicroUSD: 50_000, Remaining: 3 * cr}}
	bal, takes, err = ledger.Charge(3*cr, one, 5*cr)
	require.NoError(t, err)
	require.Equal(t, int64(-2*cr), bal)
	require.Equal(t, []ledger.Take{{"x", 3 * cr, 15_000, 0}}, takes)

	// Overdrawn accounts have no open lots; a further charge only deepens the overdraft.
	bal, takes, err = ledger.Charge(bal, nil, 1*cr)
	require.NoError(t, err)
	require.Equal(t, int64(-3*cr), bal)
	require.Empty(t, takes)

	// A top-up covers the overdraft at the new lot's price.
	nb, lot, takes, err := ledger.Credit(bal, nil, ledger.Lot{ID: "t", Microcredits: 1000 * cr, MicroUSD: 5_000_000, Remaining: 1000 * cr})
	require.NoError(t, err)
	require.Equal(t, int64(997*cr), nb)
	require.Equal(t, int64(997*cr), lot.Remaining)
	require.Equal(t, []ledger.Take{{"t", 3 * cr, 15_000, 997 * cr}}, takes)
}

func TestChargeRejectsBrokenLots(t *testing.T) {
	lots := []ledger.Lot{{ID: "x", Microcredits: 10 * cr, MicroUSD: 1, Remaining: 5 * cr}}
	_, _, err := ledger.Charge(6*cr, lots, 1) // lots and balance disagree
	require.ErrorIs(t, err, ledger.ErrInvariant)
	_, _, err = ledger.Charge(5*cr, lots, -1)
	require.ErrorIs(t, err, ledger.ErrInvariant)
	bad := []ledger.Lot{{ID: "x", Microcredits: 10, MicroUSD: 1, Remaining: 11}}
	_, _, err = ledger.Charge(11, bad, 1)
	require.ErrorIs(t, err, ledger.ErrInvariant)
}

func TestRefundNewestFirst(t *testing.T) {
	lots := []ledger.Lot{
		{ID: "a", Microcredits: 1000 * cr, MicroUSD: 5_000_000, Remaining: 500 * cr},
		{ID: "b", Microcredits: 10 * cr, MicroUSD: 0, Remaining: 10 * cr}, // promotional
		{ID: "c", Microcredits: 105_000 * cr, MicroUSD: 500_000_000, Remaining: 100 * cr},
	}
	bal := int64(610 * cr)
	_, _, err := ledger.Refund(bal, 101*cr, lots, 510*cr) // only 509 available
	require.ErrorIs(t, err, ledger.ErrInsufficient)

	nb, takes, err := ledger.Refund(bal, 0, lots, 150*cr)
	require.NoError(t, err)
	require.Equal(t, int64(460*cr), nb)
	// c: the last 100 credits of a 105k lot: 500e6 − floor(104900·500e6/105000) = 476,191 µ$.
	// b: free credit returns nothing. a: 40 credits at $0.005 = 200,000 µ$.
	require.Equal(t, []ledger.Take{
		{"c", 100 * cr, 476_191, 0},
		{"b", 10 * cr, 0, 0},
		{"a", 40 * cr, 200_000, 460 * cr},
	}, takes)
}

func TestGrantAmount(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		available, want, min int64
		got                  int64
		err                  error
	}{
		{"plenty", 1000, 100, 10, 100, nil},
		{"a quarter of what is available", 200, 100, 10, 50, nil},
		{"low balance: exactly min", 30, 100, 10, 10, nil},
		{"exactly min available", 10, 100, 10, 10, nil},
		{"below min", 9, 100, 10, 0, ledger.ErrInsufficient},
		{"overdrawn", -5, 100, 10, 0, ledger.ErrInsufficient},
		{"min above want", 100, 5, 10, 0, ledger.ErrInvariant},
		{"zero min refreshes only", -5, 5, 0, 0, nil},
		{"zero min takes a share", 12, 5, 0, 3, nil},
		{"zero min, little available", 3, 5, 0, 0, nil},
		{"zero want", 100, 0, 0, 0, nil},
		{"negative min", 100, 5, -1, 0, ledger.ErrInvariant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ledger.GrantAmount(tc.available, tc.want, tc.min)
			require.ErrorIs(t, err, tc.err)
			require.Equal(t, tc.got, got)
		})
	}
}

func TestLeaseLifecycle(t *testing.T) {
	l := ledger.NewLease(100)
	require.NoError(t, l.Check())
	l, err := l.Settle(30)
	require.NoError(t, err)
	require.Equal(t, int64(70), l.Reservation)
	l, err = l.Extend(50, 40)
	require.NoError(t, err)
	require.Equal(t, ledger.Lease{State: ledger.LeaseOpen, Granted: 150, Settled: 30, Reported: 40, Reservation: 120}, l)
	// The node spent 90 in total; 30 settled, so 60 stays reserved until it settles.
	l, err = l.Release(90)
	require.NoError(t, err)
	require.Equal(t, int64(60), l.Reservation)
	_, err = l.Extend(1, 0)
	require.ErrorIs(t, err, ledger.ErrLeaseClosed)
	_, err = l.Release(90)
	require.ErrorIs(t, err, ledger.ErrLeaseClosed)
	l, err = l.Settle(50)
	require.NoError(t, err)
	require.Equal(t, int64(10), l.Reservation)
	l, err = l.Settle(25) // settles more than reported: floored at 0
	require.NoError(t, err)
	require.Zero(t, l.Reservation)
	l, err = l.Reap()
	require.NoError(t, err)
	require.Equal(t, ledger.LeaseExpired, l.State)
	l, err = l.Settle(5) // late records still settle, reserving nothing
	require.NoError(t, err)
	require.Zero(t, l.Reservation)

	broken := ledger.Lease{State: ledger.LeaseOpen, Granted: 10, Reservation: 9}
	_, err = broken.Settle(1)
	require.ErrorIs(t, err, ledger.ErrInvariant)
}

var seed = flag.Uint64("seed", 0, "seed for randomized ledger tests (0: random)")

// TestRandomLotSequences runs random top-ups, charges and refunds and checks, independently of
// the code under test, that every lot's recognized-plus-refunded USD equals the exact cumulative
// floor of what was used from it, that a used-up lot accounts for all it was paid, and that
// the balance equals credits in minus credits out.
func TestRandomLotSequences(t *testing.T) {
	s := *seed
	if s == 0 {
		s = rand.Uint64()
	}
	t.Logf("seed %d (rerun with -seed=%d)", s, s)
	rng := rand.New(rand.NewPCG(s, s))
	for run := 0; run < 200; run++ {
		var (
			balance, in, out int64
			lots             []ledger.Lot
			usd              = map[string]int64{} // USD moved out of each lot
			orig             = map[string]ledger.Lot{}
		)
		apply := func(takes []ledger.Take) {
			for _, tk := range takes {
				usd[tk.LotID] += tk.MicroUSD
				for i := range lots {
					if lots[i].ID == tk.LotID {
						require.Equal(t, lots[i].Remaining-tk.Microcredits, tk.RemainingAfter, "seed %d", s)
						lots[i].Remaining = tk.RemainingAfter
					}
				}
			}
			open := lots[:0]
			for _, l := range lots {
				if l.Remaining > 0 {
					open = append(open, l)
				}
			}
			lots = open
		}
		for step := 0; step < 40; step++ {
			switch op := rng.IntN(10); {
			case op < 3:
				id := string(rune('A' + step))
				c := (1 + rng.Int64N(5000)) * 1000
				l := ledger.Lot{ID: id, Microcredits: c, MicroUSD: rng.Int64N(c), Remaining: c}
				orig[id] = l
				nb, nl, takes, err := ledger.Credit(balance, lots, l)
				require.NoError(t, err, "seed %d", s)
				balance, in = nb, in+c
				lots = append(lots, l)
				apply(takes)
				if nl.Remaining > 0 {
					require.Equal(t, nl, lots[len(lots)-1], "seed %d", s)
				}
			case op < 8:
				c := rng.Int64N(3_000_000)
				nb, takes, err := ledger.Charge(balance, lots, c)
				require.NoError(t, err, "seed %d", s)
				balance, out = nb, out+c
				apply(takes)
			default:
				if balance <= 0 {
					continue
				}
				c := 1 + rng.Int64N(balance)
				nb, takes, err := ledger.Refund(balance, 0, lots, c)
				require.NoError(t, err, "seed %d", s)
				balance, out = nb, out+c
				apply(takes)
			}
			require.Equal(t, in-out, balance, "seed %d", s)
		}
		remaining := map[string]int64{}
		for _, l := range lots {
			remaining[l.ID] = l.Remaining
		}
		for id, l := range orig {
			used := l.Microcredits - remaining[id]
			// Independent big-number-free check: used·usd fits in float64 only approximately,
			// so compare with integer arithmetic on values small enough for int64.
			require.Equal(t, used*l.MicroUSD/l.Microcredits, usd[id], "seed %d lot %s", s, id)
		}
	}
}
