package clickhouse_test

import (
	"context"
	"errors"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/stretchr/testify/require"

	"tollgate/analytics/internal/store"
	chstore "tollgate/analytics/internal/store/clickhouse"
	"tollgate/analytics/internal/store/storetest"
	"tollgate/pkg/usage"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestApplySchemaTwice(t *testing.T) {
	s, dsn := storetest.Open(t)
	ctx := ctxT(t)
	require.NoError(t, s.ApplySchema(ctx), "schema must be idempotent")
	var tables []struct {
		Name string `ch:"name"`
	}
	require.NoError(t, storetest.Conn(t, dsn).Select(ctx, &tables, "SELECT name FROM system.tables WHERE database = ? ORDER BY name", s.Database()))
	names := make([]string, len(tables))
	for i, tb := range tables {
		names[i] = tb.Name
	}
	require.Equal(t, []string{"kafka_offsets", "request_ids", "request_ids_backfill", "request_ids_mv", "requests",
		"usage_daily", "usage_daily_mv"}, names)
}

// TestOffsets: saved offsets read back per group and topic, and only move forward — a lower
// one saved later (a stale writer) changes nothing, before and after the parts merge.
func TestOffsets(t *testing.T) {
	s, dsn := storetest.Open(t)
	ctx := ctxT(t)
	got, err := s.Offsets(ctx, "analytics", "usage.v1")
	require.NoError(t, err)
	require.Empty(t, got)

	require.NoError(t, s.SaveOffsets(ctx, "analytics", "usage.v1", map[int]int64{0: 10, 1: 5}))
	require.NoError(t, s.SaveOffsets(ctx, "analytics", "usage.v1", map[int]int64{0: 7, 2: 1}))
	require.NoError(t, s.SaveOffsets(ctx, "analytics", "usage.v1", map[int]int64{1: 9}))
	require.NoError(t, s.SaveOffsets(ctx, "other", "usage.v1", map[int]int64{0: 100}))
	require.NoError(t, s.SaveOffsets(ctx, "analytics", "other.v1", map[int]int64{0: 200}))
	want := map[int]int64{0: 10, 1: 9, 2: 1}
	got, err = s.Offsets(ctx, "analytics", "usage.v1")
	require.NoError(t, err)
	require.Equal(t, want, got)

	require.NoError(t, storetest.Conn(t, dsn).Exec(ctx, "OPTIMIZE TABLE "+s.Database()+".kafka_offsets FINAL"))
	got, err = s.Offsets(ctx, "analytics", "usage.v1")
	require.NoError(t, err)
	require.Equal(t, want, got, "after the merge")

	require.Error(t, s.SaveOffsets(ctx, "analytics", "usage.v1", map[int]int64{0: -1}))
}

// TestRoundTripEveryField stores records with every field set, one with edge values and 500
// random ones, in one insert, and reads each column of each row back: Insert fills the batch a
// column at a time, so a column filled from the wrong field, or out of step with the others,
// shows as a row that differs from its record.
func TestRoundTripEveryField(t *testing.T) {
	s, dsn := storetest.Open(t)
	ctx := ctxT(t)
	r := usage.Record{
		V: 1, RequestID: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", EdgeID: "edge-a", Seq: 1<<63 + 5,
		AccountID: "acct-1", KeyID: "key-1", LeaseID: "lease-1",
		Model: "claude-sonnet-4-5-20250929", ModelRequested: "claude-sonnet-4-5",
		TsStartMs: 1763800000123, TsEndMs: 1763800004567, TtfbMs: 321,
		Status: 200, Stream: true, StopReason: "end_turn", ErrorType: "overloaded_error",
		Usage: usage.Tokens{Input: 1, Output: 2, CacheWrite5m: 3, CacheWrite1h: 4, CacheRead: 5,
			Thinking: 6, WebSearchRequests: 7},
		Estimated: true, CostMicrocredits: 9_223_372_036_854_775_807, UpstreamCostMicroUSD: 123456,
		PriceVersion: "v7", UpstreamKeyID: "up-1", UpstreamRequestID: "req_abc'\\\"",
	}
	want := append([]usage.Record{r}, storetest.Records(3, 500, time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC))...)
	require.NoError(t, s.Insert(ctx, want))

	var got []struct {
		Ts                   time.Time `ch:"ts"`
		TsStartMs            int64     `ch:"ts_start_ms"`
		TsEndMs              int64     `ch:"ts_end_ms"`
		TtfbMs               int64     `ch:"ttfb_ms"`
		RequestID            string    `ch:"request_id"`
		V                    uint32    `ch:"v"`
		EdgeID               string    `ch:"edge_id"`
		Seq                  uint64    `ch:"seq"`
		AccountID            string    `ch:"account_id"`
		KeyID                string    `ch:"key_id"`
		LeaseID              string    `ch:"lease_id"`
		Model                string    `ch:"model"`
		ModelRequested       string    `ch:"model_requested"`
		Status               int32     `ch:"status"`
		Stream               uint8     `ch:"stream"`
		StopReason           string    `ch:"stop_reason"`
		ErrorType            string    `ch:"error_type"`
		Input                int64     `ch:"input_tokens"`
		Output               int64     `ch:"output_tokens"`
		CacheWrite5m         int64     `ch:"cache_write_5m_tokens"`
		CacheWrite1h         int64     `ch:"cache_write_1h_tokens"`
		CacheRead            int64     `ch:"cache_read_tokens"`
		Thinking             int64     `ch:"thinking_tokens"`
		WebSearchRequests    int64     `ch:"web_search_requests"`
		Estimated            uint8     `ch:"estimated"`
		CostMicrocredits     int64     `ch:"cost_microcredits"`
		UpstreamCostMicroUSD int64     `ch:"upstream_cost_microusd"`
		PriceVersion         string    `ch:"price_version"`
		UpstreamKeyID        string    `ch:"upstream_key_id"`
		UpstreamRequestID    string    `ch:"upstream_request_id"`
	}
	require.NoError(t, storetest.Conn(t, dsn).Select(ctx, &got, "SELECT "+chstore.InsertColumns+" FROM "+s.Database()+".requests"))
	require.Len(t, got, len(want))
	byID := map[string]usage.Record{}
	for _, g := range got {
		back := usage.Record{
			V: int(g.V), RequestID: g.RequestID, EdgeID: g.EdgeID, Seq: g.Seq,
			AccountID: g.AccountID, KeyID: g.KeyID, LeaseID: g.LeaseID,
			Model: g.Model, ModelRequested: g.ModelRequested,
			TsStartMs: g.TsStartMs, TsEndMs: g.TsEndMs, TtfbMs: g.TtfbMs,
			Status: int(g.Status), Stream: g.Stream == 1, StopReason: g.StopReason, ErrorType: g.ErrorType,
			Usage: usage.Tokens{Input: g.Input, Output: g.Output, CacheWrite5m: g.CacheWrite5m,
				CacheWrite1h: g.CacheWrite1h, CacheRead: g.CacheRead, Thinking: g.Thinking,
				WebSearchRequests: g.WebSearchRequests},
			Estimated: g.Estimated == 1, CostMicrocredits: g.CostMicrocredits,
			UpstreamCostMicroUSD: g.UpstreamCostMicroUSD, PriceVersion: g.PriceVersion,
			UpstreamKeyID: g.UpstreamKeyID, UpstreamRequestID: g.UpstreamRequestID,
		}
		require.Equal(t, g.TsEndMs/1000, g.Ts.Unix(), "ts of %s is ts_end_ms in whole seconds", g.RequestID)
		byID[g.RequestID] = back
	}
	for _, w := range want {
		require.Equal(t, w, byID[w.RequestID])
	}
}

