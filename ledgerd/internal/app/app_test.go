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
	"os"
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
	cfg, validate, err := app.ParseServe([]string{"-lease-ttl", "45s", "-validate"}, func(k string) string { return env[k] }, io.Discard, slog.New(slog.DiscardHandler))
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
	}, io.Discard, slog.New(slog.DiscardHandler))
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

// TestParsePartitionsAlias: ledgerd reads the partition count under the edge's and analytics'
// name; the old name still works for a release, with a warning naming the new one, and old and
// new set to different values at the same level is refused with advice on which to keep.
func TestParsePartitionsAlias(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    int
		warns   []string // the deprecated names the warnings must mention
		errWant string   // substring of the error; empty: no error
	}{
		{name: "default", want: usage.TopicPartitions},
		{name: "new env", env: map[string]string{"TOLLGATE_KAFKA_PARTITIONS": "12"}, want: 12},
		{name: "new flag beats new env", args: []string{"-kafka-partitions", "3"},
			env: map[string]string{"TOLLGATE_KAFKA_PARTITIONS": "12"}, want: 3},
		{name: "old env", env: map[string]string{"TOLLGATE_TOPIC_PARTITIONS": "7"}, want: 7,
			warns: []string{"TOLLGATE_TOPIC_PARTITIONS"}},
		{name: "old flag", args: []string{"-topic-partitions", "5"}, want: 5, warns: []string{"-topic-partitions"}},
		{name: "old and new env agree", env: map[string]string{"TOLLGATE_TOPIC_PARTITIONS": "12", "TOLLGATE_KAFKA_PARTITIONS": "12"},
			want: 12, warns: []string{"TOLLGATE_TOPIC_PARTITIONS"}},
		{name: "old and new flag agree", args: []string{"-topic-partitions", "4", "-kafka-partitions", "4"}, want: 4,
			warns: []string{"-topic-partitions"}},
		{name: "old flag beats new env", args: []string{"-topic-partitions", "5"},
			env: map[string]string{"TOLLGATE_KAFKA_PARTITIONS": "12"}, want: 5, warns: []string{"-topic-partitions"}},
		{name: "new flag beats old env", args: []string{"-kafka-partitions", "3"},
			env: map[string]string{"TOLLGATE_TOPIC_PARTITIONS": "12"}, want: 3, warns: []string{"TOLLGATE_TOPIC_PARTITIONS"}},
		{name: "old and new env differ", env: map[string]string{"TOLLGATE_TOPIC_PARTITIONS": "6", "TOLLGATE_KAFKA_PARTITIONS": "12"},
			warns:   []string{"TOLLGATE_TOPIC_PARTITIONS"},
			errWant: "TOLLGATE_TOPIC_PARTITIONS=6 and TOLLGATE_KAFKA_PARTITIONS=12 differ: keep TOLLGATE_KAFKA_PARTITIONS and remove TOLLGATE_TOPIC_PARTITIONS"},
		{name: "old and new flag differ", args: []string{"-topic-partitions", "6", "-kafka-partitions", "12"},
			warns:   []string{"-topic-partitions"},
			errWant: "-topic-partitions=6 and -kafka-partitions=12 differ: keep -kafka-partitions and remove -topic-partitions"},
		{name: "old env not a number", env: map[string]string{"TOLLGATE_TOPIC_PARTITIONS": "many"},
			warns: []string{"TOLLGATE_TOPIC_PARTITIONS"}, errWant: "TOLLGATE_TOPIC_PARTITIONS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&logs, nil))
			cfg, _, err := app.ParseServe(tc.args, func(k string) string { return tc.env[k] }, io.Discard, log)
			if tc.errWant != "" {
				require.ErrorContains(t, err, tc.errWant)
			} else {
				require.NoError(t, err)
				require.Equal(t, tc.want, cfg.KafkaPartitions)
				require.NoError(t, cfg.Validate())
			}
			var warned []string
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				if line == "" {
					continue
				}
				var e struct{ Level, Msg, Deprecated, Use string }
				require.NoError(t, json.Unmarshal([]byte(line), &e), line)
				require.Equal(t, "WARN", e.Level, line)
				require.Equal(t, "config_name_deprecated", e.Msg, line)
				require.Equal(t, strings.NewReplacer("TOPIC", "KAFKA", "topic", "kafka").Replace(e.Deprecated), e.Use,
					"the warning names the new name")
				warned = append(warned, e.Deprecated)
			}
			require.ElementsMatch(t, tc.warns, warned)
		})
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

