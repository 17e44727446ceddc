package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/sqlite"
	"tollgate/ledgerd/internal/store/storetest"
)

// go test -run '^$' -bench GrantExtend -count 6 ./ledgerd/internal/store/sqlite
func BenchmarkGrantExtend(b *testing.B) {
	s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "ledger.db"), nil, nil)
	require.NoError(b, err)
	defer s.Close()
	storetest.BenchGrantExtend(b, s)
}

// go test -run '^$' -bench Refresh -benchtime 20x ./ledgerd/internal/store/sqlite
func BenchmarkRefresh(b *testing.B) {
	storetest.BenchRefresh(b, func(b *testing.B) store.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "ledger.db"), nil, nil)
		require.NoError(b, err)
		b.Cleanup(func() { s.Close() })
		return s
	})
}
