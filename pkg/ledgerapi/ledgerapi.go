// Package ledgerapi is the protocol between the edge and ledgerd's internal listener
// (default :8090): key lookup and credit leases. Every call carries the shared secret as
// "Authorization: Bearer <secret>"; ledgerd refuses calls without it (401).
//
// Routes:
//
//	GET  /internal/v1/keys/{sha256-hex}           → 200 Key | 404 (unknown key)
//	POST /internal/v1/keys/lookup                 KeyLookup → 200 KeyLookupResult | 400
//	GET  /internal/v1/accounts/{id}/balance       → 200 Balance
//	POST /internal/v1/leases                      Grant → 200 Lease | 402 Error (cannot cover min)
//	POST /internal/v1/leases/{lease_id}/extend    Extend → 200 Lease | 402 Error
//	POST /internal/v1/leases/extend               ExtendBatch → 200 ExtendBatchResult | 400
//	POST /internal/v1/leases/{lease_id}/release   Release → 200 Lease
//	GET  /internal/v1/edges/{edge_id}/recalls     → 200 Recalls
//
// Errors are {"error":{"type":…,"message":…},"available_microcredits":N}; a 402 for a lease
// may add "recallable_microcredits" (see Error).
package ledgerapi

import "time"

// Key is what the edge caches for an API key. The secret itself never crosses this API:
// the edge sends SHA-256(secret) in hex.
type Key struct {
	KeyID         string `json:"key_id"`
	AccountID     string `json:"account_id"`
	Revoked       bool   `json:"revoked"`
	AccountStatus string `json:"account_status"` // "active" | "suspended"
	// RateLimitRPM is requests per minute for this key; 0 means no limit.
	RateLimitRPM int `json:"rate_limit_rpm"`
}

// KeyLookupHashesMax bounds the hashes of one KeyLookup. 512 hashes are a body of about
// 34 KB, well inside ledgerd's 64 KiB request limit, and one IN list of the store's query.
const KeyLookupHashesMax = 512

// KeyLookup asks for many keys in one call (POST /internal/v1/keys/lookup): the edge
// refreshes the keys in use this way, one call per batch instead of one per key. Hashes are
// lower-case hex SHA-256 digests of secrets, 1..KeyLookupHashesMax of them; duplicates are
// answered once. ledgerd refuses the whole request with a 400 when any hash is not 64
// lower-case hex digits or there are none or too many (a body over 64 KiB is a 413), and a
// lookup changes nothing either way.
//
// A ledgerd older than this call answers 405 (or 404): the edge then looks its keys up one
// by one with GET /internal/v1/keys/{sha256-hex}.
type KeyLookup struct {
	Hashes []string `json:"hashes"`
}

// KeyLookupResult answers a KeyLookup: the record of every key ledgerd knows, under the hash
// it was asked for, with the same fields as the single lookup's Key. A hash ledgerd does not
// know is absent, which is the batch form of the single lookup's 404 (the edge then caches
// the key as unknown); a revoked key is present with revoked=true.
//
//	{"keys":{"<sha256-hex>":{"key_id":…,"account_id":…,"revoked":false,"account_status":"active","rate_limit_rpm":0}}}
type KeyLookupResult struct {
	Keys map[string]Key `json:"keys"`
}

// Account statuses.
const (
	StatusActive    = "active"
	StatusSuspended = "suspended"
)

// Balance of an account, in micro-credits.
type Balance struct {
	AccountID             string `json:"account_id"`
	BalanceMicrocredits   int64  `json:"balance_microcredits"`
	AvailableMicrocredits int64  `json:"available_microcredits"`
}

// Grant asks for a new lease. ledgerd grants min(Want, what is available) if that is at least
// Min, else answers 402.
type Grant struct {
	AccountID        string `json:"account_id"`
	EdgeID           string `json:"edge_id"`
	WantMicrocredits int64  `json:"want_microcredits"`
	MinMicrocredits  int64  `json:"min_microcredits"`
}

// Extend adds to an open lease (same rule as Grant) and reports the node's spend so far.
type Extend struct {
	WantMicrocredits  int64 `json:"want_microcredits"`
	MinMicrocredits   int64 `json:"min_microcredits"`
	SpentMicrocredits int64 `json:"spent_microcredits"`
}

