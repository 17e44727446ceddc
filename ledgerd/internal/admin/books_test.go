package admin_test

import (
	"context"
	"encoding/csv"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/admin"
	"tollgate/ledgerd/internal/store"
)

func errMessage(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	s, _ := e["message"].(string)
	return s
}

func TestReversal(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		id := e.account()
		topups, refunds := "/admin/v1/accounts/"+id+"/topups", "/admin/v1/accounts/"+id+"/refunds"
		st, _ := e.do("POST", topups, `{"order_id":"o-1","plan":"credits_10k"}`)
		require.Equal(t, http.StatusCreated, st)
		st, _ = e.do("POST", topups, `{"order_id":"o-dup","plan":"credits_10k"}`)
		require.Equal(t, http.StatusCreated, st)
		// Some usage: it comes from the older lot, so the duplicate stays wholly unused.
		_, err := e.store.Settle(context.Background(), store.Batch{Group: "g", Topic: "t", Usage: []store.Usage{{RequestID: "r1", AccountID: id, Cost: 3_000_000}}})
		require.NoError(t, err)

		body := `{"refund_id":"rv-1","order_id":"o-dup","reason":"charged twice"}`
		st, m := e.do("POST", refunds, body)
		require.Equal(t, http.StatusCreated, st, m)
		require.Equal(t, map[string]any{"id": m["id"], "refund_id": "rv-1", "kind": "reversal", "order_id": "o-dup", "reason": "charged twice",
			"refunded_microcredits": 10_000_000_000.0, "amount_usd": "50.00", "balance_microcredits": 9_997_000_000.0,
			"by_payment_method": []any{map[string]any{"payment_method": "admin", "amount_usd": "50.00"}}}, m)
		st, again := e.do("POST", refunds, body)
		require.Equal(t, http.StatusOK, st)
		require.Equal(t, m, again)

		st, m = e.do("POST", refunds, `{"refund_id":"rv-2","order_id":"o-dup"}`)
		require.Equal(t, http.StatusConflict, st)
		require.Contains(t, errMessage(m), "already reversed")
		st, m = e.do("POST", refunds, `{"refund_id":"rv-3","order_id":"o-1"}`)
		require.Equal(t, http.StatusConflict, st, "the first top-up was partly used")
		require.Contains(t, errMessage(m), "no longer wholly unused")
		st, _ = e.do("POST", refunds, `{"refund_id":"rv-4","order_id":"o-missing"}`)
		require.Equal(t, http.StatusNotFound, st)
		other := e.account()
		st, _ = e.do("POST", "/admin/v1/accounts/"+other+"/topups", `{"order_id":"o-other","plan":"credits_1k"}`)
		require.Equal(t, http.StatusCreated, st)
		st, _ = e.do("POST", refunds, `{"refund_id":"rv-5","order_id":"o-other"}`)
		require.Equal(t, http.StatusNotFound, st, "another account's top-up")
		st, _ = e.do("POST", refunds, `{"refund_id":"rv-6","order_id":"o-1","credits":5}`)
		require.Equal(t, http.StatusBadRequest, st)

		// Held credit is not refundable: with a lease holding most of the balance, a reversal
		// of a new duplicate is refused until the lease lets go.
		st, _ = e.do("POST", topups, `{"order_id":"o-dup2","plan":"credits_1k"}`)
		require.Equal(t, http.StatusCreated, st)
		acct, err := e.store.Account(context.Background(), id)
		require.NoError(t, err)
		_, err = e.store.GrantLease(context.Background(), store.LeaseGrant{AccountID: id, EdgeID: "e1", Want: acct.Available(),
			Min: acct.Available(), TTL: time.Minute})
		require.NoError(t, err)
		st, m = e.do("POST", refunds, `{"refund_id":"rv-7","order_id":"o-dup2"}`)
		require.Equal(t, http.StatusConflict, st)
		require.Contains(t, errMessage(m), "reserved credit is not refundable")

		st, m = e.do("GET", "/admin/v1/audit", "")
		require.Equal(t, http.StatusOK, st, m)
	})
}

