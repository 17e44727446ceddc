package lease

import (
	"context"
	"errors"
	"time"

	"tollgate/edge/internal/ledger"
	"tollgate/pkg/ledgerapi"
)

// job is one background ledgerd call: a top-up or refresh (extend), or a release.
type job struct {
	l       *lease
	release bool
}

// queue hands j to the workers without blocking. A release that does not fit is kept in
// pending for the next sweep; an extend that does not fit is dropped, and the sweep asks
// again.
func (a *Admitter) queue(j job) {
	select {
	case a.jobs <- j:
		return
	default:
	}
	if j.release {
		a.mu.Lock()
		a.pending = append(a.pending, j.l)
		a.mu.Unlock()
		return
	}
	j.l.busy.Store(false)
}

// queueRelease schedules l's release; its references are all gone.
func (a *Admitter) queueRelease(l *lease) { a.queue(job{l: l, release: true}) }

// topUp schedules a background extend of l unless one is already on its way: through the
// batcher when ledgerd has the batch extend, else as a job for the workers. Never blocks: a
// full queue drops it, and the sweep or a later admission asks again.
func (a *Admitter) topUp(l *lease) {
	if !l.busy.CompareAndSwap(false, true) {
		return
	}
	if a.batch == nil {
		a.queue(job{l: l})
		return
	}
	select {
	case a.refreshQ <- l:
	default:
		l.busy.Store(false)
	}
}

// work runs background calls until Close.
func (a *Admitter) work() {
	defer a.workWG.Done()
	for {
		select {
		case <-a.stopWork:
			return
		case j := <-a.jobs:
			if j.release {
				a.release(j.l)
			} else {
				a.refresh(j.l)
			}
		}
	}
}

// refresh extends a current lease in the background, one call: up to its size again when
// it runs low, and in any case to push its expiry out. Nothing here is a request's minimum,
// so ledgerd never refuses it for want of credit (it grants what it can, maybe nothing).
// refreshBatch does the same for many leases in one call.
func (a *Admitter) refresh(l *lease) {
	defer l.busy.Store(false)
	if l.retired.Load() {
		return
	}
	if err := a.extend(l, a.size(l.acct, l, 0), 0); err != nil && !a.refused(l, err) {
		// ledgerd unreachable: the lease stays usable until its local expiry.
		a.log.Debug("lease_extend_failed", "lease_id", l.id, "error", err)
	}
}

// refused takes ledgerd's refusal of a background extend of l: a lease ledgerd closed, does
// not know, or will not extend (suspended account) is retired. It reports whether err was
// such a refusal; on any other error the lease stays usable until its local expiry.
func (a *Admitter) refused(l *lease, err error) bool {
	if errors.Is(err, ledger.ErrLeaseClosed) || errors.Is(err, ledger.ErrNotFound) || errors.Is(err, ledger.ErrSuspended) {
		a.retire(l)
		return true
	}
	return false
}

// release returns l to ledgerd with its final spend. A failed release is retried with
// backoff from the sweep; it is dropped once ledgerd has surely reclaimed the lease.
func (a *Admitter) release(l *lease) {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Timeout)
	_, err := a.led.Release(ctx, l.id, ledgerapi.Release{SpentMicrocredits: l.spent.Load()})
	cancel()
	a.count("release", err)
	now := a.mono()
	if err != nil && !errors.Is(err, ledger.ErrNotFound) {
		if now-l.until.Load() < int64(releaseGiveUp) {
			l.releaseTry++
			l.retryAt = now + int64(min(time.Duration(l.releaseTry)*100*time.Millisecond, 5*time.Second))
			a.mu.Lock()
			a.pending = append(a.pending, l)
			a.mu.Unlock()
			return
		}
		a.log.Warn("lease_release_abandoned", "lease_id", l.id, "spent_microcredits", l.spent.Load(), "error", err)
	}
	a.mu.Lock()
	delete(a.leases, l.id)
	a.mu.Unlock()
}

// sweepLoop runs the periodic work until Close: recalls, expiry, refreshes, release retries.
func (a *Admitter) sweepLoop() {
	defer close(a.sweepDone)
	t := time.NewTicker(a.cfg.RecallPoll)
	defer t.Stop()
	for {
		select {
		case <-a.stopSweep:
			return
		case <-t.C:
		}
		a.pollRecalls()
		a.sweep()
	}
}

// pollRecalls retires the leases ledgerd recalled, so they are released once idle.
func (a *Admitter) pollRecalls() {
	a.mu.Lock()
	n := len(a.leases)
	a.mu.Unlock()
	if n == 0 {
		return // nothing to recall: spare ledgerd the call
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Timeout)
	ids, err := a.led.Recalls(ctx, a.cfg.EdgeID)
	cancel()
	a.count("recalls", err)
	if err != nil {
		a.log.Debug("lease_recalls_failed", "error", err)
		return
	}
	for _, id := range ids {
		a.mu.Lock()
		l := a.leases[id]
		a.mu.Unlock()
		if l != nil {
			l.recalled.Store(true)
			a.retire(l)
		}
		// An id this node does not hold belongs to an earlier run under the same edge id:
		// its spend is unknown here, so ledgerd reclaims it after TTL plus grace.
	}
}

// margin is how long before its local expiry a lease stops being used: two sweeps, since
// admission reads no clock and the sweep must retire the lease before the instant ledgerd
// may consider it expired, even when a tick is late.
func (a *Admitter) margin() int64 { return 2 * int64(a.cfg.RecallPoll) }

// sweep retires expired leases, returns idle ones, refreshes busy ones before they expire,
// and requeues releases due for a retry.
func (a *Admitter) sweep() {
	now := a.mono()
	a.mu.Lock()
	live := make([]*lease, 0, len(a.leases))
	for _, l := range a.leases {
		if !l.retired.Load() {
			live = append(live, l)
		}
	}
	var due []*lease
	keep := a.pending[:0]
	for _, l := range a.pending {
		if l.retryAt <= now {
			due = append(due, l)
		} else {
			keep = append(keep, l)
		}
	}
	a.pending = keep
	a.mu.Unlock()

	for _, l := range due {
		a.queue(job{l: l, release: true})
	}
	margin := a.margin()
	for _, l := range live {
		until := l.until.Load()
		switch {
		case !l.usable(now, margin):
			a.retire(l) // ledgerd could not be reached to extend it: this node is done with it
		case until-now < l.ttl.Load()/2 && !l.busy.Load():
			// Half its life is gone and no extend is on its way: keep it (extend it) if it
			// was used since it was last kept or has requests running — a long stream keeps
			// its lease alive — else, once half a TTL has passed idle, give the credit back.
			used := l.used.Load()
			switch {
			case used != l.seenUsed || l.refs.Load() > 1:
				l.seenUsed, l.seenAt = used, now
				a.topUp(l)
			case now-l.seenAt >= l.ttl.Load()/2:
				a.retire(l)
			}
		}
	}
}
