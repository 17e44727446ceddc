package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/postgres"
	"tollgate/ledgerd/internal/store/storetest"
)

func TestSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		dsn := storetest.FreshPostgres(t)
		s, err := postgres.Open(context.Background(), dsn, nil, now)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		return s
	})
}

// Two instances migrating one database at once both succeed (the advisory lock serializes
// them) and apply the schema once.
func TestConcurrentMigrate(t *testing.T) {
	dsn := storetest.FreshPostgres(t)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			s, err := postgres.Open(context.Background(), dsn, nil, nil)
			if err == nil {
				err = s.Close()
			}
			errs <- err
		}()
	}
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)
}

// TestScripts runs the ledger rule scripts (storetest/testdata) with the same expected output
// as on SQLite.
func TestScripts(t *testing.T) {
	storetest.RunScripts(t, func(t *testing.T, now func() time.Time) store.Store {
		s, err := postgres.Open(context.Background(), storetest.FreshPostgres(t), nil, now)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		return s
	})
}

// TestProperty runs the randomized ledger property test; -seed=N replays a failure.
func TestProperty(t *testing.T) {
	storetest.RunProperty(t, func(t *testing.T, now func() time.Time) store.Store {
		s, err := postgres.Open(context.Background(), storetest.FreshPostgres(t), nil, now)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		return s
	})
}
