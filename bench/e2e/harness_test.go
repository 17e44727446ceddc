package e2e_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/stretchr/testify/require"

	"tollgate/bench/stack"
)

// env is one running stack plus what a test needs to drive it.
type env struct {
	t      *testing.T
	s      *stack.Stack
	admin  *stack.Admin
	chAddr string // empty when ClickHouse is not available
	chDB   string
}

// repoDir finds the repository root from the test's working directory.
func repoDir(t *testing.T) string {
	if d := os.Getenv("TOLLGATE_TEST_REPO_DIR"); d != "" {
		return d
	}
	d, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		parent := filepath.Dir(d)
		require.NotEqual(t, parent, d, "go.mod not found above the test")
		d = parent
	}
}

// binDir returns the directory of the built binaries: TOLLGATE_TEST_BIN_DIR (set by make
// test), or a fresh build.
func binDir(t *testing.T) string {
	if d := os.Getenv("TOLLGATE_TEST_BIN_DIR"); d != "" {
		return d
	}
	d := t.TempDir()
	t.Logf("TOLLGATE_TEST_BIN_DIR not set: building the binaries into %s", d)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	require.NoError(t, stack.Build(ctx, repoDir(t), d))
	return d
}

func freePorts(t *testing.T) stack.Ports {
	ps, err := stack.FreePorts(9)
	require.NoError(t, err)
	return stack.Ports{Edge: ps[0], EdgeOps: ps[1], LedgerInternal: ps[2], LedgerAdmin: ps[3],
		Analytics: ps[4], Mock: ps[5], Kafka: ps[6], CHNative: ps[7], CHHTTP: ps[8]}
}

// startStack starts a stack with one edge (edges > 1 need consecutive free ports, which
// freePorts does not promise, so multi-edge tests pass their own Ports).
func startStack(t *testing.T, mutate func(*stack.Config)) *env {
	t.Helper()
	e := &env{t: t, chAddr: os.Getenv("TOLLGATE_TEST_CLICKHOUSE_ADDR")}
	cfg := stack.Config{
		BinDir: binDir(t), RepoDir: repoDir(t), DataDir: t.TempDir(), Ports: freePorts(t),
		Logf: t.Logf,
	}
	if e.chAddr == "" {
		t.Log("TOLLGATE_TEST_CLICKHOUSE_ADDR not set: running WITHOUT analytics; ClickHouse checks SKIPPED (make test sets it)")
		cfg.NoAnalytics = true
	} else {
		e.chDB = fmt.Sprintf("tollgate_e2e_%d", time.Now().UnixNano())
		cfg.ClickHouseDSN = fmt.Sprintf("clickhouse://%s/%s", e.chAddr, e.chDB)
	}
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := stack.Start(ctx, cfg)
	if err != nil {
		dumpLogs(t, cfg.DataDir)
	}
	require.NoError(t, err)
	e.s = s
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			dumpLogs(t, cfg.DataDir)
		}
		if e.chDB != "" {
			if db := e.clickhouse(); db != nil {
				_, _ = db.Exec("DROP DATABASE IF EXISTS " + e.chDB)
				db.Close()
			}
		}
	})
	e.admin = stack.NewAdmin(s.AdminURL(), s.AdminToken())
	return e
}

func dumpLogs(t *testing.T, dataDir string) {
	files, _ := filepath.Glob(filepath.Join(dataDir, "logs", "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		t.Logf("---- %s (tail) ----\n%s", filepath.Base(f), b)
	}
}

// account creates an account with a key and the given whole credits.
func (e *env) account(credits int64) (id, key string) {
	ctx := context.Background()
	id, err := e.admin.CreateAccount(ctx, "e2e")
	require.NoError(e.t, err)
	_, key, err = e.admin.IssueKey(ctx, id, "e2e key")
	require.NoError(e.t, err)
	usd := new(big.Rat).Mul(big.NewRat(credits, 1), big.NewRat(5, 1000)).FloatString(2)
	require.NoError(e.t, e.admin.TopUp(ctx, id, "order-"+id, credits, usd))
	return id, key
}

// settledAccount is account(credits) once its top-up has settled; start is its balance in
// microcredits.
func (e *env) settledAccount(credits int64) (id, key string, start int64) {
	e.t.Helper()
	id, key = e.account(credits)
	start = credits * 1_000_000
	e.waitBalance(id, start)
	return id, key, start
}

// waitBalance polls until the settled balance equals want, failing after 30 s.
func (e *env) waitBalance(accountID string, want int64) {
	e.t.Helper()
	var last stack.Account
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		a, err := e.admin.Account(context.Background(), accountID)
		require.NoError(e.t, err)
		last = a
		if a.BalanceMicrocredits == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("balance of %s: want %d µcr, have %d (diff %d)", accountID, want,
		last.BalanceMicrocredits, last.BalanceMicrocredits-want)
}

func (e *env) clickhouse() *sql.DB {
	if e.chAddr == "" {
		return nil
	}
	return clickhouse.OpenDB(&clickhouse.Options{Addr: []string{e.chAddr},
		Protocol: clickhouse.Native, DialTimeout: 5 * time.Second})
}

// waitClickHouse polls until ClickHouse has rows rows for the account (counting each
// request_id once) and returns (rows, distinct request ids, Σ cost).
func (e *env) waitClickHouse(accountID string, rows int) (int64, int64, int64) {
	e.t.Helper()
	db := e.clickhouse()
	require.NotNil(e.t, db)
	defer db.Close()
	var n, distinct, total int64
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		err := db.QueryRow(fmt.Sprintf(
			"SELECT count(), uniqExact(request_id), sum(cost_microcredits) FROM %s.requests WHERE account_id = ?", e.chDB),
			accountID).Scan(&n, &distinct, &total)
		if err == nil && n >= int64(rows) {
			return n, distinct, total
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.t.Fatalf("ClickHouse rows for %s: want %d, have %d", accountID, rows, n)
	return 0, 0, 0
}

// response is what a client saw.
type response struct {
	Status    int
	Header    http.Header
	Body      []byte
	RequestID string
}

// post sends one /v1/messages request to edge i.
func (e *env) post(i int, key string, body string) response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.s.EdgeURL(i)+"/v1/messages", strings.NewReader(body))
	require.NoError(e.t, err)
	req.Header.Set("x-api-key", key)
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b, RequestID: resp.Header.Get("request-id")}
}

// messageBody builds a request whose last user message carries a mock directive.
func messageBody(model string, stream bool, directive string) string {
	b, _ := json.Marshal(map[string]any{
		"model": model, "max_tokens": 1024, "stream": stream,
		"messages": []map[string]any{{"role": "user", "content": "Say hello.\nmock: " + directive}},
	})
	return string(b)
}

// decodeJSON is a small helper for response bodies.
func decodeJSON(t *testing.T, b []byte) map[string]any {
	var m map[string]any
	require.NoError(t, json.NewDecoder(bytes.NewReader(b)).Decode(&m), "%s", b)
	return m
}