func TestChargeback(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		id := e.account()
		st, _ := e.do("POST", "/admin/v1/accounts/"+id+"/topups", `{"order_id":"o-1","plan":"credits_105k"}`)
		require.Equal(t, http.StatusCreated, st)
		_, err := e.store.Settle(context.Background(), store.Batch{Group: "g", Topic: "t", Usage: []store.Usage{{RequestID: "r1", AccountID: id, Cost: 5_000_000_000}}})
		require.NoError(t, err)
		path := "/admin/v1/accounts/" + id + "/chargebacks"
		body := `{"chargeback_id":"dp_1","order_id":"o-1","reason":"fraudulent"}`
		st, m := e.do("POST", path, body)
		require.Equal(t, http.StatusCreated, st, m)
		// 100,000 credits left of a $500 / 105,000-credit lot: $500 − floor(5000/105000 · $500).
		require.Equal(t, map[string]any{"id": m["id"], "chargeback_id": "dp_1", "order_id": "o-1", "reason": "fraudulent",
			"forfeited_microcredits": 100_000_000_000.0, "forfeited_usd": "476.190477", "balance_microcredits": 0.0,
			"status": "suspended"}, m)
		st, again := e.do("POST", path, body)
		require.Equal(t, http.StatusOK, st)
		require.Equal(t, m, again)
		st, _ = e.do("POST", path, `{"chargeback_id":"dp_1","reason":"other"}`)
		require.Equal(t, http.StatusConflict, st)
		st, _ = e.do("POST", path, `{"chargeback_id":"dp_2","order_id":"o-missing"}`)
		require.Equal(t, http.StatusNotFound, st)
		st, _ = e.do("POST", path, `{"order_id":"o-1"}`)
		require.Equal(t, http.StatusBadRequest, st)

		_, m = e.do("GET", "/admin/v1/accounts/"+id, "")
		require.Equal(t, "suspended", m["status"])
		require.Equal(t, 0.0, m["balance_microcredits"])
		require.Equal(t, "0.00", m["deferred_usd"])
		_, m = e.do("GET", "/admin/v1/accounts/"+id+"/statement", "")
		entries := m["entries"].([]any)
		last := entries[len(entries)-1].(map[string]any)
		require.Equal(t, "chargeback", last["kind"])
		require.Equal(t, "dp_1", last["ref"])
		require.Equal(t, -100_000_000_000.0, last["amount_microcredits"])
		require.Equal(t, "-476.190477", last["amount_usd"])

		// A second chargeback on the empty account suspends (already) and forfeits nothing.
		st, m = e.do("POST", path, `{"chargeback_id":"dp_3"}`)
		require.Equal(t, http.StatusCreated, st)
		require.Equal(t, 0.0, m["forfeited_microcredits"])
		_, m = e.do("GET", "/admin/v1/ledger", "")
		require.Equal(t, 100_000_000_000.0, m["accounts_microcredits"].(map[string]any)["forfeits"])
		require.Equal(t, "476.190477", m["accounts_usd"].(map[string]any)["forfeits"])
		st, m = e.do("GET", "/admin/v1/audit", "")
		require.Equal(t, http.StatusOK, st, m)
	})
}

func TestLots(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		id := e.account()
		e.do("POST", "/admin/v1/accounts/"+id+"/topups", `{"order_id":"o-1","plan":"credits_1k"}`)
		e.clock.Advance(time.Second)
		e.do("POST", "/admin/v1/accounts/"+id+"/topups", `{"order_id":"o-2","plan":"credits_275k"}`)
		_, err := e.store.Settle(context.Background(), store.Batch{Group: "g", Topic: "t", Usage: []store.Usage{{RequestID: "r1", AccountID: id, Cost: 1100_000_000}}})
		require.NoError(t, err)
		e.do("POST", "/admin/v1/accounts/"+id+"/refunds", `{"refund_id":"rf","credits":1000}`)
		st, m := e.do("GET", "/admin/v1/accounts/"+id+"/lots", "")
		require.Equal(t, http.StatusOK, st)
		lots := m["lots"].([]any)
		require.Len(t, lots, 2)
		first, second := lots[0].(map[string]any), lots[1].(map[string]any)
		delete(first, "id")
		delete(first, "created_at")
		require.Equal(t, map[string]any{"order_id": "o-1", "payment_method": "admin", "microcredits": 1e9, "paid_usd": "5.00",
			"remaining_microcredits": 0.0, "used_microcredits": 1e9, "recognized_usd": "5.00", "refunded_microcredits": 0.0,
			"refunded_usd": "0.00", "forfeited_microcredits": 0.0, "forfeited_usd": "0.00", "deferred_usd": "0.00"}, first)
		// 100 credits used and 1,000 refunded from the 275k lot at $1250/275000 per credit.
		require.Equal(t, 100e6, second["used_microcredits"])
		require.Equal(t, "0.454545", second["recognized_usd"])
		require.Equal(t, 1000e6, second["refunded_microcredits"])
		require.Equal(t, "4.545455", second["refunded_usd"]) // floor(1100·1250/275000) − floor(100·1250/275000)
		require.Equal(t, "1245.00", second["deferred_usd"])
		st, _ = e.do("GET", "/admin/v1/accounts/acct_nope/lots", "")
		require.Equal(t, http.StatusNotFound, st)
	})
}

