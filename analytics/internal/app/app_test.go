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

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
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
	h := newRestartHarness(t)
	recs := storetest.Records(41, 2500, time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC))

	// 1. 1,000 records stored; ClickHouse is backed up, minus partition 0's offsets row (as a
	// backup copied table by table while partition 0 moved on would lack it).
	_, stop := startApp(t, h.cfg, io.Discard)
	h.produce(recs[:1000])
	require.Len(t, h.committedUpTo(1000), 3, "records on every partition")
	tables := []string{"requests", "usage_daily", "kafka_offsets"}
	for _, tb := range tables {
		h.exec("CREATE TABLE " + h.db + "." + tb + "_backup AS " + h.db + "." + tb)
		where := ""
		if tb == "kafka_offsets" {
			where = " WHERE kafka_partition != 0"
		}
		h.exec("INSERT INTO " + h.db + "." + tb + "_backup SELECT * FROM " + h.db + "." + tb + where)
	}

	// 2. 1,000 more stored and committed; analytics stops.
	h.produce(recs[1000:2000])
	h.committedUpTo(2000)
	stop()

	// 3. ClickHouse is restored from the backup (ApplySchema recreates the view), and 500
	// more records arrive while analytics is down.
	h.exec("DROP TABLE " + h.db + ".usage_daily_mv")
	for _, tb := range tables {
		h.exec("DROP TABLE " + h.db + "." + tb)
		h.exec("RENAME TABLE " + h.db + "." + tb + "_backup TO " + h.db + "." + tb)
	}
	h.produce(recs[2000:])

	// 4. Restarted, analytics reads again what ClickHouse lacks.
	logs := h.logFile("analytics.log")
	_, stop = startApp(t, h.cfg, logs)
	h.committedUpTo(int64(len(recs)))
	stop()
	h.requireExactlyOnce(recs)

	logged := h.read(logs)
	require.Contains(t, logged, `"msg":"kafka_offsets_rewound"`)
	require.Contains(t, logged, `"partitions_without_stored_offsets":[0]`)
	require.NotContains(t, logged, `"msg":"clickhouse_offsets_not_tracked_yet"`,
		"offsets are missing for one partition only: not the first start with offset tracking")
}

// TestUpgradeCopiesRequestIDs: analytics of this version starts on an installation that the
// previous one left, without request_ids, its view or the copy's record, while new records
// and a replay of 300 stored ones (an edge WAL replay) wait in Kafka. It creates the id table,
// copies the old ids in the background while it consumes, and stores every request exactly
// once, totals exact.
func TestUpgradeCopiesRequestIDs(t *testing.T) {
	h := newRestartHarness(t)
	recs := storetest.Records(51, 1500, time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC))
	_, stop := startApp(t, h.cfg, io.Discard)
	h.produce(recs[:1000])
	h.committedUpTo(1000)
	stop()
	for _, name := range []string{"request_ids_mv", "request_ids", "request_ids_backfill"} {
		h.exec("DROP TABLE " + h.db + "." + name)
	}
	h.produce(recs[1000:])
	h.produce(recs[:300])

	logs := h.logFile("upgrade.log")
	_, stop = startApp(t, h.cfg, logs)
	h.committedUpTo(1800)
	h.waitLog(logs, "request_ids_backfill_done")
	stop()
	h.requireExactlyOnce(recs)
	var ids uint64
	require.NoError(t, h.conn.QueryRow(h.ctx, "SELECT uniqExact(request_id) FROM "+h.db+".request_ids").Scan(&ids))
	require.Equal(t, uint64(len(recs)), ids)
	require.Contains(t, h.read(logs), `"msg":"request_ids_backfill_started"`)
}

