package app_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/analytics/internal/api"
	"tollgate/analytics/internal/app"
	"tollgate/analytics/internal/store"
	"tollgate/analytics/internal/store/storetest"
	"tollgate/pkg/bus"
	"tollgate/pkg/bus/bustest"
	"tollgate/pkg/usage"
)

func TestValidate(t *testing.T) {
	require.NoError(t, app.DefaultConfig().Validate())
	bad := app.DefaultConfig()
	bad.ClickHouseDSN = "http://127.0.0.1:8123/tollgate"
	bad.KafkaBrokers = nil
	bad.BatchRowsMax = 0
	bad.BatchLinger = 0
	err := bad.Validate()
	require.Error(t, err)
	for _, field := range []string{"clickhouse_dsn", "kafka_brokers", "batch_rows_max", "batch_linger"} {
		require.Contains(t, err.Error(), field)
	}
}

// TestClickHouseDown: without ClickHouse the service stays up, says it is not ready, keeps
// retrying, and stops cleanly.
func TestClickHouseDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens here now

	cfg := app.DefaultConfig()
	cfg.ClickHouseDSN = "clickhouse://" + closed + "/tollgate"
	cfg.KafkaBrokers = []string{closed}
	cfg.ListenAddr = "127.0.0.1:0"
	a, err := app.New(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	base := "http://" + a.Addr()
	status, _ := get(t, base+"/healthz", "")
	require.Equal(t, http.StatusOK, status)
	status, body := get(t, base+"/readyz", "")
	require.Equal(t, http.StatusServiceUnavailable, status, string(body))
	cancel()
	require.NoError(t, <-done)
}

// TestFinanceEndToEnd runs the service against kfake and a real ClickHouse, produces records
// (some twice), and checks that the finance summary and the usage API equal sums computed
// here from the records themselves.
func TestFinanceEndToEnd(t *testing.T) {
	dsn, _ := storetest.DSN(t, "")
	brokers := bustest.Start(t, 3, usage.Topic, usage.TopicDLQ)
	cfg := app.DefaultConfig()
	cfg.ClickHouseDSN = dsn
	cfg.KafkaBrokers = brokers
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.AdminToken = "t0ken"
	cfg.BatchRowsMax = 500
	cfg.BatchLinger = 50 * time.Millisecond
	a, err := app.New(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	base := "http://" + a.Addr()

	end := time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)
	recs := storetest.Records(99, 2000, end)
	msgs := make([]bus.Message, 0, len(recs)+300)
	for i := range recs {
		msgs = append(msgs, bus.Message{Key: []byte(recs[i].AccountID), Value: recs[i].AppendJSON(nil)})
	}
	msgs = append(msgs, msgs[:300]...) // redelivered copies
	p := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.Topic})
	defer p.Close()
	pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer pcancel()
	require.NoError(t, p.Send(pctx, msgs...))

	// Independent expectations over a window that cuts through the data.
	from, to := end.AddDate(0, 0, -25), end.AddDate(0, 0, -3)
	wantByModel := map[string]store.Totals{}
	var wantAll store.Totals
	wantDays := map[[2]string]store.Totals{}
	for i := range recs {
		r := &recs[i]
		ts := time.UnixMilli(r.TsEndMs)
		if ts.Before(from) || !ts.Before(to) {
			continue
		}
		m := wantByModel[r.Model]
		m.AddRecord(r)
		wantByModel[r.Model] = m
		wantAll.AddRecord(r)
		if r.AccountID == "acct-2" {
			k := [2]string{ts.UTC().Format("2006-01-02"), r.Model}
			d := wantDays[k]
			d.AddRecord(r)
			wantDays[k] = d
		}
	}
	require.NotZero(t, wantAll.Requests)

	// Wait until every message is accounted for: 2000 inserted, 300 found already stored.
	deadline := time.Now().Add(60 * time.Second) // hang guard while the consumer catches up
	for {
		inserted, again := outcome(t, base, "inserted"), outcome(t, base, "existing")+outcome(t, base, "duplicate")
		if inserted+again == int64(len(msgs)) {
			require.Equal(t, int64(len(recs)), inserted)
			break
		}
		require.True(t, time.Now().Before(deadline), "consumed %d of %d messages", inserted+again, len(msgs))
		time.Sleep(50 * time.Millisecond)
	}

	q := url.Values{"from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}
	status, body := get(t, base+"/v1/finance/summary?"+q.Encode(), "t0ken")
	require.Equal(t, http.StatusOK, status, string(body))
	var sum api.Summary
	require.NoError(t, json.Unmarshal(body, &sum))
	require.Equal(t, wantAll, sum.Totals.Totals)
	wantRevenue := revenue(wantAll.CostMicrocredits)
	require.Equal(t, wantRevenue, sum.Totals.RevenueMicroUSD)
	require.Equal(t, wantRevenue-wantAll.UpstreamCostMicroUSD, sum.Totals.MarginMicroUSD)
	require.Equal(t, int64(5000), sum.CreditPriceMicroUSD)
	gotByModel := map[string]store.Totals{}
	for _, m := range sum.ByModel {
		gotByModel[m.Model] = m.Totals
		require.Equal(t, revenue(m.CostMicrocredits), m.RevenueMicroUSD)
		require.Equal(t, m.RevenueMicroUSD-m.UpstreamCostMicroUSD, m.MarginMicroUSD)
	}
	require.Equal(t, wantByModel, gotByModel)

	q.Set("account_id", "acct-2")
	status, body = get(t, base+"/v1/usage?"+q.Encode(), "t0ken")
	require.Equal(t, http.StatusOK, status, string(body))
	var u api.Usage
	require.NoError(t, json.Unmarshal(body, &u))
	gotDays := map[[2]string]store.Totals{}
	for _, d := range u.Days {
		gotDays[[2]string{d.Day, d.Model}] = d.Totals
	}
	require.Equal(t, wantDays, gotDays)

	status, _ = get(t, base+"/v1/usage?"+q.Encode(), "")
	require.Equal(t, http.StatusUnauthorized, status)
	status, _ = get(t, base+"/readyz", "")
	require.Equal(t, http.StatusOK, status)
}

// outcome reads tollgate_analytics_records_total{outcome=o} from /metrics.
func outcome(t *testing.T, base, o string) int64 {
	status, body := get(t, base+"/metrics", "")
	require.Equal(t, http.StatusOK, status)
	prefix := `tollgate_analytics_records_total{outcome="` + o + `"} `
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err, line)
			return n
		}
	}
	return 0 // not counted yet
}

// revenue is cost × $0.005 per credit in µ$, rounded half up, computed with big.Int.
func revenue(costMicrocredits int64) int64 {
	n := new(big.Int).Mul(big.NewInt(costMicrocredits), big.NewInt(5000))
	n.Add(n, big.NewInt(500_000))
	return n.Div(n, big.NewInt(1_000_000)).Int64()
}

func get(t *testing.T, u, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, []byte(strings.TrimSpace(string(b)))
}
