package sqlstore_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"tollgate/deploy"
	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/postgres"
	"tollgate/ledgerd/internal/store/sqlite"
	"tollgate/ledgerd/internal/store/storetest"
)

// v1Ledger is what version 1 of ledgerd wrote for: a top-up of 1,000 credits for $5; usage
// of 1,200 credits (the lot's 1,000 recognizing $5, then a 200-credit overdraft); a
// credits_105k top-up covering the overdraft (its tier bonus posted from cash, as version 1
// did); a refund of 800 credits from it.
const v1Ledger = `
INSERT INTO accounts (id, name, status, balance, reserved, created_ms) VALUES ('acct_a', 'acme', 'active', 104000000000, 0, 1000);
INSERT INTO journal_txs (id, kind, account_id, ref, ts_ms) VALUES
  ('jtx_1', 'topup', 'acct_a', 'o1', 1000), ('jtx_2', 'usage', 'acct_a', 'usage.v1/0:0-1', 2000),
  ('jtx_3', 'topup', 'acct_a', 'o2', 3000), ('jtx_4', 'refund', 'acct_a', 'rf1', 4000);
INSERT INTO postings (tx_id, account, amount, ts_ms) VALUES
  ('jtx_1', 'customer:acct_a', 1000000000, 1000), ('jtx_1', 'cash:admin', -1000000000, 1000),
  ('jtx_2', 'customer:acct_a', -1200000000, 2000), ('jtx_2', 'revenue', 1200000000, 2000),
  ('jtx_3', 'customer:acct_a', 105000000000, 3000), ('jtx_3', 'cash:admin', -105000000000, 3000),
  ('jtx_4', 'customer:acct_a', -800000000, 4000), ('jtx_4', 'refunds', 800000000, 4000);
INSERT INTO ledger_accounts (code, balance) VALUES ('cash:admin', -106000000000), ('revenue', 1200000000), ('refunds', 800000000);
INSERT INTO lots (id, account_id, microcredits, microusd, remaining, created_ms) VALUES
  ('lot_1', 'acct_a', 1000000000, 5000000, 0, 1000), ('lot_2', 'acct_a', 105000000000, 500000000, 104000000000, 3000);
INSERT INTO lot_moves (tx_id, lot_id, microcredits, microusd) VALUES
  ('jtx_2', 'lot_1', 1000000000, 5000000), ('jtx_3', 'lot_2', 200000000, 952380), ('jtx_4', 'lot_2', 800000000, 3809524);
INSERT INTO topups (id, order_id, account_id, fingerprint, plan, credits, microusd, method, tx_id, balance_after, created_ms) VALUES
  ('top_1', 'o1', 'acct_a', 'f1', '', 1000, 5000000, 'admin', 'jtx_1', 1000000000, 1000),
  ('top_2', 'o2', 'acct_a', 'f2', 'credits_105k', 105000, 500000000, 'admin', 'jtx_3', 104800000000, 3000);
INSERT INTO refunds (id, refund_id, account_id, fingerprint, microcredits, microusd, reason, tx_id, balance_after, created_ms) VALUES
  ('ref_1', 'rf1', 'acct_a', 'f3', 800000000, 3809524, '', 'jtx_4', 104000000000, 4000);
INSERT INTO settled_requests (request_id, account_id, tx_id, cost, settled_ms) VALUES
  ('r1', 'acct_a', 'jtx_2', 700000000, 2000), ('r2', 'acct_a', 'jtx_2', 500000000, 2000);
`

// writeV1 applies migration 1 only, as version 1 of ledgerd left a database, and its data.
func writeV1(t *testing.T, db *sql.DB) {
	ddl, err := deploy.LedgerMigrations.ReadFile("postgres/0001_init.sql")
	require.NoError(t, err)
	for _, q := range []string{string(ddl), `CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)`,
		`INSERT INTO schema_migrations (version, applied_ms) VALUES (1, 0)`, v1Ledger} {
		_, err := db.Exec(q)
		require.NoError(t, err)
	}
	require.NoError(t, db.Close())
}

// Migration 2 backfills the USD side of a version-1 journal so that every audit passes.
func TestMigrationBackfillsVersion1(t *testing.T) {
	check := func(t *testing.T, s store.Store) {
		ctx := context.Background()
		require.NoError(t, s.Check(ctx))
		a, err := s.Account(ctx, "acct_a")
		require.NoError(t, err)
		require.Equal(t, int64(104_000*ledger.MicrocreditsPerCredit), a.Balance)
		require.Equal(t, int64(500_000_000-952_380-3_809_524), a.DeferredMicroUSD)
		la, err := s.LedgerAccounts(ctx)
		require.NoError(t, err)
		require.Equal(t, map[string]store.Totals{
			"cash:admin": {Microcredits: -106_000 * ledger.MicrocreditsPerCredit, MicroUSD: -505_000_000},
			"revenue":    {Microcredits: 1200 * ledger.MicrocreditsPerCredit, MicroUSD: 5_000_000 + 952_380},
			"refunds":    {Microcredits: 800 * ledger.MicrocreditsPerCredit, MicroUSD: 3_809_524},
		}, la)
		lots, err := s.Lots(ctx, "acct_a")
		require.NoError(t, err)
		require.Len(t, lots, 2)
		require.Equal(t, []string{"o1", "o2"}, []string{lots[0].OrderID, lots[1].OrderID})
		require.Equal(t, "admin", lots[1].Method)
		// The migrated top-up can be reversed by its order id: it is linked to its lot.
		_, _, err = s.Refund(ctx, store.Refund{AccountID: "acct_a", RefundID: "rv", OrderID: "o2"})
		require.ErrorIs(t, err, store.ErrLotUsed, "part of it was used and refunded")
	}
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "ledger.db")
		db, err := sql.Open("sqlite", path)
		require.NoError(t, err)
		writeV1(t, db)
		s, err := sqlite.Open(context.Background(), path, nil, nil)
		require.NoError(t, err)
		defer s.Close()
		check(t, s)
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := storetest.FreshPostgres(t)
		db, err := sql.Open("pgx", dsn)
		require.NoError(t, err)
		writeV1(t, db)
		s, err := postgres.Open(context.Background(), dsn, nil, nil)
		require.NoError(t, err)
		defer s.Close()
		check(t, s)
	})
}
