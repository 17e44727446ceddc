// Package balance is the stage-1 Admitter: it admits a request when the account's available
// balance, as ledgerd last reported it, minus what this node has admitted since, covers the
// request's hold. It is deliberately approximate across nodes — each node sees only its own
// in-flight holds, and spend not yet settled by ledgerd is forgotten when the balance is
// reloaded — which is what credit leases (the next stage) fix. It exists so the edge refuses
// accounts that are empty and requests that are plainly too big for what is left.
//
// Per account the node keeps, in ristretto:
//   - the last balance from ledgerd, trusted for TTL and refreshed in the background after
//     3/4 of it, so steady traffic never waits for ledgerd;
//   - held: the holds of admitted requests still running here (kept across reloads, since
//     ledgerd knows nothing of them);
//   - spent: the costs of requests finished here since the balance was loaded.
//
// available = ledger available − held − spent. Admission is a compare-and-swap on held.
package balance

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/ristretto/v2"
	"github.com/dgraph-io/ristretto/v2/z"

	"tollgate/edge/internal/admit"
	"tollgate/edge/internal/flight"
	"tollgate/pkg/ledgerapi"
)

// Source reports an account's balance. *ledger.Client implements it.
type Source interface {
	Balance(ctx context.Context, accountID string) (ledgerapi.Balance, error)
}

// Config of the Admitter. All fields but Now are required.
type Config struct {
	TTL      time.Duration // trust a loaded balance this long
	Timeout  time.Duration // one ledgerd call
	CacheMax int           // cached accounts
	Now      func() time.Time
}

type snapshot struct {
	available int64 // µcr, as ledgerd reported it
	loaded    int64 // Unix ns
}

// account is one account's state on this node. It lives as long as the cache keeps it.
type account struct {
	snap       atomic.Pointer[snapshot]
	held       atomic.Int64
	spent      atomic.Int64
	refreshing atomic.Bool
}

// Admitter implements admit.Admitter over ledgerd balances. Safe for concurrent use.
type Admitter struct {
	cfg       Config
	src       Source
	log       *slog.Logger
	cache     *ristretto.Cache[string, *account]
	flight    flight.Group[string, *account]
	refreshAt int64
	mu        sync.Mutex // orders wg.Add against Close
	wg        sync.WaitGroup
	closed    bool
}

var _ admit.Admitter = (*Admitter)(nil)

// New builds an Admitter over src.
func New(cfg Config, src Source, log *slog.Logger) (*Admitter, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cache, err := ristretto.NewCache(&ristretto.Config[string, *account]{
		NumCounters:        int64(cfg.CacheMax) * 10,
		MaxCost:            int64(cfg.CacheMax),
		BufferItems:        64,
		IgnoreInternalCost: true,
		// An explicit string hash: ristretto's generic default boxes the key.
		KeyToHash: func(k string) (uint64, uint64) { return z.MemHashString(k), xxhash.Sum64String(k) },
	})
	if err != nil {
		return nil, fmt.Errorf("build account cache: %w", err)
	}
	return &Admitter{cfg: cfg, src: src, log: log, cache: cache, refreshAt: int64(cfg.TTL) * 3 / 4}, nil
}

// Admit implements admit.Admitter.
func (a *Admitter) Admit(accountID string, hold int64) (admit.Ticket, error) {
	acct, err := a.account(accountID)
	if err != nil {
		return admit.Ticket{}, err
	}
	snap := acct.snap.Load()
	for {
		held := acct.held.Load()
		avail := snap.available - held - acct.spent.Load()
		if avail <= 0 || avail < hold {
			return admit.Ticket{}, &admit.InsufficientError{Hold: hold, Available: avail}
		}
		if acct.held.CompareAndSwap(held, held+hold) {
			return admit.Ticket{Hold: hold, State: acct}, nil
		}
	}
}

// Finish implements admit.Admitter.
func (a *Admitter) Finish(t admit.Ticket, cost int64) {
	acct := t.State.(*account)
	acct.held.Add(-t.Hold)
	acct.spent.Add(cost)
}

// account returns the account's state with a balance younger than TTL, loading it if needed.
func (a *Admitter) account(id string) (*account, error) {
	now := a.cfg.Now().UnixNano()
	acct, ok := a.cache.Get(id)
	if ok {
		age := now - acct.snap.Load().loaded
		if age < int64(a.cfg.TTL) {
			if age > a.refreshAt && acct.refreshing.CompareAndSwap(false, true) {
				a.refreshInBackground(id, acct)
			}
			return acct, nil
		}
	} else {
		acct = nil
	}
	return a.load(id, acct)
}

func (a *Admitter) refreshInBackground(id string, acct *account) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		acct.refreshing.Store(false)
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if _, err := a.load(id, acct); err != nil {
			acct.refreshing.Store(false) // the loaded balance stays valid until its TTL
			a.log.Warn("balance_refresh_failed", "error", err)
		}
	}()
}

// load fetches the balance (one call for all concurrent callers) into acct, or into a new
// account state when acct is nil.
func (a *Admitter) load(id string, acct *account) (*account, error) {
	got, err, _ := a.flight.Do(id, func() (*account, error) {
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Timeout)
		defer cancel()
		b, err := a.src.Balance(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", admit.ErrUnavailable, err)
		}
		target := acct
		if target == nil {
			// Another caller may have created the state since this one missed.
			if cur, ok := a.cache.Get(id); ok {
				target = cur
			} else {
				target = &account{}
			}
		}
		// Spend finished since the last load is now (or soon) in ledgerd's balance.
		target.spent.Store(0)
		target.snap.Store(&snapshot{available: b.AvailableMicrocredits, loaded: a.cfg.Now().UnixNano()})
		target.refreshing.Store(false)
		if target != acct {
			a.cache.Set(id, target, 1)
			a.cache.Wait()
		}
		return target, nil
	})
	return got, err
}

// Close waits for background refreshes and frees the cache. Idempotent.
func (a *Admitter) Close() {
	a.mu.Lock()
	was := a.closed
	a.closed = true
	a.mu.Unlock()
	if was {
		return
	}
	a.wg.Wait()
	a.cache.Close()
}
