package ledger

import "errors"

var (
	// ErrInvariant marks a broken ledger rule: a programmer error or corrupted data. The right
	// answer is to stop before committing anything (TigerBeetle's rule), never to continue.
	ErrInvariant = errors.New("ledger invariant violated")
	// ErrInsufficient is an ordinary refusal: the account's available credit cannot cover
	// what was asked (a lease's minimum, a refund).
	ErrInsufficient = errors.New("insufficient available credit")
	// ErrLotUsed: a reversal was asked for a top-up whose credit is no longer wholly unused.
	ErrLotUsed = errors.New("top-up credit already partly used, refunded or forfeited")
	// ErrLeaseClosed: the lease was released or reclaimed and can no longer be extended.
	ErrLeaseClosed = errors.New("lease closed")
)
