package verify_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/stretchr/testify/require"

	"tollgate/bench/verify"
)

// QueryClickHouse against a real server: rows per request id, a duplicate not yet merged, and
// the FINAL total that collapses it.
func TestQueryClickHouse(t *testing.T) {
	addr := os.Getenv("TOLLGATE_TEST_CLICKHOUSE_ADDR")
	if addr == "" {
		t.Skip("SKIPPED: TOLLGATE_TEST_CLICKHOUSE_ADDR not set (make test starts a private ClickHouse and sets it)")
	}
	db := clickhouse.OpenDB(&clickhouse.Options{Addr: []string{addr}, Protocol: clickhouse.Native,
		DialTimeout: 5 * time.Second})
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	name := fmt.Sprintf("bench_verify_%d", time.Now().UnixNano())
	_, err := db.ExecContext(ctx, "CREATE DATABASE "+name)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = db.Exec("DROP DATABASE IF EXISTS " + name) })
	// The columns the verifier reads, with the production table's engine and sorting key.
	_, err = db.ExecContext(ctx, "CREATE TABLE "+name+".requests (ts DateTime('UTC'), request_id String, "+
		"account_id String, cost_microcredits Int64) ENGINE = ReplacingMergeTree() "+
		"ORDER BY (toDate(ts), account_id, request_id)")
	require.NoError(t, err)

	// Two separate batches make two parts, so the duplicate of r1 survives until a merge. The
	// native protocol of 18.16 takes rows as batches with named columns, not inline VALUES.
	now := time.Now().UTC().Truncate(time.Second)
	type row struct {
		ts          time.Time
		id, account string
		cost        int64
	}
	for _, batch := range [][]row{
		{{now, "r1", "a", 10}, {now, "r2", "a", 1005}, {now, "r3", "b", 7}, {now, "x", "other", 99}},
		{{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), "r1", "a", 10}},
	} {
		tx, err := db.BeginTx(ctx, nil)
		require.NoError(t, err)
		stmt, err := tx.PrepareContext(ctx, "INSERT INTO "+name+".requests (ts, request_id, account_id, cost_microcredits)")
		require.NoError(t, err)
		for _, r := range batch {
			_, err := stmt.ExecContext(ctx, r.ts, r.id, r.account, r.cost)
			require.NoError(t, err)
		}
		require.NoError(t, tx.Commit())
	}

	rows, final, err := verify.QueryClickHouse(ctx, db, name, []string{"a", "b"})
	require.NoError(t, err)
	byID := map[string]verify.CHRow{}
	for _, r := range rows {
		byID[r.RequestID] = r
	}
	require.Equal(t, verify.CHRow{RequestID: "r1", AccountID: "a", Rows: 2, MinCost: 10, MaxCost: 10}, byID["r1"])
	require.Equal(t, verify.CHRow{RequestID: "r3", AccountID: "b", Rows: 1, MinCost: 7, MaxCost: 7}, byID["r3"])
	require.Len(t, rows, 3, "account 'other' is not asked for")
	// The second r1 has a different ts, so its sorting key differs and FINAL keeps both rows:
	// exactly the double count the check must catch.
	require.Equal(t, int64(10+1005+7+10), final)

	e := expectation(t)
	c := verify.CheckClickHouse(e, rows, final)
	require.False(t, c.OK)
	require.Equal(t, 1, c.Duplicated)

	_, _, err = verify.QueryClickHouse(ctx, db, "bad name; DROP", []string{"a"})
	require.Error(t, err)
}
