package ledger

// Credit leases. A lease reserves part of an account's credit for one edge node; the account
// keeps the sum of its leases' reservations materialized as reserved, and
//
//	available = balance − reserved
//
// A lease's reservation is always derived from its state, never set freely:
//
//	open:     max(granted − settled, 0)   the node may still spend what it was granted
//	released: max(reported − settled, 0)  the node's final spend, until settlement catches up
//	expired:  0                           reclaimed by the reaper after TTL + grace
//
// Settlement of a record carrying the lease id raises settled, which lowers the reservation
// by the same cost (floored at 0) while the balance drops by that cost: available stays put,
// because the reserved credit was the credit being spent.

// LeaseState is the lifecycle state of a lease.
type LeaseState string

// Lease states.
const (
	LeaseOpen     LeaseState = "open"
	LeaseReleased LeaseState = "released"
	LeaseExpired  LeaseState = "expired"
)

// Lease is the arithmetic part of a lease row.
type Lease struct {
	State       LeaseState
	Granted     int64 // total granted over grant and extends
	Settled     int64 // total cost of settled records that carried this lease id
	Reported    int64 // the node's last reported spend (final once released)
	Reservation int64 // derived, see package comment; stored so the account can sum it
}

func (l Lease) derivedReservation() int64 {
	switch l.State {
	case LeaseOpen:
		return max(l.Granted-l.Settled, 0)
	case LeaseReleased:
		return max(l.Reported-l.Settled, 0)
	default:
		return 0
	}
}

// Check asserts a loaded lease is consistent.
func (l Lease) Check() error {
	switch l.State {
	case LeaseOpen, LeaseReleased, LeaseExpired:
	default:
		return invariant("lease state %q", l.State)
	}
	if l.Granted < 0 || l.Settled < 0 || l.Reported < 0 || l.Reservation != l.derivedReservation() {
		return invariant("lease %+v", l)
	}
	return nil
}

// LeaseShareDivisor bounds what one grant takes from an account: at most 1/LeaseShareDivisor
// of its available credit (unless the request itself needs more, below). Several nodes asking
// for leases on one account then each get a share instead of the first taking everything,
// and what one node holds unspent stays small compared with what the others can still get.
const LeaseShareDivisor = 4

// GrantAmount is the grant rule for a node that wants want µcr and needs at least minimum
// (the hold of the request waiting for it):
//
//	g = min(want, available / LeaseShareDivisor)   when that is at least minimum;
//	g = minimum                                     when only available ≥ minimum;
//	refused with ErrInsufficient                    when available < minimum.
//
// The second line is the low-balance rule: when what is available is small compared with
// lease sizes, the node gets exactly what its request needs, so a balance spread over many
// nodes is never locked up in leases while one of them refuses a request the account can
// afford. With minimum 0 it never refuses and may grant 0 (an extend that only refreshes the
// expiry). 0 ≤ minimum ≤ want is the caller's to validate.
func GrantAmount(available, want, minimum int64) (int64, error) {
	if minimum < 0 || want < minimum {
		return 0, invariant("grant want %d min %d", want, minimum)
	}
	if minimum > 0 && available < minimum {
		return 0, ErrInsufficient
	}
	g := min(want, max(available, 0)/LeaseShareDivisor)
	return max(g, minimum), nil
}

// NewLease is a lease just granted g.
func NewLease(g int64) Lease {
	return Lease{State: LeaseOpen, Granted: g, Reservation: g}
}

// Extend adds g to an open lease and records the node's reported spend so far (informational:
// an open lease's node may still spend all it was granted).
func (l Lease) Extend(g, spent int64) (Lease, error) {
	if err := l.Check(); err != nil {
		return Lease{}, err
	}
	if l.State != LeaseOpen {
		return Lease{}, ErrLeaseClosed
	}
	if g < 0 || spent < 0 {
		return Lease{}, invariant("extend by %d, spent %d", g, spent)
	}
	var ok bool
	if l.Granted, ok = addChecked(l.Granted, g); !ok {
		return Lease{}, invariant("lease grant overflow")
	}
	l.Reported = max(l.Reported, spent)
	l.Reservation = l.derivedReservation()
	return l, nil
}

// Release closes an open lease with the node's total spend; the reservation becomes what of
// that spend has not settled yet.
func (l Lease) Release(spent int64) (Lease, error) {
	if err := l.Check(); err != nil {
		return Lease{}, err
	}
	if l.State != LeaseOpen {
		return Lease{}, ErrLeaseClosed
	}
	if spent < 0 {
		return Lease{}, invariant("release with spent %d", spent)
	}
	l.State, l.Reported = LeaseReleased, spent
	l.Reservation = l.derivedReservation()
	return l, nil
}

// Settle applies settled usage that carried this lease id, in any state.
func (l Lease) Settle(cost int64) (Lease, error) {
	if err := l.Check(); err != nil {
		return Lease{}, err
	}
	if cost < 0 {
		return Lease{}, invariant("settle %d", cost)
	}
	var ok bool
	if l.Settled, ok = addChecked(l.Settled, cost); !ok {
		return Lease{}, invariant("lease settled overflow")
	}
	l.Reservation = l.derivedReservation()
	return l, nil
}

// Reap reclaims a lease whose node vanished (or whose settlement never caught up) once its
// expiry plus the grace period has passed.
func (l Lease) Reap() (Lease, error) {
	if err := l.Check(); err != nil {
		return Lease{}, err
	}
	l.State, l.Reservation = LeaseExpired, 0
	return l, nil
}
