package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/postgres"
	"tollgate/ledgerd/internal/store/storetest"
)

func TestSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		dsn := FreshDatabase(t)
		s, err := postgres.Open(context.Background(), dsn, nil, now)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		return s
	})
}

// Two instances migrating one database at once both succeed (the advisory lock serializes
// them) and apply the schema once.
func TestConcurrentMigrate(t *testing.T) {
	dsn := FreshDatabase(t)
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

// FreshDatabase creates an empty database on the TOLLGATE_TEST_PG_DSN cluster, drops it when
// the test ends, and returns its DSN. Without the variable the test is skipped, loudly.
func FreshDatabase(t *testing.T) string {
	t.Helper()
	base := os.Getenv("TOLLGATE_TEST_PG_DSN")
	if base == "" {
		t.Skip("SKIPPED: TOLLGATE_TEST_PG_DSN is not set; PostgreSQL store tests did not run")
	}
	u, err := url.Parse(base)
	require.NoError(t, err, "TOLLGATE_TEST_PG_DSN must be a postgres:// URL")
	admin, err := sql.Open("pgx", base)
	require.NoError(t, err)
	name := fmt.Sprintf("tollgate_test_%d_%08x", time.Now().UnixNano(), rand.Uint32())
	_, err = admin.Exec("CREATE DATABASE " + name)
	require.NoError(t, err)
	t.Cleanup(func() {
		// Registered before the store's Close, so it runs after it (cleanups run LIFO).
		_, err := admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		require.NoError(t, err)
		require.NoError(t, admin.Close())
	})
	u.Path = "/" + name
	return u.String()
}
