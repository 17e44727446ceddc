package cli_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"tollgate/deploy"
	"tollgate/ledgerd/internal/admin"
	"tollgate/ledgerd/internal/cli"
	"tollgate/ledgerd/internal/plan"
	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/postgres"
	"tollgate/ledgerd/internal/store/sqlite"
	"tollgate/ledgerd/internal/store/storetest"
)

const token = "cli-test-admin-token"

type env struct {
	t     *testing.T
	url   string
	store store.Store
	db    *sql.DB // the same database, for tampering with it behind the ledger's back
	clock *storetest.Clock
}

func eachStore(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("sqlite", func(t *testing.T) {
		clock := storetest.NewClock()
		path := filepath.Join(t.TempDir(), "ledger.db")
		s, err := sqlite.Open(context.Background(), path, nil, clock.Now)
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		fn(t, serve(t, s, db, clock))
	})
	t.Run("postgres", func(t *testing.T) {
		clock := storetest.NewClock()
		dsn := storetest.FreshPostgres(t)
		s, err := postgres.Open(context.Background(), dsn, nil, clock.Now)
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		db, err := sql.Open("pgx", dsn)
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		fn(t, serve(t, s, db, clock))
	})
}

func serve(t *testing.T, s store.Store, db *sql.DB, clock *storetest.Clock) *env {
	plans, err := plan.Parse(deploy.Plans)
	require.NoError(t, err)
	srv := httptest.NewServer(admin.New(admin.Config{Store: s, Plans: plans, Token: token, Logger: slog.New(slog.DiscardHandler), Now: clock.Now}))
	t.Cleanup(srv.Close)
	return &env{t: t, url: srv.URL, store: s, db: db, clock: clock}
}

// run runs `ledgerd admin args…` and returns its exit code, stdout and stderr.
func (e *env) run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	vars := map[string]string{"TOLLGATE_ADMIN_URL": e.url, "TOLLGATE_ADMIN_TOKEN": token}
	code := cli.Run(context.Background(), args, func(k string) string { return vars[k] }, &out, &errb)
	return code, out.String(), errb.String()
}

// ok runs a command that must succeed and returns its output.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	code, out, errs := e.run(args...)
	require.Equal(e.t, 0, code, "ledgerd admin %v: %s", args, errs)
	return out
}

