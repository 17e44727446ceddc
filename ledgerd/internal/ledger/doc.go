// Package ledger is the pure arithmetic of the ledger of record: journal postings, lots and
// revenue recognition, and credit-lease reservations. It does no I/O; the store loads rows,
// asks this package what the new rows must be, and writes them in one database transaction.
//
// Units: every credit amount is int64 micro-credits (µcr), every USD amount int64
// micro-dollars (µ$). Functions return an error wrapping ErrInvariant when their inputs break
// a rule the ledger relies on; callers must stop rather than write such a result.
package ledger

import "fmt"

// Units.
const (
	MicrocreditsPerCredit = 1_000_000
	MicroUSDPerUSD        = 1_000_000
)

func invariant(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvariant, fmt.Sprintf(format, args...))
}

// addChecked adds without silent wrap-around.
func addChecked(a, b int64) (int64, bool) {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) {
		return 0, false
	}
	return s, true
}
