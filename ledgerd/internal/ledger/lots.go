package ledger

import "math/bits"

// Lot is the credit one top-up bought. Its price per credit is the exact ratio
// MicroUSD / Microcredits (plan tier bonus included); it is never rounded to a stored price.
// Revenue is recognized cumulatively: once used µcr of the lot are consumed, the recognized USD
// is floor(used × MicroUSD / Microcredits). Each consumption recognizes the difference, so a
// lot used up in any number of steps recognizes exactly MicroUSD, with no rounding drift.
type Lot struct {
	ID           string
	Microcredits int64 // bought
	MicroUSD     int64 // paid; 0 for a promotional grant
	Remaining    int64 // not yet consumed or refunded
}

// Take is what one consumption or refund removes from one lot.
type Take struct {
	LotID          string
	Microcredits   int64
	MicroUSD       int64 // revenue recognized (usage) or USD returned (refund)
	RemainingAfter int64
}

func (l Lot) check() error {
	if l.Microcredits <= 0 || l.MicroUSD < 0 || l.Remaining < 0 || l.Remaining > l.Microcredits {
		return invariant("lot %s: %d µcr for %d µ$, %d remaining", l.ID, l.Microcredits, l.MicroUSD, l.Remaining)
	}
	return nil
}

// usdAt is the USD recognized once used µcr of the lot are gone. The 128-bit product cannot
// overflow and the quotient fits because used ≤ Microcredits.
func (l Lot) usdAt(used int64) int64 {
	hi, lo := bits.Mul64(uint64(used), uint64(l.MicroUSD))
	q, _ := bits.Div64(hi, lo, uint64(l.Microcredits))
	return int64(q)
}

func (l Lot) take(n int64) Take {
	after := l.Remaining - n
	usd := l.usdAt(l.Microcredits-after) - l.usdAt(l.Microcredits-l.Remaining)
	return Take{LotID: l.ID, Microcredits: n, MicroUSD: usd, RemainingAfter: after}
}

func sumRemaining(lots []Lot) (int64, error) {
	var sum int64
	for _, l := range lots {
		if err := l.check(); err != nil {
			return 0, err
		}
		var ok bool
		if sum, ok = addChecked(sum, l.Remaining); !ok {
			return 0, invariant("lot remainders overflow")
		}
	}
	return sum, nil
}

// takeFrom removes amount from lots visiting them in the order given by idx.
func takeFrom(lots []Lot, amount int64, idx func(i int) int) ([]Take, error) {
	var takes []Take
	for i := 0; i < len(lots) && amount > 0; i++ {
		l := lots[idx(i)]
		if l.Remaining == 0 {
			continue
		}
		n := min(amount, l.Remaining)
		takes = append(takes, l.take(n))
		amount -= n
	}
	if amount != 0 {
		return nil, invariant("lots short by %d µcr", amount)
	}
	return takes, nil
}

// checkLots asserts the rule tying lots to the balance: the unused credit of an account's
// lots equals its balance when positive, and zero while it is overdrawn.
func checkLots(balance int64, lots []Lot) (int64, error) {
	sum, err := sumRemaining(lots)
	if err != nil {
		return 0, err
	}
	if sum != max(balance, 0) {
		return 0, invariant("lots hold %d µcr, balance is %d", sum, balance)
	}
	return sum, nil
}

// Charge settles cost against an account whose open lots are given oldest first. The balance
// drops by the whole cost and may go negative (the overdraft one request's estimate error
// allows); lots cover what they hold, oldest first, recognizing revenue at each lot's price.
// Usage beyond the lots is recognized when a later top-up covers the overdraft (Credit).
func Charge(balance int64, lots []Lot, cost int64) (int64, []Take, error) {
	if cost < 0 {
		return 0, nil, invariant("negative charge %d", cost)
	}
	held, err := checkLots(balance, lots)
	if err != nil {
		return 0, nil, err
	}
	takes, err := takeFrom(lots, min(cost, held), func(i int) int { return i })
	if err != nil {
		return 0, nil, err
	}
	nb, ok := addChecked(balance, -cost)
	if !ok {
		return 0, nil, invariant("balance overflow")
	}
	return nb, takes, nil
}

