package postgres_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/postgres"
	"tollgate/ledgerd/internal/store/storetest"
)

// TOLLGATE_TEST_PG_DSN=… go test -run '^$' -bench GrantExtend -count 6 ./ledgerd/internal/store/postgres
func BenchmarkGrantExtend(b *testing.B) {
	s, err := postgres.Open(context.Background(), storetest.FreshPostgres(b), nil, nil)
	require.NoError(b, err)
	defer s.Close()
	storetest.BenchGrantExtend(b, s)
}

// TOLLGATE_TEST_PG_DSN=… go test -run '^$' -bench Refresh -benchtime 20x ./ledgerd/internal/store/postgres
func BenchmarkRefresh(b *testing.B) {
	storetest.BenchRefresh(b, func(b *testing.B) store.Store {
		s, err := postgres.Open(context.Background(), storetest.FreshPostgres(b), nil, nil)
		require.NoError(b, err)
		b.Cleanup(func() { s.Close() })
		return s
	})
}
