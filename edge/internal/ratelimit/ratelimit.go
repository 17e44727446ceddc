// Package ratelimit is the per-key request limit (DESIGN §3: none unless set on the key):
// GCRA, the "generic cell rate algorithm", on one atomic integer per key. A key with a limit
// of N requests per minute may send N back to back, then one every 60s/N. Deciding costs one
// compare-and-swap and allocates nothing.
package ratelimit

import (
	"sync/atomic"
	"time"
)

// Limiter limits one key. It is safe for concurrent use.
type Limiter struct {
	interval int64 // ns between requests at the sustained rate
	burst    int64 // ns of credit a key may bank: (N−1) intervals, so N back to back
	tat      atomic.Int64
}

// New returns a limiter for perMinute requests per minute; perMinute must be > 0.
func New(perMinute int) *Limiter {
	interval := int64(time.Minute) / int64(perMinute)
	return &Limiter{interval: interval, burst: interval * int64(perMinute-1)}
}

// Allow decides one request at time now (ns, monotonic or wall, but always the same source).
// When it refuses, retryAfter is how long until the request would be allowed.
func (l *Limiter) Allow(now int64) (ok bool, retryAfter time.Duration) {
	for {
		tat := l.tat.Load()
		start := max(tat, now) // theoretical arrival time of this request
		if start-now > l.burst {
			return false, time.Duration(start - now - l.burst)
		}
		if l.tat.CompareAndSwap(tat, start+l.interval) {
			return true, 0
		}
	}
}

// PerMinute reports the configured rate, so a refreshed key record can tell whether its
// limiter still applies.
func (l *Limiter) PerMinute() int { return int(int64(time.Minute) / l.interval) }
