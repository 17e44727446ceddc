// Package storetest is the one test suite every store.Store implementation must pass. The
// sqlite and postgres packages call Run with a factory that opens a fresh, empty store.
package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/store"
)

// Clock is a settable clock for tests. Safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts at a fixed instant.
func NewClock() *Clock {
	return &Clock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Factory opens a fresh, empty store using clock and closes it when t ends.
type Factory func(t *testing.T, clock func() time.Time) store.Store

const cr = ledger.MicrocreditsPerCredit

// Run runs the whole suite against open.
func Run(t *testing.T, open Factory) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s store.Store, c *Clock)
	}{
		{"Accounts", testAccounts},
		{"Keys", testKeys},
		{"TopUp", testTopUp},
		{"TopUpIdempotentConcurrent", testTopUpConcurrent},
		{"Statement", testStatement},
		{"SettleExactlyOnce", testSettle},
		{"SettleLotsAndOverdraft", testSettleLots},
		{"SettleUnknownAccount", testSettleUnknownAccount},
		{"Refund", testRefund},
		{"Leases", testLeases},
		{"LeaseSettlementAndReaper", testLeaseSettlement},
		{"LeaseReleaseOverspent", testLeaseReleaseOverspent},
		{"ConcurrentGrants", testConcurrentGrants},
		{"LeaseExtendBatch", testLeaseExtendBatch},
		{"LeaseExtendBatchConcurrent", testLeaseExtendBatchConcurrent},
		{"PruneSettled", testPrune},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // every case has its own store
			c := NewClock()
			s := open(t, c.Now)
			tc.fn(t, s, c)
			require.NoError(t, s.Check(context.Background()), "books must balance after %s", tc.name)
		})
	}
}

func u(requestID, accountID, leaseID string, cost int64) store.Usage {
	return store.Usage{RequestID: requestID, AccountID: accountID, LeaseID: leaseID, Cost: cost}
}

func ctx() context.Context { return context.Background() }

func newAccount(t *testing.T, s store.Store, credits int64) store.Account {
	t.Helper()
	a, err := s.CreateAccount(ctx(), "acme")
	require.NoError(t, err)
	if credits > 0 {
		_, _, err := s.TopUp(ctx(), store.TopUp{AccountID: a.ID, OrderID: "seed-" + a.ID, Credits: credits,
			MicroUSD: credits * 5000, Method: "admin"})
		require.NoError(t, err)
	}
	a, err = s.Account(ctx(), a.ID)
	require.NoError(t, err)
	return a
}

func balance(t *testing.T, s store.Store, id string) store.Account {
	t.Helper()
	a, err := s.Account(ctx(), id)
	require.NoError(t, err)
	return a
}

func testAccounts(t *testing.T, s store.Store, c *Clock) {
	a, err := s.CreateAccount(ctx(), "Acme Inc")
	require.NoError(t, err)
	require.NotEmpty(t, a.ID)
	got, err := s.Account(ctx(), a.ID)
	require.NoError(t, err)
	require.Equal(t, store.Account{ID: a.ID, Name: "Acme Inc", Status: store.StatusActive, CreatedAt: c.Now()}, got)

	got, err = s.SetAccountStatus(ctx(), a.ID, store.StatusSuspended)
	require.NoError(t, err)
	require.Equal(t, store.StatusSuspended, got.Status)
	got, err = s.SetAccountStatus(ctx(), a.ID, store.StatusSuspended) // idempotent
	require.NoError(t, err)
	require.Equal(t, store.StatusSuspended, got.Status)
	require.Equal(t, store.StatusSuspended, balance(t, s, a.ID).Status)
	_, err = s.SetAccountStatus(ctx(), a.ID, store.StatusActive)
	require.NoError(t, err)
	require.Equal(t, store.StatusActive, balance(t, s, a.ID).Status)

	_, err = s.Account(ctx(), "acct_missing")
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.SetAccountStatus(ctx(), "acct_missing", store.StatusActive)
	require.ErrorIs(t, err, store.ErrNotFound)

	ex, err := s.ExistingAccounts(ctx(), []string{a.ID, "acct_missing"})
	require.NoError(t, err)
	require.Equal(t, map[string]bool{a.ID: true}, ex)
	require.NoError(t, s.Ping(ctx()))
}

func hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func testKeys(t *testing.T, s store.Store, c *Clock) {
	a := newAccount(t, s, 0)
	k1, err := s.InsertKey(ctx(), store.NewKey{AccountID: a.ID, Name: "prod", Hash: hash("sk-1"), Prefix: "sk-tg-aaaa"})
	require.NoError(t, err)
	c.Advance(time.Second)
	k2, err := s.InsertKey(ctx(), store.NewKey{AccountID: a.ID, Name: "dev", Hash: hash("sk-2"), Prefix: "sk-tg-bbbb"})
	require.NoError(t, err)
	_, err = s.InsertKey(ctx(), store.NewKey{AccountID: a.ID, Name: "dup", Hash: hash("sk-2"), Prefix: "x"})
	require.Error(t, err, "a hash is unique")
	_, err = s.InsertKey(ctx(), store.NewKey{AccountID: "acct_missing", Name: "x", Hash: hash("sk-3"), Prefix: "x"})
	require.ErrorIs(t, err, store.ErrNotFound)

	got, err := s.KeyByHash(ctx(), hash("sk-1"))
	require.NoError(t, err)
	require.Equal(t, k1.ID, got.ID)
	require.Equal(t, a.ID, got.AccountID)
	require.Equal(t, store.StatusActive, got.AccountStatus)
	require.True(t, got.RevokedAt.IsZero())
	_, err = s.KeyByHash(ctx(), hash("sk-unknown"))
	require.ErrorIs(t, err, store.ErrNotFound)

	keys, err := s.Keys(ctx(), a.ID)
	require.NoError(t, err)
	require.Len(t, keys, 2)
	require.Equal(t, []string{k1.ID, k2.ID}, []string{keys[0].ID, keys[1].ID})
	require.Equal(t, "sk-tg-bbbb", keys[1].Prefix)

	require.NoError(t, s.RevokeKey(ctx(), k1.ID))
	require.NoError(t, s.RevokeKey(ctx(), k1.ID), "revoking twice is a no-op")
	require.ErrorIs(t, s.RevokeKey(ctx(), "key_missing"), store.ErrNotFound)
	got, err = s.KeyByHash(ctx(), hash("sk-1"))
	require.NoError(t, err)
	require.Equal(t, c.Now(), got.RevokedAt)

	_, err = s.SetAccountStatus(ctx(), a.ID, store.StatusSuspended)
	require.NoError(t, err)
	got, err = s.KeyByHash(ctx(), hash("sk-2"))
	require.NoError(t, err)
	require.Equal(t, store.StatusSuspended, got.AccountStatus)
	_, err = s.Keys(ctx(), "acct_missing")
	require.ErrorIs(t, err, store.ErrNotFound)

	// The batch lookup answers what KeyByHash answers, for every known hash at once; unknown
	// hashes are absent and duplicates are answered once.
	b := newAccount(t, s, 0)
	k3, err := s.InsertKey(ctx(), store.NewKey{AccountID: b.ID, Name: "other", Hash: hash("sk-3"), Prefix: "sk-tg-cccc"})
	require.NoError(t, err)
	byHash, err := s.KeysByHash(ctx(), []string{hash("sk-1"), hash("sk-unknown"), hash("sk-2"), hash("sk-3"), hash("sk-1")})
	require.NoError(t, err)
	require.Len(t, byHash, 3)
	for _, secret := range []string{"sk-1", "sk-2", "sk-3"} {
		one, err := s.KeyByHash(ctx(), hash(secret))
		require.NoError(t, err)
		require.Equal(t, one, byHash[hash(secret)], secret)
	}
	require.Equal(t, k3.ID, byHash[hash("sk-3")].ID)
	require.Equal(t, store.StatusActive, byHash[hash("sk-3")].AccountStatus)
	require.Equal(t, store.StatusSuspended, byHash[hash("sk-2")].AccountStatus)
	require.False(t, byHash[hash("sk-1")].RevokedAt.IsZero())
	byHash, err = s.KeysByHash(ctx(), nil)
	require.NoError(t, err)
	require.Empty(t, byHash)

	// A batch past one IN list (4,096 hashes) still finds every key.
	many := make([]string, 5000)
	for i := range many {
		many[i] = hash(fmt.Sprint("sk-none-", i))
	}
	many[4999] = hash("sk-3")
	byHash, err = s.KeysByHash(ctx(), many)
	require.NoError(t, err)
	require.Equal(t, []string{hash("sk-3")}, slices.Collect(maps.Keys(byHash)))
}

