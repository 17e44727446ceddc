package postgres

import (
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSessionsCommitDurably: the test cluster of make test runs with synchronous_commit = off
// (deploy/dev/postgres.sh, for speed), and a DSN may ask for it too; ledger sessions must
// still wait for their commits to reach the WAL.
func TestSessionsCommitDurably(t *testing.T) {
	dsn := os.Getenv("TOLLGATE_TEST_PG_DSN")
	if dsn == "" {
		t.Skip("SKIPPED: TOLLGATE_TEST_PG_DSN not set (make test starts a private PostgreSQL)")
	}
	for _, d := range []string{dsn, dsn + "&synchronous_commit=off"} {
		db, err := openDB(d)
		require.NoError(t, err)
		var v string
		require.NoError(t, db.QueryRowContext(context.Background(), "SHOW synchronous_commit").Scan(&v))
		require.Equal(t, "on", v, d)
		require.NoError(t, db.Close())
	}
}
