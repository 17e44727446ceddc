package edgeapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/edgeapi"
	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/sqlite"
	"tollgate/ledgerd/internal/store/storetest"
	"tollgate/pkg/ledgerapi"
)

const secret = "edge-secret"

type env struct {
	t     *testing.T
	url   string
	store store.Store
	clock *storetest.Clock
}

func newEnv(t *testing.T) *env {
	clock := storetest.NewClock()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "ledger.db"), nil, clock.Now)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	srv := httptest.NewServer(edgeapi.New(edgeapi.Config{Store: s, Secret: secret, LeaseTTL: 60 * time.Second,
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()}))
	t.Cleanup(srv.Close)
	return &env{t: t, url: srv.URL, store: s, clock: clock}
}

// call sends body (marshalled unless a string) and decodes the answer into out.
func (e *env) call(method, path string, body any, out any) int {
	e.t.Helper()
	var rd *bytes.Reader
	switch b := body.(type) {
	case nil:
		rd = bytes.NewReader(nil)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		raw, err := json.Marshal(b)
		require.NoError(e.t, err)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	require.NoError(e.t, err)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	if out != nil {
		require.NoError(e.t, json.NewDecoder(resp.Body).Decode(out))
	}
	return resp.StatusCode
}

func (e *env) account(credits int64) string {
	a, err := e.store.CreateAccount(context.Background(), "acme")
	require.NoError(e.t, err)
	if credits > 0 {
		_, _, err = e.store.TopUp(context.Background(), store.TopUp{AccountID: a.ID, OrderID: "o-" + a.ID, Credits: credits, MicroUSD: credits * 5000, Method: "admin"})
		require.NoError(e.t, err)
	}
	return a.ID
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	for _, auth := range []string{"", "Bearer nope", "Bearer " + secret + "x"} {
		req, _ := http.NewRequest("GET", e.url+"/internal/v1/accounts/x/balance", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		var body ledgerapi.Error
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		require.Equal(t, "authentication_error", body.Error.Type)
	}
}

func TestKeyLookupAndBalance(t *testing.T) {
	e := newEnv(t)
	id := e.account(10)
	sum := sha256.Sum256([]byte("sk-tg-secret"))
	hash := hex.EncodeToString(sum[:])
	k, err := e.store.InsertKey(context.Background(), store.NewKey{AccountID: id, Name: "k", Hash: hash, Prefix: "sk-tg-secr"})
	require.NoError(t, err)

	var key ledgerapi.Key
	require.Equal(t, http.StatusOK, e.call("GET", "/internal/v1/keys/"+hash, nil, &key))
	require.Equal(t, ledgerapi.Key{KeyID: k.ID, AccountID: id, AccountStatus: "active"}, key)

	require.NoError(t, e.store.RevokeKey(context.Background(), k.ID))
	_, err = e.store.SetAccountStatus(context.Background(), id, store.StatusSuspended)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, e.call("GET", "/internal/v1/keys/"+hash, nil, &key))
	require.Equal(t, ledgerapi.Key{KeyID: k.ID, AccountID: id, Revoked: true, AccountStatus: "suspended"}, key)

	var apiErr ledgerapi.Error
	require.Equal(t, http.StatusNotFound, e.call("GET", "/internal/v1/keys/"+strings.Repeat("0", 64), nil, &apiErr))
	require.Equal(t, "not_found_error", apiErr.Error.Type)
	require.Equal(t, http.StatusNotFound, e.call("GET", "/internal/v1/keys/"+strings.ToUpper(hash), nil, nil))
	require.Equal(t, http.StatusNotFound, e.call("GET", "/internal/v1/keys/xyz", nil, nil))

	req, _ := http.NewRequest("GET", e.url+"/internal/v1/accounts/"+id+"/balance", nil)
	req.Header.Set("Authorization", "bearer "+secret) // the scheme is case-insensitive
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	var bal ledgerapi.Balance
	require.Equal(t, http.StatusOK, e.call("GET", "/internal/v1/accounts/"+id+"/balance", nil, &bal))
	require.Equal(t, ledgerapi.Balance{AccountID: id, BalanceMicrocredits: 10_000_000, AvailableMicrocredits: 10_000_000}, bal)
	require.Equal(t, http.StatusNotFound, e.call("GET", "/internal/v1/accounts/acct_nope/balance", nil, nil))
}

// The batch lookup on a real SQLite ledger: every known key under its hash with the single
// lookup's fields, unknown hashes absent, duplicates answered once.
func TestKeyBatchLookup(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	active, suspended := e.account(10), e.account(0)
	hash := func(secret string) string {
		sum := sha256.Sum256([]byte(secret))
		return hex.EncodeToString(sum[:])
	}
	insert := func(acct, secret string) store.Key {
		k, err := e.store.InsertKey(ctx, store.NewKey{AccountID: acct, Name: secret, Hash: hash(secret), Prefix: secret[:4]})
		require.NoError(t, err)
		return k
	}
	k1, k2, k3 := insert(active, "sk-one"), insert(active, "sk-two"), insert(suspended, "sk-three")
	require.NoError(t, e.store.RevokeKey(ctx, k2.ID))
	_, err := e.store.SetAccountStatus(ctx, suspended, store.StatusSuspended)
	require.NoError(t, err)

	var res ledgerapi.KeyLookupResult
	require.Equal(t, http.StatusOK, e.call("POST", "/internal/v1/keys/lookup", ledgerapi.KeyLookup{Hashes: []string{
		hash("sk-one"), hash("sk-two"), hash("sk-three"), hash("sk-unknown"), hash("sk-one")}}, &res))
	require.Equal(t, map[string]ledgerapi.Key{
		hash("sk-one"):   {KeyID: k1.ID, AccountID: active, AccountStatus: "active"},
		hash("sk-two"):   {KeyID: k2.ID, AccountID: active, Revoked: true, AccountStatus: "active"},
		hash("sk-three"): {KeyID: k3.ID, AccountID: suspended, AccountStatus: "suspended"},
	}, res.Keys)
	for h, want := range res.Keys {
		var single ledgerapi.Key
		require.Equal(t, http.StatusOK, e.call("GET", "/internal/v1/keys/"+h, nil, &single))
		require.Equal(t, want, single, "the same record as the single lookup")
	}

	// A full batch of unknown keys is an empty answer.
	full := make([]string, ledgerapi.KeyLookupHashesMax)
	for i := range full {
		full[i] = hash(fmt.Sprint("sk-nope-", i))
	}
	res = ledgerapi.KeyLookupResult{}
	require.Equal(t, http.StatusOK, e.call("POST", "/internal/v1/keys/lookup", ledgerapi.KeyLookup{Hashes: full}, &res))
	require.Empty(t, res.Keys)
}

// Bad batch lookups are refused whole with a clear error in the API's shape, and change
// nothing.
func TestKeyBatchLookupRefusals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	acct := e.account(10)
	sum := sha256.Sum256([]byte("sk-one"))
	good := hex.EncodeToString(sum[:])
	_, err := e.store.InsertKey(ctx, store.NewKey{AccountID: acct, Name: "k", Hash: good, Prefix: "sk-o"})
	require.NoError(t, err)
	keysBefore, err := e.store.Keys(ctx, acct)
	require.NoError(t, err)
	acctBefore, err := e.store.Account(ctx, acct)
	require.NoError(t, err)

	hashes := func(n int) string {
		return `{"hashes":["` + strings.TrimSuffix(strings.Repeat(good+`","`, n), `","`) + `"]}`
	}
	e.requireRefusals("/internal/v1/keys/lookup", []refusalCase{
		{"too many", hashes(ledgerapi.KeyLookupHashesMax + 1), 400, "invalid_request_error", "hashes: want 1..512, got 513"},
		{"none", `{"hashes":[]}`, 400, "invalid_request_error", "hashes: want 1..512, got 0"},
		{"no field", `{}`, 400, "invalid_request_error", "hashes: want 1..512, got 0"},
		{"null", `{"hashes":null}`, 400, "invalid_request_error", "hashes: want 1..512, got 0"},
		{"not hex", `{"hashes":["` + good + `","` + strings.Repeat("z", 64) + `"]}`, 400, "invalid_request_error", "hashes[1]: want a SHA-256 as 64 lower-case hex digits"},
		{"upper case", `{"hashes":["` + strings.ToUpper(good) + `"]}`, 400, "invalid_request_error", "hashes[0]: want a SHA-256"},
		{"short", `{"hashes":["` + good[:63] + `"]}`, 400, "invalid_request_error", "hashes[0]: want a SHA-256"},
		{"not a string", `{"hashes":[1]}`, 400, "invalid_request_error", "malformed JSON"},
		{"not a list", `{"hashes":"` + good + `"}`, 400, "invalid_request_error", "malformed JSON"},
		{"unknown field", `{"hashes":["` + good + `"],"x":1}`, 400, "invalid_request_error", "malformed JSON"},
		{"malformed", `{"hashes":[`, 400, "invalid_request_error", "malformed JSON"},
		{"trailing data", `{"hashes":["` + good + `"]}{}`, 400, "invalid_request_error", "trailing data"},
		{"empty body", ``, 400, "invalid_request_error", "empty body"},
		{"over the body limit", hashes(2000), 413, "request_too_large", "body over 65536 bytes"},
	})

	// Other methods on the route: GET is the single lookup of a key that cannot exist.
	require.Equal(t, http.StatusNotFound, e.call("GET", "/internal/v1/keys/lookup", nil, nil))
	require.Equal(t, http.StatusMethodNotAllowed, e.call("PUT", "/internal/v1/keys/lookup", hashes(1), nil))
	e.requireUnauthorized("/internal/v1/keys/lookup", hashes(1))

	keysAfter, err := e.store.Keys(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, keysBefore, keysAfter)
	acctAfter, err := e.store.Account(ctx, acct)
	require.NoError(t, err)
	require.Equal(t, acctBefore, acctAfter)
	require.NoError(t, e.store.Check(ctx))
}

