// Package gather collects work that comes due together into rounds. The edge's background
// refreshes (keys in internal/auth, leases in internal/admit/lease) wait a moment after the
// first item of a round, so that one ledgerd call serves everything that came due meanwhile.
package gather

import (
	"context"
	"time"
)

// Round waits for wait, then appends to round what q holds at that moment, without waiting
// for more, until round has max items. It reports false, with round as it was, when ctx
// ended first.
func Round[T any](ctx context.Context, q <-chan T, round []T, wait time.Duration, max int) ([]T, bool) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return round, false
	case <-t.C:
	}
	for len(round) < max {
		select {
		case x := <-q:
			round = append(round, x)
		default:
			return round, true
		}
	}
	return round, true
}