// A database restored from a backup is behind Kafka's consumer offsets: the records in
// between must still settle into it (once), not be skipped because the group had moved on.
func TestRestoredDatabaseSettlesWhatItLacks(t *testing.T) {
	brokers := bustest.Start(t, 3, usage.Topic, usage.TopicDLQ)
	dir := t.TempDir()
	db := filepath.Join(dir, "ledger.db")
	cfg := app.DefaultConfig()
	cfg.DB = db
	cfg.KafkaBrokers = brokers
	cfg.AdminAddr, cfg.InternalAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.AdminToken, cfg.InternalSecret = adminToken, edgeSecret
	cfg.BatchLinger = 20 * time.Millisecond
	require.NoError(t, cfg.Validate())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// run starts ledgerd on the database, runs f against its admin URL, and stops it.
	run := func(f func(adminURL string)) {
		t.Helper()
		actx, stop := context.WithCancel(ctx)
		a, err := app.New(actx, cfg, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- a.Run(actx) }()
		f("http://" + a.AdminAddr())
		stop()
		require.NoError(t, <-done)
	}
	admin := func(adminURL string, args ...string) string {
		var out, errb bytes.Buffer
		env := map[string]string{"TOLLGATE_ADMIN_URL": adminURL, "TOLLGATE_ADMIN_TOKEN": adminToken}
		code := cli.Run(ctx, args, func(k string) string { return env[k] }, &out, &errb)
		require.Equal(t, 0, code, "ledgerd admin %v: %s", args, errb.String())
		return out.String()
	}
	balance := func(adminURL, acct string) int64 {
		var view struct {
			Balance int64 `json:"balance_microcredits"`
		}
		req, _ := http.NewRequest("GET", adminURL+"/admin/v1/accounts/"+acct, nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&view) != nil {
			return -1
		}
		return view.Balance
	}
	p := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.Topic})
	defer p.Close()
	send := func(acct, id string, cost int64) {
		rec := usage.Record{V: 1, RequestID: id, AccountID: acct, KeyID: "key-1", CostMicrocredits: cost,
			TsEndMs: time.Now().UnixMilli()}
		require.NoError(t, p.Send(ctx, bus.Message{Key: []byte(acct), Value: rec.AppendJSON(nil)}))
	}
	settled := func(adminURL, acct string, want int64) {
		require.Eventually(t, func() bool { return balance(adminURL, acct) == want }, 30*time.Second, 20*time.Millisecond,
			"balance %d µcr", want)
	}

	// 1,000 credits, then two requests settled: the backup is taken after them.
	var acct string
	run(func(u string) {
		var created struct{ ID string }
		require.NoError(t, json.Unmarshal([]byte(admin(u, "-json", "create-account", "-name", "Acme")), &created))
		acct = created.ID
		admin(u, "topup", acct, "-order", "o-1", "-plan", "credits_1k")
		send(acct, "req-1", 1_500_000)
		send(acct, "req-2", 500_000)
		settled(u, acct, 998_000_000)
	})
	backup := copyFiles(t, dir, "ledger.db")

	// Two more settle after the backup; Kafka's committed offsets move past them.
	run(func(u string) {
		send(acct, "req-3", 2_000_000)
		send(acct, "req-4", 250_000)
		settled(u, acct, 995_750_000)
	})

	// The database is restored: it has never seen req-3 and req-4. They settle again, once.
	restoreFiles(t, dir, backup)
	run(func(u string) {
		settled(u, acct, 995_750_000)
		send(acct, "req-5", 1_000_000) // and settlement goes on from there
		settled(u, acct, 994_750_000)
		require.Contains(t, admin(u, "statement", acct), "-2.000000")
	})
}

// copyFiles copies dir's files whose names start with prefix (a SQLite database and its
// -wal and -shm files) and returns them by name.
func copyFiles(t *testing.T, dir, prefix string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	out := map[string][]byte{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			require.NoError(t, err)
			out[e.Name()] = b
		}
	}
	require.NotEmpty(t, out)
	return out
}

// restoreFiles puts back what copyFiles took, removing the files of that database that the
// backup did not have.
func restoreFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		if _, ok := files[e.Name()]; !ok && strings.HasPrefix(e.Name(), "ledger.db") {
			require.NoError(t, os.Remove(filepath.Join(dir, e.Name())))
		}
	}
	for name, b := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
	}
}
