// Package store is the ledger's persistence: the interface the services use and the domain
// types that cross it. Implementations: store/sqlite (embedded, default) and store/postgres
// (production), both over the shared SQL in store/sqlstore, and both run by one test suite
// (store/storetest).
//
// Every method that changes money runs in one database transaction that writes the journal
// postings, the materialized balances and any idempotency record together.
package store

import (
	"context"
	"errors"
	"time"

	"tollgate/ledgerd/internal/ledger"
)

// Expected conditions. Callers map them to API errors.
var (
	ErrNotFound = errors.New("not found")
	// ErrConflict: an idempotency key (order_id, refund_id) was reused with a different request.
	ErrConflict = errors.New("idempotency key reused with a different request")
	// ErrSuspended: the account is suspended and cannot take leases.
	ErrSuspended = errors.New("account suspended")
	// ErrAlreadyReversed: the top-up a reversal names was reversed before (by another
	// refund_id).
	ErrAlreadyReversed = errors.New("top-up already reversed")
	// ErrInsufficient, ErrLotUsed and ErrLeaseClosed are the ledger's own refusals.
	ErrInsufficient = ledger.ErrInsufficient
	ErrLotUsed      = ledger.ErrLotUsed
	ErrLeaseClosed  = ledger.ErrLeaseClosed
)

// Account statuses.
const (
	StatusActive    = "active"
	StatusSuspended = "suspended"
)

// Account is a customer account. Balance is the settled balance (the projection of the
// account's journal postings); Reserved is the sum of its leases' reservations.
type Account struct {
	ID       string
	Name     string
	Status   string
	Balance  int64 // µcr
	Reserved int64 // µcr
	// DeferredMicroUSD is the USD paid for the account's unused credit (its deferred revenue):
	// the projection of the USD side of its postings.
	DeferredMicroUSD int64
	CreatedAt        time.Time
}

// Available is what new leases and refunds may use: balance − reserved.
func (a Account) Available() int64 { return a.Balance - a.Reserved }

// Key is an API key's record. The secret is never stored: only its SHA-256 (hex).
type Key struct {
	ID            string
	AccountID     string
	Name          string
	Prefix        string // first characters of the secret, to recognize it in listings
	RateLimitRPM  int    // 0: no limit
	CreatedAt     time.Time
	RevokedAt     time.Time // zero while active
	AccountStatus string    // filled by KeyByHash and KeysByHash
}

// NewKey is a key to insert; the caller generated the secret and hashed it.
type NewKey struct {
	AccountID string
	Name      string
	Hash      string // SHA-256 of the secret, lowercase hex
	Prefix    string
}

// TopUp adds credit to an account as one lot. Idempotent by OrderID across all accounts.
type TopUp struct {
	AccountID string
	OrderID   string
	Plan      string // plan id when bought by plan, else ""
	Credits   int64  // whole credits
	MicroUSD  int64  // paid; 0 for a promotional grant
	Method    string // payment method, the cash ledger account's suffix ("admin", "card")
	// EventID, when set, is the payment provider's event id: the top-up is applied at most
	// once per event id, and a redelivered event returns the original result as a replay
	// whatever its body says.
	EventID string
}

// TopUpResult is the outcome of a top-up; a replay returns the original one.
type TopUpResult struct {
	ID           string
	OrderID      string
	Credits      int64
	MicroUSD     int64
	BalanceAfter int64 // µcr, right after this top-up
}

// Refund returns unused credit, at the purchase price of the lots it comes from. Exactly one
// of Microcredits, AllUnused and OrderID is set:
//   - Microcredits or AllUnused: a partial refund, taken from the newest lots first;
//   - OrderID: the reversal of that (duplicate) top-up, returned whole; its credit must be
//     wholly unused (ErrLotUsed) and available (ErrInsufficient), and a top-up is reversed
//     at most once (ErrAlreadyReversed).
//
// Idempotent by RefundID across all accounts. Reserved and used credit is never refunded.
type Refund struct {
	AccountID    string
	RefundID     string
	Microcredits int64
	AllUnused    bool
	OrderID      string
	Reason       string
}

// Refund kinds.
const (
	RefundPartial  = "refund"
	RefundReversal = "reversal"
)

// MethodAmount is USD owed back through one payment method.
type MethodAmount struct {
	Method   string
	MicroUSD int64
}