func TestExistingAndReports(t *testing.T) {
	s, dsn := storetest.Open(t)
	ctx := ctxT(t)
	base := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC) // 40 days back crosses two months
	recs := storetest.Records(1, 3000, base)
	stored := recs[:2000]
	require.NoError(t, s.Insert(ctx, stored))
	isStored := map[string]bool{}
	for _, r := range stored {
		isStored[r.RequestID] = true
	}

	// Ask about everything, in shuffled time order, with a tiny query budget so many chunks run.
	small, err := chstore.Open(chstore.Config{DSN: dsn, IDQueryBytesMax: 2000}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer small.Close()
	for _, st := range []*chstore.Store{s, small} {
		got, err := st.Existing(ctx, recs)
		require.NoError(t, err)
		require.Len(t, got, len(stored))
		for _, r := range recs { // plain lookups: require.Contains scans the whole map
			_, ok := got[r.RequestID]
			require.Equal(t, isStored[r.RequestID], ok, r.RequestID)
		}
	}

	// A duplicate row (as a buggy writer would leave) must not be counted by the reports.
	require.NoError(t, s.Insert(ctx, stored[:10]))

	from, to := base.AddDate(0, 0, -30), base.AddDate(0, 0, -5)
	want := map[string]store.Totals{}
	wantAcct := map[[2]string]store.Totals{}
	for i := range stored {
		r := &stored[i]
		end := time.UnixMilli(r.TsEndMs)
		if end.Before(from) || !end.Before(to) {
			continue
		}
		tm := want[r.Model]
		tm.AddRecord(r)
		want[r.Model] = tm
		if r.AccountID == "acct-1" {
			k := [2]string{end.UTC().Format("2006-01-02"), r.Model}
			ta := wantAcct[k]
			ta.AddRecord(r)
			wantAcct[k] = ta
		}
	}
	byModel, err := s.ByModel(ctx, from, to)
	require.NoError(t, err)
	got := map[string]store.Totals{}
	for _, m := range byModel {
		got[m.Model] = m.Totals
	}
	require.Equal(t, want, got)
	require.True(t, sort.SliceIsSorted(byModel, func(i, j int) bool { return byModel[i].Model < byModel[j].Model }))

	days, err := s.AccountDaily(ctx, "acct-1", from, to)
	require.NoError(t, err)
	gotAcct := map[[2]string]store.Totals{}
	for _, d := range days {
		gotAcct[[2]string{d.Day, d.Model}] = d.Totals
	}
	require.Equal(t, wantAcct, gotAcct)
}

