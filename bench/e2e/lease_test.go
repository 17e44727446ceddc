package e2e_test

// Credit leases end to end (DESIGN §3 "Credit leases", §5 "Leases"): several edge processes,
// ledgerd on PostgreSQL, the dev Kafka broker and the mock upstream, all real processes.
// Lease timings are shortened through the environment so expiry tests take seconds.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, to create a database per test
	"github.com/stretchr/testify/require"

	"tollgate/bench/stack"
	"tollgate/pkg/bus"
	"tollgate/pkg/usage"
)

// leaseEnv is what every lease test runs with: ledgerd leases live 3 s and are reclaimed 1 s
// after, reaped every 200 ms; edges poll recalls every 50 ms and wait up to 3 s for recalled
// credit.
var leaseEnv = []string{
	"TOLLGATE_LEASE_TTL=3s",
	"TOLLGATE_LEASE_GRACE=1s",
	"TOLLGATE_LEASE_REAP_EVERY=200ms",
	"TOLLGATE_LEASE_RECALL_POLL=50ms",
	"TOLLGATE_LEASE_RECALL_WAIT=3s",
	"TOLLGATE_LEASE_RETURN_TIMEOUT=5s",
	"TOLLGATE_LEDGER_BATCH_LINGER=50ms",
}

// freshLedgerDB creates an empty PostgreSQL database for one test and returns its DSN. The
// lease tests need PostgreSQL (the production ledger, and the one several ledgerd instances
// share); without TOLLGATE_TEST_PG_DSN they are skipped, loudly.
func freshLedgerDB(t *testing.T) string {
	t.Helper()
	base := os.Getenv("TOLLGATE_TEST_PG_DSN")
	if base == "" {
		t.Skip("SKIPPED: TOLLGATE_TEST_PG_DSN is not set; the credit-lease stack tests need PostgreSQL (make test sets it)")
	}
	u, err := url.Parse(base)
	require.NoError(t, err)
	admin, err := sql.Open("pgx", base)
	require.NoError(t, err)
	name := fmt.Sprintf("tollgate_lease_%d_%08x", time.Now().UnixNano(), rand.Uint32())
	_, err = admin.Exec("CREATE DATABASE " + name)
	require.NoError(t, err)
	t.Cleanup(func() {
		// Registered before the stack's cleanup, so it runs after ledgerd has stopped.
		_, _ = admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		admin.Close()
	})
	u.Path = "/" + name
	return u.String()
}

// leasePorts finds ports for a stack with n edges: edge i listens on Edge+i and EdgeOps+i, so
// each needs n consecutive free ports.
func leasePorts(t *testing.T, n int) stack.Ports {
	t.Helper()
	ps := freePorts(t)
	for attempt := 0; attempt < 200; attempt++ {
		base := 20000 + rand.IntN(30000)
		if consecutiveFree(base, 2*n) {
			ps.Edge, ps.EdgeOps = base, base+n
			return ps
		}
	}
	t.Fatal("no consecutive free ports for the edges")
	return ps
}

func consecutiveFree(base, n int) bool {
	for p := base; p < base+n; p++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return false
		}
		ln.Close()
	}
	return true
}

// startLeaseStack starts ledgerd on a fresh PostgreSQL database and n edges, without
// analytics (these tests check the ledger); extraEnv is added to the services' environment
// after leaseEnv.
func startLeaseStack(t *testing.T, n int, extraEnv ...string) *env {
	t.Helper()
	db := freshLedgerDB(t)
	return startStack(t, func(c *stack.Config) {
		c.Edges = n
		c.Ports = leasePorts(t, n)
		c.LedgerDB = db
		c.NoAnalytics = true
		c.ClickHouseDSN = ""
		c.ExtraEnv = append(c.ExtraEnv, leaseEnv...)
		c.ExtraEnv = append(c.ExtraEnv, extraEnv...)
	})
}

// leaseClient is safe for concurrent use (env.post is not: it fails the test from the
// calling goroutine).
type leaseClient struct {
	e  *env
	hc *http.Client
}

func newLeaseClient(e *env) *leaseClient {
	return &leaseClient{e: e, hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second}}}
}

type leaseAnswer struct {
	status     int
	body       string
	retryAfter string
	err        error
}

// balance is available_microcredits of GET /v1/balance on edge.
func (c *leaseClient) balance(edge int, key string) int64 {
	c.e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.e.s.EdgeURL(edge)+"/v1/balance", nil)
	require.NoError(c.e.t, err)
	req.Header.Set("x-api-key", key)
	resp, err := c.hc.Do(req)
	require.NoError(c.e.t, err)
	defer resp.Body.Close()
	require.Equal(c.e.t, http.StatusOK, resp.StatusCode)
	var b struct {
		Available int64 `json:"available_microcredits"`
	}
	require.NoError(c.e.t, json.NewDecoder(resp.Body).Decode(&b))
	return b.Available
}

