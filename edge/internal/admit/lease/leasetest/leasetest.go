// Package leasetest is an in-memory ledgerd for tests of the edge's lease admitter and of
// what runs on it (the proxy): it implements the admitter's BatchLedger interface and plays
// ledgerd's lease rules (ledgerd/README.md "Lease arithmetic").
package leasetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"tollgate/edge/internal/ledger"
	"tollgate/pkg/ledgerapi"
)

// Ledger plays ledgerd's lease rules in memory: grants take min(want, available/4) when that
// covers min, else exactly min when available
// covers it, else 402 — recalling other nodes' open leases when they could cover it. Nothing
// settles, so a released lease keeps reserving its reported spend: available is what the
// account could still spend if every charge so far were settled.
type Ledger struct {
	mu        sync.Mutex
	ttl       time.Duration
	balance   map[string]int64
	leases    map[string]*lease
	seq       int
	down      bool          // every call fails as if ledgerd were unreachable
	gate      chan struct{} // when set, Grant waits for it to close
	entered   chan struct{} // when set, Grant signals here before waiting on gate
	calls     map[string]int
	wants     []int64        // want of every grant and extend, in order
	extends   map[string]int // extends per account, single or in a batch
	batches   []int          // items of every batch extend call, in order
	noBatch   bool           // ExtendMany answers ErrUnsupported, as a ledgerd before it
	suspended map[string]bool
}

type lease struct {
	id, account, edge string
	granted, reported int64
	open, recalled    bool
}

// New returns a ledger with no accounts and a lease TTL of one minute.
func New() *Ledger {
	return &Ledger{ttl: time.Minute, balance: map[string]int64{}, leases: map[string]*lease{}, calls: map[string]int{},
		extends: map[string]int{}, suspended: map[string]bool{}}
}

var errDown = errors.New("connection refused")

func (f *Ledger) SetBalance(acct string, b int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.balance[acct] = b
}

// SetTTL sets the TTL of the leases granted from now on.
func (f *Ledger) SetTTL(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ttl = d
}

// SetBatch makes ExtendMany answer as ledgerd does (on), or ledger.ErrUnsupported as a ledgerd
// from before the batch extend does (off). On by default.
func (f *Ledger) SetBatch(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noBatch = !on
}

// SetSuspended suspends an account (grants and extends are refused) or resumes it.
func (f *Ledger) SetSuspended(acct string, suspended bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.suspended[acct] = suspended
}

// CloseLease closes a lease behind its node's back, as ledgerd's reaper does, keeping what
// was reported on it.
func (f *Ledger) CloseLease(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.leases[id]; l != nil {
		l.open = false
	}
}

// ForgetLease drops a lease, so that ledgerd answers it 404.
func (f *Ledger) ForgetLease(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.leases, id)
}

// Batches returns the items of every batch extend call so far, in order, the ones answered
// ErrUnsupported included.
func (f *Ledger) Batches() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.batches)
}

// Block makes grants wait until release is called; entered receives when the first of them
// has started waiting. After release, grants no longer wait.
func (f *Ledger) Block() (entered <-chan struct{}, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	gate, ent := make(chan struct{}), make(chan struct{}, 1)
	f.gate, f.entered = gate, ent
	return ent, func() {
		f.mu.Lock()
		f.gate, f.entered = nil, nil
		f.mu.Unlock()
		close(gate)
	}
}

// Wants returns the want of every grant and extend so far, in order.
func (f *Ledger) Wants() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.wants)
}

// RecallAll marks every open lease recalled, as ledgerd does when another node is refused.
func (f *Ledger) RecallAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.leases {
		l.recalled = true
	}
}

// Leases counts the open leases of every account and sums the spend reported on the
// released ones.
func (f *Ledger) Leases() (open int, reported int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.leases {
		if l.open {
			open++
		} else {
			reported += l.reported
		}
	}
	return open, reported
}

// LeaseAccount is the account lease id was granted to, or "" when it never was.
func (f *Ledger) LeaseAccount(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.leases[id]; l != nil {
		return l.account
	}
	return ""
}

// SetDown makes every call fail as if ledgerd were unreachable, or stops that.
func (f *Ledger) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func (f *Ledger) Count(call string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[call]
}

func (f *Ledger) ExtendsOf(acct string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.extends[acct]
}

// available is balance − Σ reservations, with the lock held.
func (f *Ledger) available(acct string) int64 {
	a := f.balance[acct]
	for _, l := range f.leases {
		if l.account != acct {
			continue
		}
		if l.open {
			a -= l.granted
		} else {
			a -= l.reported
		}
	}
	return a
}

// Reserved is Σ reservations of an account.
func (f *Ledger) Reserved(acct string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.balance[acct] - f.available(acct)
}

// OpenLeases counts open leases of an account.
func (f *Ledger) OpenLeases(acct string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, l := range f.leases {
		if l.account == acct && l.open {
			n++
		}
	}
	return n
}

// ReportedSpend sums the spend reported on released leases of an account.
func (f *Ledger) ReportedSpend(acct string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int64
	for _, l := range f.leases {
		if l.account == acct && !l.open {
			n += l.reported
		}
	}
	return n
}

