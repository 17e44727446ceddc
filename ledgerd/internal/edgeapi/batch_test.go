package edgeapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/jsonapi"
	"tollgate/ledgerd/internal/store"
	"tollgate/pkg/ledgerapi"
)

// The batch extend on a real SQLite ledger: one result per item, in order, each what the
// single extend answers — new terms, or the refusal in the API's error shape — and a refused
// item leaves the others applied.
func TestLeaseBatchExtend(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rich, low, suspended := e.account(100), e.account(8), e.account(10)
	grant := func(acct, edge string, want, minimum int64) string {
		var l ledgerapi.Lease
		require.Equal(t, http.StatusOK, e.call("POST", "/internal/v1/leases",
			ledgerapi.Grant{AccountID: acct, EdgeID: edge, WantMicrocredits: want, MinMicrocredits: minimum}, &l))
		return l.LeaseID
	}
	r1 := grant(rich, "edge-1", 10_000_000, 1) // 90 credits left
	l1 := grant(low, "edge-1", 2_000_000, 2_000_000)
	l2 := grant(low, "edge-2", 2_000_000, 2_000_000) // 4 credits left
	s1 := grant(suspended, "edge-1", 1_000_000, 1)
	closed := grant(rich, "edge-1", 1_000_000, 1)
	require.Equal(t, http.StatusOK, e.call("POST", "/internal/v1/leases/"+closed+"/release", ledgerapi.Release{}, nil))
	_, err := e.store.SetAccountStatus(ctx, suspended, store.StatusSuspended)
	require.NoError(t, err)

	item := func(id string, want, minimum, spent int64) ledgerapi.ExtendItem {
		return ledgerapi.ExtendItem{LeaseID: id, Extend: ledgerapi.Extend{WantMicrocredits: want, MinMicrocredits: minimum, SpentMicrocredits: spent}}
	}
	var res ledgerapi.ExtendBatchResult
	require.Equal(t, http.StatusOK, e.call("POST", "/internal/v1/leases/extend", ledgerapi.ExtendBatch{Extends: []ledgerapi.ExtendItem{
		item(r1, 30_000_000, 0, 3_000_000), // a quarter of 90 available
		item(l1, 10_000_000, 5_000_000, 0), // 4 available: 402, l2 recalled
		item(s1, 1, 0, 0),
		item(closed, 1, 0, 0),
		item("lease_nope", 1, 1, 0),
		item(l1, 1_000_000, 0, 500_000), // a quarter of 4 available is the 1 wanted
	}}, &res))
	require.Len(t, res.Results, 6)

	lease := func(id, acct string, granted, available int64) ledgerapi.ExtendResult {
		return ledgerapi.ExtendResult{Status: 200, Lease: &ledgerapi.Lease{LeaseID: id, AccountID: acct, GrantedMicrocredits: granted,
			ExpiresAt: e.clock.Now().Add(60_000_000_000), TTLMillis: 60_000, AvailableMicrocredits: available}}
	}
	refusal := func(status int, typ, msg string, available, recallable int64) ledgerapi.ExtendResult {
		body := &ledgerapi.Error{AvailableMicrocredits: available, RecallableMicrocredits: recallable}
		body.Error.Type, body.Error.Message = typ, msg
		return ledgerapi.ExtendResult{Status: status, Error: body}
	}
	for i := range res.Results {
		if l := res.Results[i].Lease; l != nil {
			l.ExpiresAt = l.ExpiresAt.UTC()
		}
	}
	require.Equal(t, []ledgerapi.ExtendResult{
		lease(r1, rich, 32_500_000, 67_500_000),
		refusal(402, "billing_error", "available credit cannot cover the minimum asked", 4_000_000, 2_000_000),
		refusal(403, "permission_error", "account suspended", 0, 0),
		refusal(409, "conflict_error", "lease closed: released or reclaimed; ask for a new one", 0, 0),
		refusal(404, "not_found_error", "account or lease not found", 0, 0),
		lease(l1, low, 3_000_000, 3_000_000),
	}, res.Results)

	// The refusals are those of the single extend, body for body.
	for i, id := range map[int]string{2: s1, 3: closed, 4: "lease_nope"} {
		var single ledgerapi.Error
		require.Equal(t, res.Results[i].Status, e.call("POST", "/internal/v1/leases/"+id+"/extend", ledgerapi.Extend{WantMicrocredits: 1}, &single))
		require.Equal(t, *res.Results[i].Error, single)
	}
	var recalls ledgerapi.Recalls
	require.Equal(t, http.StatusOK, e.call("GET", "/internal/v1/edges/edge-2/recalls", nil, &recalls))
	require.Equal(t, []string{l2}, recalls.LeaseIDs, "the refused item's recall was committed")
	acct, err := e.store.Account(ctx, rich)
	require.NoError(t, err)
	require.Equal(t, int64(32_500_000), acct.Reserved)
	require.NoError(t, e.store.Check(ctx))
}

