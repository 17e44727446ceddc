// Package lease is the edge's credit-lease Admitter (DESIGN §3 "Credit leases"): while an
// account's lease on this node covers a request's hold, admission is a compare-and-swap on
// local memory and no call reaches ledgerd.
//
// Per account the node keeps, in ristretto, one lease granted by ledgerd:
//
//	remaining = granted − used,  used = holds of running requests + costs of finished ones
//
// A request is admitted when its hold fits in remaining (one CAS). When it does not, the
// request asks ledgerd — concurrent misses for one account share one call — to extend the
// lease by at least the shortfall (or grant a new one); ledgerd answers 402 when the
// account's available credit cannot cover it, and the request gets 402 with what it may cost
// and what is available. When ledgerd cannot be reached, requests the lease covers go on and
// the others get 503.
//
// Sizing: a lease is asked for Window worth of the account's recent spend on this node plus
// the holds running on it (at least four holds, at most SizeMax); ledgerd grants at most a
// quarter of the account's available credit, and exactly the request's hold when that is
// all it can spare. A background extend tops a busy lease up when it falls below half its
// size, so steady traffic does not wait for ledgerd, and refreshes its expiry. When ledgerd
// has the batch extend (BatchLedger), these background extends are gathered by one batcher
// goroutine and sent many leases a call (batch.go), so ledgerd's calls and commits follow
// rounds, not active accounts; the extends a request waits for stay single calls.
//
// Returning credit: a lease is released — reporting what the node spent from it, so ledgerd
// keeps reserving only what has not settled yet — when it leaves the cache, when it has been
// idle for half its TTL, when ledgerd recalls it (another node was refused credit this lease
// holds; recalls are polled every RecallPoll), at graceful shutdown, and, when ledgerd granted
// less than asked (the account is low), as soon as no request runs on it. A node that
// vanishes leaves its leases to expire; ledgerd reclaims them after TTL plus its grace.
//
// Invariant: a lease admits holds only up to what ledgerd granted it, so requests whose
// actual cost is within their hold never spend more than was reserved for them. A request
// that costs more than its hold overdraws the lease; the next request on the node must then
// obtain the deficit too, which an account that cannot cover it refuses with 402.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/ristretto/v2"
	"github.com/dgraph-io/ristretto/v2/z"
	"github.com/prometheus/client_golang/prometheus"

	"tollgate/edge/internal/admit"
	"tollgate/edge/internal/flight"
	"tollgate/pkg/ledgerapi"
)

// Ledger is what the admitter needs from ledgerd; *ledger.Client implements it. Refusals
// are the errors of package ledger (*ledger.InsufficientError, ledger.ErrLeaseClosed,
// ledger.ErrSuspended, ledger.ErrNotFound); any other error means ledgerd was unreachable.
type Ledger interface {
	Grant(ctx context.Context, g ledgerapi.Grant) (ledgerapi.Lease, error)
	Extend(ctx context.Context, leaseID string, e ledgerapi.Extend) (ledgerapi.Lease, error)
	Release(ctx context.Context, leaseID string, r ledgerapi.Release) (ledgerapi.Lease, error)
	Recalls(ctx context.Context, edgeID string) ([]string, error)
	Balance(ctx context.Context, accountID string) (ledgerapi.Balance, error)
}

// Config of the Admitter. Zero durations and sizes take the defaults noted.
type Config struct {
	// EdgeID names this node to ledgerd (leases and recalls are per node). Required.
	EdgeID string
	// Timeout bounds one ledgerd call. Default: 2s.
	Timeout time.Duration
	// CacheMax bounds the accounts tracked, each with at most one lease. Default: 100000.
	CacheMax int
	// Window is how much of the account's recent spend on this node a lease covers.
	// Default: 5s.
	Window time.Duration
	// SizeMax bounds the lease size asked for, in µcr; a single hold above it is still asked
	// for on its own. Default: 1,000 credits.
	SizeMax int64
	// RecallPoll is how often the node asks ledgerd which of its leases are recalled, and
	// how often it sweeps its leases for expiry and refreshes. Default: 250ms.
	RecallPoll time.Duration
	// RecallWait is how long a request refused by ledgerd waits for credit that other
	// nodes' recalled leases hold, before it gets 402. 0: no wait (other nodes still
	// return the credit, for later requests).
	RecallWait time.Duration
	// Now is the clock; default time.Now. Its monotonic reading times leases.
	Now func() time.Time
	// Registerer receives the lease metrics; nil registers none.
	Registerer prometheus.Registerer
}