// refusalCase is a request body refused whole: its status, error type and a part of the
// message.
type refusalCase struct {
	name, body string
	status     int
	typ, msg   string
}

// requireRefusals posts each case's body to path and checks the refusal, one subtest each.
func (e *env) requireRefusals(path string, cases []refusalCase) {
	e.t.Helper()
	for _, tc := range cases {
		e.t.Run(tc.name, func(t *testing.T) {
			var apiErr ledgerapi.Error
			require.Equal(t, tc.status, e.call("POST", path, tc.body, &apiErr))
			require.Equal(t, tc.typ, apiErr.Error.Type)
			require.Contains(t, apiErr.Error.Message, tc.msg)
		})
	}
}

// requireUnauthorized posts body to path with the wrong secret: 401.
func (e *env) requireUnauthorized(path, body string) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer not-the-secret")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	resp.Body.Close()
	require.Equal(e.t, http.StatusUnauthorized, resp.StatusCode)
}

func TestLeases(t *testing.T) {
	e := newEnv(t)
	id := e.account(10)
	var l ledgerapi.Lease
	st := e.call("POST", "/internal/v1/leases", ledgerapi.Grant{AccountID: id, EdgeID: "edge-1", WantMicrocredits: 2_000_000, MinMicrocredits: 1}, &l)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, id, l.AccountID)
	require.Equal(t, int64(2_000_000), l.GrantedMicrocredits)
	require.Equal(t, int64(8_000_000), l.AvailableMicrocredits)
	require.Equal(t, e.clock.Now().Add(60*time.Second), l.ExpiresAt.UTC())
	require.Equal(t, int64(60_000), l.TTLMillis)

	// Extend takes a quarter of what is available (8 → 2 credits), and exactly the minimum
	// when that is more than a quarter; asking more than is available with a high min is a
	// 402 that says what is available.
	var l2 ledgerapi.Lease
	require.Equal(t, http.StatusOK, e.call("POST", "/internal/v1/leases/"+l.LeaseID+"/extend",
		ledgerapi.Extend{WantMicrocredits: 9_000_000, MinMicrocredits: 1_000_000, SpentMicrocredits: 500_000}, &l2))
	require.Equal(t, int64(4_000_000), l2.GrantedMicrocredits)
	require.Equal(t, int64(6_000_000), l2.AvailableMicrocredits)
	require.Equal(t, http.StatusOK, e.call("POST", "/internal/v1/leases/"+l.LeaseID+"/extend",
		ledgerapi.Extend{WantMicrocredits: 6_000_000, MinMicrocredits: 6_000_000, SpentMicrocredits: 500_000}, &l2))
	require.Equal(t, int64(10_000_000), l2.GrantedMicrocredits)
	require.Zero(t, l2.AvailableMicrocredits)

	// Another node is refused, and edge-1's lease, which could cover it, is recalled.
	var recalls ledgerapi.Recalls
	require.Equal(t, http.StatusOK, e.call("GET", "/internal/v1/edges/edge-1/recalls", nil, &recalls))
	require.Empty(t, recalls.LeaseIDs)
	var apiErr ledgerapi.Error
	require.Equal(t, http.StatusPaymentRequired, e.call("POST", "/internal/v1/leases",
		ledgerapi.Grant{AccountID: id, EdgeID: "edge-2", WantMicrocredits: 5, MinMicrocredits: 5}, &apiErr))
	require.Equal(t, "billing_error", apiErr.Error.Type)
	require.Zero(t, apiErr.AvailableMicrocredits)
	require.Equal(t, int64(10_000_000), apiErr.RecallableMicrocredits)
	require.Equal(t, http.StatusOK, e.call("GET", "/internal/v1/edges/edge-1/recalls", nil, &recalls))
	require.Equal(t, []string{l.LeaseID}, recalls.LeaseIDs)
	require.Equal(t, http.StatusOK, e.call("GET", "/internal/v1/edges/edge-2/recalls", nil, &recalls))
	require.Empty(t, recalls.LeaseIDs)

	// Release with a spend of 3 credits: 7 come back.
	var rel ledgerapi.Lease
	require.Equal(t, http.StatusOK, e.call("POST", "/internal/v1/leases/"+l.LeaseID+"/release", ledgerapi.Release{SpentMicrocredits: 3_000_000}, &rel))
	require.Equal(t, int64(7_000_000), rel.AvailableMicrocredits)
	require.Zero(t, rel.TTLMillis)
	require.Equal(t, http.StatusOK, e.call("GET", "/internal/v1/edges/edge-1/recalls", nil, &recalls))
	require.Empty(t, recalls.LeaseIDs, "a released lease is no longer recalled")
	require.Equal(t, http.StatusOK, e.call("POST", "/internal/v1/leases/"+l.LeaseID+"/release", ledgerapi.Release{SpentMicrocredits: 3_000_000}, &rel))
	require.Equal(t, http.StatusConflict, e.call("POST", "/internal/v1/leases/"+l.LeaseID+"/extend", ledgerapi.Extend{WantMicrocredits: 1, MinMicrocredits: 1}, &apiErr))
	require.Equal(t, "conflict_error", apiErr.Error.Type)
	require.Equal(t, http.StatusNotFound, e.call("POST", "/internal/v1/leases/lease_nope/release", ledgerapi.Release{}, nil))
	require.Equal(t, http.StatusNotFound, e.call("POST", "/internal/v1/leases", ledgerapi.Grant{AccountID: "acct_nope", EdgeID: "e", WantMicrocredits: 1, MinMicrocredits: 1}, nil))

	_, err := e.store.SetAccountStatus(context.Background(), id, store.StatusSuspended)
	require.NoError(t, err)
	require.Equal(t, http.StatusForbidden, e.call("POST", "/internal/v1/leases", ledgerapi.Grant{AccountID: id, EdgeID: "e", WantMicrocredits: 1, MinMicrocredits: 1}, &apiErr))
	require.Equal(t, "permission_error", apiErr.Error.Type)
	require.NoError(t, e.store.Check(context.Background()))
}