// Bad batch extends are refused whole with a clear error in the API's shape, and change
// nothing: every body below starts with a good item that would extend the lease.
func TestLeaseBatchExtendRefusals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	acct := e.account(100)
	var l ledgerapi.Lease
	require.Equal(t, http.StatusOK, e.call("POST", "/internal/v1/leases",
		ledgerapi.Grant{AccountID: acct, EdgeID: "edge-1", WantMicrocredits: 1_000_000, MinMicrocredits: 1}, &l))
	before, err := e.store.Account(ctx, acct)
	require.NoError(t, err)

	good := `{"lease_id":"` + l.LeaseID + `","want_microcredits":5000000,"min_microcredits":0,"spent_microcredits":0}`
	batch := func(items ...string) string { return `{"extends":[` + strings.Join(items, ",") + `]}` }
	n := func(count int) string { return batch(strings.TrimSuffix(strings.Repeat(good+",", count), ",")) }
	e.requireRefusals("/internal/v1/leases/extend", []refusalCase{
		{"too many", n(ledgerapi.ExtendBatchMax + 1), 400, "invalid_request_error", "extends: want 1..256, got 257"},
		{"none", `{"extends":[]}`, 400, "invalid_request_error", "extends: want 1..256, got 0"},
		{"no field", `{}`, 400, "invalid_request_error", "extends: want 1..256, got 0"},
		{"null", `{"extends":null}`, 400, "invalid_request_error", "extends: want 1..256, got 0"},
		{"negative want", batch(good, `{"lease_id":"x","want_microcredits":-1}`), 400, "invalid_request_error", "extends[1]: want_microcredits: want 0..1000000000000"},
		{"negative spent", batch(good, `{"lease_id":"x","spent_microcredits":-1}`), 400, "invalid_request_error", "extends[1]: spent_microcredits: want 0..1000000000000"},
		{"huge min", batch(good, `{"lease_id":"x","want_microcredits":1000000000001,"min_microcredits":1000000000001}`), 400, "invalid_request_error", "extends[1]: want_microcredits: want 0..1000000000000"},
		{"min over want", batch(good, `{"lease_id":"x","want_microcredits":1,"min_microcredits":2}`), 400, "invalid_request_error", "extends[1]: want min_microcredits ≤ want_microcredits"},
		{"no lease id", batch(good, `{"want_microcredits":1}`), 400, "invalid_request_error", "extends[1].lease_id: want 1..128 bytes of text"},
		{"long lease id", batch(good, `{"lease_id":"`+strings.Repeat("l", 129)+`"}`), 400, "invalid_request_error", "extends[1].lease_id: want 1..128 bytes of text"},
		{"control character", batch(good, `{"lease_id":"lease\u0000"}`), 400, "invalid_request_error", "extends[1].lease_id"},
		{"amount as a string", batch(good, `{"lease_id":"x","want_microcredits":"5"}`), 400, "invalid_request_error", "malformed JSON"},
		{"fractional amount", batch(good, `{"lease_id":"x","want_microcredits":1.5}`), 400, "invalid_request_error", "malformed JSON"},
		{"unknown item field", batch(good, `{"lease_id":"x","ttl_ms":1}`), 400, "invalid_request_error", "malformed JSON"},
		{"unknown field", `{"extends":[` + good + `],"x":1}`, 400, "invalid_request_error", "malformed JSON"},
		{"not a list", `{"extends":` + good + `}`, 400, "invalid_request_error", "malformed JSON"},
		{"malformed", `{"extends":[` + good, 400, "invalid_request_error", "malformed JSON"},
		{"trailing data", batch(good) + `{}`, 400, "invalid_request_error", "trailing data"},
		{"empty body", ``, 400, "invalid_request_error", "empty body"},
		{"over the body limit", n(600), 413, "request_too_large", "body over 65536 bytes"},
	})

	require.Equal(t, http.StatusMethodNotAllowed, e.call("GET", "/internal/v1/leases/extend", nil, nil))
	e.requireUnauthorized("/internal/v1/leases/extend", batch(good))

	after, err := e.store.Account(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, before, after)
	var rel ledgerapi.Lease
	require.Equal(t, http.StatusOK, e.call("POST", "/internal/v1/leases/"+l.LeaseID+"/release", ledgerapi.Release{}, &rel))
	require.Equal(t, l.GrantedMicrocredits, rel.GrantedMicrocredits, "no refused batch extended the lease")
	require.NoError(t, e.store.Check(ctx))
}

// A full batch of the largest items the edge sends — ledgerd's lease ids, amounts at the
// limit — fits the request body limit with a third to spare (ledgerapi.ExtendBatchMax).
func TestExtendBatchFitsTheBodyLimit(t *testing.T) {
	items := make([]ledgerapi.ExtendItem, ledgerapi.ExtendBatchMax)
	for i := range items {
		items[i] = ledgerapi.ExtendItem{LeaseID: fmt.Sprintf("lease_%032x", i), Extend: ledgerapi.Extend{
			WantMicrocredits: 1_000_000_000_000, MinMicrocredits: 1_000_000_000_000, SpentMicrocredits: 1_000_000_000_000}}
	}
	raw, err := json.Marshal(ledgerapi.ExtendBatch{Extends: items})
	require.NoError(t, err)
	require.Less(t, len(raw), jsonapi.BodyBytesMax*3/4, "%d bytes", len(raw))
	t.Logf("a full batch: %d bytes", len(raw))
}