// TestStartWithoutSavedOffsets: Kafka has the group's commits, but kafka_offsets has no row
// for the group at all. With usage rows in ClickHouse, that is the first start of the version
// that saves offsets on an existing installation: analytics resumes at Kafka's offsets (no
// record read again, which during a rolling update would also need every old instance gone)
// and saves them, warning once. With no usage rows (ClickHouse lost and replaced by an empty
// one) everything Kafka holds is read again.
func TestStartWithoutSavedOffsets(t *testing.T) {
	cases := []struct {
		name string
		// lose is what happens to ClickHouse while analytics is down.
		lose                   func(h *restartHarness)
		wantInserted, wantSeen int64 // records inserted and found already stored after the restart
		wantLog, notLog        string
		// saveAtStart: Kafka's committed offsets are in kafka_offsets once the consumer starts.
		saveAtStart bool
	}{
		{
			name:         "rows but no offsets table: upgrade to offset tracking",
			lose:         func(h *restartHarness) { h.exec("DROP TABLE " + h.db + ".kafka_offsets") },
			wantInserted: 500,
			wantLog:      "clickhouse_offsets_not_tracked_yet",
			notLog:       "clickhouse_behind_kafka",
			saveAtStart:  true,
		},
		{
			name:         "no rows: ClickHouse lost and replaced",
			lose:         func(h *restartHarness) { h.exec("DROP DATABASE " + h.db) },
			wantInserted: 1500,
			wantLog:      "kafka_offsets_rewound",
			notLog:       "clickhouse_offsets_not_tracked_yet",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newRestartHarness(t)
			recs := storetest.Records(43, 1500, time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC))
			_, stop := startApp(t, h.cfg, io.Discard)
			h.produce(recs[:1000])
			before := h.committedUpTo(1000)
			require.Len(t, before, 3, "records on every partition")
			stop()
			c.lose(h)

			logs := h.logFile("restart.log")
			base, stop := startApp(t, h.cfg, logs)
			if c.saveAtStart {
				// Saved before any record arrives, so a partition that gets none before the
				// next start is not taken for one restored without its offset.
				h.waitLog(logs, "analytics_consuming")
				require.Equal(t, before, h.savedOffsets(), "Kafka's committed offsets saved at the first start")
			}
			h.produce(recs[1000:])
			committed := h.committedUpTo(int64(len(recs)))
			require.Equal(t, c.wantInserted, outcome(t, base, "inserted"), "records inserted after the restart")
			require.Equal(t, c.wantSeen, outcome(t, base, "existing"), "records read again and found stored")
			stop()
			h.requireExactlyOnce(recs)
			logged := h.read(logs)
			require.Contains(t, logged, `"msg":"`+c.wantLog+`"`)
			require.NotContains(t, logged, `"msg":"`+c.notLog+`"`)
			require.Equal(t, committed, h.savedOffsets(), "saved offsets in step with Kafka's")

			// The next start finds the offsets saved: no warning, nothing moved.
			logs = h.logFile("again.log")
			_, stop = startApp(t, h.cfg, logs)
			h.waitLog(logs, "analytics_consuming")
			stop()
			logged = h.read(logs)
			require.NotContains(t, logged, `"msg":"clickhouse_offsets_not_tracked_yet"`)
			require.NotContains(t, logged, `"msg":"clickhouse_behind_kafka"`)
		})
	}
}

// restartHarness is a private ClickHouse database and kfake cluster (3 partitions) for tests
// that stop analytics, change ClickHouse behind its back and start it again.
type restartHarness struct {
	t       *testing.T
	ctx     context.Context
	cfg     app.Config
	db      string
	conn    driver.Conn
	brokers []string
	p       *bus.Producer
}

func newRestartHarness(t *testing.T) *restartHarness {
	dsn, db := storetest.DSN(t, "")
	brokers := bustest.Start(t, 3, usage.Topic, usage.TopicDLQ)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	cfg := app.DefaultConfig()
	cfg.ClickHouseDSN = dsn
	cfg.KafkaBrokers = brokers
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.BatchRowsMax = 300
	cfg.BatchLinger = 50 * time.Millisecond
	p := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.Topic})
	t.Cleanup(func() { _ = p.Close() })
	return &restartHarness{t: t, ctx: ctx, cfg: cfg, db: db, conn: storetest.Conn(t, dsn), brokers: brokers, p: p}
}

func (h *restartHarness) exec(q string) { require.NoError(h.t, h.conn.Exec(h.ctx, q), q) }

