package clickhouse

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestIDCoverage: which days' checks may read request_ids while the old ids are being copied.
func TestIDCoverage(t *testing.T) {
	const day = secondsPerDay
	copying := &idCoverage{table: true, planned: true, newest: 100, copied: map[int64]bool{100: true, 98: true}}
	for _, c := range []struct {
		name   string
		cov    *idCoverage
		lo, hi int64 // Unix seconds
		want   bool
	}{
		{"no id table", &idCoverage{complete: true}, 100 * day, 100 * day, false},
		{"not planned yet", &idCoverage{table: true}, 100 * day, 100 * day, false},
		{"complete", &idCoverage{table: true, complete: true}, 0, 200 * day, true},
		{"newest day, copied", copying, 100 * day, 100*day + 86399, true},
		{"after the plan: written by the view", copying, 101 * day, 300 * day, true},
		{"from a copied day into a later one", copying, 100*day + 5, 101*day + 5, true},
		{"a day not copied yet", copying, 99 * day, 99 * day, false},
		{"a range holding a day not copied", copying, 98 * day, 100 * day, false},
		{"an older copied day", copying, 98*day + 1, 98*day + 2, true},
		{"a range too long to walk", &idCoverage{table: true, planned: true, newest: 0}, 1 * day, 400 * day, false},
	} {
		require.Equal(t, c.want, c.cov.covers(c.lo, c.hi), c.name)
	}
}
