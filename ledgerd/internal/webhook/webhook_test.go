package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
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
	"tollgate/ledgerd/internal/plan"
	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/postgres"
	"tollgate/ledgerd/internal/store/sqlite"
	"tollgate/ledgerd/internal/store/storetest"
	"tollgate/ledgerd/internal/webhook"
)

const secret = "whsec_test_0123456789abcdef"

type env struct {
	t     *testing.T
	srv   *httptest.Server
	store store.Store
	clock *storetest.Clock
}

func eachStore(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, newEnv(t, false, secret)) })
	t.Run("postgres", func(t *testing.T) { fn(t, newEnv(t, true, secret)) })
}

func newEnv(t *testing.T, pg bool, secret string) *env {
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
	mux := http.NewServeMux()
	mux.Handle(webhook.Path, webhook.New(webhook.Config{Store: s, Plans: plans, Secret: secret,
		Logger: slog.New(slog.DiscardHandler), Now: clock.Now}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, store: s, clock: clock}
}

// post sends body with the given signature header ("" for none).
func (e *env) post(body, sig string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.srv.URL+webhook.Path, strings.NewReader(body))
	require.NoError(e.t, err)
	if sig != "" {
		req.Header.Set(webhook.SignatureHeader, sig)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	var m map[string]any
	require.NoError(e.t, json.Unmarshal(raw, &m), string(raw))
	return resp.StatusCode, m
}

func (e *env) signed(body string) (int, map[string]any) {
	return e.post(body, webhook.Sign([]byte(secret), e.clock.Now(), []byte(body)))
}

func (e *env) balance(id string) int64 {
	a, err := e.store.Account(context.Background(), id)
	require.NoError(e.t, err)
	return a.Balance
}

func paid(event, account, order, plan string) string {
	return fmt.Sprintf(`{"id":%q,"type":"payment.succeeded","created":1764000000,"data":{"account_id":%q,"order_id":%q,"plan":%q,"payment_method":"card","customer_email":"x@example.com"}}`,
		event, account, order, plan)
}

func errType(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	s, _ := e["type"].(string)
	return s
}

func TestWebhookTopsUp(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		a, err := e.store.CreateAccount(context.Background(), "acme")
		require.NoError(t, err)
		body := paid("evt_1", a.ID, "pay_1", "credits_10k")
		st, m := e.signed(body)
		require.Equal(t, http.StatusOK, st, m)
		require.Equal(t, false, m["duplicate"])
		top := m["topup"].(map[string]any)
		require.Equal(t, "pay_1", top["order_id"])
		require.Equal(t, 10000.0, top["credits"])
		require.Equal(t, "50.00", top["amount_usd"])
		require.Equal(t, int64(10_000_000_000), e.balance(a.ID))

		// Redelivery (same event id, fresh signature): 200, duplicate, nothing changes.
		e.clock.Advance(time.Minute)
		st, again := e.signed(body)
		require.Equal(t, http.StatusOK, st)
		require.Equal(t, true, again["duplicate"])
		require.Equal(t, top, again["topup"])
		// The same event id with another body (a provider bug) still changes nothing.
		st, again = e.signed(paid("evt_1", a.ID, "pay_other", "credits_275k"))
		require.Equal(t, http.StatusOK, st)
		require.Equal(t, true, again["duplicate"])
		// Another event for the same payment: the order id dedupes it too.
		st, again = e.signed(paid("evt_2", a.ID, "pay_1", "credits_10k"))
		require.Equal(t, http.StatusOK, st)
		require.Equal(t, true, again["duplicate"])
		// ... but a different plan under a used order id is a conflict.
		st, m = e.signed(paid("evt_3", a.ID, "pay_1", "credits_1k"))
		require.Equal(t, http.StatusConflict, st)
		require.Equal(t, "conflict_error", errType(m))
		require.Equal(t, int64(10_000_000_000), e.balance(a.ID))

		// The money went to cash:card, and the top-up shows on the statement by order id.
		la, err := e.store.LedgerAccounts(context.Background())
		require.NoError(t, err)
		require.Equal(t, store.Totals{Microcredits: -10_000_000_000, MicroUSD: -50_000_000}, la["cash:card"])
		st2, err := e.store.Statement(context.Background(), a.ID, time.Unix(0, 0), e.clock.Now().Add(time.Hour), 10)
		require.NoError(t, err)
		require.Len(t, st2.Entries, 1)
		require.Equal(t, "pay_1", st2.Entries[0].Ref)

		// Other event types are acknowledged and ignored.
		st, m = e.signed(`{"id":"evt_9","type":"customer.updated","data":{}}`)
		require.Equal(t, http.StatusOK, st)
		require.Equal(t, true, m["ignored"])
		require.NoError(t, e.store.Check(context.Background()))
	})
}

