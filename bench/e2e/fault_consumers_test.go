package e2e_test

// Fault tests of the two consumers of usage.v1 (ledgerd's settlement and analytics): each is
// killed with SIGKILL under load and restarted, and each loses its database (ClickHouse,
// PostgreSQL) for a while. Through all of it every request a client saw served must be
// charged exactly once in the ledger and counted exactly once in ClickHouse.
//
// The randomized tests print their seed; TOLLGATE_FAULT_SEED=N replays one.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/bench/stack"
)

// faultSeed returns the seed of a randomized test and logs how to replay it.
func faultSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TOLLGATE_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "TOLLGATE_FAULT_SEED")
		seed = v
	}
	t.Logf("fault seed %d (replay: TOLLGATE_FAULT_SEED=%d go test -run '^%s$' ./bench/e2e/)", seed, seed, t.Name())
	return seed
}

// spec is one request of a load run, with its cost computed from the list prices.
type spec struct {
	body string
	cost int64
}

// specs draws n requests (streaming or not, varied usage) of the cheap Haiku 3 model; load
// runs cycle through them.
func specs(t *testing.T, rng *rand.Rand, n int) []spec {
	out := make([]spec, n)
	for i := range out {
		tok := tokens{input: 20 + rng.Int64N(400), output: 1 + rng.Int64N(60), read: rng.Int64N(300)}
		directive := fmt.Sprintf("input=%d output=%d cache_read=%d", tok.input, tok.output, tok.read)
		out[i] = spec{body: messageBody("claude-3-haiku", rng.IntN(2) == 0, directive),
			cost: expectedCost(t, "claude-3-haiku", tok)}
	}
	return out
}

// traffic keeps a few clients sending requests to edge 0 until stopped, and tallies what they
// saw. 200 is served (and must be billed); 503 is refused while a dependency is down (and must
// not be). Anything else is a failure of the test.
type traffic struct {
	url, key string
	specs    []spec
	next     atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup

	mu      sync.Mutex
	served  int64
	charged int64 // Σ cost of served requests
	refused int64
	odd     []string // unexpected answers
}

func startTraffic(e *env, key string, specs []spec, clients int) *traffic {
	tr := &traffic{url: e.s.EdgeURL(0) + "/v1/messages", key: key, specs: specs, stop: make(chan struct{})}
	client := &http.Client{Timeout: 30 * time.Second}
	for range clients {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for {
				select {
				case <-tr.stop:
					return
				default:
				}
				i := tr.next.Add(1) - 1
				tr.send(client, tr.specs[i%int64(len(tr.specs))])
			}
		}()
	}
	return tr
}

func (tr *traffic) send(client *http.Client, s spec) {
	req, err := http.NewRequest(http.MethodPost, tr.url, strings.NewReader(s.body))
	if err != nil {
		panic(err) // a constant URL
	}
	req.Header.Set("x-api-key", tr.key)
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		tr.note("transport error: " + err.Error())
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	switch {
	case err != nil:
		tr.odd = append(tr.odd, fmt.Sprintf("status %d, body cut: %v", resp.StatusCode, err))
	case resp.StatusCode == http.StatusOK:
		tr.served++
		tr.charged += s.cost
	case resp.StatusCode == http.StatusServiceUnavailable:
		tr.refused++
	default:
		tr.odd = append(tr.odd, fmt.Sprintf("status %d: %.300s", resp.StatusCode, body))
	}
}

func (tr *traffic) note(s string) {
	tr.mu.Lock()
	tr.odd = append(tr.odd, s)
	tr.mu.Unlock()
}

// served reports what has been served so far.
func (tr *traffic) count() (served, refused int64) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.served, tr.refused
}

