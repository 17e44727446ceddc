package lease

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"tollgate/edge/internal/admit"
	"tollgate/edge/internal/ledger"
	"tollgate/pkg/ledgerapi"
)

// refill is the outcome of one ledgerd round for an account, shared by every request that
// waited on it.
type refill struct {
	acct *account
	err  error // nil, or ledgerd's refusal, or why ledgerd could not be asked
}

// admitSlow admits a request the account's lease could not: it obtains credit from ledgerd
// (one call for all concurrent requests of the account) and retries.
func (a *Admitter) admitSlow(accountID string, hold int64) (admit.Ticket, error) {
	if hold > amountMax {
		// More than ledgerd leases in one call, so more than any account could be granted.
		return admit.Ticket{}, &admit.InsufficientError{Hold: hold, Available: a.availableBestEffort(accountID)}
	}
	for attempt := 1; ; attempt++ {
		waiting, _ := a.cache.Get(accountID)
		if waiting != nil {
			waiting.waiting.Add(hold)
		}
		r, _, _ := a.flight.Do(accountID, func() (refill, error) { return a.refill(accountID, hold), nil })
		if waiting != nil {
			waiting.waiting.Add(-hold)
		}
		if r.acct != nil {
			if l := r.acct.cur.Load(); l != nil {
				ok, dropped := l.tryTake(hold)
				if ok {
					return admit.Ticket{LeaseID: l.id, Hold: hold, State: l}, nil
				}
				if dropped {
					a.unref(l)
				}
			}
		}
		var ins *ledger.InsufficientError
		switch {
		case errors.As(r.err, &ins):
			avail := ins.Available + a.localRemaining(accountID)
			// A call made for another request's larger hold may have been refused where
			// this one would not be: ask again for this one.
			if hold > avail || attempt >= attemptsMax {
				return admit.Ticket{}, &admit.InsufficientError{Hold: hold, Available: avail}
			}
		case errors.Is(r.err, ledger.ErrSuspended):
			return admit.Ticket{}, admit.ErrSuspended
		case r.err != nil:
			return admit.Ticket{}, fmt.Errorf("%w: %w", admit.ErrUnavailable, r.err)
		case attempt >= attemptsMax:
			// Every call obtained credit that other requests took first: extremely unlikely;
			// refuse with what is visible rather than loop.
			return admit.Ticket{}, &admit.InsufficientError{Hold: hold, Available: a.localRemaining(accountID)}
		}
	}
}

// refill makes the account's current lease cover hold: it extends the lease by the
// shortfall, or grants a new one. A refusal that recalled other nodes' leases is retried
// until RecallWait has passed, since those nodes are about to return credit.
func (a *Admitter) refill(accountID string, hold int64) refill {
	acct := a.account(accountID)
	deadline := a.mono() + int64(a.cfg.RecallWait)
	for {
		now := a.mono()
		l := acct.cur.Load()
		if l != nil && (!l.usable(now, a.margin()) || l.recalled.Load()) {
			a.retire(l)
			l = nil
		}
		if l != nil && l.remaining() >= hold {
			return refill{acct: acct} // another round filled it meanwhile
		}
		size := a.size(acct, l, hold)
		var err error
		if l != nil {
			err = a.extend(l, size, max(hold-l.remaining(), 1))
			if errors.Is(err, ledger.ErrLeaseClosed) {
				a.retire(l)
				continue
			}
		} else {
			err = a.grant(acct, size, max(hold, 1))
		}
		var ins *ledger.InsufficientError
		if errors.As(err, &ins) && ins.Recallable > 0 && a.mono() < deadline {
			if !a.sleep(a.recallRetry()) {
				return refill{acct: acct, err: err}
			}
			continue
		}
		return refill{acct: acct, err: err}
	}
}

// recallRetry is how long a refused request waits before asking again: a fraction of the
// recall poll, so credit a recalled node returns is found soon after.
func (a *Admitter) recallRetry() time.Duration {
	return max(a.cfg.RecallPoll/4, 5*time.Millisecond)
}

// sleep waits d unless the admitter stops; it reports whether the full wait passed.
func (a *Admitter) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-a.stopWork:
		return false
	}
}