func testTopUp(t *testing.T, s store.Store, _ *Clock) {
	a := newAccount(t, s, 0)
	b := newAccount(t, s, 0)
	req := store.TopUp{AccountID: a.ID, OrderID: "ord-1", Plan: "credits_105k", Credits: 105_000, MicroUSD: 500_000_000, Method: "admin"}
	res, replayed, err := s.TopUp(ctx(), req)
	require.NoError(t, err)
	require.False(t, replayed)
	require.Equal(t, "ord-1", res.OrderID)
	require.Equal(t, int64(105_000*cr), res.BalanceAfter)

	// A second top-up, then a replay of the first: the original result, balance unchanged.
	_, _, err = s.TopUp(ctx(), store.TopUp{AccountID: a.ID, OrderID: "ord-2", Credits: 1000, MicroUSD: 5_000_000, Method: "admin"})
	require.NoError(t, err)
	again, replayed, err := s.TopUp(ctx(), req)
	require.NoError(t, err)
	require.True(t, replayed)
	require.Equal(t, res, again)
	require.Equal(t, int64(106_000*cr), balance(t, s, a.ID).Balance)

	// The same order id with a different request, or for another account, is a conflict.
	diff := req
	diff.Credits = 1000
	_, _, err = s.TopUp(ctx(), diff)
	require.ErrorIs(t, err, store.ErrConflict)
	other := req
	other.AccountID = b.ID
	_, _, err = s.TopUp(ctx(), other)
	require.ErrorIs(t, err, store.ErrConflict)
	missing := req
	missing.AccountID, missing.OrderID = "acct_missing", "ord-x"
	_, _, err = s.TopUp(ctx(), missing)
	require.ErrorIs(t, err, store.ErrNotFound)

	// A promotional grant comes from the bonus account.
	_, _, err = s.TopUp(ctx(), store.TopUp{AccountID: b.ID, OrderID: "promo-1", Credits: 50, MicroUSD: 0, Method: "admin"})
	require.NoError(t, err)
	la, err := s.LedgerAccounts(ctx())
	require.NoError(t, err)
	// The 105k plan's tier bonus (5,000 credits beyond what $500 buys at $0.005) comes from
	// the bonus account too; cash:admin holds the credit that money bought, and the USD.
	require.Equal(t, map[string]store.Totals{
		"cash:admin": {Microcredits: -101_000 * cr, MicroUSD: -505_000_000},
		"bonus":      {Microcredits: -5050 * cr},
	}, la)
	require.Equal(t, int64(50*cr), balance(t, s, b.ID).Balance)
}

func testTopUpConcurrent(t *testing.T, s store.Store, _ *Clock) {
	a := newAccount(t, s, 0)
	req := store.TopUp{AccountID: a.ID, OrderID: "ord-race", Credits: 1000, MicroUSD: 5_000_000, Method: "admin"}
	const n = 8
	var wg sync.WaitGroup
	results := make([]store.TopUpResult, n)
	replays := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], replays[i], errs[i] = s.TopUp(ctx(), req)
		}()
	}
	wg.Wait()
	fresh := 0
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, results[0], results[i])
		if !replays[i] {
			fresh++
		}
	}
	require.Equal(t, 1, fresh, "exactly one request applies the top-up")
	require.Equal(t, int64(1000*cr), balance(t, s, a.ID).Balance)
}

func testStatement(t *testing.T, s store.Store, c *Clock) {
	a := newAccount(t, s, 0)
	t0 := c.Now()
	_, _, err := s.TopUp(ctx(), store.TopUp{AccountID: a.ID, OrderID: "o1", Credits: 1000, MicroUSD: 5_000_000, Method: "admin"})
	require.NoError(t, err)
	c.Advance(time.Minute)
	_, err = s.Settle(ctx(), store.Batch{Group: "g", Topic: "t", Ref: "t/0:0-1",
		Usage: []store.Usage{u("r1", a.ID, "", 1_500_000), u("r2", a.ID, "", 500_000)}})
	require.NoError(t, err)
	c.Advance(time.Minute)
	_, _, err = s.TopUp(ctx(), store.TopUp{AccountID: a.ID, OrderID: "o2", Credits: 10, MicroUSD: 0, Method: "admin"})
	require.NoError(t, err)
	c.Advance(time.Minute)
	// A batch of only free requests writes no postings and so no statement line.
	_, err = s.Settle(ctx(), store.Batch{Group: "g", Topic: "t", Ref: "t/0:2", Usage: []store.Usage{u("r3", a.ID, "", 0)}})
	require.NoError(t, err)

	st, err := s.Statement(ctx(), a.ID, t0, c.Now().Add(time.Hour), 100)
	require.NoError(t, err)
	require.False(t, st.More)
	require.Zero(t, st.Opening)
	all := st.Entries
	type line struct {
		kind          string
		amount, bal   int64
		ref           string
		minutesFromT0 int
	}
	var got []line
	for _, e := range all {
		got = append(got, line{e.Kind, e.Amount, e.Balance, e.Ref, int(e.Time.Sub(t0) / time.Minute)})
	}
	require.Equal(t, []line{
		{"topup", 1000 * cr, 1000 * cr, "o1", 0},
		{"usage", -2 * cr, 998 * cr, "t/0:0-1", 1},
		{"grant", 10 * cr, 1008 * cr, "o2", 2},
	}, got)

	// A period starting after the first entry opens with the balance before it.
	part, err := s.Statement(ctx(), a.ID, t0.Add(time.Minute), t0.Add(2*time.Minute), 100)
	require.NoError(t, err)
	require.Equal(t, int64(1000*cr), part.Opening)
	require.Len(t, part.Entries, 1)
	require.Equal(t, int64(998*cr), part.Entries[0].Balance)

	first, err := s.Statement(ctx(), a.ID, t0, c.Now().Add(time.Hour), 2)
	require.NoError(t, err)
	require.True(t, first.More)
	require.Len(t, first.Entries, 2)

	_, err = s.Statement(ctx(), "acct_missing", t0, c.Now(), 10)
	require.ErrorIs(t, err, store.ErrNotFound)
}

