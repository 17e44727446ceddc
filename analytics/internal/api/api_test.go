package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"tollgate/analytics/internal/api"
	"tollgate/analytics/internal/store"
)

// revenueBig is the reference: round half up of cost × price / 1e6, in arbitrary precision.
func revenueBig(cost, price int64) int64 {
	num := new(big.Int).Mul(big.NewInt(cost), big.NewInt(price))
	num.Add(num, big.NewInt(500_000))
	return new(big.Int).Div(num, big.NewInt(1_000_000)).Int64()
}

func TestRevenueMicroUSD(t *testing.T) {
	for _, c := range []struct{ cost, price int64 }{
		{0, 5000}, {1, 5000}, {99, 5000}, {100, 5000}, {101, 5000}, {199, 5000}, {200, 5000},
		{1_000_000, 5000}, {123_456_789, 4762}, {math.MaxInt64, 5000}, {math.MaxInt64, 1},
		{999_999, 1}, {500_000, 1}, {499_999, 1},
	} {
		require.Equal(t, revenueBig(c.cost, c.price), api.RevenueMicroUSD(c.cost, c.price), "cost=%d price=%d", c.cost, c.price)
	}
}

func TestSummarize(t *testing.T) {
	rows := []store.ModelTotals{
		{Model: "a", Totals: store.Totals{Requests: 2, InputTokens: 10, CostMicrocredits: 300, UpstreamCostMicroUSD: 1}},
		{Model: "b", Totals: store.Totals{Requests: 1, OutputTokens: 7, CostMicrocredits: 300, UpstreamCostMicroUSD: 5}},
	}
	all, by := api.Summarize(rows, 5000)
	require.Equal(t, int64(3), all.Requests)
	require.Equal(t, int64(600), all.CostMicrocredits)
	require.Equal(t, int64(3), all.RevenueMicroUSD) // 600 µcr × 0.005 = 3 µ$
	require.Equal(t, int64(3-6), all.MarginMicroUSD)
	require.Len(t, by, 2)
	require.Equal(t, int64(2), by[0].RevenueMicroUSD) // 1.5 rounds up
	require.Equal(t, int64(1), by[0].MarginMicroUSD)
	require.Equal(t, int64(2-5), by[1].MarginMicroUSD)
}

type fakeReports struct {
	err             error
	from, to        time.Time
	account         string
	byModel         []store.ModelTotals
	accountDailyOut []store.DayModelTotals
}

func (f *fakeReports) ByModel(_ context.Context, from, to time.Time) ([]store.ModelTotals, error) {
	f.from, f.to = from, to
	return f.byModel, f.err
}

func (f *fakeReports) AccountDaily(_ context.Context, account string, from, to time.Time) ([]store.DayModelTotals, error) {
	f.account, f.from, f.to = account, from, to
	return f.accountDailyOut, f.err
}

func TestHandler(t *testing.T) {
	rep := &fakeReports{byModel: []store.ModelTotals{{Model: "m", Totals: store.Totals{Requests: 1, CostMicrocredits: 1_000_000}}}}
	notReady := errors.New("clickhouse down")
	var readyErr error
	h := api.New(api.Config{AdminToken: "sekret"}, rep, func(context.Context) error { return readyErr },
		prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	do := func(path, auth string) (int, map[string]any) {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var body map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &body)
		return w.Code, body
	}
	const q = "?from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00%2B01:00"
	cases := []struct {
		name, path, auth string
		status           int
		errType          string
	}{
		{"healthz open", "/healthz", "", 200, ""},
		{"metrics open", "/metrics", "", 200, ""},
		{"no token", "/v1/finance/summary" + q, "", 401, "authentication_error"},
		{"wrong token", "/v1/finance/summary" + q, "Bearer nope", 401, "authentication_error"},
		{"summary", "/v1/finance/summary" + q, "Bearer sekret", 200, ""},
		{"missing from", "/v1/finance/summary?to=2026-12-01T00:00:00Z", "Bearer sekret", 400, "invalid_request_error"},
		{"bad time", "/v1/finance/summary?from=yesterday&to=2026-12-01T00:00:00Z", "Bearer sekret", 400, "invalid_request_error"},
		{"empty range", "/v1/finance/summary?from=2026-12-01T00:00:00Z&to=2026-12-01T00:00:00Z", "Bearer sekret", 400, "invalid_request_error"},
		{"usage needs account", "/v1/usage" + q, "Bearer sekret", 400, "invalid_request_error"},
		{"usage", "/v1/usage" + q + "&account_id=acct-9", "Bearer sekret", 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := do(c.path, c.auth)
			require.Equal(t, c.status, status)
			if c.errType != "" {
				require.Equal(t, c.errType, body["error"].(map[string]any)["type"])
			}
		})
	}

	_, body := do("/v1/usage"+q+"&account_id=acct-9", "Bearer sekret")
	require.Equal(t, "acct-9", rep.account)
	require.Equal(t, []any{}, body["days"], "no usage is an empty list, not null")
	require.Equal(t, time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC), rep.to, "times are normalised to UTC")

	_, body = do("/v1/finance/summary"+q, "Bearer sekret")
	totals := body["totals"].(map[string]any)
	require.Equal(t, float64(5000), totals["revenue_microusd"])
	require.Equal(t, float64(1_000_000), totals["cost_microcredits"])

	rep.err = errors.New("boom")
	status, body := do("/v1/finance/summary"+q, "Bearer sekret")
	require.Equal(t, 503, status)
	require.Equal(t, "api_error", body["error"].(map[string]any)["type"])

	status, _ = do("/readyz", "")
	require.Equal(t, 200, status)
	readyErr = notReady
	status, _ = do("/readyz", "")
	require.Equal(t, 503, status)
}