// account returns the account's cached state, creating and caching it when missing.
func (a *Admitter) account(id string) *account {
	if acct, ok := a.cache.Get(id); ok && !acct.gone.Load() {
		return acct
	}
	acct := &account{id: id}
	if a.cache.Set(id, acct, 1) {
		a.cache.Wait() // applied (or rejected, which marks it gone) before it is used
	} else {
		acct.gone.Store(true) // ristretto dropped the set: the state lives only for this call
	}
	return acct
}

// size is the lease size to ask for: Window of the account's recent spend rate on this node,
// plus the holds running on the lease, plus the holds waiting for it (at least this one); at
// least initialHolds holds, at most SizeMax (but never less than the hold itself).
func (a *Admitter) size(acct *account, l *lease, hold int64) int64 {
	acct.sizeMu.Lock()
	defer acct.sizeMu.Unlock()
	now, spent := a.mono(), acct.spent.Load()
	const minSpan = int64(100 * time.Millisecond)
	switch {
	case acct.markAt == 0:
		acct.markAt, acct.markSpent = now, spent
	case now-acct.markAt >= minSpan:
		acct.rate = nextRate(acct.rate, spent-acct.markSpent, now-acct.markAt)
		acct.markAt, acct.markSpent = now, spent
	}
	var running int64
	if l != nil {
		running = max(l.used.Load()-l.spent.Load(), 0)
	}
	s := satAdd(satAdd(mulDiv(acct.rate, int64(a.cfg.Window), int64(time.Second)), running), max(hold, acct.waiting.Load()))
	s = max(s, satMul(hold, initialHolds))
	return min(max(min(s, a.cfg.SizeMax), hold), amountMax)
}

// rateHalfLife is how fast the spend-rate estimate may fall: by half per rateHalfLife.
const rateHalfLife = 30 * time.Second

// nextRate is the account's spend-rate estimate (µcr per second) after spend µcr in the
// span ns since the last measurement (about one lease's life): the measured rate when it is
// higher than prev, else prev decayed by half per rateHalfLife, but never below what was
// measured. A measurement span with a pause in it averages the pause in (one of 7 s with a
// 5 s pause reads a third of the rate): taken as is, a busy account back from a pause
// would be leased a few holds' worth, and its requests would wait for ledgerd until the
// next measurement. The cost is a lease up to twice too large for half a minute after a
// real slowdown; ledgerd still grants at most its share of what is available.
func nextRate(prev, spend, span int64) int64 {
	measured := mulDiv(spend, int64(time.Second), span)
	if measured >= prev {
		return measured
	}
	decayed := int64(float64(prev) * math.Exp2(-float64(span)/float64(rateHalfLife)))
	return max(measured, decayed)
}

// grant asks ledgerd for a new lease of size (at least minimum) and makes it the account's
// current one.
func (a *Admitter) grant(acct *account, size, minimum int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Timeout)
	defer cancel()
	sent := a.mono()
	resp, err := a.led.Grant(ctx, ledgerapi.Grant{AccountID: acct.id, EdgeID: a.cfg.EdgeID,
		WantMicrocredits: size, MinMicrocredits: minimum})
	a.count("grant", err)
	if err != nil {
		return err
	}
	l := &lease{id: resp.LeaseID, acct: acct, seenAt: sent}
	l.granted.Store(resp.GrantedMicrocredits)
	l.refs.Store(1) // the account's reference
	a.applyTerms(l, resp, sent, size, resp.GrantedMicrocredits, size)
	if acct.gone.Load() {
		// Not cached: nothing would ever return it on eviction, so return it when idle.
		l.tight.Store(true)
	}
	a.mu.Lock()
	closed := a.closed
	a.leases[l.id] = l
	a.mu.Unlock()
	if old := acct.cur.Swap(l); old != nil {
		a.retire(old)
	}
	if closed {
		a.retire(l) // shutting down: it is released once the waiting request is done
	}
	return nil
}