func (c *Config) defaults() {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Timeout, 2*time.Second)
	def(&c.Window, 5*time.Second)
	def(&c.RecallPoll, 250*time.Millisecond)
	c.RecallWait = max(c.RecallWait, 0)
	if c.CacheMax <= 0 {
		c.CacheMax = 100000
	}
	if c.SizeMax <= 0 {
		c.SizeMax = 1000 * 1_000_000
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

const (
	// initialHolds: a lease is at least this many of the asking request's holds, so a new
	// account's first few requests on a node need one call, not one each.
	initialHolds = 4
	// amountMax is the most ledgerd accepts in one lease call (10⁶ credits).
	amountMax = 1_000_000_000_000
	// attemptsMax bounds the calls one request makes when others on the node keep taking
	// what its calls obtained.
	attemptsMax = 16
	// workers run background ledgerd calls (releases, and extends when they are not batched);
	// jobsMax bounds their queue.
	// A full queue defers the work to the next sweep. A call mostly waits — for the network
	// and for ledgerd's database, where a settlement batch can hold the lock for hundreds of
	// milliseconds — so there are enough workers for the top-ups of many busy accounts at
	// once: with 4, a hundred accounts crossing their low-water marks together (traffic
	// resuming) queued for a second behind such waits, and their leases ran dry first.
	// The ledger client keeps up to 64 idle connections, more than the workers need.
	workers = 32
	jobsMax = 4096
	// releaseGiveUp: a release still failing this long after the lease's local expiry is
	// dropped (logged): ledgerd has reclaimed the lease by then.
	releaseGiveUp = 10 * time.Minute
)

// Admitter implements admit.Admitter with credit leases. Safe for concurrent use.
type Admitter struct {
	cfg    Config
	led    Ledger
	log    *slog.Logger
	epoch  time.Time
	cache  *ristretto.Cache[string, *account]
	flight flight.Group[string, refill]

	mu      sync.Mutex
	leases  map[string]*lease // every lease not yet released, by id
	pending []*lease          // releases waiting for a retry or for room in jobs
	closed  bool

	jobs chan job
	// Background refresh batching (batch.go); batch is nil when led has no batch extend.
	batch      BatchLedger
	refreshQ   chan *lease   // leases marked busy, waiting for the batcher; refreshQueueMax
	batchSlots chan struct{} // batch calls in flight; batchCallsMax
	batchAfter atomic.Int64  // Unix ns before which refreshes are single calls (ledgerd lacks the batch)
	batchPause atomic.Int64  // Unix ns before which the batcher makes no call (after a failure)
	bg         context.Context
	stopBG     context.CancelFunc
	batchDone  chan struct{} // closed when the batcher has returned
	batchWG    sync.WaitGroup
	stopSweep  chan struct{}
	stopWork   chan struct{}
	sweepDone  chan struct{}
	workWG     sync.WaitGroup

	local      atomic.Uint64 // admissions answered from a lease
	rpc        atomic.Uint64 // admissions that waited for ledgerd
	calls      *prometheus.CounterVec
	batchItems *prometheus.CounterVec
}

var _ admit.Admitter = (*Admitter)(nil)

// New builds the Admitter and starts its background work; Close stops it.
func New(cfg Config, led Ledger, log *slog.Logger) (*Admitter, error) {
	cfg.defaults()
	if cfg.EdgeID == "" {
		return nil, errors.New("lease admitter: no edge id")
	}
	a := &Admitter{cfg: cfg, led: led, log: log, epoch: cfg.Now(), leases: map[string]*lease{},
		jobs: make(chan job, jobsMax), stopSweep: make(chan struct{}), stopWork: make(chan struct{}),
		sweepDone: make(chan struct{})}
	cache, err := ristretto.NewCache(&ristretto.Config[string, *account]{
		NumCounters:        int64(cfg.CacheMax) * 10,
		MaxCost:            int64(cfg.CacheMax),
		BufferItems:        64,
		IgnoreInternalCost: true,
		// An explicit string hash: ristretto's generic default boxes the key.
		KeyToHash: func(k string) (uint64, uint64) { return z.MemHashString(k), xxhash.Sum64String(k) },
		// Evicted, rejected or deleted: the account's lease goes back to ledgerd once no
		// request runs on it. Runs on ristretto's goroutine; retire never blocks.
		OnExit: func(acct *account) {
			if acct == nil {
				return
			}
			acct.gone.Store(true)
			if l := acct.cur.Load(); l != nil {
				a.retire(l)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("build lease cache: %w", err)
	}
	a.cache = cache
	a.calls = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_edge_lease_calls_total",
		Help: "Lease calls to ledgerd by call (grant, extend, extend_batch, release, recalls) and result (ok, refused, unsupported, error)."},
		[]string{"call", "result"})
	a.batchItems = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_edge_lease_batch_extends_total",
		Help: "Leases extended in batch calls (call=extend_batch that answered), by result (ok, refused)."},
		[]string{"result"})
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(a.calls, a.batchItems,
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tollgate_edge_lease_admissions_total",
				Help: "Admissions answered from a local lease (path=local) or after a ledgerd call (path=ledgerd).", ConstLabels: prometheus.Labels{"path": "local"}},
				func() float64 { return float64(a.local.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tollgate_edge_lease_admissions_total",
				Help: "Admissions answered from a local lease (path=local) or after a ledgerd call (path=ledgerd).", ConstLabels: prometheus.Labels{"path": "ledgerd"}},
				func() float64 { return float64(a.rpc.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tollgate_edge_leases",
				Help: "Leases this node holds (not yet released)."},
				func() float64 { a.mu.Lock(); defer a.mu.Unlock(); return float64(len(a.leases)) }),
		)
	}
	for range workers {
		a.workWG.Add(1)
		go a.work()
	}
	a.bg, a.stopBG = context.WithCancel(context.Background())
	a.batchDone = make(chan struct{})
	if b, ok := led.(BatchLedger); ok {
		a.batch = b
		a.refreshQ = make(chan *lease, refreshQueueMax)
		a.batchSlots = make(chan struct{}, batchCallsMax)
		go a.batcher()
	} else {
		close(a.batchDone)
	}
	go a.sweepLoop()
	return a, nil
}

