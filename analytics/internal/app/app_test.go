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
	"os"
	"path/filepath"
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

// TestRestoredClickHouseReadsWhatItLacks: ClickHouse is restored from a backup older than the
// group's committed offsets in Kafka. At the next start analytics moves the group back to the
// offsets saved in ClickHouse (and, for a partition the backup has no offset for, to the
// earliest offset Kafka holds), so every request is in ClickHouse exactly once and the totals
// are exact. Resuming at Kafka's offsets instead would leave out what came after the backup.
func TestRestoredClickHouseReadsWhatItLacks(t *testing.T) {
	dsn, db := storetest.DSN(t, "")
	brokers := bustest.Start(t, 3, usage.Topic, usage.TopicDLQ)
	conn := storetest.Conn(t, dsn)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cfg := app.DefaultConfig()
	cfg.ClickHouseDSN = dsn
	cfg.KafkaBrokers = brokers
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.BatchRowsMax = 300
	cfg.BatchLinger = 50 * time.Millisecond

	recs := storetest.Records(41, 2500, time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC))
	p := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.Topic})
	defer p.Close()
	produce := func(rs []usage.Record) {
		msgs := make([]bus.Message, len(rs))
		for i := range rs {
			// Keyed by request id, not account, so the records spread over every partition.
			msgs[i] = bus.Message{Key: []byte(rs[i].RequestID), Value: rs[i].AppendJSON(nil)}
		}
		require.NoError(t, p.Send(ctx, msgs...))
	}
	// committedUpTo waits until the group has committed n records in all.
	committedUpTo := func(n int64) map[int]int64 {
		deadline := time.Now().Add(60 * time.Second) // hang guard while the consumer catches up
		for {
			got, err := bus.GroupOffsets(ctx, brokers, cfg.KafkaGroup, usage.Topic)
			require.NoError(t, err)
			var sum int64
			for _, o := range got {
				sum += o
			}
			if sum == n {
				return got
			}
			require.True(t, time.Now().Before(deadline), "the group committed %d of %d records", sum, n)
			time.Sleep(50 * time.Millisecond)
		}
	}

	// 1. 1,000 records stored; ClickHouse is backed up, minus partition 0's offsets row (as a
	// backup taken before the offsets table existed would lack it).
	stop := startApp(t, cfg, io.Discard)
	produce(recs[:1000])
	require.Len(t, committedUpTo(1000), 3, "records on every partition")
	tables := []string{"requests", "usage_daily", "kafka_offsets"}
	for _, tb := range tables {
		require.NoError(t, conn.Exec(ctx, "CREATE TABLE "+db+"."+tb+"_backup AS "+db+"."+tb))
		where := ""
		if tb == "kafka_offsets" {
			where = " WHERE kafka_partition != 0"
		}
		require.NoError(t, conn.Exec(ctx, "INSERT INTO "+db+"."+tb+"_backup SELECT * FROM "+db+"."+tb+where))
	}

	// 2. 1,000 more stored and committed; analytics stops.
	produce(recs[1000:2000])
	committedUpTo(2000)
	stop()

	// 3. ClickHouse is restored from the backup (ApplySchema recreates the view), and 500
	// more records arrive while analytics is down.
	require.NoError(t, conn.Exec(ctx, "DROP TABLE "+db+".usage_daily_mv"))
	for _, tb := range tables {
		require.NoError(t, conn.Exec(ctx, "DROP TABLE "+db+"."+tb))
		require.NoError(t, conn.Exec(ctx, "RENAME TABLE "+db+"."+tb+"_backup TO "+db+"."+tb))
	}
	produce(recs[2000:])

	// 4. Restarted, analytics reads again what ClickHouse lacks.
	logs, err := os.Create(filepath.Join(t.TempDir(), "analytics.log")) // *os.File takes concurrent writes
	require.NoError(t, err)
	defer logs.Close()
	stop = startApp(t, cfg, logs)
	committedUpTo(int64(len(recs)))
	stop()
	rows, err := conn.Query(ctx, "SELECT request_id, count() FROM "+db+".requests GROUP BY request_id")
	require.NoError(t, err)
	got := map[string]uint64{}
	for rows.Next() {
		var id string
		var n uint64
		require.NoError(t, rows.Scan(&id, &n))
		got[id] = n
	}
	require.NoError(t, rows.Err())
	rows.Close()
	want := make(map[string]uint64, len(recs))
	var wantTotals store.Totals
	for i := range recs {
		want[recs[i].RequestID] = 1
		wantTotals.AddRecord(&recs[i])
	}
	require.Equal(t, len(want), len(got), "requests in ClickHouse (raw rows, no FINAL)")
	require.Equal(t, want, got, "every request exactly once")

	sums := func(table, count string) store.Totals {
		var tot store.Totals
		var n uint64
		require.NoError(t, conn.QueryRow(ctx, "SELECT "+count+", sum(input_tokens), sum(output_tokens), "+
			"sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cache_read_tokens), sum(thinking_tokens), "+
			"sum(web_search_requests), sum(cost_microcredits), sum(upstream_cost_microusd) FROM "+db+"."+table).Scan(
			&n, &tot.InputTokens, &tot.OutputTokens, &tot.CacheWrite5mTokens, &tot.CacheWrite1hTokens,
			&tot.CacheReadTokens, &tot.ThinkingTokens, &tot.WebSearchRequests, &tot.CostMicrocredits,
			&tot.UpstreamCostMicroUSD))
		tot.Requests = int64(n)
		return tot
	}
	require.Equal(t, wantTotals, sums("requests", "count()"), "totals of the base table")
	require.Equal(t, wantTotals, sums("usage_daily", "sum(requests)"), "totals of the daily rollup")

	logged, err := os.ReadFile(logs.Name())
	require.NoError(t, err)
	require.Contains(t, string(logged), `"msg":"kafka_offsets_rewound"`)
	require.Contains(t, string(logged), `"partitions_without_stored_offsets":[0]`)
}

// startApp runs analytics with cfg, logging JSON to w, and returns a function that stops it
// and checks that it stopped cleanly.
func startApp(t *testing.T, cfg app.Config, w io.Writer) (stop func()) {
	t.Helper()
	a, err := app.New(cfg, slog.New(slog.NewJSONHandler(w, nil)))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		require.NoError(t, <-done)
	}
	t.Cleanup(stop)
	return stop
}