// TestRangeBoundaries: [from, to) on ts_end_ms, to the millisecond.
// TestExistingQuotesIDs: Existing writes the ids into its query itself, so ids with the bytes
// a string literal escapes (quote, backslash, NUL), a placeholder character and non-ASCII text
// must come back exactly, and ids that differ from stored ones only in an escape must not.
func TestExistingQuotesIDs(t *testing.T) {
	s, _ := storetest.Open(t)
	ctx := ctxT(t)
	recs := storetest.Records(4, 14, time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC))
	for i, id := range []string{`a'b`, `a\b`, "a\x00b", `a?b`, `a\'b`, `'`, `\`, "ü€𝄞", `a\0b`, `a\\b`, `?`, "a'); DROP TABLE requests; --", `x`, `a\nb`} {
		recs[i].RequestID = id
	}
	stored := recs[:7]
	require.NoError(t, s.Insert(ctx, stored))
	got, err := s.Existing(ctx, recs)
	require.NoError(t, err)
	want := map[string]struct{}{}
	for _, r := range stored {
		want[r.RequestID] = struct{}{}
	}
	require.Equal(t, want, got)
}

func TestRangeBoundaries(t *testing.T) {
	s, _ := storetest.Open(t)
	ctx := ctxT(t)
	at := time.Date(2026, 10, 31, 23, 59, 59, 999e6, time.UTC)
	mk := func(id string, ms int64) usage.Record {
		return usage.Record{V: 1, RequestID: id, AccountID: "a", Model: "m", TsEndMs: ms, CostMicrocredits: 1}
	}
	require.NoError(t, s.Insert(ctx, []usage.Record{
		mk("before", at.UnixMilli()-1), mk("first", at.UnixMilli()), mk("last", at.UnixMilli()+1000),
		mk("after", at.UnixMilli()+1001),
	}))
	got, err := s.ByModel(ctx, at, at.Add(1001*time.Millisecond))
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, int64(2), got[0].Requests)
}

func TestTsSeconds(t *testing.T) {
	for _, c := range []struct{ ms, want int64 }{
		{0, 0}, {999, 0}, {1000, 1}, {1763800004567, 1763800004}, {-1, 0}, {-5000, 0},
		{(1 << 32) * 1000, 1<<32 - 1},
	} {
		require.Equal(t, c.want, chstore.TsSeconds(c.ms), "ms=%d", c.ms)
	}
}

func TestStatementsRename(t *testing.T) {
	stmts, err := chstore.SchemaStatements("other_db")
	require.NoError(t, err)
	require.Len(t, stmts, 6)
	for _, s := range stmts {
		require.NotRegexp(t, regexp.MustCompile(`\btollgate\b`), s)
		require.NotContains(t, s, "--")
		require.NotContains(t, s, ";")
	}
	require.Equal(t, "CREATE DATABASE IF NOT EXISTS other_db", stmts[0])

	_, err = chstore.SchemaStatements("bad-name; DROP")
	require.Error(t, err)

	got, err := chstore.Statements("SELECT 'a;--b' -- c;\n; SELECT 'x\\'y;' ;", "d")
	require.NoError(t, err)
	require.Equal(t, []string{"SELECT 'a;--b'", "SELECT 'x\\'y;'"}, got)
}

// TestClusterSchemaParses runs every statement of cluster.sql as written. This server has no
// ZooKeeper, so ON CLUSTER cannot run here; what is checked is that 18.16 parses each one
// (any error but a syntax error).
func TestClusterSchemaParses(t *testing.T) {
	s, dsn := storetest.Open(t)
	conn := storetest.Conn(t, dsn)
	ctx := ctxT(t)
	stmts, err := chstore.FileStatements("clickhouse/cluster.sql", s.Database())
	require.NoError(t, err)
	require.Len(t, stmts, 13)
	for _, q := range stmts {
		err := conn.Exec(ctx, q)
		if err == nil {
			continue // a server with ZooKeeper and the cluster would run it
		}
		var exc *clickhouse.Exception
		require.True(t, errors.As(err, &exc), "statement %q: %v", q, err)
		require.NotEqual(t, int32(62), exc.Code, "syntax error in cluster.sql: %q: %v", q, err)
	}
}

// TestClusterSchemaLocal runs cluster.sql without ON CLUSTER and with the non-replicated
// engines (replication needs ZooKeeper), over the one-server "tollgate_cluster" that
// deploy/dev/clickhouse.sh configures: the Distributed tables, the views on the local tables,
// the consumer's insert-then-check path and its saved offsets are exercised for real. It
// starts from the cluster schema before request_ids, with rows, and upgrades it: analytics
// must not create a plain request_ids there, keeps checking requests until cluster.sql is
// applied again, and then copies the old ids into the sharded request_ids.
func TestClusterSchemaLocal(t *testing.T) {
	dsn, db := storetest.DSN(t, "insert_distributed_sync=1")
	logs := &syncBuffer{}
	s, err := chstore.Open(chstore.Config{DSN: dsn}, slog.New(slog.NewJSONHandler(logs, nil)))
	require.NoError(t, err)
	defer s.Close()
	ctx := ctxT(t)
	conn := storetest.Conn(t, dsn)
	var n uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM system.clusters WHERE cluster = 'tollgate_cluster'").Scan(&n))
	if n == 0 {
		t.Skip("SKIP: this ClickHouse has no cluster 'tollgate_cluster' (start it with deploy/dev/clickhouse.sh)")
	}
	stmts, err := chstore.FileStatements("clickhouse/cluster.sql", db)
	require.NoError(t, err)
	// ReplicatedX('path', 'replica') becomes X; ReplicatedX('path', 'replica', args) X(args).
	replicated := regexp.MustCompile(`Replicated(\w*MergeTree)\('[^']*', '[^']*'\)`)
	replicatedArgs := regexp.MustCompile(`Replicated(\w*MergeTree)\('[^']*', '[^']*', `)
	idObject := regexp.MustCompile(`^CREATE \w+( \w+)? IF NOT EXISTS \w+\.request_ids`)
	apply := func(withIDs bool) {
		for _, q := range stmts {
			if !withIDs && idObject.MatchString(q) {
				continue
			}
			q = strings.ReplaceAll(q, " ON CLUSTER tollgate_cluster", "")
			q = replicated.ReplaceAllString(q, "$1")
			q = replicatedArgs.ReplaceAllString(q, "$1(")
			require.NoError(t, conn.Exec(ctx, q), q)
		}
	}
	engine := func(table string) string {
		var e string
		require.NoError(t, conn.QueryRow(ctx, "SELECT any(engine) FROM system.tables WHERE database = ? AND name = ?", db, table).Scan(&e))
		return e
	}

	// The cluster as it was before request_ids, with rows.
	apply(false)
	old := storetest.Records(7, 500, time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC))
	require.NoError(t, s.Insert(ctx, old))

	// analytics of this version before cluster.sql is applied again: no request_ids of its own.
	require.NoError(t, s.ApplySchema(ctx))
	require.Contains(t, logs.String(), `"msg":"request_ids_missing"`)
	for _, table := range []string{"request_ids", "request_ids_mv", "request_ids_backfill"} {
		require.Empty(t, engine(table), table)
	}
	require.NoError(t, s.BackfillRequestIDs(ctx), "nothing to copy into")
	got, err := s.Existing(ctx, old)
	require.NoError(t, err)
	require.Len(t, got, len(old), "checked in requests")

	// cluster.sql again, then analytics' next start copies the old ids.
	apply(true)
	require.NoError(t, s.ApplySchema(ctx))
	require.NoError(t, s.BackfillRequestIDs(ctx))
	require.Contains(t, logs.String(), `"msg":"request_ids_backfill_done"`)
	require.Equal(t, "Distributed", engine("request_ids"))
	require.Equal(t, "Distributed", engine("request_ids_backfill"), "cluster.sql's table, not one analytics creates")

	recs := storetest.Records(8, 500, time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC))
	require.NoError(t, s.Insert(ctx, recs))
	all := append(append([]usage.Record{}, old...), recs...)
	got, err = s.Existing(ctx, all)
	require.NoError(t, err)
	require.Len(t, got, len(all), "a synchronous distributed insert is visible at once")
	var ids, idsLocal uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT uniqExact(request_id) FROM "+db+".request_ids").Scan(&ids))
	require.NoError(t, conn.QueryRow(ctx, "SELECT uniqExact(request_id) FROM "+db+".request_ids_local").Scan(&idsLocal))
	require.Equal(t, uint64(len(all)), ids)
	require.Equal(t, uint64(len(all)), idsLocal, "old ids copied and new ones written by the view on requests_local")
	requireChecksIDTable(t, s, conn, db, recs[0])

	var want store.Totals
	for i := range all {
		want.AddRecord(&all[i])
	}
	var cost int64
	require.NoError(t, conn.QueryRow(ctx, "SELECT sum(cost_microcredits) FROM "+db+".usage_daily").Scan(&cost))
	require.Equal(t, want.CostMicrocredits, cost)
	has, err := s.HasRequests(ctx)
	require.NoError(t, err)
	require.True(t, has, "rows seen through the Distributed table")

	// The offsets go through the Distributed kafka_offsets and read back as max() per
	// partition, a lower one saved later changing nothing.
	require.NoError(t, s.SaveOffsets(ctx, "analytics", "usage.v1", map[int]int64{0: 10, 1: 5}))
	require.NoError(t, s.SaveOffsets(ctx, "analytics", "usage.v1", map[int]int64{0: 7, 1: 9}))
	offsets, err := s.Offsets(ctx, "analytics", "usage.v1")
	require.NoError(t, err)
	require.Equal(t, map[int]int64{0: 10, 1: 9}, offsets)
	require.Equal(t, "Distributed", engine("kafka_offsets"), "cluster.sql's table, not the one analytics creates when it is missing")
}

// TestHasRequests: false on a fresh database, true once one record is stored.
func TestHasRequests(t *testing.T) {
	s, _ := storetest.Open(t)
	ctx := ctxT(t)
	has, err := s.HasRequests(ctx)
	require.NoError(t, err)
	require.False(t, has)
	require.NoError(t, s.Insert(ctx, storetest.Records(5, 1, time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC))))
	has, err = s.HasRequests(ctx)
	require.NoError(t, err)
	require.True(t, has)
}
