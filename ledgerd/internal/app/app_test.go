package app_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/app"
	"tollgate/ledgerd/internal/cli"
	"tollgate/pkg/bus"
	"tollgate/pkg/bus/bustest"
	"tollgate/pkg/ledgerapi"
	"tollgate/pkg/usage"
)

const (
	adminToken = "admin-token-0123456789"
	edgeSecret = "edge-secret-0123456789"
)

func TestParseAndValidate(t *testing.T) {
	env := map[string]string{
		"TOLLGATE_DATA_DIR":          "/var/lib/tollgate",
		"TOLLGATE_KAFKA_BROKERS":     "k1:9092, k2:9092",
		"TOLLGATE_LEDGER_ADMIN_ADDR": "127.0.0.1:9999",
		"TOLLGATE_LEASE_TTL":         "90s",
	}
	cfg, validate, err := app.ParseServe([]string{"-lease-ttl", "45s", "-validate"}, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)
	require.True(t, validate)
	require.Equal(t, "/var/lib/tollgate/ledger.db", cfg.DB)
	require.Equal(t, []string{"k1:9092", "k2:9092"}, cfg.KafkaBrokers)
	require.Equal(t, "127.0.0.1:9999", cfg.AdminAddr)
	require.Equal(t, 45*time.Second, cfg.LeaseTTL, "the flag beats the environment")
	require.NoError(t, cfg.Validate())
	require.False(t, cfg.IsPostgres())

	_, _, err = app.ParseServe(nil, func(k string) string {
		return map[string]string{"TOLLGATE_LEASE_TTL": "soon"}[k]
	}, io.Discard)
	require.ErrorContains(t, err, "TOLLGATE_LEASE_TTL")

	bad := app.DefaultConfig()
	bad.DB = "x.db"
	bad.KafkaBrokers = []string{"nohost"}
	bad.AdminToken = "short"
	bad.BatchMax = 0
	bad.LeaseGrace = -time.Second
	err = bad.Validate()
	require.Error(t, err)
	for _, field := range []string{"kafka:", "admin-token:", "batch-max:", "lease-grace:"} {
		require.ErrorContains(t, err, field, "every problem is reported at once")
	}
}