func testSettle(t *testing.T, s store.Store, _ *Clock) {
	a := newAccount(t, s, 1000)
	b := newAccount(t, s, 1000)
	batch := store.Batch{Group: "ledgerd", Topic: "usage.v1", Ref: "usage.v1/0:0-3",
		Usage: []store.Usage{
			u("r1", a.ID, "", 100),
			u("r2", b.ID, "", 250),
			u("r1", a.ID, "", 100), // duplicate inside the batch
			u("r3", a.ID, "", 7),
		},
		Offsets: map[int]int64{0: 4, 1: 10}}
	res, err := s.Settle(ctx(), batch)
	require.NoError(t, err)
	require.Equal(t, store.SettleResult{Settled: 3, Duplicates: 1, Microcredits: 357, Accounts: 2}, res)
	require.Equal(t, int64(1000*cr-107), balance(t, s, a.ID).Balance)
	require.Equal(t, int64(1000*cr-250), balance(t, s, b.ID).Balance)

	// Replaying the batch (redelivery) changes nothing; offsets never move back.
	batch.Offsets = map[int]int64{0: 2}
	res, err = s.Settle(ctx(), batch)
	require.NoError(t, err)
	require.Equal(t, store.SettleResult{Settled: 0, Duplicates: 4}, res)
	require.Equal(t, int64(1000*cr-107), balance(t, s, a.ID).Balance)
	off, err := s.Offsets(ctx(), "ledgerd", "usage.v1")
	require.NoError(t, err)
	require.Equal(t, map[int]int64{0: 4, 1: 10}, off)
	off, err = s.Offsets(ctx(), "other", "usage.v1")
	require.NoError(t, err)
	require.Empty(t, off)

	// A mix of old and new ids settles only the new ones.
	res, err = s.Settle(ctx(), store.Batch{Group: "ledgerd", Topic: "usage.v1", Usage: []store.Usage{u("r2", b.ID, "", 250), u("r4", b.ID, "", 1)},
		Offsets: map[int]int64{0: 6}})
	require.NoError(t, err)
	require.Equal(t, store.SettleResult{Settled: 1, Duplicates: 1, Microcredits: 1, Accounts: 1}, res)
	require.Equal(t, int64(1000*cr-251), balance(t, s, b.ID).Balance)
	la, err := s.LedgerAccounts(ctx())
	require.NoError(t, err)
	// 107 µcr of a $0.005 lot recognize floor(0.535) = 0 µ$; 251 µcr recognize floor(1.255) = 1.
	require.Equal(t, store.Totals{Microcredits: 358, MicroUSD: 1}, la[ledger.AccountRevenue])

	// A large batch crosses the multi-row statement limits (6,000 rows a statement).
	big := store.Batch{Group: "ledgerd", Topic: "usage.v1"}
	for i := range 6500 {
		big.Usage = append(big.Usage, u(fmt.Sprintf("big-%d", i), a.ID, "", int64(i)))
	}
	res, err = s.Settle(ctx(), big)
	require.NoError(t, err)
	require.Equal(t, 6500, res.Settled)
	require.Equal(t, int64(6499*6500/2), res.Microcredits)
	require.Equal(t, int64(1000*cr-107-6499*6500/2), balance(t, s, a.ID).Balance)
}

