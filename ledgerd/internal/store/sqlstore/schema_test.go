package sqlstore

import (
	"os"
	"path"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The copy of the schema under deploy/postgres must be exactly what ledgerd applies.
func TestDeployedSchemaMatchesMigrations(t *testing.T) {
	names, err := migrationNames()
	require.NoError(t, err)
	require.NotEmpty(t, names)
	for _, name := range names {
		embedded, err := migrations.ReadFile(name)
		require.NoError(t, err)
		deployed, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "deploy", "postgres", path.Base(name)))
		require.NoError(t, err, "copy %s to deploy/postgres/", name)
		require.Equal(t, string(embedded), string(deployed), "deploy/postgres/%s differs from the embedded migration", path.Base(name))
	}
}
