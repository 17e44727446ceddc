package e2e_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// leaseCounter sums, over every edge of e, the samples of a counter whose labels include
// every one of labels ("path=\"local\""); 0 when there are none.
func leaseCounter(t *testing.T, e *env, edges int, name string, labels ...string) float64 {
	t.Helper()
	var sum float64
	for i := range edges {
		v, err := metric(e.s.EdgeOpsURL(i)+"/metrics", name, labels...)
		require.NoError(t, err)
		sum += v
	}
	return sum
}

// TestLeaseSteadyLoadNeedsNoLedgerCall: under steady load through three edges, admission is
// answered from leases: the share of requests that waited for a ledgerd call stays under 1%
// once the leases are warm (they are topped up in the background). The numbers are logged
// for bench/results. The background refreshes of leases and keys take ledgerd's batch routes:
// an edge falls back to single calls when ledgerd answers 404 or 405, so a route the two sides
// spell differently would otherwise go unnoticed.
func TestLeaseSteadyLoadNeedsNoLedgerCall(t *testing.T) {
	const edges, accounts, clients = 3, 10, 48
	// Keys are refreshed from ¾ of their TTL: 1 s makes refreshes happen within the run.
	e := startLeaseStack(t, edges, "TOLLGATE_KEY_TTL=1s")
	keys := make([]string, accounts)
	for i := range keys {
		_, keys[i] = e.account(100_000)
	}
	c := newLeaseClient(e)
	body := leaseBody()
	run := func(perClient int) {
		var wg sync.WaitGroup
		errs := make(chan string, clients)
		for w := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range perClient {
					a := c.post((w+n)%edges, keys[(w+n)%accounts], body)
					if a.err != nil || a.status != http.StatusOK {
						errs <- fmt.Sprintf("%d %v %s", a.status, a.err, a.body)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for msg := range errs {
			t.Fatal(msg)
		}
	}

	run(20) // warm-up: every account gets a lease on every edge, sized to its spend
	local0 := leaseCounter(t, e, edges, "tollgate_edge_lease_admissions_total", `path="local"`)
	rpc0 := leaseCounter(t, e, edges, "tollgate_edge_lease_admissions_total", `path="ledgerd"`)
	kinds := []string{"grant", "extend", "extend_batch", "release", "recalls"}
	calls0 := map[string]float64{}
	for _, k := range kinds {
		calls0[k] = leaseCounter(t, e, edges, "tollgate_edge_lease_calls_total", `call="`+k+`"`)
	}
	start := time.Now()
	run(200)
	elapsed := time.Since(start)
	local := leaseCounter(t, e, edges, "tollgate_edge_lease_admissions_total", `path="local"`) - local0
	rpc := leaseCounter(t, e, edges, "tollgate_edge_lease_admissions_total", `path="ledgerd"`) - rpc0
	var calls []string
	for _, k := range kinds {
		n := leaseCounter(t, e, edges, "tollgate_edge_lease_calls_total", `call="`+k+`"`) - calls0[k]
		calls = append(calls, fmt.Sprintf("%s %.0f", k, n))
	}
	total := local + rpc
	require.Equal(t, float64(clients*200), total, "every request admitted once")
	share := rpc / total
	t.Logf("steady load: %.0f requests in %s (%.0f/s), %.0f waited for ledgerd (%.3f%%); ledgerd calls meanwhile, background included: %s; warm-up: %.0f of %d waited",
		total, elapsed.Round(time.Millisecond), total/elapsed.Seconds(), rpc, 100*share, strings.Join(calls, ", "), rpc0, clients*20)
	require.Less(t, share, 0.01, "share of requests that needed a ledgerd call")

	require.Positive(t, leaseCounter(t, e, edges, "tollgate_edge_lease_calls_total", `call="extend_batch"`, `result="ok"`),
		"background lease extends went through POST /internal/v1/leases/extend")
	require.Zero(t, leaseCounter(t, e, edges, "tollgate_edge_lease_calls_total", `result="unsupported"`),
		"ledgerd answered a batch route with 404 or 405")
	// A key is refreshed by a hit after ¾ of its TTL: keep the keys in use until one was, in
	// case the run above was too short for it.
	batchLookups := func() float64 {
		v, err := metric(e.s.AdminURL()+"/metrics", "ledgerd_http_requests_total",
			`route="POST /internal/v1/keys/lookup"`, `code="200"`)
		require.NoError(t, err)
		return v
	}
	for deadline := time.Now().Add(5 * time.Second); batchLookups() == 0 && time.Now().Before(deadline); {
		for i, k := range keys {
			a := c.post(i%edges, k, body)
			require.NoError(t, a.err)
			require.Equal(t, http.StatusOK, a.status, a.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.Positive(t, batchLookups(), "background key refreshes went through POST /internal/v1/keys/lookup")
}