// mono is the monotonic time since the admitter started, in ns.
func (a *Admitter) mono() int64 { return int64(a.cfg.Now().Sub(a.epoch)) }

// Admit implements admit.Admitter. With a warm lease it is a cache read and two CAS.
func (a *Admitter) Admit(accountID string, hold int64) (admit.Ticket, error) {
	if acct, ok := a.cache.Get(accountID); ok {
		if l := acct.cur.Load(); l != nil {
			if ok, dropped := l.tryTake(hold); ok {
				a.local.Add(1)
				if !l.tight.Load() && l.remaining() < l.lowWater.Load() {
					a.topUp(l)
				}
				return admit.Ticket{LeaseID: l.id, Hold: hold, State: l}, nil
			} else if dropped {
				a.unref(l)
			}
		}
	}
	a.rpc.Add(1)
	return a.admitSlow(accountID, hold)
}

// Finish implements admit.Admitter: the hold becomes the actual cost, which may exceed it.
func (a *Admitter) Finish(t admit.Ticket, cost int64) {
	l, ok := t.State.(*lease)
	if !ok {
		return
	}
	l.used.Add(cost - t.Hold)
	l.spent.Add(cost)
	l.acct.spent.Add(cost)
	n := l.refs.Add(-1)
	switch {
	case n == 0:
		a.queueRelease(l)
	case n == 1 && l.tight.Load() && !l.retired.Load() && l.remaining() >= 0:
		// The account is low and nothing runs on the lease: give its rest back now. An
		// overrun lease is kept instead, so the next request must first obtain its deficit.
		a.retire(l)
	}
}

// Balance answers GET /v1/balance: ledgerd's figures, with this node's view folded in.
// ledgerd's available subtracts the whole of this node's lease, but what the lease has not
// used is still the account's to spend, so available here is net of the holds and unsettled
// spend only.
func (a *Admitter) Balance(ctx context.Context, accountID string) (ledgerapi.Balance, error) {
	b, err := a.led.Balance(ctx, accountID)
	if err != nil {
		return b, err
	}
	b.AvailableMicrocredits += a.localRemaining(accountID)
	return b, nil
}

// localRemaining is what this node's current lease of the account can still admit (may be
// negative after an overrun), or 0.
func (a *Admitter) localRemaining(accountID string) int64 {
	acct, ok := a.cache.Get(accountID)
	if !ok {
		return 0
	}
	if l := acct.cur.Load(); l != nil && l.usable(a.mono(), a.margin()) {
		return l.remaining()
	}
	return 0
}

// retire stops new admissions from l and drops the account's reference: the lease is
// released when the last running request on it finishes. Idempotent; never blocks.
func (a *Admitter) retire(l *lease) {
	if !l.retired.CompareAndSwap(false, true) {
		return
	}
	l.acct.cur.CompareAndSwap(l, nil)
	a.unref(l)
}

// unref drops one reference, queueing the release when it was the last.
func (a *Admitter) unref(l *lease) {
	if l.refs.Add(-1) == 0 {
		a.queueRelease(l)
	}
}

// Close stops the batcher — batch calls in flight are cancelled, queued refreshes dropped —
// returns every lease to ledgerd, waiting up to ctx for the calls, then stops the
// background work and frees the cache. Requests must have finished (the server has shut
// down): a lease with a request still running is left to expire. Idempotent.
func (a *Admitter) Close(ctx context.Context) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	close(a.stopSweep)
	<-a.sweepDone
	a.stopBG()
	<-a.batchDone
	a.batchWG.Wait()

	a.mu.Lock()
	all := make([]*lease, 0, len(a.leases))
	for _, l := range a.leases {
		all = append(all, l)
	}
	a.mu.Unlock()
	for _, l := range all {
		a.retire(l)
	}
	var err error
	for {
		a.mu.Lock()
		left, pend := len(a.leases), a.pending
		a.pending = nil
		a.mu.Unlock()
		if left == 0 {
			break
		}
		for _, l := range pend {
			a.queue(job{l: l, release: true})
		}
		select {
		case <-ctx.Done():
			err = fmt.Errorf("return leases: %d not released: %w", left, ctx.Err())
		case <-time.After(20 * time.Millisecond):
			continue
		}
		break
	}
	close(a.stopWork)
	a.workWG.Wait()
	a.cache.Close()
	return err
}
