package ledger_test

import (
	"context"
	"net/http"
	"net/http/httptest"
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