// TestEveryOperation drives each admin operation through the CLI, in readable and JSON form.
func TestEveryOperation(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		var created struct{ ID string }
		require.NoError(t, json.Unmarshal([]byte(e.ok("-json", "create-account", "-name", "Acme")), &created))
		id := created.ID
		require.Contains(t, e.ok("create-account", "-name", "Other"), "created")

		out := e.ok("topup", "-order", "o-1", "-plan", "credits_105k", id)
		require.Contains(t, out, "105000.000000 credits")
		require.Contains(t, out, "$500.00")
		e.ok("topup", "-order", "o-dup", "-credits", "1000", "-usd", "5.00", id)
		e.ok("topup", "-order", "promo", "-credits", "10", "-usd", "0", id)

		out = e.ok("issue-key", "-name", "prod", id)
		require.Contains(t, out, "sk-tg-")
		keyID := strings.Fields(strings.SplitN(out, "\n", 2)[0])[2]
		require.Contains(t, e.ok("keys", id), keyID)
		require.Contains(t, e.ok("revoke-key", keyID), "revoked")

		_, err := e.store.Settle(context.Background(), store.Batch{Group: "g", Topic: "t", Ref: "usage.v1/0:0-0",
			Usage: []store.Usage{{RequestID: "r1", AccountID: id, Cost: 2_500_000}}})
		require.NoError(t, err)

		out = e.ok("refund", "-refund", "rv-1", "-order", "o-dup", "-reason", "paid twice", id)
		require.Regexp(t, `reversed order +o-dup\n`, out)
		require.Contains(t, out, "$5.00")
		// Newest lots first: the 10 free credits ($0), then 5 of the 105k lot.
		out = e.ok("refund", "-refund", "rf-1", "-credits", "15", "-reason", "asked", id)
		require.Regexp(t, `kind +refund\n`, out)
		require.Regexp(t, `to admin +\$0\.02381\n`, out)

		out = e.ok("lots", id)
		require.Contains(t, out, "o-1")
		require.Contains(t, out, "DEFERRED")

		out = e.ok("statement", id)
		for _, want := range []string{"opening", "closing", "topup", "usage", "-2.500000", "reversal", "rv-1", "-0.011904"} {
			require.Contains(t, out, want)
		}
		var st struct {
			Entries []struct{ Kind string } `json:"entries"`
		}
		require.NoError(t, json.Unmarshal([]byte(e.ok("statement", "-format", "json", id)), &st))
		require.Len(t, st.Entries, 6)
		rows, err := csv.NewReader(strings.NewReader(e.ok("statement", "-format", "csv", id))).ReadAll()
		require.NoError(t, err)
		require.Len(t, rows, 8) // header, opening, six entries
		require.Equal(t, admin.StatementCSVHeader, rows[0])

		out = e.ok("ledger")
		for _, want := range []string{"cash:admin", "bonus", "revenue", "refunds", "-505.00"} {
			require.Contains(t, out, want)
		}
		out = e.ok("report", "-from", "2026-11-01T00:00:00Z", "-to", "2026-12-01T00:00:00Z")
		require.Contains(t, out, "deferred revenue, closing")
		require.Contains(t, out, "cash received (admin)")

		out = e.ok("suspend", id)
		require.Contains(t, out, "suspended")
		out = e.ok("resume", id)
		require.Contains(t, out, "active")
		out = e.ok("chargeback", "-id", "dp_1", "-order", "o-1", "-reason", "fraud", id)
		require.Contains(t, out, "suspended")
		out = e.ok("account", id)
		require.Contains(t, out, "0.000000 credits")
		require.Contains(t, out, "suspended")

		require.Contains(t, e.ok("verify"), "ok: the books balance")

		// API errors come back readable, with exit status 1.
		code, _, errs := e.run("refund", "-refund", "rv-2", "-order", "o-dup", id)
		require.Equal(t, 1, code)
		require.Contains(t, errs, "already reversed")
		code, _, errs = e.run("statement", "-format", "xml", id)
		require.Equal(t, 2, code)
		require.Contains(t, errs, "want table, json or csv")
	})
}

// TestVerifyFailsOnTamperedBooks: a balance changed behind the ledger's back makes verify
// name the mismatch and exit 1.
func TestVerifyFailsOnTamperedBooks(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		a, err := e.store.CreateAccount(context.Background(), "acme")
		require.NoError(t, err)
		_, _, err = e.store.TopUp(context.Background(), store.TopUp{AccountID: a.ID, OrderID: "o", Credits: 10, MicroUSD: 50_000, Method: "admin"})
		require.NoError(t, err)
		require.Contains(t, e.ok("verify"), "ok")

		_, err = e.db.Exec(`UPDATE accounts SET balance = balance + 1 WHERE id = $1`, a.ID)
		require.NoError(t, err)
		_, err = e.db.Exec(`UPDATE postings SET microusd = microusd + 7 WHERE account = 'cash:admin'`)
		require.NoError(t, err)
		code, _, errs := e.run("verify")
		require.Equal(t, 1, code)
		require.Contains(t, errs, "do NOT balance")
		require.Contains(t, errs, "account balance differs from its postings (µcr): "+a.ID+" (1)")
		require.Contains(t, errs, "journal transaction does not sum to zero (µ$)")
		require.Contains(t, errs, "ledger account balance differs from its postings (µ$): cash:admin (-7)")
	})
}

func TestUsageErrors(t *testing.T) {
	var out, errb bytes.Buffer
	getenv := func(string) string { return "" }
	require.Equal(t, 2, cli.Run(context.Background(), []string{"verify", "extra"}, getenv, &out, &errb))
	require.Equal(t, 2, cli.Run(context.Background(), []string{"lots"}, getenv, &out, &errb))
	require.Contains(t, cli.Usage, "chargeback")
	require.Contains(t, cli.Usage, "verify")
}
