package sqlstore_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/postgres"
	"tollgate/ledgerd/internal/store/sqlite"
	"tollgate/ledgerd/internal/store/storetest"
)

// An extend of a lease whose stored reservation disagrees with its amounts (a corrupted row,
// or a bug elsewhere) is an invariant violation on either database and changes nothing —
// including on PostgreSQL's one-statement extend, which repeats Lease.Check in SQL.
func TestExtendInconsistentLease(t *testing.T) {
	check := func(t *testing.T, s store.Store, db *sql.DB) {
		ctx := context.Background()
		a, err := s.CreateAccount(ctx, "acme")
		require.NoError(t, err)
		_, _, err = s.TopUp(ctx, store.TopUp{AccountID: a.ID, OrderID: "o1", Credits: 100, MicroUSD: 500_000, Method: "admin"})
		require.NoError(t, err)
		l, err := s.GrantLease(ctx, store.LeaseGrant{AccountID: a.ID, EdgeID: "e1", Want: 1_000_000, Min: 1, TTL: time.Minute})
		require.NoError(t, err)
		require.Equal(t, int64(1_000_000), l.Granted)
		_, err = db.Exec(`UPDATE leases SET reservation = reservation - 1 WHERE id = $1`, l.ID)
		require.NoError(t, err)
		before, err := s.Account(ctx, a.ID)
		require.NoError(t, err)

		_, err = s.ExtendLease(ctx, l.ID, 1_000_000, 1, 0, time.Minute)
		require.ErrorIs(t, err, ledger.ErrInvariant)
		after, err := s.Account(ctx, a.ID)
		require.NoError(t, err)
		require.Equal(t, before.Reserved, after.Reserved, "nothing was reserved")
		var granted int64
		require.NoError(t, db.QueryRow(`SELECT granted FROM leases WHERE id = $1`, l.ID).Scan(&granted))
		require.Equal(t, int64(1_000_000), granted, "the lease was not extended")
	}
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "ledger.db")
		s, err := sqlite.Open(context.Background(), path, nil, nil)
		require.NoError(t, err)
		defer s.Close()
		db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
		require.NoError(t, err)
		defer db.Close()
		check(t, s, db)
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := storetest.FreshPostgres(t)
		s, err := postgres.Open(context.Background(), dsn, nil, nil)
		require.NoError(t, err)
		defer s.Close()
		db, err := sql.Open("pgx", dsn)
		require.NoError(t, err)
		defer db.Close()
		check(t, s, db)
	})
}