func testSettleLots(t *testing.T, s store.Store, _ *Clock) {
	a := newAccount(t, s, 0)
	// Two lots at different prices; usage consumes the older first.
	_, _, err := s.TopUp(ctx(), store.TopUp{AccountID: a.ID, OrderID: "o1", Credits: 10, MicroUSD: 50_000, Method: "admin"})
	require.NoError(t, err)
	_, _, err = s.TopUp(ctx(), store.TopUp{AccountID: a.ID, OrderID: "o2", Plan: "credits_275k", Credits: 275_000, MicroUSD: 1_250_000_000, Method: "admin"})
	require.NoError(t, err)
	_, err = s.Settle(ctx(), store.Batch{Group: "g", Topic: "t", Usage: []store.Usage{u("r1", a.ID, "", 30*cr)}})
	require.NoError(t, err)
	require.Equal(t, int64(274_980*cr), balance(t, s, a.ID).Balance)
	// The lots now hold 0 and 274,980 credits: a refund of everything returns the rest of the
	// newer lot at its price: 1,250,000,000 − floor(20·10⁶·1,250,000,000 / 275,000·10⁶).
	res, _, err := s.Refund(ctx(), store.Refund{AccountID: a.ID, RefundID: "rf", AllUnused: true})
	require.NoError(t, err)
	require.Equal(t, int64(274_980*cr), res.Microcredits)
	require.Equal(t, int64(1_250_000_000-90_909), res.MicroUSD)

	// Overdraft: a charge beyond the balance goes negative; the next top-up covers it.
	_, err = s.Settle(ctx(), store.Batch{Group: "g", Topic: "t", Usage: []store.Usage{u("r2", a.ID, "", 3*cr)}})
	require.NoError(t, err)
	require.Equal(t, int64(-3*cr), balance(t, s, a.ID).Balance)
	res2, _, err := s.TopUp(ctx(), store.TopUp{AccountID: a.ID, OrderID: "o3", Credits: 1000, MicroUSD: 5_000_000, Method: "admin"})
	require.NoError(t, err)
	require.Equal(t, int64(997*cr), res2.BalanceAfter)
	la, err := s.LedgerAccounts(ctx())
	require.NoError(t, err)
	// Revenue: 10 credits of the $0.005 lot, 20 of the 275k lot (90,909 µ$), and the 3 credits
	// of overdraft at the new lot's price when it covered them (15,000 µ$).
	require.Equal(t, store.Totals{Microcredits: 33 * cr, MicroUSD: 50_000 + 90_909 + 15_000}, la[ledger.AccountRevenue])
	require.Equal(t, store.Totals{Microcredits: 274_980 * cr, MicroUSD: 1_250_000_000 - 90_909}, la[ledger.AccountRefunds])
}

func testSettleUnknownAccount(t *testing.T, s store.Store, _ *Clock) {
	a := newAccount(t, s, 10)
	_, err := s.Settle(ctx(), store.Batch{Group: "g", Topic: "t", Usage: []store.Usage{u("r1", a.ID, "", 5), u("r2", "acct_missing", "", 5)},
		Offsets: map[int]int64{0: 2}})
	require.ErrorIs(t, err, ledger.ErrInvariant)
	// Nothing of the batch was applied.
	require.Equal(t, int64(10*cr), balance(t, s, a.ID).Balance)
	off, err := s.Offsets(ctx(), "g", "t")
	require.NoError(t, err)
	require.Empty(t, off)
}

func testRefund(t *testing.T, s store.Store, _ *Clock) {
	a := newAccount(t, s, 0)
	_, _, err := s.TopUp(ctx(), store.TopUp{AccountID: a.ID, OrderID: "o1", Credits: 1000, MicroUSD: 5_000_000, Method: "admin"})
	require.NoError(t, err)
	_, _, err = s.TopUp(ctx(), store.TopUp{AccountID: a.ID, OrderID: "o2", Credits: 100, MicroUSD: 0, Method: "admin"})
	require.NoError(t, err)
	// Reserve 500 credits on a lease (exactly: more than a quarter of what is available is
	// only granted as the minimum): they cannot be refunded.
	_, err = s.GrantLease(ctx(), store.LeaseGrant{AccountID: a.ID, EdgeID: "e1", Want: 500 * cr, Min: 500 * cr, TTL: time.Minute})
	require.NoError(t, err)

	_, _, err = s.Refund(ctx(), store.Refund{AccountID: a.ID, RefundID: "too-much", Microcredits: 601 * cr})
	require.ErrorIs(t, err, store.ErrInsufficient)

	// Newest first: the 100 free credits return $0, then 50 credits of the $5 lot return $0.25.
	req := store.Refund{AccountID: a.ID, RefundID: "rf-1", Microcredits: 150 * cr, Reason: "customer asked"}
	res, replayed, err := s.Refund(ctx(), req)
	require.NoError(t, err)
	require.False(t, replayed)
	require.Equal(t, int64(150*cr), res.Microcredits)
	require.Equal(t, int64(250_000), res.MicroUSD)
	require.Equal(t, int64(950*cr), res.BalanceAfter)

	again, replayed, err := s.Refund(ctx(), req)
	require.NoError(t, err)
	require.True(t, replayed)
	require.Equal(t, res, again)
	req.Microcredits = 1 * cr
	_, _, err = s.Refund(ctx(), req)
	require.ErrorIs(t, err, store.ErrConflict)

	all, _, err := s.Refund(ctx(), store.Refund{AccountID: a.ID, RefundID: "rf-2", AllUnused: true})
	require.NoError(t, err)
	require.Equal(t, int64(450*cr), all.Microcredits)
	require.Equal(t, int64(2_250_000), all.MicroUSD)
	acct := balance(t, s, a.ID)
	require.Equal(t, int64(500*cr), acct.Balance)
	require.Zero(t, acct.Available())
	_, _, err = s.Refund(ctx(), store.Refund{AccountID: a.ID, RefundID: "rf-3", AllUnused: true})
	require.ErrorIs(t, err, store.ErrInsufficient)
}

