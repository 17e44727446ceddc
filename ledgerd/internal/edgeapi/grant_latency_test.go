package edgeapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/edgeapi"
	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/postgres"
	"tollgate/ledgerd/internal/store/storetest"
	"tollgate/pkg/ledgerapi"
)

// TestGrantLatencyPostgres measures lease grants through the internal API on PostgreSQL at a
// fixed rate, open loop: each grant is timed from the instant it was due, so a database that
// falls behind shows its queue in the latency instead of slowing the load down (no
// coordinated omission). It asserts nothing about time; it logs the percentiles for
// bench/results. TOLLGATE_GRANT_RATE (grants/s) and TOLLGATE_GRANT_SECONDS set the load; the
// defaults (200/s for 1 s) keep `make test` — which runs it under -race next to other tests on
// two cores — a correctness check, and the measurement in bench/results uses 1000/s for 2 s.
func TestGrantLatencyPostgres(t *testing.T) {
	dsn := storetest.FreshPostgres(t)
	rate := envInt(t, "TOLLGATE_GRANT_RATE", 200)
	seconds := envInt(t, "TOLLGATE_GRANT_SECONDS", 1)
	ctx := context.Background()
	s, err := postgres.Open(ctx, dsn, slog.New(slog.DiscardHandler), time.Now)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })

	// Grants spread over 200 accounts and 10 nodes, each account rich enough never to refuse.
	accounts := make([]string, 200)
	for i := range accounts {
		a, err := s.CreateAccount(ctx, "bench")
		require.NoError(t, err)
		_, _, err = s.TopUp(ctx, store.TopUp{AccountID: a.ID, OrderID: "o-" + a.ID, Credits: 1_000_000, MicroUSD: 5_000_000_000, Method: "admin"})
		require.NoError(t, err)
		accounts[i] = a.ID
	}
	srv := httptest.NewServer(edgeapi.New(edgeapi.Config{Store: s, Secret: secret, LeaseTTL: time.Minute,
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()}))
	t.Cleanup(srv.Close)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024}}

	grant := func(i int) error {
		body, _ := json.Marshal(ledgerapi.Grant{AccountID: accounts[rand.IntN(len(accounts))], EdgeID: "edge-" + strconv.Itoa(i%10),
			WantMicrocredits: 1_000_000, MinMicrocredits: 1})
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/internal/v1/leases", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	for i := range 50 { // warm the connection pools
		require.NoError(t, grant(i))
	}

	const inFlightMax = 2048
	hist := hdrhistogram.New(1, 60_000_000, 3) // µs
	var mu sync.Mutex
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	sem := make(chan struct{}, inFlightMax)
	n := rate * seconds
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := grant(i)
			us := time.Since(due).Microseconds()
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			mu.Lock()
			_ = hist.RecordValue(max(us, 1))
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	require.Zero(t, failed.Load(), "every grant succeeds; first error: %v", firstErr.Load())
	require.NoError(t, s.Check(ctx), "books balance after the load")
	t.Logf("lease grants on PostgreSQL, open loop at %d/s for %ds: %d grants in %s (%.0f/s); latency from due time: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms",
		rate, seconds, n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(),
		ms(hist.ValueAtQuantile(50)), ms(hist.ValueAtQuantile(90)), ms(hist.ValueAtQuantile(99)),
		ms(hist.ValueAtQuantile(99.9)), ms(hist.Max()))
}

func ms(us int64) float64 { return float64(us) / 1000 }

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, name)
	require.Positive(t, n, name)
	return n
}
