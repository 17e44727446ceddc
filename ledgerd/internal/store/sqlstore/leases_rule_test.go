package sqlstore

import (
	"database/sql"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/store/storetest"
)

// TestGrantRuleSQL holds the SQL copy of the grant rule, which the one-statement grant and
// extend apply inside the database, to ledger.GrantAmount: the same amount wherever Go
// grants, and no grant wherever Go refuses (ErrInsufficient) or rejects the arguments.
func TestGrantRuleSQL(t *testing.T) {
	amount, grants := grantRuleSQL("$2", "$3", "$4")
	q := `SELECT CASE WHEN ` + grants + ` THEN ` + amount + ` END FROM (SELECT CAST($1 AS BIGINT) AS avail) AS t`

	type input struct{ avail, want, min int64 }
	cases := []input{
		{0, 0, 0}, {-5, 0, 0}, {-5, 10, 0}, {3, 10, 0}, {4, 10, 0}, {7, 10, 0}, {8, 10, 0},
		{100, 10, 0}, {100, 30, 10}, {100, 25, 25}, {100, 26, 25}, {100, 1000, 26}, {99, 1000, 99},
		{98, 1000, 99}, {-1, 10, 1}, {0, 10, 1}, {1, 10, 1}, {100, 5, 6}, {100, 5, -1},
		{math.MaxInt64, math.MaxInt64, 0}, {math.MaxInt64, math.MaxInt64, math.MaxInt64},
		{math.MaxInt64 - 1, math.MaxInt64, math.MaxInt64}, {math.MinInt64 + 1, 10, 0},
	}
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	for range 500 {
		// Spread over small and large magnitudes, around the divisor's boundaries.
		avail := rng.Int64N(1<<uint(rng.IntN(50)+1)) - rng.Int64N(64)
		minimum := rng.Int64N(1 << uint(rng.IntN(40)+1))
		want := minimum + rng.Int64N(1<<uint(rng.IntN(40)+1))
		cases = append(cases, input{avail, want, minimum})
	}

	dbs := map[string]*sql.DB{}
	lite, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "rule.db"))
	require.NoError(t, err)
	t.Cleanup(func() { lite.Close() })
	dbs["sqlite"] = lite
	if os.Getenv(storetest.PostgresEnv) == "" {
		t.Log("SKIPPED on PostgreSQL: " + storetest.PostgresEnv + " is not set")
	} else {
		pg, err := sql.Open("pgx", storetest.FreshPostgres(t))
		require.NoError(t, err)
		t.Cleanup(func() { pg.Close() })
		dbs["postgres"] = pg
	}
	for name, db := range dbs {
		t.Run(name, func(t *testing.T) {
			for _, c := range cases {
				want, err := ledger.GrantAmount(c.avail, c.want, c.min)
				var got sql.NullInt64
				require.NoError(t, db.QueryRow(q, c.avail, c.want, c.min, int64(ledger.LeaseShareDivisor)).Scan(&got),
					"%+v (seed %d)", c, seed)
				if err != nil {
					require.True(t, errors.Is(err, ledger.ErrInsufficient) || errors.Is(err, ledger.ErrInvariant), err)
					require.False(t, got.Valid, "%+v: Go refuses (%v), SQL grants %d (seed %d)", c, err, got.Int64, seed)
					continue
				}
				require.True(t, got.Valid, "%+v: Go grants %d, SQL refuses (seed %d)", c, want, seed)
				require.Equal(t, want, got.Int64, "%+v (seed %d)", c, seed)
			}
		})
	}
}
