package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/sqlite"
	"tollgate/ledgerd/internal/store/storetest"
)

func TestSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "ledger.db"), nil, now)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		return s
	})
}

// Reopening a ledger file keeps its data and applies no migration twice.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	s, err := sqlite.Open(context.Background(), path, nil, nil)
	require.NoError(t, err)
	a, err := s.CreateAccount(context.Background(), "acme")
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")
	s, err = sqlite.Open(context.Background(), path, nil, nil)
	require.NoError(t, err)
	defer s.Close()
	got, err := s.Account(context.Background(), a.ID)
	require.NoError(t, err)
	require.Equal(t, "acme", got.Name)
}

// TestScripts runs the ledger rule scripts (storetest/testdata). -rewrite regenerates them.
func TestScripts(t *testing.T) {
	storetest.RunScripts(t, func(t *testing.T, now func() time.Time) store.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "ledger.db"), nil, now)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		return s
	})
}

// TestProperty runs the randomized ledger property test; -seed=N replays a failure.
func TestProperty(t *testing.T) {
	storetest.RunProperty(t, func(t *testing.T, now func() time.Time) store.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "ledger.db"), nil, now)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		return s
	})
}
