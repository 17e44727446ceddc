package storetest

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, for creating test databases

	"github.com/stretchr/testify/require"
)

// PostgresEnv names the variable holding a DSN (postgres:// URL) of a throwaway PostgreSQL
// cluster that tests may create databases in.
const PostgresEnv = "TOLLGATE_TEST_PG_DSN"

// FreshPostgres creates an empty database on the PostgresEnv cluster, drops it when the test
// ends, and returns its DSN. Without the variable the test is skipped, loudly.
func FreshPostgres(t testing.TB) string {
	t.Helper()
	base := os.Getenv(PostgresEnv)
	if base == "" {
		t.Skip("SKIPPED: " + PostgresEnv + " is not set; PostgreSQL tests did not run")
	}
	u, err := url.Parse(base)
	require.NoError(t, err, PostgresEnv+" must be a postgres:// URL")
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
