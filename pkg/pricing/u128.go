package pricing

import (
	"math"
	"math/bits"
)

// u128 is an unsigned 128-bit accumulator. A token count (up to 2^63) times a rate (below 2^48,
// enforced at load) does not fit in 64 bits, and an approximate sum would round differently
// from the ledger's expectations, so sums are carried exactly in 128 bits and divided once.
type u128 struct{ hi, lo uint64 }

// addMul adds x*y. It cannot overflow 128 bits for the inputs this package feeds it: at most
// nine terms, each below 2^63 * 2^58.
func (a *u128) addMul(x, y uint64) {
	hi, lo := bits.Mul64(x, y)
	var carry uint64
	a.lo, carry = bits.Add64(a.lo, lo, 0)
	a.hi, _ = bits.Add64(a.hi, hi, carry)
}

// add adds b.
func (a *u128) add(b u128) {
	var carry uint64
	a.lo, carry = bits.Add64(a.lo, b.lo, 0)
	a.hi, _ = bits.Add64(a.hi, b.hi, carry)
}

// double multiplies by two.
func (a *u128) double() {
	a.hi = a.hi<<1 | a.lo>>63
	a.lo <<= 1
}

// divRound returns a / d rounded half up, or rounded up (ceiling) when ceil is set,
// saturated at math.MaxInt64. d must be even and non-zero.
func (a u128) divRound(d uint64, ceil bool) int64 {
	bias := d / 2
	if ceil {
		bias = d - 1
	}
	var carry uint64
	a.lo, carry = bits.Add64(a.lo, bias, 0)
	a.hi, carry = bits.Add64(a.hi, 0, carry)
	// bits.Div64 panics when the quotient does not fit in 64 bits (hi >= d); such a quotient
	// is above MaxInt64 anyway.
	if carry != 0 || a.hi >= d {
		return math.MaxInt64
	}
	q, _ := bits.Div64(a.hi, a.lo, d)
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(q)
}

// nonNeg turns a count into the uint64 the arithmetic uses. Counts come from the upstream's
// reported usage; a negative one is meaningless and is billed as zero rather than wrapping
// into an enormous unsigned number.
func nonNeg(n int64) uint64 {
	if n < 0 {
		return 0
	}
	return uint64(n)
}