// RefundResult is the outcome of a refund; a replay returns the original one.
type RefundResult struct {
	ID           string
	RefundID     string
	Kind         string // RefundPartial or RefundReversal
	OrderID      string // the reversed top-up
	Reason       string
	Microcredits int64
	MicroUSD     int64          // owed back to the customer in total
	ByMethod     []MethodAmount // the same, by original payment method, sorted by method
	BalanceAfter int64
}

// Chargeback records a disputed payment: the account is suspended and its whole balance,
// reserved credit included, forfeited. Idempotent by ChargebackID across all accounts.
type Chargeback struct {
	AccountID    string
	ChargebackID string
	OrderID      string // the disputed top-up, optional; must be the account's when set
	Reason       string
}

// ChargebackResult is the outcome of a chargeback; a replay returns the original one.
type ChargebackResult struct {
	ID           string
	ChargebackID string
	OrderID      string
	Reason       string
	Microcredits int64 // forfeited (0 when the account held nothing)
	MicroUSD     int64 // deferred revenue forfeited
	BalanceAfter int64
}

// Lot is the credit one top-up bought and what became of it.
type Lot struct {
	ID           string
	OrderID      string // "" for lots older than the order link
	Method       string
	Microcredits int64 // bought
	MicroUSD     int64 // paid
	Remaining    int64 // unused
	// What left the lot, by cause, in µcr and the µ$ it stood for at the lot's price.
	Used, UsedMicroUSD           int64 // usage (revenue recognized)
	Refunded, RefundedMicroUSD   int64 // refunds and reversals
	Forfeited, ForfeitedMicroUSD int64 // chargebacks
	CreatedAt                    time.Time
}

// Totals are the two sides of a ledger account's postings.
type Totals struct {
	Microcredits int64
	MicroUSD     int64
}

// AccountCustomers is the key under which Report sums every customer ledger account.
const AccountCustomers = "customers"

// Report holds the balance of every ledger account at the start and end of a period, with
// the customer accounts summed under AccountCustomers. What happened in the period is the
// difference.
type Report struct {
	From, To         time.Time
	Opening, Closing map[string]Totals
}

// Entry is one statement line: one journal transaction as it touched the customer.
type Entry struct {
	ID       string // journal transaction id
	Time     time.Time
	Kind     string // ledger.Kind*
	Amount   int64  // µcr, signed
	MicroUSD int64  // the USD side of the same posting: the change in deferred revenue
	Balance  int64  // µcr, running balance after this entry
	Ref      string // order id, refund id, chargeback id, or the settlement batch's Kafka range
}

// Statement is an account's journal entries for a period with a running balance.
type Statement struct {
	Opening int64 // µcr, the balance at the start of the period
	Entries []Entry
	More    bool // entries were left out (over the limit)
}

// Lease is a credit lease as stored.
type Lease struct {
	ID        string
	AccountID string
	EdgeID    string
	ledger.Lease
	ExpiresAt time.Time
	// AccountAvailable is the account's available credit right after the call that returned
	// this lease.
	AccountAvailable int64
	// Recallable, on ErrInsufficient, is what other nodes' open leases of the account reserve
	// and were just asked to return (see RecalledLeases): the caller may retry shortly. 0 when
	// even that could not cover the minimum asked, so the refusal stands.
	Recallable int64
}

// LeaseGrant asks for a new lease: grant min(Want, available) if that is at least Min.
type LeaseGrant struct {
	AccountID string
	EdgeID    string
	Want      int64
	Min       int64
	TTL       time.Duration
}

// LeaseExtend is one extend of ExtendLeases: ExtendLease's arguments but the TTL.
type LeaseExtend struct {
	LeaseID string
	Want    int64
	Min     int64
	Spent   int64
}

// LeaseExtendResult is one extend's outcome in ExtendLeases: what ExtendLease returns for it.
// Err is nil or a refusal — ErrNotFound, ErrLeaseClosed, ErrSuspended, or ErrInsufficient
// with Lease carrying only AccountAvailable and Recallable.
type LeaseExtendResult struct {
	Lease Lease
	Err   error
}

// Usage is the part of a usage record settlement needs.
type Usage struct {
	RequestID string
	AccountID string
	LeaseID   string // "" when the request used no lease
	Cost      int64  // µcr
}

// Batch is one settlement batch. Offsets are the next offsets to read per partition of
// Topic, stored in the same transaction as the charges.
type Batch struct {
	Group   string
	Topic   string
	Usage   []Usage
	Offsets map[int]int64
	Ref     string // human-readable Kafka range, shown in statements
}

