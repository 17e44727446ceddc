package lease

import (
	"sync"
	"sync/atomic"
)

// lease is this node's share of one credit lease granted by ledgerd. Every field the request
// path touches is atomic: admission is a compare-and-swap on used, never a lock.
//
// Reference counting decides when the lease can be returned: the account holds one
// reference while the lease is its current one, and every admitted request holds one until
// it finishes. Retiring the lease (eviction, recall, expiry, shutdown, low balance) drops the
// account's reference; whoever drops the last one queues the release, so a lease is released
// exactly once and only when its spend is final.
type lease struct {
	id   string
	acct *account

	granted atomic.Int64 // µcr granted by ledgerd so far (grant plus extends)
	used    atomic.Int64 // µcr: holds of running requests plus costs of finished ones
	spent   atomic.Int64 // µcr: costs of finished requests, reported on extend and release
	refs    atomic.Int64 // running requests, plus 1 while current; 0 = being released
	until   atomic.Int64 // monotonic ns: the local expiry; the sweep retires the lease before it
	ttl     atomic.Int64 // ns: the lifetime ledgerd gave at the last grant or extend
	// lowWater: when what is left falls below it, a background extend tops the lease up
	// before a request has to wait for one.
	lowWater atomic.Int64
	// tight: ledgerd granted less than asked, so the account is low. The lease is then
	// returned as soon as no request runs on it, because its unspent part could be what
	// another node needs.
	tight    atomic.Bool
	retired  atomic.Bool
	recalled atomic.Bool
	busy     atomic.Bool // a background extend is queued or running

	// Owned by the goroutine running the background work.
	seenUsed   int64 // used when the sweep last refreshed it for activity, to tell an idle lease
	seenAt     int64 // monotonic ns of that refresh (or of the grant)
	releaseTry int   // failed release attempts
	retryAt    int64 // monotonic ns of the next release attempt
}

// tryTake admits hold µcr if the lease is not being released and has room. It never
// blocks, never allocates and reads no clock (time.Now costs more than the rest of
// admission): expiry is enforced by the sweep, which retires a lease before its local
// expiry. When it fails after taking a reference, it returns dropped: the caller must drop
// that reference with unref (it may be the last one, if the lease was retired meanwhile).
func (l *lease) tryTake(hold int64) (ok, dropped bool) {
	for {
		r := l.refs.Load()
		if r <= 0 {
			return false, false // its release has begun
		}
		if l.refs.CompareAndSwap(r, r+1) {
			break
		}
	}
	for {
		u := l.used.Load()
		if hold > l.granted.Load()-u {
			return false, true
		}
		if l.used.CompareAndSwap(u, u+hold) {
			return true, false
		}
	}
}

// remaining is what the lease can still admit, negative when actual costs overran the holds.
func (l *lease) remaining() int64 { return l.granted.Load() - l.used.Load() }

// usable reports whether new requests may be admitted from the lease at now, keeping
// margin ns before its local expiry.
func (l *lease) usable(now, margin int64) bool {
	return !l.retired.Load() && now < l.until.Load()-margin
}

// raiseGranted sets granted to total if that is more: answers to concurrent extends may
// arrive in any order, and each carries the running total.
func (l *lease) raiseGranted(total int64) {
	for {
		g := l.granted.Load()
		if total <= g || l.granted.CompareAndSwap(g, total) {
			return
		}
	}
}

// account is one account's state on this node, kept in the ristretto cache.
type account struct {
	id  string
	cur atomic.Pointer[lease] // the lease requests are admitted from; nil when none
	// spent counts costs finished on this node under any lease: the lease size follows it.
	spent atomic.Int64
	gone  atomic.Bool // left the cache (or never got in): its leases must not be kept
	// waiting sums the holds of requests waiting for a ledgerd round on this account, so
	// one round asks for all of them.
	waiting atomic.Int64

	// Spend-rate estimate, for sizing leases.
	sizeMu    sync.Mutex
	markAt    int64 // monotonic ns of the last measurement; 0 before the first
	markSpent int64 // spent at markAt
	rate      int64 // µcr per second at the last measurement
}
