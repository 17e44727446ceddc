package lease

import (
	"context"
	"errors"
	"time"

	"tollgate/edge/internal/gather"
	"tollgate/edge/internal/ledger"
	"tollgate/pkg/ledgerapi"
)

// BatchLedger is a Ledger that also extends many leases in one call
// (POST /internal/v1/leases/extend): results[i] answers extends[i], each with the refusals of
// a single Extend, and ledger.ErrUnsupported says the ledgerd behind it has no such call.
// *ledger.Client implements it. When the Ledger given to New has it, the background
// refreshes are batched (batcher); the extends requests wait for stay single calls.
type BatchLedger interface {
	Ledger
	ExtendMany(ctx context.Context, extends []ledgerapi.ExtendItem) ([]ledger.ExtendResult, error)
}

// Background refresh batching (batcher).
const (
	// refreshLinger is how long the batcher gathers once a lease is due for a background
	// extend before it calls ledgerd, so that leases coming due together — traffic resuming,
	// a sweep finding many past half their TTL, or the leases one batch extended, which come
	// due together again — take one call: at most about 20 rounds a second however many
	// accounts are active. A Window under 800 ms shortens it to Window/16: a busy lease is
	// topped up when half a Window's spend is left, and the linger must be a small part of
	// that.
	refreshLinger = 50 * time.Millisecond
	// refreshQueueMax bounds the leases waiting for the batcher. When it is full the extend
	// is not queued (the lease's busy mark is cleared): the next admission that finds the
	// lease low, or the next sweep, queues it again; meanwhile the lease admits what it has,
	// and a request it cannot cover asks ledgerd itself.
	refreshQueueMax = 4096
	// batchCallsMax bounds the batch calls in flight. A call can wait hundreds of
	// milliseconds behind a settlement batch's locks in ledgerd; the next rounds go on
	// meanwhile, up to this many calls, then the batcher waits and the queue fills.
	batchCallsMax = 4
	// batchFailurePause is how long the batcher waits after a failed batch call before its
	// next call, so that a failing ledgerd is asked, and the failure logged, about twice a
	// second rather than after every linger. Leases that come due meanwhile wait in the queue.
	batchFailurePause = 500 * time.Millisecond
	// batchRetry: after ledgerd answered that it has no batch extend (an edge upgraded
	// before ledgerd), leases are refreshed one call each, by the workers, for this long;
	// then the batch is tried again.
	batchRetry = time.Minute
)

// batcher is the one goroutine that gathers the background refreshes. It sleeps until a
// lease is queued, gathers for the linger, and hands the round to refreshBatch in calls of at
// most ledgerapi.ExtendBatchMax leases (batchCallsMax in flight). Requests never wait for it.
func (a *Admitter) batcher() {
	defer close(a.batchDone)
	linger := min(refreshLinger, a.cfg.Window/16)
	for {
		var first *lease
		select {
		case <-a.bg.Done():
			return
		case first = <-a.refreshQ:
		}
		if time.Now().UnixNano() < a.batchAfter.Load() {
			a.queue(job{l: first}) // ledgerd has no batch extend: one call, as before it had
			continue
		}
		wait := max(linger, time.Duration(a.batchPause.Load()-time.Now().UnixNano()))
		round, ok := gather.Round(a.bg, a.refreshQ, append(make([]*lease, 0, 64), first), wait, refreshQueueMax)
		if !ok {
			return
		}
		for start := 0; start < len(round); start += ledgerapi.ExtendBatchMax {
			part := round[start:min(start+ledgerapi.ExtendBatchMax, len(round))]
			select {
			case <-a.bg.Done():
				return
			case a.batchSlots <- struct{}{}:
			}
			a.batchWG.Add(1)
			go func() {
				defer a.batchWG.Done()
				defer func() { <-a.batchSlots }()
				a.refreshBatch(part)
			}()
		}
	}
}

// refreshBatch extends ls in one call, each as refresh extends one lease, and applies each
// result as refresh does: new terms into the lease, a refusal retires it. When the call
// fails the leases stay usable until their local expiry, as after a failed refresh, and are
// queued again by the sweep or by admissions; when ledgerd has no batch extend they go to the
// workers as single refreshes, and so do the next rounds for batchRetry.
func (a *Admitter) refreshBatch(ls []*lease) {
	xs := make([]pendingExtend, 0, len(ls))
	items := make([]ledgerapi.ExtendItem, 0, len(ls))
	for _, l := range ls {
		if l.retired.Load() {
			l.busy.Store(false)
			continue
		}
		x := a.extendCall(l, a.size(l.acct, l, 0), 0)
		xs = append(xs, x)
		items = append(items, ledgerapi.ExtendItem{LeaseID: l.id, Extend: x.req})
	}
	if len(items) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(a.bg, a.cfg.Timeout)
	sent := a.mono()
	res, err := a.batch.ExtendMany(ctx, items)
	cancel()
	a.count("extend_batch", err)
	if err != nil {
		if a.isUnsupported(err) {
			for _, x := range xs {
				a.queue(job{l: x.l}) // still busy: the worker's refresh clears the mark
			}
			return
		}
		if a.bg.Err() == nil {
			a.batchPause.Store(time.Now().Add(batchFailurePause).UnixNano())
			a.log.Warn("lease_batch_extend_failed", "leases", len(xs), "error", err)
		}
		for _, x := range xs {
			x.l.busy.Store(false)
		}
		return
	}
	for i, x := range xs {
		r := res[i]
		if r.Err == nil {
			a.extended(x, r.Lease, sent)
		} else if !a.refused(x.l, r.Err) {
			a.log.Debug("lease_extend_failed", "lease_id", x.l.id, "error", r.Err)
		}
		a.batchItems.WithLabelValues(callResult(r.Err)).Inc()
		x.l.busy.Store(false)
	}
}

// isUnsupported reports whether err says ledgerd has no batch extend, and if so switches the
// background refreshes to single calls for batchRetry.
func (a *Admitter) isUnsupported(err error) bool {
	if !errors.Is(err, ledger.ErrUnsupported) {
		return false
	}
	a.batchAfter.Store(time.Now().Add(batchRetry).UnixNano())
	a.log.Info("lease_batch_extend_unsupported", "retry_in", batchRetry)
	return true
}
