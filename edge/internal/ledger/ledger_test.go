package ledger_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/ledger"
	"tollgate/pkg/ledgerapi"
)

// A protocol test of the client: an httptest server plays ledgerd's internal routes as
// pkg/ledgerapi documents them. The edge's end-to-end suite runs against the real ledgerd.
func newServer(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /internal/v1/keys/{hash}", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":{"type":"authentication_error","message":"bad secret"}}`))
			return
		}
		if r.PathValue("hash") != "abc" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Write([]byte(`{"key_id":"k1","account_id":"a1","revoked":false,"account_status":"active","rate_limit_rpm":60,"future_field":1}`))
	})
	mux.HandleFunc("POST /internal/v1/keys/lookup", func(w http.ResponseWriter, r *http.Request) {
		var req ledgerapi.KeyLookup
		if r.Header.Get("Authorization") != "Bearer s3cret" || json.NewDecoder(r.Body).Decode(&req) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		res := map[string]any{}
		for _, h := range req.Hashes {
			if h == "abc" {
				res[h] = json.RawMessage(`{"key_id":"k1","account_id":"a1","revoked":true,"account_status":"suspended","rate_limit_rpm":60,"future_field":1}`)
			}
		}
		json.NewEncoder(w).Encode(map[string]any{"keys": res, "future_field": 1})
	})
	mux.HandleFunc("GET /internal/v1/accounts/{id}/balance", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "broken" {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.Write([]byte(`{"account_id":"` + r.PathValue("id") + `","balance_microcredits":5000000,"available_microcredits":4000000}`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestClient(t *testing.T) {
	srv := newServer(t)
	c := ledger.New(ledger.Config{URL: srv.URL + "/", Secret: "s3cret", Timeout: time.Second})
	defer c.Close()
	ctx := context.Background()

	k, err := c.LookupKey(ctx, "abc")
	require.NoError(t, err)
	require.Equal(t, ledgerapi.Key{KeyID: "k1", AccountID: "a1", AccountStatus: "active", RateLimitRPM: 60}, k)

	_, err = c.LookupKey(ctx, "nope")
	require.ErrorIs(t, err, ledger.ErrNotFound)

	keys, err := c.LookupKeys(ctx, []string{"nope", "abc"})
	require.NoError(t, err)
	require.Equal(t, map[string]ledgerapi.Key{"abc": {KeyID: "k1", AccountID: "a1", Revoked: true,
		AccountStatus: "suspended", RateLimitRPM: 60}}, keys, "unknown hashes are absent")

	b, err := c.Balance(ctx, "a1")
	require.NoError(t, err)
	require.Equal(t, ledgerapi.Balance{AccountID: "a1", BalanceMicrocredits: 5_000_000, AvailableMicrocredits: 4_000_000}, b)

	_, err = c.Balance(ctx, "broken")
	require.ErrorContains(t, err, "500")
	require.NotErrorIs(t, err, ledger.ErrNotFound)

	require.NoError(t, c.Ping(ctx))

	bad := ledger.New(ledger.Config{URL: srv.URL, Secret: "wrong", Timeout: time.Second})
	_, err = bad.LookupKey(ctx, "abc")
	require.ErrorContains(t, err, "ledgerd answered 401: authentication_error bad secret")
	require.Error(t, bad.Ping(ctx), "a wrong secret is not healthy")
}

func TestClientUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c := ledger.New(ledger.Config{URL: url, Secret: "x", Timeout: time.Second})
	_, err := c.LookupKey(context.Background(), "abc")
	require.Error(t, err)
	require.NotErrorIs(t, err, ledger.ErrNotFound)
}

// The lease calls against ledgerd's routes as pkg/ledgerapi documents them: bodies sent, and
// every refusal mapped to its error.
func TestLeaseCalls(t *testing.T) {
	mux := http.NewServeMux()
	var got []string
	mux.HandleFunc("POST /internal/v1/leases", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, string(b))
		if strings.Contains(string(b), `"account_id":"poor"`) {
			w.WriteHeader(http.StatusPaymentRequired)
			w.Write([]byte(`{"error":{"type":"billing_error","message":"no"},"available_microcredits":7,"recallable_microcredits":40}`))
			return
		}
		w.Write([]byte(`{"lease_id":"lease_1","account_id":"a1","granted_microcredits":500,"expires_at":"2026-11-22T00:00:00Z","ttl_ms":60000,"available_microcredits":1500}`))
	})
	mux.HandleFunc("POST /internal/v1/leases/{id}/extend", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, r.PathValue("id")+" "+string(b))
		switch r.PathValue("id") {
		case "closed":
			w.WriteHeader(http.StatusConflict)
		case "suspended":
			w.WriteHeader(http.StatusForbidden)
		case "broken":
			w.WriteHeader(http.StatusBadGateway)
		default:
			w.Write([]byte(`{"lease_id":"lease_1","granted_microcredits":900,"ttl_ms":60000}`))
		}
	})
	mux.HandleFunc("POST /internal/v1/leases/{id}/release", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, r.PathValue("id")+" "+string(b))
		w.Write([]byte(`{"lease_id":"lease_1","granted_microcredits":900,"ttl_ms":0}`))
	})
	mux.HandleFunc("GET /internal/v1/edges/{edge}/recalls", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"lease_ids":["lease_` + r.PathValue("edge") + `"]}`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := ledger.New(ledger.Config{URL: srv.URL, Secret: "s", Timeout: time.Second})
	defer c.Close()
	ctx := context.Background()

	l, err := c.Grant(ctx, ledgerapi.Grant{AccountID: "a1", EdgeID: "e1", WantMicrocredits: 500, MinMicrocredits: 100})
	require.NoError(t, err)
	require.Equal(t, int64(500), l.GrantedMicrocredits)
	require.Equal(t, int64(60000), l.TTLMillis)
	_, err = c.Grant(ctx, ledgerapi.Grant{AccountID: "poor", EdgeID: "e1", WantMicrocredits: 500, MinMicrocredits: 100})
	var ins *ledger.InsufficientError
	require.ErrorAs(t, err, &ins)
	require.Equal(t, ledger.InsufficientError{Available: 7, Recallable: 40}, *ins)

	l, err = c.Extend(ctx, "lease_1", ledgerapi.Extend{WantMicrocredits: 400, MinMicrocredits: 10, SpentMicrocredits: 30})
	require.NoError(t, err)
	require.Equal(t, int64(900), l.GrantedMicrocredits)
	_, err = c.Extend(ctx, "closed", ledgerapi.Extend{})
	require.ErrorIs(t, err, ledger.ErrLeaseClosed)
	_, err = c.Extend(ctx, "suspended", ledgerapi.Extend{})
	require.ErrorIs(t, err, ledger.ErrSuspended)
	_, err = c.Extend(ctx, "broken", ledgerapi.Extend{})
	require.ErrorContains(t, err, "502")
	_, err = c.Release(ctx, "lease_1", ledgerapi.Release{SpentMicrocredits: 30})
	require.NoError(t, err)
	ids, err := c.Recalls(ctx, "e1")
	require.NoError(t, err)
	require.Equal(t, []string{"lease_e1"}, ids)

	require.Equal(t, []string{
		`{"account_id":"a1","edge_id":"e1","want_microcredits":500,"min_microcredits":100}`,
		`{"account_id":"poor","edge_id":"e1","want_microcredits":500,"min_microcredits":100}`,
		`lease_1 {"want_microcredits":400,"min_microcredits":10,"spent_microcredits":30}`,
		`closed {"want_microcredits":0,"min_microcredits":0,"spent_microcredits":0}`,
		`suspended {"want_microcredits":0,"min_microcredits":0,"spent_microcredits":0}`,
		`broken {"want_microcredits":0,"min_microcredits":0,"spent_microcredits":0}`,
		`lease_1 {"spent_microcredits":30}`,
	}, got)
}