// ExtendBatchMax bounds the extends of one ExtendBatch. An item is at most about 160 bytes with
// ledgerd's lease ids (38 bytes) and the largest amounts ledgerd accepts (10¹² µcr), so a full
// batch is about 40 KB: inside ledgerd's 64 KiB request limit with a third to spare
// (TestExtendBatchFitsTheBodyLimit). The answer, about 250 bytes an item, is far inside what
// the edge reads.
const ExtendBatchMax = 256

// ExtendBatch extends many leases in one call (POST /internal/v1/leases/extend): the edge
// refreshes its leases in the background this way, one call per batch instead of one per
// lease. Each item is a single extend's body plus the lease it extends,
//
//	{"extends":[{"lease_id":…,"want_microcredits":…,"min_microcredits":…,"spent_microcredits":…}, …]}
//
// 1..ExtendBatchMax of them. ledgerd applies every item with the single extend's rules, all in
// one database transaction (one commit), and answers one ExtendResult per item, in order. A
// refusal (closed, unknown, suspended, insufficient) is that item's answer and leaves the
// others applied. The whole request is refused with a 400 — and changes nothing — when any
// item is malformed (a lease_id that is not 1..128 bytes of text, an amount outside
// 0..10¹², min over want), when there are no items or too many, or when the JSON is malformed
// (a body over 64 KiB is a 413). Any other failure is a 500 for the whole request, which then
// changed nothing either.
//
// A ledgerd older than this call answers 404 (no such route): the edge then extends its
// leases one call each with POST /internal/v1/leases/{lease_id}/extend.
type ExtendBatch struct {
	Extends []ExtendItem `json:"extends"`
}

// ExtendItem is one extend of an ExtendBatch: the single extend's fields, inline.
type ExtendItem struct {
	LeaseID string `json:"lease_id"`
	Extend
}

// ExtendBatchResult answers an ExtendBatch: Results[i] answers Extends[i].
type ExtendBatchResult struct {
	Results []ExtendResult `json:"results"`
}

// ExtendResult is one item's answer: Status is the HTTP status the single extend would have
// answered it with. 200 carries the lease's new terms, exactly as the single extend answers
// them; any other status carries the single extend's error body inline (402, with
// available_microcredits and maybe recallable_microcredits; 403 suspended; 404 unknown lease;
// 409 lease closed):
//
//	{"status":200,"lease":{"lease_id":…,"granted_microcredits":…,"ttl_ms":…,…}}
//	{"status":409,"error":{"type":"conflict_error","message":…}}
type ExtendResult struct {
	Status int    `json:"status"`
	Lease  *Lease `json:"lease,omitempty"`
	*Error
}

// Release closes a lease with the node's total spend from it; the reservation shrinks to
// what of that spend has not settled yet.
type Release struct {
	SpentMicrocredits int64 `json:"spent_microcredits"`
}

// Lease is ledgerd's view of a lease after any call.
type Lease struct {
	LeaseID             string    `json:"lease_id"`
	AccountID           string    `json:"account_id"`
	GrantedMicrocredits int64     `json:"granted_microcredits"` // total granted so far
	ExpiresAt           time.Time `json:"expires_at"`
	// TTLMillis is the lease's lifetime from this call (0 once released). A node must stop
	// admitting from the lease TTLMillis after it SENT the call: that instant is never after
	// ExpiresAt, whatever the two clocks say.
	TTLMillis             int64 `json:"ttl_ms"`
	AvailableMicrocredits int64 `json:"available_microcredits"` // account, after this call
}

// Recalls lists a node's open leases that ledgerd asks it to return (release with its
// spend), because another node was refused credit they reserve.
type Recalls struct {
	LeaseIDs []string `json:"lease_ids"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	AvailableMicrocredits int64 `json:"available_microcredits,omitempty"`
	// RecallableMicrocredits, on a 402 for a lease, is what other nodes' open leases of the
	// account reserve and were just recalled: returned, they may cover the request, so the
	// node may retry within a short wait. Absent (0) when the refusal is final.
	RecallableMicrocredits int64 `json:"recallable_microcredits,omitempty"`
}