// SettleResult counts what a batch did.
type SettleResult struct {
	Settled      int   // records applied now
	Duplicates   int   // records already settled before (or twice in the batch)
	Microcredits int64 // total charged now
	Accounts     int   // usage journal transactions written
}

// Store is the ledger's persistence. Implementations are safe for concurrent use.
type Store interface {
	CreateAccount(ctx context.Context, name string) (Account, error)
	Account(ctx context.Context, id string) (Account, error)
	SetAccountStatus(ctx context.Context, id, status string) (Account, error)

	InsertKey(ctx context.Context, k NewKey) (Key, error)
	Keys(ctx context.Context, accountID string) ([]Key, error)
	RevokeKey(ctx context.Context, keyID string) error
	KeyByHash(ctx context.Context, hash string) (Key, error)
	// KeysByHash finds the keys of hashes, with their accounts' status, by hash; a hash no key
	// has is absent. One query for up to 4,096 hashes (the internal API sends at most 512).
	KeysByHash(ctx context.Context, hashes []string) (map[string]Key, error)

	// TopUp answers replayed=true with the original result when OrderID was used before with
	// the same request, and ErrConflict when with a different one.
	TopUp(ctx context.Context, t TopUp) (res TopUpResult, replayed bool, err error)
	Refund(ctx context.Context, r Refund) (res RefundResult, replayed bool, err error)
	// Chargeback suspends the account and forfeits its balance.
	Chargeback(ctx context.Context, c Chargeback) (res ChargebackResult, replayed bool, err error)
	// Lots lists an account's lots, oldest first.
	Lots(ctx context.Context, accountID string) ([]Lot, error)
	// Report sums the journal at the start and end of [from, to).
	Report(ctx context.Context, from, to time.Time) (Report, error)
	// Statement lists entries with from ≤ time < to, oldest first, at most limit of them.
	Statement(ctx context.Context, accountID string, from, to time.Time, limit int) (Statement, error)

	GrantLease(ctx context.Context, g LeaseGrant) (Lease, error)
	ExtendLease(ctx context.Context, leaseID string, want, min, spent int64, ttl time.Duration) (Lease, error)
	// ExtendLeases applies extends in one database transaction (one commit), each with
	// ExtendLease's rules, and answers one result per extend, in order. A refusal is that
	// extend's result and leaves the others applied; any other error fails the whole call,
	// which then changes nothing. Rows are locked account by account in account id order
	// (extends of one account in their order), so concurrent calls cannot deadlock, and the
	// results are those of the same extends made one by one in their order.
	ExtendLeases(ctx context.Context, extends []LeaseExtend, ttl time.Duration) ([]LeaseExtendResult, error)
	ReleaseLease(ctx context.Context, leaseID string, spent int64) (Lease, error)
	// ReapLeases reclaims up to limit leases whose expiry is older than grace.
	ReapLeases(ctx context.Context, grace time.Duration, limit int) (int, error)
	// RecalledLeases lists up to limit open leases of edgeID that a refused grant or extend
	// on another node asked to be returned.
	RecalledLeases(ctx context.Context, edgeID string, limit int) ([]string, error)

	// ExistingAccounts returns which of ids exist.
	ExistingAccounts(ctx context.Context, ids []string) (map[string]bool, error)
	// Offsets returns the stored next offset per partition for a consumer group and topic.
	Offsets(ctx context.Context, group, topic string) (map[int]int64, error)
	// Settle applies a batch at most once per request id and stores its offsets, atomically.
	Settle(ctx context.Context, b Batch) (SettleResult, error)
	// PruneSettled forgets settled request ids older than before, returning how many.
	PruneSettled(ctx context.Context, before time.Time) (int64, error)

	// LedgerAccounts returns the materialized balances of the non-customer ledger accounts
	// (cash:<method>, revenue, bonus, refunds, forfeits).
	LedgerAccounts(ctx context.Context) (map[string]Totals, error)
	// Check audits the books: every journal transaction sums to zero in credits and USD,
	// every materialized balance equals its postings, reservations equal their leases, lots
	// reconcile with balances, lot moves and the journal, and every top-up, refund,
	// chargeback and settled request agrees with its journal transaction. A failure wraps
	// ledger.ErrInvariant and lists every violation found.
	Check(ctx context.Context) error
	Ping(ctx context.Context) error
	Close() error
}