// A ledgerd from before the batch lookup answers 405 (its /keys/{hash} routes take no POST),
// or 404 through something that does not know the route: both say "not supported", so the
// caller falls back to single lookups. Other failures do not.
func TestLookupKeysUnsupported(t *testing.T) {
	for _, tc := range []struct {
		status      int
		unsupported bool
	}{
		{http.StatusMethodNotAllowed, true},
		{http.StatusNotFound, true},
		{http.StatusInternalServerError, false},
		{http.StatusBadRequest, false},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				w.Write([]byte(`{"error":{"type":"x","message":"y"}}`))
			}))
			defer srv.Close()
			c := ledger.New(ledger.Config{URL: srv.URL, Secret: "s", Timeout: time.Second})
			defer c.Close()
			_, err := c.LookupKeys(context.Background(), []string{"abc"})
			require.Error(t, err)
			require.Equal(t, tc.unsupported, errors.Is(err, ledger.ErrUnsupported), "%v", err)
			require.NotErrorIs(t, err, ledger.ErrNotFound)
		})
	}
}

// ExtendMany sends the batch as pkg/ledgerapi documents it and maps each item's answer as the
// single Extend maps a whole answer: new terms, or the same refusal errors.
func TestExtendMany(t *testing.T) {
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "POST /internal/v1/leases/extend", r.Method+" "+r.URL.Path)
		require.Equal(t, "Bearer s", r.Header.Get("Authorization"))
		raw, _ := io.ReadAll(r.Body)
		body = string(raw)
		w.Write([]byte(`{"results":[
			{"status":200,"lease":{"lease_id":"l1","account_id":"a1","granted_microcredits":900,"expires_at":"2026-11-01T12:01:00Z","ttl_ms":60000,"available_microcredits":5,"future_field":1}},
			{"status":402,"error":{"type":"billing_error","message":"no"},"available_microcredits":7,"recallable_microcredits":40},
			{"status":403,"error":{"type":"permission_error","message":"suspended"}},
			{"status":404,"error":{"type":"not_found_error","message":"unknown"}},
			{"status":409,"error":{"type":"conflict_error","message":"closed"}},
			{"status":500,"error":{"type":"api_error","message":"odd"}}],"future_field":1}`))
	}))
	defer srv.Close()
	c := ledger.New(ledger.Config{URL: srv.URL, Secret: "s", Timeout: time.Second})
	defer c.Close()
	items := make([]ledgerapi.ExtendItem, 6)
	for i := range items {
		items[i] = ledgerapi.ExtendItem{LeaseID: fmt.Sprint("l", i+1), Extend: ledgerapi.Extend{WantMicrocredits: int64(i), SpentMicrocredits: 3}}
	}
	res, err := c.ExtendMany(context.Background(), items)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(body, `{"extends":[{"lease_id":"l1","want_microcredits":0,"min_microcredits":0,"spent_microcredits":3},`), body)
	require.Len(t, res, 6)
	require.NoError(t, res[0].Err)
	require.Equal(t, ledgerapi.Lease{LeaseID: "l1", AccountID: "a1", GrantedMicrocredits: 900,
		ExpiresAt: time.Date(2026, 11, 1, 12, 1, 0, 0, time.UTC), TTLMillis: 60000, AvailableMicrocredits: 5}, res[0].Lease)
	var ins *ledger.InsufficientError
	require.ErrorAs(t, res[1].Err, &ins)
	require.Equal(t, ledger.InsufficientError{Available: 7, Recallable: 40}, *ins)
	require.ErrorIs(t, res[2].Err, ledger.ErrSuspended)
	require.ErrorIs(t, res[3].Err, ledger.ErrNotFound)
	require.ErrorIs(t, res[4].Err, ledger.ErrLeaseClosed)
	require.ErrorContains(t, res[5].Err, "500")
	require.ErrorContains(t, res[5].Err, "l6")
}