func (c *leaseClient) post(edge int, key, body string) leaseAnswer {
	req, err := http.NewRequest(http.MethodPost, c.e.s.EdgeURL(edge)+"/v1/messages", strings.NewReader(body))
	if err != nil {
		return leaseAnswer{err: err}
	}
	req.Header.Set("x-api-key", key)
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return leaseAnswer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return leaseAnswer{status: resp.StatusCode, body: string(b), retryAfter: resp.Header.Get("retry-after"), err: err}
}

// The request every lease test sends: Sonnet 4.5, max_tokens 64, 100 input and 50 output
// tokens as the mock reports them.
const (
	leaseModel     = "claude-sonnet-4-5"
	leaseMaxTokens = 64
)

var leaseTokens = tokens{input: 100, output: 50}

func leaseBody() string {
	b, _ := json.Marshal(map[string]any{
		"model": leaseModel, "max_tokens": leaseMaxTokens,
		"messages": []map[string]any{{"role": "user", "content": "Say hello.\nmock: input=100 output=50"}},
	})
	return string(b)
}

// leaseHold is the hold of leaseBody, computed here from the rule in edge/internal/hold and
// list prices rather than by the edge's code: (body bytes + 1024) tokens at the dearest
// input-side rate ($6/MTok cache write 1h) and max_tokens at the output rate ($15/MTok), 30%
// off, 200 credits per dollar, each part rounded up.
func leaseHold() int64 {
	ceil := func(tokens, microcreditsPerMTok int64) int64 {
		return (tokens*microcreditsPerMTok + 999_999) / 1_000_000
	}
	return ceil(int64(len(leaseBody()))+1024, 6*7*20_000_000) + ceil(leaseMaxTokens, 15*7*20_000_000)
}

var mayCost = regexp.MustCompile(`may cost ([0-9]+\.[0-9]{6}) credits, available (-?[0-9]+\.[0-9]{6}) credits`)

// parse402 reads the amounts of a 402 message, in µcr.
func parse402(t *testing.T, body string) (hold, available int64) {
	t.Helper()
	require.Contains(t, body, `"type":"billing_error"`, body)
	m := mayCost.FindStringSubmatch(body)
	require.NotNil(t, m, "402 message says what the request may cost and what is available: %s", body)
	micro := func(s string) int64 {
		v, err := strconv.ParseInt(strings.Replace(s, ".", "", 1), 10, 64)
		require.NoError(t, err)
		return v
	}
	return micro(m[1]), micro(m[2])
}

