package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/metrics"
)

func TestRequestCountsByRouteAndStatus(t *testing.T) {
	m := metrics.New()
	m.Request(metrics.RouteMessages, 200)
	m.Request(metrics.RouteMessages, 200)
	m.Request(metrics.RouteBalance, 401)
	m.Request(metrics.Route(99), 999) // out of range: counted as other / 0, never a panic
	n, err := testutil.GatherAndCount(m.Registry, "tollgate_edge_requests_total")
	require.NoError(t, err)
	require.Equal(t, 3, n, "three label combinations")
	allocs := testing.AllocsPerRun(1000, func() { m.Request(metrics.RouteMessages, 200) })
	require.Zero(t, allocs, "counting a seen combination allocates nothing")
}
