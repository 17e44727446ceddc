package verify

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"tollgate/bench/load"
	"tollgate/bench/stack"
	"tollgate/pkg/pricing"
	"tollgate/pkg/usage"
)

func decodeEntry(b []byte) (load.LogEntry, error) {
	var e load.LogEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return load.LogEntry{}, fmt.Errorf("decode: %w", err)
	}
	t := e.Tokens
	for _, n := range []int64{t.Input, t.Output, t.CacheWrite5m, t.CacheWrite1h, t.CacheRead, t.Thinking, t.WebSearchRequests} {
		if n < 0 {
			return load.LogEntry{}, errors.New("negative token count")
		}
	}
	if e.Status < 0 || e.Status > 999 {
		return load.LogEntry{}, fmt.Errorf("status %d out of range", e.Status)
	}
	return e, nil
}

// TablePricer prices with a pkg/pricing table, by the requested model. It is the bench's
// expectation only: the end-to-end tests (bench/e2e) check costs against an independent list
// price table, so the pricing code is not checked against itself there.
func TablePricer(t *pricing.Table) Pricer {
	return func(model string, tok usage.Tokens) (int64, error) {
		m, ok := t.Lookup("", model)
		if !ok {
			return 0, fmt.Errorf("model %q is not in the price table", model)
		}
		return t.Cost(m, tok, pricing.Options{}).Microcredits, nil
	}
}

// Ledger reads account balances (bench/stack.Admin has it).
type Ledger interface {
	Balance(ctx context.Context, accountID string) (int64, error)
}

// Config of a verification against live services.
type Config struct {
	Entries []load.LogEntry
	Keyring load.Keyring
	Ledger  Ledger
	Pricer  Pricer
	// ClickHouseDSN ("clickhouse://127.0.0.1:19000/tollgate") enables the ClickHouse check;
	// the DSN's database holds the requests table. Empty: skipped, with Skipped saying so.
	ClickHouseDSN string
	// Timeout bounds the wait for settlement (ledger within 5 s, analytics about 1 s per
	// batch, by design). Default 60 s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Run checks the log against the ledger and ClickHouse, polling until both agree or the
// timeout passes, and returns the last report. The error is ErrNotVerified when the money
// does not add up, or what stopped the checks from being made.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 60 * time.Second
	}
	exp, err := Expect(cfg.Entries, cfg.Pricer)
	if err != nil {
		return Report{}, err
	}
	for id := range exp.PerAccount {
		if !hasAccount(cfg.Keyring, id) {
			return Report{}, fmt.Errorf("log names account %s, which the key file does not hold", id)
		}
	}
	var db *sql.DB
	var database, skipped string
	if cfg.ClickHouseDSN == "" {
		skipped = "no ClickHouse DSN given (analytics off)"
	} else {
		opts, err := clickhouse.ParseDSN(cfg.ClickHouseDSN)
		if err != nil {
			return Report{}, fmt.Errorf("clickhouse dsn: %w", err)
		}
		database = opts.Auth.Database
		if database == "" {
			database = "tollgate"
		}
		opts.Auth.Database = ""
		opts.Protocol = clickhouse.Native
		opts.DialTimeout = 5 * time.Second
		db = clickhouse.OpenDB(opts)
		defer db.Close()
	}

	deadline := time.Now().Add(cfg.Timeout)
	for {
		rep, err := check(ctx, cfg, exp, db, database, skipped)
		if err == nil && rep.OK {
			return rep, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				return rep, err
			}
			return rep, ErrNotVerified
		}
		if cfg.Logger != nil {
			cfg.Logger.Debug("verify_waiting", "error", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func hasAccount(k load.Keyring, id string) bool {
	for _, a := range k.Accounts {
		if a.ID == id {
			return true
		}
	}
	return false
}

func check(ctx context.Context, cfg Config, exp Expectation, db *sql.DB, database, skipped string) (Report, error) {
	var accounts []LedgerAccount
	ids := make([]string, 0, len(cfg.Keyring.Accounts))
	for _, a := range cfg.Keyring.Accounts {
		bal, err := cfg.Ledger.Balance(ctx, a.ID)
		if err != nil {
			return Report{}, fmt.Errorf("read balance: %w", err)
		}
		accounts = append(accounts, LedgerAccount{ID: a.ID, ToppedUp: a.Credits * 1_000_000, Balance: bal})
		ids = append(ids, a.ID)
	}
	ledger := CheckLedger(exp, accounts)
	if db == nil {
		return Verdict(exp, ledger, nil, skipped), nil
	}
	rows, final, err := QueryClickHouse(ctx, db, database, ids)
	if err != nil {
		return Verdict(exp, ledger, nil, "query failed: "+err.Error()), err
	}
	ch := CheckClickHouse(exp, rows, final)
	return Verdict(exp, ledger, &ch, ""), nil
}

// QueryClickHouse reads, for the given accounts, each request id's rows and cost range, and
// the FINAL total a deduplicating finance query sees.
func QueryClickHouse(ctx context.Context, db *sql.DB, database string, accounts []string) ([]CHRow, int64, error) {
	if !validIdent(database) {
		return nil, 0, fmt.Errorf("database name %q: want [A-Za-z0-9_]", database)
	}
	if len(accounts) == 0 {
		return nil, 0, nil
	}
	in := strings.TrimSuffix(strings.Repeat("?,", len(accounts)), ",")
	args := make([]any, len(accounts))
	for i, a := range accounts {
		args[i] = a
	}
	q := "SELECT request_id, any(account_id), count(), min(cost_microcredits), max(cost_microcredits) FROM " +
		database + ".requests WHERE account_id IN (" + in + ") GROUP BY request_id"
	rs, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("query requests: %w", err)
	}
	defer rs.Close()
	var out []CHRow
	for rs.Next() {
		var r CHRow
		var n uint64
		if err := rs.Scan(&r.RequestID, &r.AccountID, &n, &r.MinCost, &r.MaxCost); err != nil {
			return nil, 0, fmt.Errorf("scan requests: %w", err)
		}
		r.Rows = int64(n)
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		return nil, 0, fmt.Errorf("read requests: %w", err)
	}
	var final int64
	err = db.QueryRowContext(ctx, "SELECT sum(cost_microcredits) FROM "+database+".requests FINAL WHERE account_id IN ("+in+")",
		args...).Scan(&final)
	if err != nil {
		return nil, 0, fmt.Errorf("query final sum: %w", err)
	}
	return out, final, nil
}

func validIdent(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// AdminLedger reads balances through ledgerd's admin API.
type AdminLedger struct{ Admin *stack.Admin }

// Balance is the account's settled balance_microcredits.
func (l AdminLedger) Balance(ctx context.Context, accountID string) (int64, error) {
	a, err := l.Admin.Account(ctx, accountID)
	if err != nil {
		return 0, err
	}
	return a.BalanceMicrocredits, nil
}