func TestWebhookRefusals(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		a, err := e.store.CreateAccount(context.Background(), "acme")
		require.NoError(t, err)
		body := paid("evt_1", a.ID, "pay_1", "credits_1k")
		now := e.clock.Now()
		good := webhook.Sign([]byte(secret), now, []byte(body))
		for _, tc := range []struct {
			name, body, sig string
			status          int
			typ             string
		}{
			{"no signature", body, "", 401, "authentication_error"},
			{"wrong secret", body, webhook.Sign([]byte("another-secret-0123456789"), now, []byte(body)), 401, "authentication_error"},
			{"body changed after signing", strings.Replace(body, "credits_1k", "credits_275k", 1), good, 401, "authentication_error"},
			{"timestamp changed after signing", body, strings.Replace(good, fmt.Sprint(now.Unix()), fmt.Sprint(now.Unix()+1), 1), 401, "authentication_error"},
			{"stale: signed 6 minutes ago", body, webhook.Sign([]byte(secret), now.Add(-6*time.Minute), []byte(body)), 401, "authentication_error"},
			{"from the future", body, webhook.Sign([]byte(secret), now.Add(6*time.Minute), []byte(body)), 401, "authentication_error"},
			{"malformed header", body, "v1=abc", 401, "authentication_error"},
			{"unknown account", paid("evt_2", "acct_nope", "pay_2", "credits_1k"), "", 404, "not_found_error"},
			{"unknown plan", paid("evt_3", a.ID, "pay_3", "credits_2k"), "", 400, "invalid_request_error"},
			{"no order id", paid("evt_4", a.ID, "", "credits_1k"), "", 400, "invalid_request_error"},
			{"no event id", paid("", a.ID, "pay_5", "credits_1k"), "", 400, "invalid_request_error"},
			{"bad method", strings.Replace(paid("evt_6", a.ID, "pay_6", "credits_1k"), `"card"`, `"Card Visa"`, 1), "", 400, "invalid_request_error"},
			{"price mismatch", strings.Replace(paid("evt_7", a.ID, "pay_7", "credits_1k"), `"payment_method"`, `"amount_usd":"4.00","payment_method"`, 1), "", 422, "invalid_request_error"},
			{"not json", `{"id":`, "", 400, "invalid_request_error"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				sig := tc.sig
				if sig == "" && tc.status != 401 {
					sig = webhook.Sign([]byte(secret), now, []byte(tc.body))
				}
				st, m := e.post(tc.body, sig)
				require.Equal(t, tc.status, st, m)
				require.Equal(t, tc.typ, errType(m))
				require.Zero(t, e.balance(a.ID), "a refused webhook changes nothing")
			})
		}
		// Within the tolerance, a signature made 4 minutes ago is still good.
		st, _ := e.post(body, webhook.Sign([]byte(secret), now.Add(-4*time.Minute), []byte(body)))
		require.Equal(t, http.StatusOK, st)
		// A signature list with one good value (secret rotation) is accepted.
		rot := webhook.Sign([]byte("old-secret-0123456789abc"), now, []byte(body)) + "," + strings.Split(good, ",")[1]
		st, m := e.post(body, rot)
		require.Equal(t, http.StatusOK, st)
		require.Equal(t, true, m["duplicate"])
		require.Equal(t, int64(1000_000_000), e.balance(a.ID))
		require.NoError(t, e.store.Check(context.Background()))
	})
}