// extend asks ledgerd to add to l up to size − remaining (at least minimum), reporting the
// node's spend and refreshing the expiry. minimum 0 only refreshes when nothing is spare.
func (a *Admitter) extend(l *lease, size, minimum int64) error {
	x := a.extendCall(l, size, minimum)
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Timeout)
	defer cancel()
	sent := a.mono()
	resp, err := a.led.Extend(ctx, l.id, x.req)
	a.count("extend", err)
	if err != nil {
		return err
	}
	a.extended(x, resp, sent)
	return nil
}

// pendingExtend is one extend being asked for: l's, and what extended needs of the asking.
type pendingExtend struct {
	l      *lease
	req    ledgerapi.Extend
	size   int64 // the lease size aimed at
	before int64 // l's granted when the extend was asked for
}

// extendCall prepares an extend of l up to size − remaining (at least minimum).
func (a *Admitter) extendCall(l *lease, size, minimum int64) pendingExtend {
	want := min(max(size-l.remaining(), minimum, 0), amountMax)
	return pendingExtend{l: l, size: size, before: l.granted.Load(),
		req: ledgerapi.Extend{WantMicrocredits: want, MinMicrocredits: minimum, SpentMicrocredits: l.spent.Load()}}
}

// extended takes ledgerd's answer to x, sent at sent (monotonic), into its lease.
func (a *Admitter) extended(x pendingExtend, resp ledgerapi.Lease, sent int64) {
	x.l.raiseGranted(resp.GrantedMicrocredits)
	a.applyTerms(x.l, resp, sent, x.req.WantMicrocredits, resp.GrantedMicrocredits-x.before, x.size)
}

// applyTerms takes a grant or extend answer into l: expiry, and whether the account is low.
// asked and got are what this call asked for and obtained; size is the lease size it aimed
// at, of which half is the level that triggers the next background top-up.
func (a *Admitter) applyTerms(l *lease, resp ledgerapi.Lease, sent, asked, got, size int64) {
	ttl := resp.TTLMillis * int64(time.Millisecond)
	l.ttl.Store(ttl)
	// Counted from when the call was sent: ledgerd's expiry is later than that.
	l.until.Store(sent + ttl)
	if asked > 0 {
		l.tight.Store(got < asked || l.acct.gone.Load())
	}
	// The top-up level follows the size aimed at even when nothing was asked (the lease
	// already held that much): a level left from a larger size would queue a top-up at every
	// admission until the lease ran dry.
	if l.tight.Load() {
		l.lowWater.Store(0)
	} else {
		l.lowWater.Store(size / 2)
	}
}

// availableBestEffort asks ledgerd what the account has, for a 402 that cannot come from a
// lease call; 0 when ledgerd does not answer.
func (a *Admitter) availableBestEffort(accountID string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Timeout)
	defer cancel()
	b, err := a.Balance(ctx, accountID)
	if err != nil {
		return 0
	}
	return b.AvailableMicrocredits
}

// count records a lease call's result.
func (a *Admitter) count(call string, err error) {
	a.calls.WithLabelValues(call, callResult(err)).Inc()
}

// callResult is a ledgerd call's outcome for the metrics: ok, refused (a refusal of ledgerd's),
// unsupported (a ledgerd without the call) or error.
func callResult(err error) string {
	var ins *ledger.InsufficientError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &ins), errors.Is(err, ledger.ErrLeaseClosed), errors.Is(err, ledger.ErrSuspended),
		errors.Is(err, ledger.ErrNotFound):
		return "refused"
	case errors.Is(err, ledger.ErrUnsupported):
		return "unsupported"
	}
	return "error"
}

// mulDiv is a·b/c for non-negative a, b and positive c, saturating instead of overflowing.
// It only sizes leases, so saturation is harmless.
func mulDiv(a, b, c int64) int64 {
	if a <= 0 || b <= 0 || c <= 0 {
		return 0
	}
	const maxInt64 = 1<<63 - 1
	if a > maxInt64/b {
		return maxInt64 / c
	}
	return a * b / c
}

func satAdd(a, b int64) int64 {
	const maxInt64 = 1<<63 - 1
	if b > 0 && a > maxInt64-b {
		return maxInt64
	}
	return a + b
}

func satMul(a, b int64) int64 {
	const maxInt64 = 1<<63 - 1
	if a > 0 && b > 0 && a > maxInt64/b {
		return maxInt64
	}
	return a * b
}
