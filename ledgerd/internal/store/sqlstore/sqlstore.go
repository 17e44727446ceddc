// Package sqlstore implements store.Store over database/sql with SQL that runs unchanged on
// PostgreSQL and SQLite ($n placeholders, ON CONFLICT, RETURNING, CASE instead of LEAST). The
// only differences live in Dialect. store/sqlite and store/postgres open the connections and
// pick the dialect; everything else is here, so both databases run the same statements —
// except the one-statement lease grant and extend, which only PostgreSQL can run
// (Dialect.ModifyingCTE) and which fall back to the shared transactions.
//
// Concurrency: every write runs in one transaction. On PostgreSQL (READ COMMITTED) rows that
// a transaction reads to compute an update are locked with FOR UPDATE, always in the order
// account → its leases → its lots, accounts in id order, so several ledgerd instances on one
// database neither lose updates nor (outside of bugs) deadlock. On SQLite, transactions start
// with BEGIN IMMEDIATE on a single writer connection and are therefore serialized.
package sqlstore

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"tollgate/deploy"
	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/store"
)

// migrations are the schema files under deploy/postgres, one source for ledgerd and for DBAs.
var migrations = deploy.LedgerMigrations

// Dialect holds what differs between the databases.
type Dialect struct {
	Name string
	// ForUpdate is appended to a SELECT of rows the transaction will update: " FOR UPDATE"
	// on PostgreSQL; "" on SQLite, whose write transactions are serialized anyway.
	ForUpdate string
	// MigrationLock runs first in the migration transaction so instances starting together
	// do not race; "" when transactions are serialized anyway.
	MigrationLock string
	// SnapshotIsolation is the isolation level of read transactions that run several
	// statements and need them to see one snapshot (statements, reports, audits):
	// REPEATABLE READ on PostgreSQL (READ COMMITTED would give each statement its own);
	// the default on SQLite, where a WAL read transaction is a snapshot already.
	SnapshotIsolation sql.IsolationLevel
	// Arrays: the database takes arrays as parameters (PostgreSQL's unnest), so settlement
	// inserts a whole batch of request ids with one statement instead of chunks.
	Arrays bool
	// Positional: generated multi-row statements use "?" placeholders. SQLite looks each
	// named "$n" up in a list when it prepares a statement, so a statement with thousands of
	// "$n" costs quadratic time to prepare (measured: 10,000 parameters took longer than the
	// rest of a settlement batch together); "?" is numbered in passing.
	Positional bool
	// ModifyingCTE: the database runs INSERT and UPDATE inside WITH as parts of one statement
	// (PostgreSQL; SQLite does not), so a lease grant or extend is one statement: one round
	// trip instead of a transaction of five to seven (leases.go).
	ModifyingCTE bool
	// ReuseStatements: prepare the generated settlement statements once on the writer
	// connection and reuse them (SQLite, whose driver parses every unprepared statement
	// again: a batch's multi-row statements spent a third of settlement's CPU in the
	// parser). Multi-row statements then come in chunks of a few fixed sizes and IN lists
	// are padded, so their texts repeat. PostgreSQL's driver caches prepared statements per
	// connection itself, and there every extra chunk would be a round trip.
	ReuseStatements bool
}