// Credit adds a new lot (Remaining must equal Microcredits) to an account. If the account is
// overdrawn, the new lot covers the overdraft at once, so the usage behind it is recognized
// at the new lot's price and the lots-balance rule keeps holding.
func Credit(balance int64, lots []Lot, lot Lot) (int64, Lot, []Take, error) {
	if err := lot.check(); err != nil {
		return 0, Lot{}, nil, err
	}
	if lot.Remaining != lot.Microcredits {
		return 0, Lot{}, nil, invariant("new lot %s already used", lot.ID)
	}
	if _, err := checkLots(balance, lots); err != nil {
		return 0, Lot{}, nil, err
	}
	var takes []Take
	if debt := min(max(-balance, 0), lot.Microcredits); debt > 0 {
		t := lot.take(debt)
		takes = append(takes, t)
		lot.Remaining = t.RemainingAfter
	}
	nb, ok := addChecked(balance, lot.Microcredits)
	if !ok {
		return 0, Lot{}, nil, invariant("balance overflow")
	}
	return nb, lot, takes, nil
}

// Refund returns amount µcr of unused credit, taken from the newest lots first and priced at
// their purchase price (the USD in each Take). Only available credit (balance − reserved) can
// be refunded: reserved credit may already be spent on an edge node.
func Refund(balance, reserved int64, lots []Lot, amount int64) (int64, []Take, error) {
	if amount <= 0 || reserved < 0 {
		return 0, nil, invariant("refund of %d µcr with %d reserved", amount, reserved)
	}
	if _, err := checkLots(balance, lots); err != nil {
		return 0, nil, err
	}
	if amount > balance-reserved {
		return 0, nil, ErrInsufficient
	}
	takes, err := takeFrom(lots, amount, func(i int) int { return len(lots) - 1 - i })
	if err != nil {
		return 0, nil, err
	}
	return balance - amount, takes, nil
}

// SumUSD is the USD of takes: revenue recognized, or USD returned or forfeited.
func SumUSD(takes []Take) int64 {
	var s int64
	for _, t := range takes {
		s += t.MicroUSD // each ≤ its lot's MicroUSD, which fits with room to spare
	}
	return s
}

// Reverse returns one whole lot: the reversal of a duplicate top-up. The lot must be wholly
// unused (ErrLotUsed otherwise: use a partial refund for what is left) and the account's
// available credit must cover it (ErrInsufficient: reserved credit may already be spent on an
// edge node). The take returns exactly the lot's MicroUSD.
func Reverse(balance, reserved int64, lots []Lot, lotID string) (int64, Take, error) {
	if _, err := checkLots(balance, lots); err != nil {
		return 0, Take{}, err
	}
	for _, l := range lots {
		if l.ID != lotID {
			continue
		}
		if l.Remaining != l.Microcredits {
			return 0, Take{}, ErrLotUsed
		}
		if l.Microcredits > balance-reserved {
			return 0, Take{}, ErrInsufficient
		}
		return balance - l.Microcredits, l.take(l.Microcredits), nil
	}
	// Not among the open lots: used up, refunded, or forfeited already.
	return 0, Take{}, ErrLotUsed
}

// Forfeit takes every lot's remaining credit: a chargeback forfeits the whole balance,
// reserved credit included (the payment behind it is gone; what edges still spend from their
// leases settles later as an overdraft). It returns the new balance (0, or the unchanged
// negative balance of an overdrawn account), the credit forfeited, and the takes.
func Forfeit(balance int64, lots []Lot) (int64, int64, []Take, error) {
	held, err := checkLots(balance, lots)
	if err != nil {
		return 0, 0, nil, err
	}
	takes, err := takeFrom(lots, held, func(i int) int { return len(lots) - 1 - i })
	if err != nil {
		return 0, 0, nil, err
	}
	return balance - held, held, takes, nil
}