func TestWebhookDisabledWithoutSecret(t *testing.T) {
	e := newEnv(t, false, "")
	body := `{"id":"evt_1","type":"payment.succeeded"}`
	st, m := e.post(body, webhook.Sign(nil, e.clock.Now(), []byte(body)))
	require.Equal(t, http.StatusNotFound, st)
	require.Contains(t, m["error"].(map[string]any)["message"], "TOLLGATE_WEBHOOK_SECRET")
}

func TestParseSignature(t *testing.T) {
	h64 := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		header string
		ok     bool
		n      int
	}{
		{"t=1764000000,v1=" + h64, true, 1},
		{"t=1764000000, v1=" + h64 + ", v1=" + h64, true, 2},
		{"t=1764000000,v0=zz,v1=" + h64, true, 1}, // unknown schemes ignored
		{"v1=" + h64 + ",t=1764000000", true, 1},
		{"", false, 0},
		{"t=1764000000", false, 0},
		{"v1=" + h64, false, 0},
		{"t=1764000000,t=1764000001,v1=" + h64, false, 0},
		{"t=-5,v1=" + h64, false, 0},
		{"t=+5,v1=" + h64, false, 0},
		{"t=0017,v1=" + h64, false, 0},
		{"t=1764000000,v1=" + h64[:62], false, 0},
		{"t=1764000000,v1=" + strings.Repeat("zz", 32), false, 0},
		{"t=1764000000,v1", false, 0},
		{"t=1764000000,v1=" + h64 + strings.Repeat(",v1="+h64, webhook.SignaturesMax), false, 0},
		{"t=1764000000,v1=" + h64 + strings.Repeat(" ", webhook.HeaderBytesMax), false, 0},
	} {
		sig, err := webhook.ParseSignature(tc.header)
		if !tc.ok {
			require.Error(t, err, tc.header)
			continue
		}
		require.NoError(t, err, tc.header)
		require.Equal(t, int64(1764000000), sig.Timestamp)
		require.Len(t, sig.V1, tc.n)
	}
}

// FuzzParseSignature: any header either parses into a timestamp and 1..SignaturesMax
// 32-byte values, or is refused; nothing panics.
func FuzzParseSignature(f *testing.F) {
	for _, s := range []string{"t=1764000000,v1=" + strings.Repeat("ab", 32), "t=1,v1=", "t=,v1=00", ",,,", "t=99999999999999999999,v1=ab",
		"t=1764000000,v1=" + strings.Repeat("ab", 32) + ",v2=xyz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		sig, err := webhook.ParseSignature(h)
		if err != nil {
			return
		}
		require.Positive(t, sig.Timestamp)
		require.NotEmpty(t, sig.V1)
		require.LessOrEqual(t, len(sig.V1), webhook.SignaturesMax)
		for _, v := range sig.V1 {
			require.Len(t, v, 32)
		}
	})
}

// FuzzWebhook: whatever arrives with whatever signature header, the answer is a deliberate
// one in the error shape; unsigned requests never change the books.
func FuzzWebhook(f *testing.F) {
	f.Add(paid("evt_1", "acct_x", "pay_1", "credits_1k"), "t=1764000000,v1="+strings.Repeat("ab", 32))
	f.Add(`{"id":"e","type":"payment.succeeded","data":null}`, "")
	f.Add(`[]`, "t=1,v1=00")
	clock := storetest.NewClock()
	s, err := sqlite.Open(context.Background(), filepath.Join(f.TempDir(), "ledger.db"), nil, clock.Now)
	require.NoError(f, err)
	defer s.Close()
	plans, err := plan.Parse(deploy.Plans)
	require.NoError(f, err)
	h := webhook.New(webhook.Config{Store: s, Plans: plans, Secret: secret, Now: clock.Now})
	f.Fuzz(func(t *testing.T, body, sig string) {
		req := httptest.NewRequest("POST", webhook.Path, strings.NewReader(body))
		req.Header.Set(webhook.SignatureHeader, sig)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusUnauthorized, rec.Code, rec.Body.String())
		var e struct {
			Error struct{ Type, Message string }
		}
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e))
		require.Equal(t, "authentication_error", e.Error.Type)
	})
	la, err := s.LedgerAccounts(context.Background())
	require.NoError(f, err)
	require.Empty(f, la)
}
