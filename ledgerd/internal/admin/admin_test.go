package admin_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/deploy"
	"tollgate/ledgerd/internal/admin"
	"tollgate/ledgerd/internal/plan"
	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/postgres"
	"tollgate/ledgerd/internal/store/sqlite"
	"tollgate/ledgerd/internal/store/storetest"
)

const token = "test-admin-token"

type env struct {
	t     *testing.T
	srv   *httptest.Server
	store store.Store
	clock *storetest.Clock
}

// eachStore runs fn against a fresh ledger on SQLite and, when configured, on PostgreSQL,
// which is stricter about text (NUL, invalid UTF-8) and so catches inputs that must be
// refused before they reach the database.
func eachStore(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, newEnv(t, false)) })
	t.Run("postgres", func(t *testing.T) { fn(t, newEnv(t, true)) })
}

func newEnv(t *testing.T, pg bool) *env {
	clock := storetest.NewClock()
	var s store.Store
	var err error
	if pg {
		s, err = postgres.Open(context.Background(), storetest.FreshPostgres(t), nil, clock.Now)
	} else {
		s, err = sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "ledger.db"), nil, clock.Now)
	}
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	plans, err := plan.Parse(deploy.Plans)
	require.NoError(t, err)
	h := admin.New(admin.Config{Store: s, Plans: plans, Token: token, Logger: slog.New(slog.DiscardHandler), Now: clock.Now})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, store: s, clock: clock}
}

// do sends a request with the admin token and returns the status and the decoded JSON body.
func (e *env) do(method, path, body string) (int, map[string]any) {
	return e.doAuth(method, path, body, "Bearer "+token)
}

func (e *env) doAuth(method, path, body, auth string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	require.NoError(e.t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	if len(raw) == 0 {
		return resp.StatusCode, nil
	}
	require.Equal(e.t, "application/json", resp.Header.Get("Content-Type"))
	var m map[string]any
	require.NoError(e.t, json.Unmarshal(raw, &m), string(raw))
	return resp.StatusCode, m
}

func errType(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	s, _ := e["type"].(string)
	return s
}

func (e *env) account() string {
	st, m := e.do("POST", "/admin/v1/accounts", `{"name":"Acme"}`)
	require.Equal(e.t, http.StatusCreated, st)
	return m["id"].(string)
}

func TestAuth(t *testing.T) {
	e := newEnv(t, false)
	for _, auth := range []string{"", "Bearer wrong", "Bearer " + token + "x", "Basic " + token, token} {
		st, m := e.doAuth("GET", "/admin/v1/accounts/x", "", auth)
		require.Equal(t, http.StatusUnauthorized, st, auth)
		require.Equal(t, "authentication_error", errType(m))
	}
}

func TestAccountLifecycle(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		id := e.account()
		st, m := e.do("GET", "/admin/v1/accounts/"+id, "")
		require.Equal(t, http.StatusOK, st)
		require.Equal(t, map[string]any{"id": id, "name": "Acme", "status": "active", "balance_microcredits": 0.0,
			"available_microcredits": 0.0, "reserved_microcredits": 0.0, "deferred_usd": "0.00"}, m)

		st, m = e.do("POST", "/admin/v1/accounts/"+id+"/suspend", "")
		require.Equal(t, http.StatusOK, st)
		require.Equal(t, "suspended", m["status"])
		st, m = e.do("POST", "/admin/v1/accounts/"+id+"/resume", "")
		require.Equal(t, http.StatusOK, st)
		require.Equal(t, "active", m["status"])

		st, m = e.do("GET", "/admin/v1/accounts/acct_nope", "")
		require.Equal(t, http.StatusNotFound, st)
		require.Equal(t, "not_found_error", errType(m))
		st, _ = e.do("POST", "/admin/v1/accounts/acct_nope/suspend", "")
		require.Equal(t, http.StatusNotFound, st)
	})
}