// finish stops the clients and returns (served, Σ charged), failing on unexpected answers.
func (tr *traffic) finish(t *testing.T) (int64, int64) {
	t.Helper()
	close(tr.stop)
	tr.wg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	t.Logf("traffic: %d served, %d refused with 503, %d unexpected", tr.served, tr.refused, len(tr.odd))
	require.Empty(t, tr.odd, "unexpected answers")
	require.Positive(t, tr.served)
	return tr.served, tr.charged
}

// checkExact waits until the ledger and ClickHouse hold the served requests and checks both
// exactly: balance = credits − Σ cost; ClickHouse has one row per served request (no row
// lost, none twice) and Σ cost equal to the ledger's charge.
func (e *env) checkExact(accountID string, credits, served, charged int64) {
	e.t.Helper()
	e.waitBalance(accountID, credits*1_000_000-charged)
	if e.chAddr == "" {
		e.t.Log("ClickHouse check SKIPPED: no ClickHouse (make test provides one)")
		return
	}
	rows, distinct, total := e.waitClickHouse(accountID, int(served))
	// Stop analytics gracefully so no insert is still on its way, then count again.
	if e.s.Analytics != nil {
		require.NoError(e.t, e.s.Analytics.Stop(15*time.Second))
		rows, distinct, total = e.clickHouseTotals(accountID)
	}
	require.Equal(e.t, served, rows, "ClickHouse rows (raw, no FINAL): one per served request")
	require.Equal(e.t, served, distinct, "distinct request ids in ClickHouse")
	require.Equal(e.t, charged, total, "ClickHouse Σ cost_microcredits equals the ledger's charge")
	e.waitBalance(accountID, credits*1_000_000-charged) // and nothing settled twice since
}

func (e *env) clickHouseTotals(accountID string) (rows, distinct, total int64) {
	db := e.clickhouse()
	require.NotNil(e.t, db)
	defer db.Close()
	err := db.QueryRow(fmt.Sprintf(
		"SELECT count(), uniqExact(request_id), sum(cost_microcredits) FROM %s.requests WHERE account_id = ?", e.chDB),
		accountID).Scan(&rows, &distinct, &total)
	require.NoError(e.t, err)
	return rows, distinct, total
}