func testLeases(t *testing.T, s store.Store, c *Clock) {
	a := newAccount(t, s, 100)
	l, err := s.GrantLease(ctx(), store.LeaseGrant{AccountID: a.ID, EdgeID: "e1", Want: 30 * cr, Min: 1 * cr, TTL: time.Minute})
	require.NoError(t, err)
	require.Equal(t, int64(25*cr), l.Granted, "at most a quarter of what is available")
	require.Equal(t, int64(75*cr), l.AccountAvailable)
	require.Equal(t, c.Now().Add(time.Minute), l.ExpiresAt)
	l, err = s.ExtendLease(ctx(), l.ID, 5*cr, 5*cr, 0, time.Minute)
	require.NoError(t, err)
	require.Equal(t, int64(30*cr), l.Granted)

	// Low balance: a minimum above a quarter of what is available is granted exactly.
	l2, err := s.GrantLease(ctx(), store.LeaseGrant{AccountID: a.ID, EdgeID: "e2", Want: 100 * cr, Min: 70 * cr, TTL: time.Minute})
	require.NoError(t, err)
	require.Equal(t, int64(70*cr), l2.Granted)
	require.Zero(t, l2.AccountAvailable)
	// Nothing left: refused, reporting what is available. The other nodes' leases reserve
	// enough to cover it, so they are recalled.
	l3, err := s.GrantLease(ctx(), store.LeaseGrant{AccountID: a.ID, EdgeID: "e3", Want: 10, Min: 1, TTL: time.Minute})
	require.ErrorIs(t, err, store.ErrInsufficient)
	require.Zero(t, l3.AccountAvailable)
	require.Equal(t, int64(100*cr), l3.Recallable)
	for edge, want := range map[string][]string{"e1": {l.ID}, "e2": {l2.ID}, "e3": {}} {
		ids, err := s.RecalledLeases(ctx(), edge, 10)
		require.NoError(t, err)
		require.Equal(t, want, ids, edge)
	}
	acct := balance(t, s, a.ID)
	require.Equal(t, int64(100*cr), acct.Reserved)
	require.Equal(t, int64(100*cr), acct.Balance)

	// Release the first with a spend of 10: 20 come back, 10 stay reserved until they settle.
	c.Advance(10 * time.Second)
	r, err := s.ReleaseLease(ctx(), l.ID, 10*cr)
	require.NoError(t, err)
	require.Equal(t, ledger.LeaseReleased, r.State)
	require.Equal(t, int64(10*cr), r.Reservation)
	require.Equal(t, int64(20*cr), r.AccountAvailable)
	again, err := s.ReleaseLease(ctx(), l.ID, 99*cr)
	require.NoError(t, err, "a repeated release changes nothing")
	require.Equal(t, r.Lease, again.Lease)
	_, err = s.ExtendLease(ctx(), l.ID, 1, 1, 0, time.Minute)
	require.ErrorIs(t, err, store.ErrLeaseClosed)

	// Extend the second lease by what has come back, refreshing its expiry.
	e, err := s.ExtendLease(ctx(), l2.ID, 50*cr, 20*cr, 3*cr, time.Minute)
	require.NoError(t, err)
	require.Equal(t, int64(90*cr), e.Granted)
	require.Equal(t, int64(3*cr), e.Reported)
	require.Equal(t, c.Now().Add(time.Minute), e.ExpiresAt)
	require.Zero(t, e.AccountAvailable)
	refused, err := s.ExtendLease(ctx(), l2.ID, 5, 5, 3*cr, time.Minute)
	require.ErrorIs(t, err, store.ErrInsufficient)
	require.Zero(t, refused.Recallable, "no other node holds an open lease: the refusal is final")
	_, err = s.ExtendLease(ctx(), l2.ID, 0, 0, 3*cr, time.Minute)
	require.NoError(t, err, "want 0 only refreshes")
	ids, err := s.RecalledLeases(ctx(), "e1", 10)
	require.NoError(t, err)
	require.Empty(t, ids, "released leases are not listed")

	_, err = s.ExtendLease(ctx(), "lease_missing", 1, 1, 0, time.Minute)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.ReleaseLease(ctx(), "lease_missing", 0)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.GrantLease(ctx(), store.LeaseGrant{AccountID: "acct_missing", Want: 1, Min: 1, TTL: time.Minute})
	require.ErrorIs(t, err, store.ErrNotFound)

	_, err = s.SetAccountStatus(ctx(), a.ID, store.StatusSuspended)
	require.NoError(t, err)
	_, err = s.GrantLease(ctx(), store.LeaseGrant{AccountID: a.ID, EdgeID: "e1", Want: 1, Min: 1, TTL: time.Minute})
	require.ErrorIs(t, err, store.ErrSuspended)
	_, err = s.ExtendLease(ctx(), l2.ID, 1, 1, 0, time.Minute)
	require.ErrorIs(t, err, store.ErrSuspended)
	_, err = s.ReleaseLease(ctx(), l2.ID, 0)
	require.NoError(t, err, "a suspended account's leases can still be released")
	require.Equal(t, int64(10*cr), balance(t, s, a.ID).Reserved)
}