func TestStrictRequests(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		for name, tc := range map[string]struct {
			body   string
			status int
			typ    string
		}{
			"unknown field":  {`{"name":"a","color":"red"}`, 400, "invalid_request_error"},
			"not json":       {`{"name":`, 400, "invalid_request_error"},
			"trailing data":  {`{"name":"a"} {}`, 400, "invalid_request_error"},
			"empty":          {``, 400, "invalid_request_error"},
			"wrong type":     {`{"name":5}`, 400, "invalid_request_error"},
			"missing name":   {`{}`, 400, "invalid_request_error"},
			"control chars":  {`{"name":"a\u0000b"}`, 400, "invalid_request_error"},
			"too large body": {`{"name":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "request_too_large"},
		} {
			t.Run(name, func(t *testing.T) {
				st, m := e.do("POST", "/admin/v1/accounts", tc.body)
				require.Equal(t, tc.status, st)
				require.Equal(t, tc.typ, errType(m))
			})
		}
		for _, path := range []string{"/admin/v1/accounts/%00", "/admin/v1/accounts/%ff/keys", "/admin/v1/keys/a%01b"} {
			st, m := e.do("GET", path, "")
			require.Equal(t, http.StatusNotFound, st, path)
			require.Equal(t, "not_found_error", errType(m))
		}
		st, m := e.do("GET", "/admin/v1/nothing", "")
		require.Equal(t, http.StatusNotFound, st)
		require.Equal(t, "not_found_error", errType(m))
		st, m = e.do("PUT", "/admin/v1/accounts", "")
		require.Equal(t, http.StatusMethodNotAllowed, st)
		require.Equal(t, "method_not_allowed", errType(m))
	})
}

func TestKeys(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		id := e.account()
		st, m := e.do("POST", "/admin/v1/accounts/"+id+"/keys", `{"name":"prod"}`)
		require.Equal(t, http.StatusCreated, st)
		keyID, secret := m["id"].(string), m["key"].(string)
		require.True(t, strings.HasPrefix(secret, "sk-tg-"))
		require.Len(t, secret, len("sk-tg-")+43) // 32 bytes, unpadded base64url

		// Only the hash is stored, and it finds the key.
		sum := sha256.Sum256([]byte(secret))
		k, err := e.store.KeyByHash(context.Background(), hex.EncodeToString(sum[:]))
		require.NoError(t, err)
		require.Equal(t, keyID, k.ID)

		st, m = e.do("GET", "/admin/v1/accounts/"+id+"/keys", "")
		require.Equal(t, http.StatusOK, st)
		keys := m["keys"].([]any)
		require.Len(t, keys, 1)
		listed := keys[0].(map[string]any)
		require.Equal(t, keyID, listed["id"])
		require.Equal(t, secret[:12], listed["prefix"])
		require.Nil(t, listed["revoked_at"])
		b, _ := json.Marshal(m)
		require.NotContains(t, string(b), secret, "listings never show the secret")

		st, m = e.do("DELETE", "/admin/v1/keys/"+keyID, "")
		require.Equal(t, http.StatusNoContent, st)
		require.Nil(t, m)
		st, _ = e.do("DELETE", "/admin/v1/keys/"+keyID, "")
		require.Equal(t, http.StatusNoContent, st, "revoking twice is fine")
		st, _ = e.do("DELETE", "/admin/v1/keys/key_nope", "")
		require.Equal(t, http.StatusNotFound, st)
		_, m = e.do("GET", "/admin/v1/accounts/"+id+"/keys", "")
		require.NotNil(t, m["keys"].([]any)[0].(map[string]any)["revoked_at"])
		st, _ = e.do("POST", "/admin/v1/accounts/acct_nope/keys", `{"name":"x"}`)
		require.Equal(t, http.StatusNotFound, st)
	})
}

func TestTopUps(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		id := e.account()
		path := "/admin/v1/accounts/" + id + "/topups"
		st, m := e.do("POST", path, `{"order_id":"o-1","plan":"credits_105k"}`)
		require.Equal(t, http.StatusCreated, st)
		first := m
		require.Equal(t, "o-1", m["order_id"])
		require.Equal(t, 105000.0, m["credits"])
		require.Equal(t, "500.00", m["amount_usd"])
		require.Equal(t, 105_000_000_000.0, m["balance_microcredits"])

		st, m = e.do("POST", path, `{"order_id":"o-2","credits":1000,"amount_usd":"5.00"}`)
		require.Equal(t, http.StatusCreated, st)
		require.Equal(t, 106_000_000_000.0, m["balance_microcredits"])

		// Replay: 200 with the original result. Different body: 409.
		st, m = e.do("POST", path, `{"order_id":"o-1","plan":"credits_105k"}`)
		require.Equal(t, http.StatusOK, st)
		require.Equal(t, first, m)
		st, m = e.do("POST", path, `{"order_id":"o-1","plan":"credits_1k"}`)
		require.Equal(t, http.StatusConflict, st)
		require.Equal(t, "conflict_error", errType(m))
		st, _ = e.do("POST", path, `{"order_id":"o-1","credits":105000,"amount_usd":"500.00"}`)
		require.Equal(t, http.StatusConflict, st, "same amounts by another route is a different request")

		// Promotional grant.
		st, m = e.do("POST", path, `{"order_id":"promo","credits":10,"amount_usd":"0"}`)
		require.Equal(t, http.StatusCreated, st)
		require.Equal(t, "0.00", m["amount_usd"])
		require.Equal(t, 106_010_000_000.0, m["balance_microcredits"])

		for name, body := range map[string]string{
			"both":          `{"order_id":"x","plan":"credits_1k","credits":1,"amount_usd":"1"}`,
			"neither":       `{"order_id":"x"}`,
			"credits only":  `{"order_id":"x","credits":5}`,
			"unknown plan":  `{"order_id":"x","plan":"credits_2k"}`,
			"no order":      `{"plan":"credits_1k"}`,
			"bad amount":    `{"order_id":"x","credits":5,"amount_usd":"5.0.0"}`,
			"number amount": `{"order_id":"x","credits":5,"amount_usd":5}`,
			"negative":      `{"order_id":"x","credits":-5,"amount_usd":"5"}`,
			"fractional":    `{"order_id":"x","credits":1.5,"amount_usd":"5"}`,
			"huge":          `{"order_id":"x","credits":1000000000000,"amount_usd":"5"}`,
		} {
			t.Run(name, func(t *testing.T) {
				st, m := e.do("POST", path, body)
				require.Equal(t, http.StatusBadRequest, st)
				require.Equal(t, "invalid_request_error", errType(m))
			})
		}
		st, _ = e.do("POST", "/admin/v1/accounts/acct_nope/topups", `{"order_id":"z","plan":"credits_1k"}`)
		require.Equal(t, http.StatusNotFound, st)
	})
}

func TestRefunds(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		id := e.account()
		st, _ := e.do("POST", "/admin/v1/accounts/"+id+"/topups", `{"order_id":"o-1","plan":"credits_1k"}`)
		require.Equal(t, http.StatusCreated, st)
		path := "/admin/v1/accounts/" + id + "/refunds"
		st, m := e.do("POST", path, `{"refund_id":"r-1","credits":200,"reason":"asked"}`)
		require.Equal(t, http.StatusCreated, st)
		require.Equal(t, map[string]any{"id": m["id"], "refund_id": "r-1", "kind": "refund", "reason": "asked",
			"refunded_microcredits": 200_000_000.0, "amount_usd": "1.00", "balance_microcredits": 800_000_000.0,
			"by_payment_method": []any{map[string]any{"payment_method": "admin", "amount_usd": "1.00"}}}, m)
		st, again := e.do("POST", path, `{"refund_id":"r-1","credits":200,"reason":"asked"}`)
		require.Equal(t, http.StatusOK, st)
		require.Equal(t, m, again)
		st, _ = e.do("POST", path, `{"refund_id":"r-1","credits":201,"reason":"asked"}`)
		require.Equal(t, http.StatusConflict, st)
		st, m = e.do("POST", path, `{"refund_id":"r-2","credits":801}`)
		require.Equal(t, http.StatusConflict, st)
		require.Contains(t, m["error"].(map[string]any)["message"], "800.000000")
		st, m = e.do("POST", path, `{"refund_id":"r-3","all_unused":true}`)
		require.Equal(t, http.StatusCreated, st)
		require.Equal(t, "4.00", m["amount_usd"])
		require.Zero(t, m["balance_microcredits"])
		st, _ = e.do("POST", path, `{"refund_id":"r-4","credits":1,"all_unused":true}`)
		require.Equal(t, http.StatusBadRequest, st)
		st, _ = e.do("POST", path, `{"refund_id":"r-4"}`)
		require.Equal(t, http.StatusBadRequest, st)
	})
}

func TestStatement(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		id := e.account()
		start := e.clock.Now()
		e.do("POST", "/admin/v1/accounts/"+id+"/topups", `{"order_id":"o-1","plan":"credits_1k"}`)
		e.clock.Advance(time.Hour)
		_, err := e.store.Settle(context.Background(), store.Batch{Group: "g", Topic: "t", Ref: "usage.v1/0:5-6",
			Usage: []store.Usage{{RequestID: "r1", AccountID: id, Cost: 2_500_000}}})
		require.NoError(t, err)
		e.clock.Advance(time.Hour)
		e.do("POST", "/admin/v1/accounts/"+id+"/topups", `{"order_id":"o-2","plan":"credits_1k"}`)

		st, m := e.do("GET", "/admin/v1/accounts/"+id+"/statement", "")
		require.Equal(t, http.StatusOK, st)
		entries := m["entries"].([]any)
		require.Len(t, entries, 3)
		u := entries[1].(map[string]any)
		require.Equal(t, "usage", u["kind"])
		require.Equal(t, -2_500_000.0, u["amount_microcredits"])
		require.Equal(t, 997_500_000.0, u["balance_microcredits"])
		require.Equal(t, "usage.v1/0:5-6", u["ref"])
		require.Equal(t, start.Add(time.Hour).Format(time.RFC3339Nano), u["ts"])
		require.Equal(t, 1_997_500_000.0, entries[2].(map[string]any)["balance_microcredits"])

		q := "?from=" + start.Add(30*time.Minute).Format(time.RFC3339) + "&to=" + start.Add(90*time.Minute).Format(time.RFC3339)
		_, m = e.do("GET", "/admin/v1/accounts/"+id+"/statement"+q, "")
		require.Len(t, m["entries"].([]any), 1)
		for _, bad := range []string{"?from=yesterday", "?to=2026-13-01T00:00:00Z", "?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", "?limit=0"} {
			st, _ = e.do("GET", "/admin/v1/accounts/"+id+"/statement"+bad, "")
			require.Equal(t, http.StatusBadRequest, st, bad)
		}
		_, m = e.do("GET", "/admin/v1/accounts/"+id+"/statement?limit=2", "")
		require.Len(t, m["entries"].([]any), 2)
		require.Equal(t, true, m["truncated"])

		st, m = e.do("GET", "/admin/v1/audit", "")
		require.Equal(t, http.StatusOK, st)
		require.Equal(t, true, m["ok"])
		_, m = e.do("GET", "/admin/v1/ledger", "")
		require.Equal(t, map[string]any{"cash:admin": -2000_000_000.0, "revenue": 2_500_000.0}, m["accounts_microcredits"])
	})
}

// FuzzTopUpBodies: whatever an operator's tooling sends as a top-up, the answer is a
// deliberate one (never a 500) in the error shape, and the books still balance.
func FuzzTopUpBodies(f *testing.F) {
	for _, s := range []string{`{"order_id":"o","plan":"credits_1k"}`, `{"order_id":"o","credits":5,"amount_usd":"0.015"}`,
		`{"order_id":"o","credits":1e3,"amount_usd":"5"}`, `{"order_id":"\u0000","plan":"x"}`, `{"order_id":"o","amount_usd":"9999999999999"}`,
		`{}`, `[1]`, `{"order_id":"o","credits":9223372036854775807,"amount_usd":"1"}`} {
		f.Add(s)
	}
	clock := storetest.NewClock()
	s, err := sqlite.Open(context.Background(), filepath.Join(f.TempDir(), "ledger.db"), nil, clock.Now)
	require.NoError(f, err)
	defer s.Close()
	acct, err := s.CreateAccount(context.Background(), "acme")
	require.NoError(f, err)
	plans, err := plan.Parse(deploy.Plans)
	require.NoError(f, err)
	h := admin.New(admin.Config{Store: s, Plans: plans, Token: token, Logger: slog.New(slog.DiscardHandler), Now: clock.Now})
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/admin/v1/accounts/"+acct.ID+"/topups", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Contains(t, []int{200, 201, 400, 409, 413}, rec.Code, rec.Body.String())
		if rec.Code >= 400 {
			var e struct {
				Error struct{ Type, Message string }
			}
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e))
			require.NotEmpty(t, e.Error.Type)
		}
	})
	require.NoError(f, s.Check(context.Background()))
}