// metric sums the samples of a Prometheus metric, over every label set that contains labels
// (given as name="value" strings), from a /metrics URL.
func metric(url, name string, labels ...string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue // a longer metric name
		}
		sp := strings.LastIndexByte(rest, ' ')
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(rest[:sp], l)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(rest[sp+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("parse %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// waitMetricAbove polls a metric until it exceeds floor.
func waitMetricAbove(t *testing.T, url, name string, floor float64, labels ...string) float64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last float64
	var err error
	for time.Now().Before(deadline) {
		if last, err = metric(url, name, labels...); err == nil && last > floor {
			return last
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s at %s: still %v (error %v), want > %v", name, url, last, err, floor)
	return 0
}

// sleepRand sleeps a random time in [lo, hi).
func sleepRand(rng *rand.Rand, lo, hi time.Duration) {
	time.Sleep(lo + time.Duration(rng.Int64N(int64(hi-lo))))
}

// TestConsumersKilledUnderLoad kills ledgerd and analytics with SIGKILL at random moments
// while clients keep sending requests, so each dies mid-batch (fetched, half-applied, or
// stored but not committed), restarts them, and checks that the ledger charged every served
// request exactly once and ClickHouse holds exactly one row for each. Each round waits until
// both consumers work again before the next kill: a consumer still waiting for the group to
// drop its dead predecessor (the session timeout) has no batch in hand to be killed in.
func TestConsumersKilledUnderLoad(t *testing.T) {
	seed := faultSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	e := startStack(t, func(c *stack.Config) {
		// Small, frequent batches so a kill lands inside one.
		c.ExtraEnv = append(c.ExtraEnv, "TOLLGATE_LEDGER_BATCH_LINGER=20ms", "TOLLGATE_ANALYTICS_BATCH_LINGER=50ms")
	})
	const credits = 10_000
	acct, key := e.account(credits)
	tr := startTraffic(e, key, specs(t, rng, 64), 4)

	type victim struct {
		p       *stack.Proc
		metrics string // its /metrics and the counter of batches it completed
		batches string
	}
	victims := []victim{{e.s.Ledgerd, e.s.AdminURL() + "/metrics", "ledgerd_settle_batches_total"}}
	if e.s.Analytics != nil {
		victims = append(victims, victim{e.s.Analytics, e.s.AnalyticsURL() + "/metrics", "tollgate_analytics_batches_total"})
	} else {
		t.Log("analytics is not running: only ledgerd is killed (make test provides ClickHouse)")
	}
	for _, v := range victims {
		waitMetricAbove(t, v.metrics, v.batches, 0)
	}
	for round := range 2 {
		for _, i := range rng.Perm(len(victims)) {
			sleepRand(rng, 100*time.Millisecond, 1000*time.Millisecond)
			served, _ := tr.count()
			t.Logf("round %d: kill -9 %s after %d served", round, victims[i].p.Name, served)
			require.NoError(t, victims[i].p.Kill())
		}
		sleepRand(rng, 50*time.Millisecond, 500*time.Millisecond)
		for _, v := range victims {
			require.NoError(t, e.s.Restart(context.Background(), v.p))
		}
		for _, v := range victims {
			waitMetricAbove(t, v.metrics, v.batches, 0) // a fresh process: it works again
		}
	}
	sleepRand(rng, 100*time.Millisecond, 500*time.Millisecond)
	served, charged := tr.finish(t)
	e.checkExact(acct, credits, served, charged)
}

// freeDir makes a world-searchable temporary directory (PostgreSQL runs as an unprivileged
// user and must reach it) removed at the end of the test.
func freeDir(t *testing.T, pattern string) string {
	dir, err := os.MkdirTemp("", pattern)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// script runs a deploy/dev script and returns its stdout; exit code 3 means "not installed".
func script(t *testing.T, name string, args ...string) (string, int) {
	cmd := exec.Command("bash", append([]string{filepath.Join(repoDir(t), "deploy", "dev", name)}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		code := -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		t.Logf("%s %v: %v\n%s", name, args, err, stderr.String())
		return string(out), code
	}
	return strings.TrimSpace(string(out)), 0
}

// portStrings returns n distinct free ports as strings.
func portStrings(t *testing.T, n int) []string {
	ps, err := stack.FreePorts(n)
	require.NoError(t, err)
	out := make([]string, n)
	for i, p := range ps {
		out[i] = strconv.Itoa(p)
	}
	return out
}

// TestClickHouseDownAnalyticsCatchesUp stops this test's own ClickHouse server while requests
// keep flowing, waits until analytics has failed and retried, starts ClickHouse again, and
// checks that analytics caught up with every row exactly once (and the ledger was unaffected).
func TestClickHouseDownAnalyticsCatchesUp(t *testing.T) {
	dir := freeDir(t, "tollgate-chdown-")
	ports := portStrings(t, 2)
	native, httpPort := ports[0], ports[1]
	chDir := filepath.Join(dir, "clickhouse")
	if _, code := script(t, "clickhouse.sh", "start", chDir, native, httpPort); code != 0 {
		if code == 3 {
			t.Skip("SKIPPED: clickhouse-server is not installed and cannot be installed here; this test needs its own ClickHouse server")
		}
		t.Fatalf("start ClickHouse: exit %d", code)
	}
	t.Cleanup(func() { script(t, "clickhouse.sh", "stop", chDir) })
	chAddr := "127.0.0.1:" + native
	chDB := fmt.Sprintf("tollgate_chdown_%d", time.Now().UnixNano())

	seed := faultSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed^0xc1c1))
	e := startStack(t, func(c *stack.Config) {
		c.NoAnalytics = false
		c.ClickHouseDSN = fmt.Sprintf("clickhouse://%s/%s", chAddr, chDB)
		c.ExtraEnv = append(c.ExtraEnv, "TOLLGATE_ANALYTICS_BATCH_LINGER=50ms")
	})
	e.chAddr, e.chDB = chAddr, chDB
	const credits = 10_000
	acct, key := e.account(credits)
	tr := startTraffic(e, key, specs(t, rng, 64), 3)

	metrics := e.s.AnalyticsURL() + "/metrics"
	sleepRand(rng, 300*time.Millisecond, 1000*time.Millisecond)
	before, err := metric(metrics, "tollgate_analytics_retries_total")
	require.NoError(t, err)
	t.Log("stopping ClickHouse")
	_, code := script(t, "clickhouse.sh", "stop", chDir)
	require.Zero(t, code)
	// Analytics must notice and keep retrying (not drop the batch, not exit) while requests
	// go on being served and settled.
	waitMetricAbove(t, metrics, "tollgate_analytics_retries_total", before+2)
	require.True(t, e.s.Analytics.Running(), "analytics exited while ClickHouse was down")
	servedDown, _ := tr.count()
	sleepRand(rng, 500*time.Millisecond, 1500*time.Millisecond)
	served, _ := tr.count()
	require.Greater(t, served, servedDown, "requests are served while ClickHouse is down")
	t.Log("starting ClickHouse again")
	_, code = script(t, "clickhouse.sh", "start", chDir, native, httpPort)
	require.Zero(t, code)
	sleepRand(rng, 200*time.Millisecond, 800*time.Millisecond)
	served, charged := tr.finish(t)
	e.checkExact(acct, credits, served, charged)
}

// TestPostgresDownLedgerCatchesUp runs ledgerd on this test's own PostgreSQL cluster, stops
// the cluster while requests keep coming, checks that settlement waits and retries (and the
// process stays up), starts PostgreSQL again, and checks that every served request was
// charged exactly once.
func TestPostgresDownLedgerCatchesUp(t *testing.T) {
	pgDir := filepath.Join(freeDir(t, "tollgate-pgdown-"), "pg")
	port := portStrings(t, 1)[0]
	dsn, code := script(t, "postgres.sh", "start", pgDir, port)
	if code == 3 {
		t.Skip("SKIPPED: PostgreSQL server binaries are not installed; this test needs its own cluster")
	}
	require.Zero(t, code, "start PostgreSQL")
	t.Cleanup(func() { script(t, "postgres.sh", "stop", pgDir) })

	seed := faultSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x9999))
	e := startStack(t, func(c *stack.Config) {
		c.LedgerDB = dsn
		c.ExtraEnv = append(c.ExtraEnv, "TOLLGATE_LEDGER_BATCH_LINGER=20ms")
	})
	const credits = 10_000
	acct, key := e.account(credits)
	tr := startTraffic(e, key, specs(t, rng, 64), 3)

	metrics := e.s.AdminURL() + "/metrics"
	sleepRand(rng, 300*time.Millisecond, 1000*time.Millisecond)
	before, err := metric(metrics, "ledgerd_settle_retries_total")
	require.NoError(t, err)
	t.Log("stopping PostgreSQL")
	_, code = script(t, "postgres.sh", "stop", pgDir)
	require.Zero(t, code)
	waitMetricAbove(t, metrics, "ledgerd_settle_retries_total", before+2)
	require.True(t, e.s.Ledgerd.Running(), "ledgerd exited while PostgreSQL was down")
	sleepRand(rng, 200*time.Millisecond, 1000*time.Millisecond)
	t.Log("starting PostgreSQL again")
	_, code = script(t, "postgres.sh", "start", pgDir, port)
	require.Zero(t, code)
	sleepRand(rng, 500*time.Millisecond, 1500*time.Millisecond)
	served, charged := tr.finish(t)
	e.checkExact(acct, credits, served, charged)
}