func testLeaseSettlement(t *testing.T, s store.Store, c *Clock) {
	a := newAccount(t, s, 100)
	l, err := s.GrantLease(ctx(), store.LeaseGrant{AccountID: a.ID, EdgeID: "e1", Want: 40 * cr, Min: 40 * cr, TTL: time.Minute})
	require.NoError(t, err)
	// Settling usage on an open lease: balance and reservation drop together.
	_, err = s.Settle(ctx(), store.Batch{Group: "g", Topic: "t", Usage: []store.Usage{
		u("r1", a.ID, l.ID, 15*cr), u("r2", a.ID, l.ID, 5*cr), u("r3", a.ID, "", 1*cr), u("r4", a.ID, "lease_unknown", 1*cr)}})
	require.NoError(t, err)
	acct := balance(t, s, a.ID)
	require.Equal(t, int64(78*cr), acct.Balance)
	require.Equal(t, int64(20*cr), acct.Reserved)

	// Released with a reported spend of 30, of which 20 settled: 10 stay reserved.
	_, err = s.ReleaseLease(ctx(), l.ID, 30*cr)
	require.NoError(t, err)
	require.Equal(t, int64(10*cr), balance(t, s, a.ID).Reserved)
	// Settlement catches up with more than the rest: the reservation floors at 0.
	_, err = s.Settle(ctx(), store.Batch{Group: "g", Topic: "t", Usage: []store.Usage{u("r5", a.ID, l.ID, 12*cr)}})
	require.NoError(t, err)
	acct = balance(t, s, a.ID)
	require.Equal(t, int64(66*cr), acct.Balance)
	require.Zero(t, acct.Reserved)

	// An open lease of a vanished node is reclaimed once TTL + grace have passed.
	l2, err := s.GrantLease(ctx(), store.LeaseGrant{AccountID: a.ID, EdgeID: "e2", Want: 50 * cr, Min: 50 * cr, TTL: time.Minute})
	require.NoError(t, err)
	l3, err := s.GrantLease(ctx(), store.LeaseGrant{AccountID: a.ID, EdgeID: "e3", Want: 6 * cr, Min: 6 * cr, TTL: time.Minute})
	require.NoError(t, err)
	_, err = s.ReleaseLease(ctx(), l3.ID, 4*cr) // settles never arrive
	require.NoError(t, err)
	c.Advance(time.Minute + 20*time.Second)
	n, err := s.ReapLeases(ctx(), 30*time.Second, 100)
	require.NoError(t, err)
	require.Equal(t, 1, n, "only the released lease is past its grace")
	require.Equal(t, int64(50*cr), balance(t, s, a.ID).Reserved)
	c.Advance(20 * time.Second)
	n, err = s.ReapLeases(ctx(), 30*time.Second, 100)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Zero(t, balance(t, s, a.ID).Reserved)
	n, err = s.ReapLeases(ctx(), 30*time.Second, 100)
	require.NoError(t, err)
	require.Zero(t, n)
	_, err = s.ExtendLease(ctx(), l2.ID, 1, 1, 0, time.Minute)
	require.ErrorIs(t, err, store.ErrLeaseClosed)

	// Records of a reaped lease still settle, reserving nothing.
	_, err = s.Settle(ctx(), store.Batch{Group: "g", Topic: "t", Usage: []store.Usage{u("r6", a.ID, l2.ID, 2*cr)}})
	require.NoError(t, err)
	acct = balance(t, s, a.ID)
	require.Equal(t, int64(64*cr), acct.Balance)
	require.Zero(t, acct.Reserved)
}