// A ledgerd from before the batch extend answers 404 (no route for /leases/extend), or 405
// through something that routes it: both say "not supported", so the admitter falls back to
// single extends. Other failures, and an answer that does not match the request, do not.
func TestExtendManyUnsupported(t *testing.T) {
	for _, tc := range []struct {
		status      int
		body        string
		unsupported bool
	}{
		{http.StatusNotFound, `{"error":{"type":"not_found_error","message":"no such resource"}}`, true},
		{http.StatusMethodNotAllowed, `{"error":{"type":"method_not_allowed","message":"y"}}`, true},
		{http.StatusInternalServerError, `{"error":{"type":"api_error","message":"y"}}`, false},
		{http.StatusBadRequest, `{"error":{"type":"invalid_request_error","message":"y"}}`, false},
		{http.StatusOK, `{"results":[]}`, false},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			c := ledger.New(ledger.Config{URL: srv.URL, Secret: "s", Timeout: time.Second})
			defer c.Close()
			_, err := c.ExtendMany(context.Background(), []ledgerapi.ExtendItem{{LeaseID: "l1"}})
			require.Error(t, err)
			require.Equal(t, tc.unsupported, errors.Is(err, ledger.ErrUnsupported), "%v", err)
			require.NotErrorIs(t, err, ledger.ErrNotFound)
		})
	}
}