// TestServe runs the whole service on SQLite and the in-process Kafka broker: an operator
// creates an account, tops it up and issues a key with the CLI; an edge looks the key up and
// takes a lease; a usage record on Kafka settles against the lease; shutdown is clean.
func TestServe(t *testing.T) {
	brokers := bustest.Start(t, 3, usage.Topic, usage.TopicDLQ)
	cfg := app.DefaultConfig()
	cfg.DB = filepath.Join(t.TempDir(), "ledger.db")
	cfg.KafkaBrokers = brokers
	cfg.AdminAddr, cfg.InternalAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.AdminToken, cfg.InternalSecret = adminToken, edgeSecret
	cfg.BatchLinger = 20 * time.Millisecond
	require.NoError(t, cfg.Validate())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := app.New(ctx, cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	adminURL, intURL := "http://"+a.AdminAddr(), "http://"+a.InternalAddr()

	get := func(url, token string) (int, string) {
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	st, _ := get(adminURL+"/healthz", "")
	require.Equal(t, http.StatusOK, st)
	st, _ = get(adminURL+"/readyz", "")
	require.Equal(t, http.StatusOK, st)

	admin := func(args ...string) string {
		var out, errb bytes.Buffer
		env := map[string]string{"TOLLGATE_ADMIN_URL": adminURL, "TOLLGATE_ADMIN_TOKEN": adminToken}
		code := cli.Run(ctx, args, func(k string) string { return env[k] }, &out, &errb)
		require.Equal(t, 0, code, "ledgerd admin %v: %s", args, errb.String())
		return out.String()
	}
	var created struct{ ID string }
	require.NoError(t, json.Unmarshal([]byte(admin("-json", "create-account", "-name", "Acme")), &created))
	acct := created.ID
	require.Contains(t, admin("topup", acct, "-order", "o-1", "-plan", "credits_1k"), "1000.000000 credits")
	var key struct{ ID, Key string }
	require.NoError(t, json.Unmarshal([]byte(admin("issue-key", "-json", "-name", "prod", acct)), &key))
	require.Contains(t, admin("keys", acct), key.ID)

	// The edge's view.
	sum := sha256.Sum256([]byte(key.Key))
	st, body := get(intURL+"/internal/v1/keys/"+hex.EncodeToString(sum[:]), edgeSecret)
	require.Equal(t, http.StatusOK, st, body)
	var k ledgerapi.Key
	require.NoError(t, json.Unmarshal([]byte(body), &k))
	require.Equal(t, acct, k.AccountID)
	st, _ = get(intURL+"/internal/v1/keys/"+hex.EncodeToString(sum[:]), adminToken)
	require.Equal(t, http.StatusUnauthorized, st, "the admin token is not the edge secret")

	grant, _ := json.Marshal(ledgerapi.Grant{AccountID: acct, EdgeID: "edge-1", WantMicrocredits: 5_000_000, MinMicrocredits: 1})
	req, _ := http.NewRequest("POST", intURL+"/internal/v1/leases", bytes.NewReader(grant))
	req.Header.Set("Authorization", "Bearer "+edgeSecret)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var lease ledgerapi.Lease
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&lease))
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, int64(995_000_000), lease.AvailableMicrocredits)

	// A usage record for 1.5 credits on that lease.
	rec := usage.Record{V: 1, RequestID: "req-1", AccountID: acct, KeyID: key.ID, LeaseID: lease.LeaseID,
		CostMicrocredits: 1_500_000, TsEndMs: time.Now().UnixMilli()}
	p := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.Topic})
	defer p.Close()
	require.NoError(t, p.Send(ctx, bus.Message{Key: []byte(acct), Value: rec.AppendJSON(nil)}))
	var view struct {
		Balance   int64 `json:"balance_microcredits"`
		Available int64 `json:"available_microcredits"`
		Reserved  int64 `json:"reserved_microcredits"`
	}
	// Poll without require: Eventually runs the condition on another goroutine.
	require.Eventually(t, func() bool {
		req, _ := http.NewRequest("GET", adminURL+"/admin/v1/accounts/"+acct, nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&view) == nil && view.Balance != 1_000_000_000
	}, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, int64(998_500_000), view.Balance)
	require.Equal(t, int64(3_500_000), view.Reserved, "settlement lowered the lease's reservation")
	require.Equal(t, int64(995_000_000), view.Available)
	require.Contains(t, admin("statement", acct), "-1.500000")
	st, body = get(adminURL+"/admin/v1/audit", adminToken)
	require.Equal(t, http.StatusOK, st, body)

	st, body = get(adminURL+"/metrics", "")
	require.Equal(t, http.StatusOK, st)
	require.Contains(t, body, `ledgerd_settle_records_total{result="settled"} 1`)
	require.Contains(t, body, `ledgerd_http_requests_total{code="201",listener="admin",route="POST /admin/v1/accounts"} 1`)

	cancel()
	require.NoError(t, <-done)
}

func TestCLIErrors(t *testing.T) {
	var out, errb bytes.Buffer
	getenv := func(string) string { return "" }
	require.Equal(t, 2, cli.Run(context.Background(), nil, getenv, &out, &errb))
	require.Equal(t, 2, cli.Run(context.Background(), []string{"frobnicate"}, getenv, &out, &errb))
	require.Contains(t, errb.String(), "unknown command")
	errb.Reset()
	require.Equal(t, 2, cli.Run(context.Background(), []string{"account"}, getenv, &out, &errb))
	require.True(t, strings.Contains(errb.String(), "ACCOUNT_ID"), errb.String())
}