func TestLeaseValidation(t *testing.T) {
	e := newEnv(t)
	id := e.account(10)
	for name, body := range map[string]string{
		"min zero":      `{"account_id":"` + id + `","edge_id":"e","want_microcredits":5,"min_microcredits":0}`,
		"min over want": `{"account_id":"` + id + `","edge_id":"e","want_microcredits":5,"min_microcredits":6}`,
		"negative":      `{"account_id":"` + id + `","edge_id":"e","want_microcredits":-5,"min_microcredits":1}`,
		"huge":          `{"account_id":"` + id + `","edge_id":"e","want_microcredits":1000000000000000,"min_microcredits":1}`,
		"no edge":       `{"account_id":"` + id + `","want_microcredits":5,"min_microcredits":1}`,
		"no account":    `{"edge_id":"e","want_microcredits":5,"min_microcredits":1}`,
		"unknown field": `{"account_id":"` + id + `","edge_id":"e","want_microcredits":5,"min_microcredits":1,"x":1}`,
		"not json":      `nope`,
	} {
		t.Run(name, func(t *testing.T) {
			var apiErr ledgerapi.Error
			require.Equal(t, http.StatusBadRequest, e.call("POST", "/internal/v1/leases", body, &apiErr))
			require.Equal(t, "invalid_request_error", apiErr.Error.Type)
		})
	}
	require.Equal(t, http.StatusMethodNotAllowed, e.call("GET", "/internal/v1/leases", nil, nil))
}