// testLeaseReleaseOverspent: one request cost more than its hold, so a node reports more spend
// than its lease was granted while nothing is left available. The release must record it
// (not fail), the account's available goes below zero — refusing new grants — and settlement
// of the records brings the books back.
func testLeaseReleaseOverspent(t *testing.T, s store.Store, _ *Clock) {
	a := newAccount(t, s, 10)
	l, err := s.GrantLease(ctx(), store.LeaseGrant{AccountID: a.ID, EdgeID: "e1", Want: 10 * cr, Min: 10 * cr, TTL: time.Minute})
	require.NoError(t, err)
	require.Zero(t, l.AccountAvailable)

	r, err := s.ReleaseLease(ctx(), l.ID, 12*cr)
	require.NoError(t, err, "an overspent lease must still release")
	require.Equal(t, int64(12*cr), r.Reservation)
	require.Equal(t, int64(-2*cr), r.AccountAvailable)
	acct := balance(t, s, a.ID)
	require.Equal(t, int64(10*cr), acct.Balance)
	require.Equal(t, int64(12*cr), acct.Reserved)

	_, err = s.GrantLease(ctx(), store.LeaseGrant{AccountID: a.ID, EdgeID: "e2", Want: 1, Min: 1, TTL: time.Minute})
	require.ErrorIs(t, err, store.ErrInsufficient, "an overdrawn account answers 402 until topped up")

	_, err = s.Settle(ctx(), store.Batch{Group: "g", Topic: "t", Usage: []store.Usage{u("over1", a.ID, l.ID, 12*cr)}})
	require.NoError(t, err)
	acct = balance(t, s, a.ID)
	require.Equal(t, int64(-2*cr), acct.Balance, "the overdraft is bounded by the one request")
	require.Zero(t, acct.Reserved)
}

// testConcurrentGrants: many goroutines grant against a small balance at once; the sum of what
// was granted never exceeds the balance, and every refusal reported a true shortage.
func testConcurrentGrants(t *testing.T, s store.Store, _ *Clock) {
	a := newAccount(t, s, 10) // 10 credits
	const workers, each = 16, 5
	var mu sync.Mutex
	var granted int64
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				l, err := s.GrantLease(ctx(), store.LeaseGrant{AccountID: a.ID, EdgeID: fmt.Sprint("e", w),
					Want: 300_000, Min: 100_000, TTL: time.Minute})
				switch {
				case err == nil:
					mu.Lock()
					granted += l.Granted
					mu.Unlock()
				case errors.Is(err, store.ErrInsufficient):
					if l.AccountAvailable >= 100_000 {
						errs <- fmt.Errorf("refused with %d available", l.AccountAvailable)
					}
				default:
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	acct := balance(t, s, a.ID)
	require.Equal(t, granted, acct.Reserved)
	require.LessOrEqual(t, granted, int64(10*cr))
	// 80 requests of at least 0.1 credits against 10 credits: the balance is used up to less
	// than one minimum.
	require.Less(t, int64(10*cr)-granted, int64(100_000))
}

func testPrune(t *testing.T, s store.Store, c *Clock) {
	a := newAccount(t, s, 10)
	_, err := s.Settle(ctx(), store.Batch{Group: "g", Topic: "t", Usage: []store.Usage{u("old-1", a.ID, "", 1), u("old-2", a.ID, "", 1)}})
	require.NoError(t, err)
	c.Advance(6 * 24 * time.Hour)
	_, err = s.Settle(ctx(), store.Batch{Group: "g", Topic: "t", Usage: []store.Usage{u("new-1", a.ID, "", 1)}})
	require.NoError(t, err)
	c.Advance(2 * 24 * time.Hour)
	n, err := s.PruneSettled(ctx(), c.Now().Add(-7*24*time.Hour))
	require.NoError(t, err)
	require.Equal(t, int64(2), n)
	res, err := s.Settle(ctx(), store.Batch{Group: "g", Topic: "t", Usage: []store.Usage{u("new-1", a.ID, "", 1)}})
	require.NoError(t, err)
	require.Equal(t, 1, res.Duplicates, "ids inside the retention are still remembered")
}
