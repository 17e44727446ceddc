// Package admit decides whether an account may start a request (DESIGN §3 step 2): the
// request's hold must be covered by what the account has available. The proxy only sees the
// Admitter interface; the edge implements it with credit leases (admit/lease).
package admit

import (
	"errors"
	"fmt"
)

// Admitter admits requests against accounts' credit. Implementations are safe for
// concurrent use and must not block on the network when they can answer locally.
type Admitter interface {
	// Admit takes hold micro-credits of accountID's credit for one request. It returns an
	// *InsufficientError when the account cannot cover it, or an error wrapping
	// ErrUnavailable when it cannot tell.
	Admit(accountID string, hold int64) (Ticket, error)
	// Finish releases an admitted request's hold and charges its actual cost (which may
	// exceed the hold when the estimate was wrong). Call it exactly once per Ticket.
	Finish(t Ticket, cost int64)
}

// Ticket is an admitted request's claim on its account's credit.
type Ticket struct {
	// LeaseID is the credit lease the hold came from (the usage record's lease_id); empty
	// when the admitter uses none.
	LeaseID string
	// Hold is what Admit took, in micro-credits.
	Hold int64
	// State belongs to the Admitter that issued the ticket.
	State any
}

// ErrUnavailable is wrapped when the admitter cannot decide (ledgerd unreachable).
var ErrUnavailable = errors.New("credit check unavailable")

// ErrSuspended is returned when ledgerd refuses the account credit because it is suspended
// (the key cache may not know yet).
var ErrSuspended = errors.New("account suspended")

// InsufficientError refuses a request whose hold the account cannot cover.
type InsufficientError struct {
	Hold      int64 // µcr the request may cost
	Available int64 // µcr the account has available; may be ≤ 0
}

func (e *InsufficientError) Error() string {
	return fmt.Sprintf("insufficient credit: hold %d µcr, available %d µcr", e.Hold, e.Available)
}