// Options configure a Store.
type Options struct {
	// Write is the pool for transactions. SQLite: exactly one connection.
	Write *sql.DB
	// Read is the pool for plain reads; may be the same as Write.
	Read    *sql.DB
	Dialect Dialect
	Logger  *slog.Logger
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// Store is the SQL ledger store. Safe for concurrent use.
type Store struct {
	w, r    *sql.DB
	d       Dialect
	log     *slog.Logger
	now     func() time.Time
	closeFn func() error

	// Prepared writer statements by text (Dialect.ReuseStatements). A statement a
	// transaction runs unprepared is noted in wanted and prepared after the transaction,
	// when the writer connection is free (SQLite has exactly one).
	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt
	wanted map[string]bool
}

// stmtsMax bounds the prepared statements kept; statements past it run unprepared. The
// generated texts number about a hundred (reuseRowsMax, inListMax).
const stmtsMax = 512

var _ store.Store = (*Store)(nil)

// New applies pending migrations and returns the store. closeFn closes the pools.
func New(ctx context.Context, o Options, closeFn func() error) (*Store, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{w: o.Write, r: o.Read, d: o.Dialect, log: o.Logger, now: o.Now, closeFn: closeFn}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Close closes the prepared statements and the connection pools. Idempotent.
func (s *Store) Close() error {
	if s.closeFn == nil {
		return nil
	}
	f := s.closeFn
	s.closeFn = nil
	s.stmtMu.Lock()
	var errs []error
	for q, st := range s.stmts {
		errs = append(errs, st.Close())
		delete(s.stmts, q)
	}
	s.stmtMu.Unlock()
	return errors.Join(append(errs, f())...)
}

// stmt returns tx's handle on the prepared statement of query, or nil when query is not
// prepared yet (it is then noted, to be prepared after the transaction) or statements are
// not reused.
func (s *Store) stmt(ctx context.Context, tx *sql.Tx, query string) *sql.Stmt {
	if !s.d.ReuseStatements {
		return nil
	}
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	st := s.stmts[query]
	if st == nil {
		if len(s.stmts)+len(s.wanted) < stmtsMax {
			if s.wanted == nil {
				s.wanted = map[string]bool{}
			}
			s.wanted[query] = true
		}
		return nil
	}
	return tx.StmtContext(ctx, st)
}

// exec runs query in tx, prepared if it was prepared before.
func (s *Store) exec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	if st := s.stmt(ctx, tx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, query, args...)
}

// query runs query in tx, prepared if it was prepared before.
func (s *Store) query(ctx context.Context, tx *sql.Tx, query string, args ...any) (*sql.Rows, error) {
	if st := s.stmt(ctx, tx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return tx.QueryContext(ctx, query, args...)
}

// prepareWanted prepares the statements transactions ran unprepared. It runs outside any
// transaction (on SQLite the only writer connection must be free) and without holding
// stmtMu while it prepares, since a transaction holding the connection may need stmtMu. A
// statement that does not prepare stays unprepared: it ran, so it is valid SQL, and a
// broken connection shows in the next transaction.
func (s *Store) prepareWanted(ctx context.Context) {
	s.stmtMu.Lock()
	if len(s.wanted) == 0 { // the rule once the texts are prepared: nothing to copy
		s.stmtMu.Unlock()
		return
	}
	queries := make([]string, 0, len(s.wanted))
	for q := range s.wanted {
		queries = append(queries, q)
	}
	clear(s.wanted)
	s.stmtMu.Unlock()
	for _, q := range queries {
		st, err := s.w.PrepareContext(ctx, q)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("prepare_statement_failed", "error", err)
			}
			continue
		}
		s.stmtMu.Lock()
		if s.stmts == nil {
			s.stmts = map[string]*sql.Stmt{}
		}
		if s.stmts[q] == nil {
			s.stmts[q], st = st, nil
		}
		s.stmtMu.Unlock()
		if st != nil {
			st.Close() // another transaction prepared it meanwhile
		}
	}
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("ping %s: %w", s.d.Name, err)
	}
	return nil
}

func (s *Store) migrate(ctx context.Context) error {
	names, err := migrationNames()
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		if s.d.MigrationLock != "" {
			if _, err := tx.ExecContext(ctx, s.d.MigrationLock); err != nil {
				return fmt.Errorf("lock migrations: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		seen := map[int]string{}
		for _, name := range names {
			v, err := strconv.Atoi(strings.SplitN(path.Base(name), "_", 2)[0])
			if err != nil {
				return fmt.Errorf("migration %s: version: %w", name, err)
			}
			// Two files with one version would apply only the first, silently.
			if other, dup := seen[v]; dup {
				return fmt.Errorf("migrations %s and %s: same version %d", other, name, v)
			}
			seen[v] = name
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = $1`, v).Scan(&n); err != nil {
				return fmt.Errorf("read schema_migrations: %w", err)
			}
			if n > 0 {
				continue
			}
			body, err := migrations.ReadFile(name)
			if err != nil {
				return fmt.Errorf("read %s: %w", name, err)
			}
			if _, err := tx.ExecContext(ctx, string(body)); err != nil {
				return fmt.Errorf("apply %s: %w", name, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)`,
				v, s.now().UnixMilli()); err != nil {
				return fmt.Errorf("record %s: %w", name, err)
			}
			s.log.Info("migration_applied", "db", s.d.Name, "version", v)
		}
		return nil
	})
}

// migrationNames lists the embedded migrations in the order they apply.
func migrationNames() ([]string, error) {
	names, err := fs.Glob(migrations, "postgres/*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	sort.Strings(names)
	return names, nil
}

// errRetry asks inTxRetry to run the transaction again: a concurrent transaction claimed the
// same idempotency key first, and the next attempt will find its result.
var errRetry = errors.New("retry transaction")

func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if s.d.ReuseStatements {
		defer s.prepareWanted(ctx)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (s *Store) inTxRetry(ctx context.Context, fn func(tx *sql.Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := s.inTx(ctx, fn)
		if !errors.Is(err, errRetry) || attempt == 2 {
			return err
		}
	}
}

// newID is a type prefix and a UUIDv7 in hex: unique, opaque, and time-ordered.
func newID(prefix string) string {
	u := uuid.Must(uuid.NewV7())
	return prefix + "_" + hex.EncodeToString(u[:])
}

func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func invariant(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ledger.ErrInvariant, fmt.Sprintf(format, args...))
}

// queryer is what both *sql.Tx and *sql.DB offer.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func execOne(ctx context.Context, q queryer, query string, args ...any) error {
	res, err := q.ExecContext(ctx, query, args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n != 1 {
		return invariant("%d rows changed, want 1: %s", n, strings.Fields(query)[0:3])
	}
	return nil
}