// waitLeasesReturned waits until the account's reservations are gone: every lease returned
// or reclaimed and every reported spend settled.
func (e *env) waitLeasesReturned(accountID string, within time.Duration) stack.Account {
	e.t.Helper()
	var a stack.Account
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		var err error
		a, err = e.admin.Account(context.Background(), accountID)
		require.NoError(e.t, err)
		if a.ReservedMicrocredits == 0 && a.AvailableMicrocredits == a.BalanceMicrocredits {
			return a
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("account %s still reserves %d µcr (balance %d, available %d)", accountID,
		a.ReservedMicrocredits, a.BalanceMicrocredits, a.AvailableMicrocredits)
	return a
}

// TestLeaseDrainNoOverdraft: 200 concurrent clients drain a small balance through three
// edges. The balance never goes below zero, the ledger charged exactly the actual costs of
// the requests answered 200, and every other request got 402.
func TestLeaseDrainNoOverdraft(t *testing.T) {
	e := startLeaseStack(t, 3)
	const credits = 20
	acct, key := e.account(credits)
	cost := expectedCost(t, leaseModel, leaseTokens)
	hold := leaseHold()
	t.Logf("cost %d µcr, hold %d µcr, balance %d µcr", cost, hold, credits*1_000_000)

	// Watch the settled balance while the clients run.
	stop := make(chan struct{})
	lowest := make(chan int64, 1)
	go func() {
		low := int64(credits * 1_000_000)
		for {
			select {
			case <-stop:
				lowest <- low
				return
			case <-time.After(20 * time.Millisecond):
			}
			if a, err := e.admin.Account(context.Background(), acct); err == nil {
				low = min(low, a.BalanceMicrocredits)
			}
		}
	}()

	c := newLeaseClient(e)
	body := leaseBody()
	var mu sync.Mutex
	statuses := map[int]int{}
	var bad []string
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each client sends until it has been refused three times: the last refusals
			// come when holds in flight no longer fill what is left.
			for refused := 0; refused < 3; {
				a := c.post(i%3, key, body)
				mu.Lock()
				switch {
				case a.err != nil:
					bad = append(bad, a.err.Error())
				case a.status == http.StatusPaymentRequired:
					refused++
					if !mayCost.MatchString(a.body) {
						bad = append(bad, "402 without amounts: "+a.body)
					}
				case a.status != http.StatusOK:
					bad = append(bad, fmt.Sprintf("%d %s", a.status, a.body))
				}
				statuses[a.status]++
				mu.Unlock()
				if a.err != nil || (a.status != 200 && a.status != 402) {
					return
				}
				if a.status == http.StatusPaymentRequired {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	require.Empty(t, bad, "every request is answered 200 or 402")
	served := int64(statuses[200])
	t.Logf("statuses %v", statuses)
	require.Positive(t, served)
	require.Equal(t, 600, statuses[402], "every client was refused three times")

	want := int64(credits*1_000_000) - served*cost
	e.waitBalance(acct, want)
	close(stop)
	require.GreaterOrEqual(t, <-lowest, int64(0), "the settled balance never went below zero")
	require.GreaterOrEqual(t, want, int64(0))
	a := e.waitLeasesReturned(acct, 20*time.Second)
	require.Equal(t, want, a.BalanceMicrocredits)
	t.Logf("served %d, left %d µcr (a hold is %d)", served, want, hold)
	// The clients were refused for good only when what was left could not cover a hold: no
	// credit stayed stuck in a lease.
	require.Less(t, want, hold)
}

// TestLeaseSpreadBalanceFullySpendable: one client sends requests in turn to three edges
// (in a random order) until the first 402. That refusal must be true — what is left cannot
// cover the request's hold — although every edge held a lease with unspent credit when the
// balance ran low.
func TestLeaseSpreadBalanceFullySpendable(t *testing.T) {
	e := startLeaseStack(t, 3)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	const credits = 30
	acct, key := e.account(credits)
	cost := expectedCost(t, leaseModel, leaseTokens)
	hold := leaseHold()
	c := newLeaseClient(e)
	body := leaseBody()

	var served int64
	for {
		edge := rng.IntN(3)
		a := c.post(edge, key, body)
		require.NoError(t, a.err)
		if a.status == http.StatusPaymentRequired {
			h, avail := parse402(t, a.body)
			require.Equal(t, hold, h, "the 402 quotes the request's hold")
			left := int64(credits*1_000_000) - served*cost
			t.Logf("seed %d: refused on edge %d after %d requests: %d µcr left, hold %d, edge says %d available",
				seed, edge, served, left, hold, avail)
			require.Less(t, left, hold, "refused while the account could afford the request (seed %d)", seed)
			require.Less(t, avail, hold)
			break
		}
		require.Equal(t, http.StatusOK, a.status, a.body)
		served++
		require.LessOrEqual(t, served*cost, int64(credits*1_000_000), "overdrawn")
	}
	e.waitBalance(acct, int64(credits*1_000_000)-served*cost)
	e.waitLeasesReturned(acct, 20*time.Second)
}

// TestLeaseKilledEdgeCreditReturns: an edge killed while holding a lease cannot return it;
// ledgerd reclaims its unspent credit after the TTL plus the grace period.
func TestLeaseKilledEdgeCreditReturns(t *testing.T) {
	e := startLeaseStack(t, 2)
	const credits = 100
	acct, key := e.account(credits)
	cost := expectedCost(t, leaseModel, leaseTokens)
	c := newLeaseClient(e)
	a := c.post(0, key, leaseBody())
	require.NoError(t, a.err)
	require.Equal(t, http.StatusOK, a.status, a.body)
	e.waitBalance(acct, credits*1_000_000-cost)

	before, err := e.admin.Account(context.Background(), acct)
	require.NoError(t, err)
	require.Positive(t, before.ReservedMicrocredits, "edge 0 holds a lease with unspent credit")
	require.Equal(t, before.BalanceMicrocredits-before.ReservedMicrocredits, before.AvailableMicrocredits)
	// GET /v1/balance is net of holds: on edge 0, whose own lease holds the reservation and
	// has nothing running, all of the balance is available; edge 1 sees edge 0's lease taken.
	require.Equal(t, before.BalanceMicrocredits, c.balance(0, key))
	for try := 0; ; try++ { // a background extend of edge 0's lease may move it meanwhile
		now, err := e.admin.Account(context.Background(), acct)
		require.NoError(t, err)
		if got := c.balance(1, key); got == now.AvailableMicrocredits {
			break
		} else if try == 20 {
			require.Equal(t, now.AvailableMicrocredits, got, "edge 1 sees edge 0's lease reserved")
		}
	}

	require.NoError(t, e.s.Edges[0].Kill())
	after := e.waitLeasesReturned(acct, 30*time.Second)
	require.Equal(t, credits*1_000_000-cost, after.AvailableMicrocredits, "all of it is available again")

	// And the other edge can spend it.
	a = c.post(1, key, leaseBody())
	require.NoError(t, a.err)
	require.Equal(t, http.StatusOK, a.status, a.body)
	e.waitBalance(acct, credits*1_000_000-2*cost)
}

// TestLeaseLedgerStopped: with ledgerd stopped, requests within the edge's lease are served
// and the rest get 503 with retry-after; once ledgerd is back, all the usage settles.
func TestLeaseLedgerStopped(t *testing.T) {
	e := startLeaseStack(t, 1)
	const credits = 100
	acct, key := e.account(credits)
	cost := expectedCost(t, leaseModel, leaseTokens)
	hold := leaseHold()
	c := newLeaseClient(e)
	body := leaseBody()
	a := c.post(0, key, body) // the first lease: four holds
	require.NoError(t, a.err)
	require.Equal(t, http.StatusOK, a.status, a.body)

	require.NoError(t, e.s.Ledgerd.Stop(15*time.Second))
	served := int64(1)
	var within int64
	for {
		a := c.post(0, key, body)
		require.NoError(t, a.err)
		if a.status == http.StatusServiceUnavailable {
			require.Contains(t, a.body, `"type":"api_error"`)
			require.NotEmpty(t, a.retryAfter, "503 carries retry-after")
			break
		}
		require.Equal(t, http.StatusOK, a.status, a.body)
		within++
		require.Less(t, within, int64(1000), "served without end while ledgerd is down")
	}
	served += within
	t.Logf("served %d requests within the lease while ledgerd was down", within)
	require.Positive(t, within, "requests within the lease go on")
	// The lease was four holds: what was admitted fits in it.
	require.LessOrEqual(t, within*cost, 4*hold)
	for range 3 {
		a := c.post(0, key, body)
		require.NoError(t, a.err)
		require.Equal(t, http.StatusServiceUnavailable, a.status, "beyond the lease: 503 (%s)", a.body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, e.s.Restart(ctx, e.s.Ledgerd))
	e.waitBalance(acct, credits*1_000_000-served*cost)
	var ok bool
	for range 100 { // the key cache and the lease recover within a few calls
		a := c.post(0, key, body)
		require.NoError(t, a.err)
		if a.status == http.StatusOK {
			ok = true
			served++
			break
		}
		require.Equal(t, http.StatusServiceUnavailable, a.status, a.body)
		time.Sleep(100 * time.Millisecond)
	}
	require.True(t, ok, "served again once ledgerd is back")
	e.waitBalance(acct, credits*1_000_000-served*cost)

	// Every record names the lease its hold came from (settlement lowers that lease's
	// reservation by the record's cost); the ones served while ledgerd was down share the
	// lease granted before.
	leases := leaseIDsOfRecords(t, e.s.KafkaAddr(), acct, int(served))
	require.NotContains(t, leases, "", "records carry their lease_id")
	var biggest int
	for _, n := range leases {
		biggest = max(biggest, n)
	}
	require.GreaterOrEqual(t, int64(biggest), 1+within)
	e.waitLeasesReturned(acct, 20*time.Second)
}

// leaseIDsOfRecords reads the account's usage records from usage.v1 (want of them) and counts
// them by lease_id.
func leaseIDsOfRecords(t *testing.T, broker, accountID string, want int) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := bus.NewConsumer(bus.ConsumerConfig{Brokers: []string{broker}, Topic: usage.Topic,
		Group: fmt.Sprintf("e2e-lease-%d", time.Now().UnixNano())})
	defer c.Close()
	byLease := map[string]int{}
	seen := map[string]bool{}
	for len(seen) < want {
		batch, err := c.FetchBatch(ctx, 1000, 100*time.Millisecond)
		require.NoError(t, err, "reading usage.v1: %d of %d records", len(seen), want)
		for _, m := range batch {
			if string(m.Key) != accountID {
				continue
			}
			rec, err := usage.Decode(m.Value)
			require.NoError(t, err)
			if !seen[rec.RequestID] {
				seen[rec.RequestID] = true
				byLease[rec.LeaseID]++
			}
		}
	}
	return byLease
}