func TestStatementCSV(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		id := e.account()
		e.do("POST", "/admin/v1/accounts/"+id+"/topups", `{"order_id":"=cmd|' /C calc'!A0","plan":"credits_1k"}`)
		e.clock.Advance(time.Minute)
		_, err := e.store.Settle(context.Background(), store.Batch{Group: "g", Topic: "t", Ref: "usage.v1/0:1-2",
			Usage: []store.Usage{{RequestID: "r1", AccountID: id, Cost: 2_500_000}}})
		require.NoError(t, err)
		for _, how := range []struct{ query, accept string }{{"?format=csv", ""}, {"", "text/csv"}} {
			req, err := http.NewRequest("GET", e.srv.URL+"/admin/v1/accounts/"+id+"/statement"+how.query, nil)
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+token)
			if how.accept != "" {
				req.Header.Set("Accept", how.accept)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Equal(t, "text/csv; charset=utf-8", resp.Header.Get("Content-Type"))
			rows, err := csv.NewReader(strings.NewReader(string(raw))).ReadAll()
			require.NoError(t, err)
			require.Len(t, rows, 4)
			require.Equal(t, admin.StatementCSVHeader, rows[0])
			require.Equal(t, []string{"", "", "opening", "", "", "", "0", "0.000000", ""}, rows[1])
			require.Equal(t, []string{"topup", "1000000000", "1000.000000", "5.00", "1000000000", "1000.000000", "'=cmd|' /C calc'!A0"}, rows[2][2:])
			require.Equal(t, []string{"usage", "-2500000", "-2.500000", "-0.0125", "997500000", "997.500000", "usage.v1/0:1-2"}, rows[3][2:])
		}
		st, _ := e.do("GET", "/admin/v1/accounts/"+id+"/statement?format=xml", "")
		require.Equal(t, http.StatusBadRequest, st)
	})
}

func TestRevenueReport(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		a, b := e.account(), e.account()
		start := e.clock.Now()
		e.do("POST", "/admin/v1/accounts/"+a+"/topups", `{"order_id":"o-a","plan":"credits_105k"}`)
		e.do("POST", "/admin/v1/accounts/"+b+"/topups", `{"order_id":"o-b","plan":"credits_1k"}`)
		e.do("POST", "/admin/v1/accounts/"+b+"/topups", `{"order_id":"promo","credits":100,"amount_usd":"0"}`)
		e.clock.Advance(time.Hour)
		mid := e.clock.Now()
		_, err := e.store.Settle(context.Background(), store.Batch{Group: "g", Topic: "t", Usage: []store.Usage{
			{RequestID: "r1", AccountID: a, Cost: 21_000_000_000}, {RequestID: "r2", AccountID: b, Cost: 200_000_000}}})
		require.NoError(t, err)
		e.do("POST", "/admin/v1/accounts/"+b+"/refunds", `{"refund_id":"rf","credits":500}`)
		e.do("POST", "/admin/v1/accounts/"+a+"/chargebacks", `{"chargeback_id":"cb"}`)
		e.clock.Advance(time.Hour)

		q := func(from, to time.Time) map[string]any {
			st, m := e.do("GET", "/admin/v1/reports/revenue?from="+from.Format(time.RFC3339)+"&to="+to.Format(time.RFC3339), "")
			require.Equal(t, http.StatusOK, st, m)
			return m
		}
		first := q(start, mid)
		require.Equal(t, "0.00", first["deferred_revenue_opening_usd"])
		require.Equal(t, "505.00", first["deferred_revenue_closing_usd"])
		require.Equal(t, map[string]any{"admin": "505.00"}, first["cash_received_usd"])
		require.Equal(t, "0.00", first["revenue_recognized_usd"])
		require.Equal(t, map[string]any{"issued_paid_microcredits": 101_000e6, "issued_bonus_microcredits": 5100e6,
			"used_microcredits": 0.0, "refunded_microcredits": 0.0, "forfeited_microcredits": 0.0,
			"outstanding_opening_microcredits": 0.0, "outstanding_closing_microcredits": 106_100e6}, first["credits"])

		second := q(mid, e.clock.Now())
		// Usage: 21,000 credits of the 105k lot recognize exactly $100; b's 200 credits come
		// from its $5 lot first ($1). b's refund of 500 credits: newest first, so the 100 free
		// credits ($0), then 400 of the $5 lot ($2). a's chargeback forfeits the other $400.
		require.Equal(t, "505.00", second["deferred_revenue_opening_usd"])
		require.Equal(t, "101.00", second["revenue_recognized_usd"])
		require.Equal(t, "2.00", second["refunds_owed_usd"])
		require.Equal(t, "400.00", second["forfeited_usd"])
		require.Equal(t, "2.00", second["deferred_revenue_closing_usd"])
		require.Equal(t, "0.00", second["cash_received_total_usd"])
		// The identity holds by construction: closing = opening + cash − revenue − refunds − forfeited.
		cr := second["credits"].(map[string]any)
		require.Equal(t, 21_200e6, cr["used_microcredits"])
		require.Equal(t, 500e6, cr["refunded_microcredits"])
		require.Equal(t, 84_000e6, cr["forfeited_microcredits"])
		require.Equal(t, 400e6, cr["outstanding_closing_microcredits"])

		st, _ := e.do("GET", "/admin/v1/reports/revenue?from=2026-12-01T00:00:00Z&to=2026-11-01T00:00:00Z", "")
		require.Equal(t, http.StatusBadRequest, st)
		st, m := e.do("GET", "/admin/v1/reports/revenue", "")
		require.Equal(t, http.StatusOK, st, "the default period is this month")
		require.Equal(t, "2026-11-01T00:00:00Z", m["from"])
	})
}