// FuzzLeaseBodies: whatever bytes an edge sends to the lease routes (the batch extend
// included) or the batch key lookup,
// the answer is a deliberate one (never a 500), and the books still balance.
func FuzzLeaseBodies(f *testing.F) {
	for _, s := range []string{`{"account_id":"A","edge_id":"e","want_microcredits":5,"min_microcredits":1}`,
		`{"want_microcredits":5,"min_microcredits":1,"spent_microcredits":2}`, `{"spent_microcredits":3}`,
		`{"want_microcredits":-1}`, `[]`, `null`, `{"account_id":"A","edge_id":"e","want_microcredits":9e99}`, "\x00",
		`{"hashes":["` + strings.Repeat("0", 64) + `"]}`, `{"hashes":["\u0000"]}`, `{"hashes":[]}`,
		`{"extends":[{"lease_id":"L","want_microcredits":5,"min_microcredits":1,"spent_microcredits":2},{"lease_id":"x"}]}`,
		`{"extends":[{"lease_id":"L","want_microcredits":99999999999999}]}`, `{"extends":[{"lease_id":"\u0000"}]}`} {
		for route := range uint8(5) {
			f.Add(s, route)
		}
	}
	clock := storetest.NewClock()
	s, err := sqlite.Open(context.Background(), filepath.Join(f.TempDir(), "ledger.db"), nil, clock.Now)
	require.NoError(f, err)
	defer s.Close()
	a, err := s.CreateAccount(context.Background(), "acme")
	require.NoError(f, err)
	_, _, err = s.TopUp(context.Background(), store.TopUp{AccountID: a.ID, OrderID: "o", Credits: 1000, MicroUSD: 1, Method: "admin"})
	require.NoError(f, err)
	l, err := s.GrantLease(context.Background(), store.LeaseGrant{AccountID: a.ID, EdgeID: "e", Want: 10, Min: 1, TTL: time.Minute})
	require.NoError(f, err)
	h := edgeapi.New(edgeapi.Config{Store: s, Secret: secret, Logger: slog.New(slog.DiscardHandler)})
	f.Fuzz(func(t *testing.T, body string, route uint8) {
		path := []string{"/internal/v1/leases", "/internal/v1/leases/" + l.ID + "/extend", "/internal/v1/leases/" + l.ID + "/release",
			"/internal/v1/keys/lookup", "/internal/v1/leases/extend"}[route%5]
		body = strings.ReplaceAll(strings.ReplaceAll(body, `"A"`, `"`+a.ID+`"`), `"L"`, `"`+l.ID+`"`)
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secret)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Contains(t, []int{200, 400, 402, 403, 404, 409, 413}, rec.Code, rec.Body.String())
		var e ledgerapi.Error
		if rec.Code != 200 {
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e))
			require.NotEmpty(t, e.Error.Type)
		}
	})
	require.NoError(f, s.Check(context.Background()))
}
