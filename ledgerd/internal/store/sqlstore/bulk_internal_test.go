package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"math/bits"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"tollgate/ledgerd/internal/store"
)

// With ReuseStatements, every batch splits into power-of-two chunks up to reuseRowsMax, so a
// statement kind has at most nine texts; without it, one chunk per parameter limit.
func TestChunks(t *testing.T) {
	reuse := &Store{d: Dialect{ReuseStatements: true}}
	plain := &Store{}
	for _, per := range []int{1, 3, 100, 6000} {
		sizes := map[int]bool{}
		for n := 1; n <= 1100; n++ {
			covered := 0
			for left := n; left > 0; {
				c := reuse.chunk(left, per)
				require.True(t, c >= 1 && c <= per && c <= reuseRowsMax && bits.OnesCount(uint(c)) == 1,
					"n=%d per=%d: chunk %d", n, per, c)
				sizes[c] = true
				covered += c
				left -= c
			}
			require.Equal(t, n, covered)
			require.Equal(t, min(n, per), plain.chunk(n, per))
		}
		require.LessOrEqual(t, len(sizes), 9, "per=%d", per)
	}
}

func TestValuesList(t *testing.T) {
	require.Equal(t, "(?, ?), (?, ?), (?, ?)", valuesList(3, 2, nil, true))
	require.Equal(t, "($1, $2, $3), ($4, $5, $6)", valuesList(2, 3, nil, false))
	require.Equal(t, "(CAST($1 AS TEXT), CAST($2 AS BIGINT)), (CAST($3 AS TEXT), CAST($4 AS BIGINT))",
		valuesList(2, 2, []string{"TEXT", "BIGINT"}, false))
	require.Equal(t, "(CAST(? AS TEXT))", valuesList(1, 1, []string{"TEXT"}, true))
}

func TestInListPads(t *testing.T) {
	reuse := &Store{d: Dialect{ReuseStatements: true, Positional: true}}
	q, args := reuse.inList([]string{"a", "b", "c"})
	require.Equal(t, "?, ?, ?, ?", q)
	require.Equal(t, []any{"a", "b", "c", "c"}, args)
	q, args = reuse.inList([]string{"a"})
	require.Equal(t, "?", q)
	require.Equal(t, []any{"a"}, args)
	q, args = (&Store{}).inList([]string{"a", "b", "c"})
	require.Equal(t, "$1, $2, $3", q)
	require.Equal(t, []any{"a", "b", "c"}, args)
}

// Settlement on SQLite prepares its statements once and reuses them: batches of one shape
// add no statements after the first, prepared statements tell new ids from settled ones
// exactly (chunks partly settled before), and Close lets them go.
func TestSettleReusesStatements(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	w, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=immediate")
	require.NoError(t, err)
	w.SetMaxOpenConns(1)
	s, err := New(ctx, Options{Write: w, Read: w, Dialect: Dialect{Name: "sqlite", Positional: true, ReuseStatements: true}},
		w.Close)
	require.NoError(t, err)
	var accts []string
	for i := range 3 {
		a, err := s.CreateAccount(ctx, fmt.Sprintf("a%d", i))
		require.NoError(t, err)
		_, _, err = s.TopUp(ctx, store.TopUp{AccountID: a.ID, OrderID: "o" + a.ID, Credits: 1000, MicroUSD: 5_000_000, Method: "admin"})
		require.NoError(t, err)
		accts = append(accts, a.ID)
	}
	balance := func() (sum int64) {
		for _, id := range accts {
			a, err := s.Account(ctx, id)
			require.NoError(t, err)
			sum += a.Balance
		}
		return sum
	}
	// Batch k holds ids k*300 … k*300+399: its first 100 were settled by batch k-1.
	batch := func(k int) (store.Batch, int64) {
		b := store.Batch{Group: "g", Topic: "t", Offsets: map[int]int64{0: int64(k + 1)}, Ref: fmt.Sprint(k)}
		var fresh int64
		for i := k * 300; i < k*300+400; i++ {
			cost := int64(i%7 + 1)
			b.Usage = append(b.Usage, store.Usage{RequestID: fmt.Sprintf("req-%06d", i), AccountID: accts[i%3], Cost: cost})
			if k == 0 || i >= k*300+100 {
				fresh += cost
			}
		}
		return b, fresh
	}
	var prepared []int
	for k := range 4 {
		b, want := batch(k)
		before := balance()
		res, err := s.Settle(ctx, b)
		require.NoError(t, err)
		require.Equal(t, want, res.Microcredits, "batch %d", k)
		require.Equal(t, want, before-balance(), "batch %d", k)
		wantSettled := 400
		if k > 0 {
			wantSettled = 300
		}
		require.Equal(t, wantSettled, res.Settled, "batch %d", k)
		require.Equal(t, 400-wantSettled, res.Duplicates, "batch %d", k)
		s.stmtMu.Lock()
		prepared = append(prepared, len(s.stmts))
		s.stmtMu.Unlock()
	}
	require.NoError(t, s.Check(ctx))
	require.Positive(t, prepared[0], "the first batch's statements are prepared after it")
	require.Equal(t, prepared[2], prepared[3], "a batch of a shape seen before prepares nothing new")
	require.NoError(t, s.Close())
	require.Empty(t, s.stmts, "Close closes the prepared statements")
}

// An error in the middle of the rows (here SQLite's integer overflow on the second row) must
// reach the caller: Next closes the rows when it fails, so only Err still knows, and a loop
// that checked Close alone took the first row for the whole answer.
func TestEachRowReportsAnErrorThatEndedTheRows(t *testing.T) {
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "rows.db"))
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	rows, err := db.QueryContext(context.Background(),
		`SELECT CASE WHEN column1 > 1 THEN abs(-9223372036854775807 - 1) ELSE column1 END FROM (VALUES (1), (2), (3))`)
	require.NoError(t, err)
	var v int64
	var seen []int64
	err = eachRow(rows, func() error { seen = append(seen, v); return nil }, &v)
	require.ErrorContains(t, err, "overflow")
	require.Equal(t, []int64{1}, seen)
}