// recall marks the account's open leases but exceptID when they could cover minimum.
func (f *Ledger) recall(acct, exceptID string, minimum int64) int64 {
	var held int64
	for _, l := range f.leases {
		if l.account == acct && l.open && l.id != exceptID {
			held += l.granted
		}
	}
	if held == 0 || f.available(acct)+held < minimum {
		return 0
	}
	for _, l := range f.leases {
		if l.account == acct && l.open && l.id != exceptID {
			l.recalled = true
		}
	}
	return held
}

func grantAmount(avail, want, minimum int64) (int64, bool) {
	if minimum > 0 && avail < minimum {
		return 0, false
	}
	return max(min(want, max(avail, 0)/4), minimum), true
}

func (f *Ledger) enter(call string) error {
	f.calls[call]++
	if f.down {
		return fmt.Errorf("%s: %w", call, errDown)
	}
	return nil
}

func (f *Ledger) Grant(_ context.Context, g ledgerapi.Grant) (ledgerapi.Lease, error) {
	f.mu.Lock()
	gate, entered := f.gate, f.entered
	f.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("grant"); err != nil {
		return ledgerapi.Lease{}, err
	}
	f.wants = append(f.wants, g.WantMicrocredits)
	if _, ok := f.balance[g.AccountID]; !ok {
		return ledgerapi.Lease{}, ledger.ErrNotFound
	}
	if f.suspended[g.AccountID] {
		return ledgerapi.Lease{}, ledger.ErrSuspended
	}
	avail := f.available(g.AccountID)
	amount, ok := grantAmount(avail, g.WantMicrocredits, g.MinMicrocredits)
	if !ok {
		return ledgerapi.Lease{}, &ledger.InsufficientError{Available: avail, Recallable: f.recall(g.AccountID, "", g.MinMicrocredits)}
	}
	f.seq++
	l := &lease{id: fmt.Sprintf("lease_%d", f.seq), account: g.AccountID, edge: g.EdgeID, granted: amount, open: true}
	f.leases[l.id] = l
	return f.answer(l, f.ttl), nil
}

func (f *Ledger) answer(l *lease, ttl time.Duration) ledgerapi.Lease {
	return ledgerapi.Lease{LeaseID: l.id, AccountID: l.account, GrantedMicrocredits: l.granted,
		TTLMillis: ttl.Milliseconds(), AvailableMicrocredits: f.available(l.account)}
}

func (f *Ledger) Extend(_ context.Context, id string, e ledgerapi.Extend) (ledgerapi.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("extend"); err != nil {
		return ledgerapi.Lease{}, err
	}
	return f.extend(id, e)
}

// ExtendMany applies each extend as Extend does, answering each one's result.
func (f *Ledger) ExtendMany(_ context.Context, extends []ledgerapi.ExtendItem) ([]ledger.ExtendResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches = append(f.batches, len(extends))
	if err := f.enter("extend_batch"); err != nil {
		return nil, err
	}
	if f.noBatch {
		return nil, fmt.Errorf("extend %d leases: %w", len(extends), ledger.ErrUnsupported)
	}
	if len(extends) == 0 || len(extends) > ledgerapi.ExtendBatchMax {
		return nil, fmt.Errorf("extend %d leases: ledgerd answered 400", len(extends))
	}
	out := make([]ledger.ExtendResult, len(extends))
	for i, x := range extends {
		out[i].Lease, out[i].Err = f.extend(x.LeaseID, x.Extend)
	}
	return out, nil
}

// extend is one extend, with the lock held.
func (f *Ledger) extend(id string, e ledgerapi.Extend) (ledgerapi.Lease, error) {
	f.wants = append(f.wants, e.WantMicrocredits)
	l := f.leases[id]
	switch {
	case l == nil:
		return ledgerapi.Lease{}, ledger.ErrNotFound
	case !l.open:
		return ledgerapi.Lease{}, ledger.ErrLeaseClosed
	case f.suspended[l.account]:
		return ledgerapi.Lease{}, ledger.ErrSuspended
	}
	avail := f.available(l.account)
	amount, ok := grantAmount(avail, e.WantMicrocredits, e.MinMicrocredits)
	if !ok {
		return ledgerapi.Lease{}, &ledger.InsufficientError{Available: avail, Recallable: f.recall(l.account, l.id, e.MinMicrocredits)}
	}
	l.granted += amount
	l.reported = max(l.reported, e.SpentMicrocredits)
	f.extends[l.account]++
	return f.answer(l, f.ttl), nil
}

func (f *Ledger) Release(_ context.Context, id string, r ledgerapi.Release) (ledgerapi.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("release"); err != nil {
		return ledgerapi.Lease{}, err
	}
	l := f.leases[id]
	if l == nil {
		return ledgerapi.Lease{}, ledger.ErrNotFound
	}
	if l.open {
		l.open, l.reported = false, r.SpentMicrocredits
	}
	return f.answer(l, 0), nil
}

func (f *Ledger) Recalls(_ context.Context, edge string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("recalls"); err != nil {
		return nil, err
	}
	var ids []string
	for _, l := range f.leases {
		if l.edge == edge && l.open && l.recalled {
			ids = append(ids, l.id)
		}
	}
	return ids, nil
}

func (f *Ledger) Balance(_ context.Context, acct string) (ledgerapi.Balance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enter("balance"); err != nil {
		return ledgerapi.Balance{}, err
	}
	return ledgerapi.Balance{AccountID: acct, BalanceMicrocredits: f.balance[acct], AvailableMicrocredits: f.available(acct)}, nil
}