func (h *restartHarness) produce(rs []usage.Record) {
	msgs := make([]bus.Message, len(rs))
	for i := range rs {
		// Keyed by request id, not account, so the records spread over every partition.
		msgs[i] = bus.Message{Key: []byte(rs[i].RequestID), Value: rs[i].AppendJSON(nil)}
	}
	require.NoError(h.t, h.p.Send(h.ctx, msgs...))
}

// committedUpTo waits until the group has committed n records in all.
func (h *restartHarness) committedUpTo(n int64) map[int]int64 {
	deadline := time.Now().Add(60 * time.Second) // hang guard while the consumer catches up
	for {
		got, err := bus.GroupOffsets(h.ctx, h.brokers, h.cfg.KafkaGroup, usage.Topic)
		require.NoError(h.t, err)
		var sum int64
		for _, o := range got {
			sum += o
		}
		if sum == n {
			return got
		}
		require.True(h.t, time.Now().Before(deadline), "the group committed %d of %d records", sum, n)
		time.Sleep(50 * time.Millisecond)
	}
}

// savedOffsets reads kafka_offsets as analytics does, max(next_offset) per partition.
func (h *restartHarness) savedOffsets() map[int]int64 {
	rows, err := h.conn.Query(h.ctx, "SELECT kafka_partition, max(next_offset) FROM "+h.db+".kafka_offsets"+
		" WHERE consumer_group = ? AND topic = ? GROUP BY kafka_partition", h.cfg.KafkaGroup, usage.Topic)
	require.NoError(h.t, err)
	defer rows.Close()
	got := map[int]int64{}
	for rows.Next() {
		var p uint32
		var o uint64
		require.NoError(h.t, rows.Scan(&p, &o))
		got[int(p)] = int64(o)
	}
	require.NoError(h.t, rows.Err())
	return got
}

// requireExactlyOnce checks that ClickHouse holds every record of recs exactly once (raw rows,
// no FINAL) and that the base table's and the daily rollup's totals are theirs.
func (h *restartHarness) requireExactlyOnce(recs []usage.Record) {
	t := h.t
	rows, err := h.conn.Query(h.ctx, "SELECT request_id, count() FROM "+h.db+".requests GROUP BY request_id")
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
		require.NoError(t, h.conn.QueryRow(h.ctx, "SELECT "+count+", sum(input_tokens), sum(output_tokens), "+
			"sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cache_read_tokens), sum(thinking_tokens), "+
			"sum(web_search_requests), sum(cost_microcredits), sum(upstream_cost_microusd) FROM "+h.db+"."+table).Scan(
			&n, &tot.InputTokens, &tot.OutputTokens, &tot.CacheWrite5mTokens, &tot.CacheWrite1hTokens,
			&tot.CacheReadTokens, &tot.ThinkingTokens, &tot.WebSearchRequests, &tot.CostMicrocredits,
			&tot.UpstreamCostMicroUSD))
		tot.Requests = int64(n)
		return tot
	}
	require.Equal(t, wantTotals, sums("requests", "count()"), "totals of the base table")
	require.Equal(t, wantTotals, sums("usage_daily", "sum(requests)"), "totals of the daily rollup")
}

// logFile creates a file for an app's JSON log (*os.File takes concurrent writes).
func (h *restartHarness) logFile(name string) *os.File {
	f, err := os.Create(filepath.Join(h.t.TempDir(), name))
	require.NoError(h.t, err)
	h.t.Cleanup(func() { _ = f.Close() })
	return f
}

// waitLog waits until the log in f has a line with message msg.
func (h *restartHarness) waitLog(f *os.File, msg string) {
	deadline := time.Now().Add(30 * time.Second) // hang guard; a start takes well under a second
	for !strings.Contains(h.read(f), `"msg":"`+msg+`"`) {
		require.True(h.t, time.Now().Before(deadline), "no %s in the log", msg)
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *restartHarness) read(f *os.File) string {
	b, err := os.ReadFile(f.Name())
	require.NoError(h.t, err)
	return string(b)
}

// startApp runs analytics with cfg, logging JSON to w, and returns its base URL and a function
// that stops it and checks that it stopped cleanly.
func startApp(t *testing.T, cfg app.Config, w io.Writer) (base string, stop func()) {
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
	return "http://" + a.Addr(), stop
}
