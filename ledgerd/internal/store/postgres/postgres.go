// Package postgres opens the production ledger on PostgreSQL through pgx's database/sql
// driver, so it runs the same SQL as the embedded SQLite ledger.
package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"tollgate/ledgerd/internal/store/sqlstore"
)

// MaxConns bounds the connection pool. Default for Open.
const MaxConns = 16

// Open connects to dsn (a postgres:// URL or key=value string), checks it answers, and
// applies migrations. now may be nil (time.Now).
func Open(ctx context.Context, dsn string, logger *slog.Logger, now func() time.Time) (*sqlstore.Store, error) {
	db, err := openDB(dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(MaxConns)
	db.SetMaxIdleConns(MaxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect postgres: %w", err)
	}
	s, err := sqlstore.New(ctx, sqlstore.Options{
		Write: db, Read: db, Logger: logger, Now: now,
		Dialect: sqlstore.Dialect{
			Name:      "postgres",
			ForUpdate: " FOR UPDATE",
			// Any constant works; it only has to be the same in every ledgerd.
			MigrationLock:     "SELECT pg_advisory_xact_lock(7305001)",
			SnapshotIsolation: sql.LevelRepeatableRead,
			Arrays:            true,
			ModifyingCTE:      true,
		},
	}, db.Close)
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// openDB returns a pool whose every session commits durably (durableCommits).
func openDB(dsn string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	return stdlib.OpenDB(*cfg, stdlib.OptionAfterConnect(durableCommits)), nil
}

// durableCommits makes a session wait for each commit to reach the WAL. Settlement commits
// its Kafka offsets after the database commit, so a commit the server acknowledged and then
// lost in a crash — what synchronous_commit = off allows, and some servers run with it for
// speed — would be a batch of charges lost for good: Kafka never redelivers it, and the
// offsets stored with it are lost with it. Found by TestPostgresDownLedgerCatchesUp
// (bench/e2e). Stronger settings of the server (remote_write, remote_apply) are kept.
func durableCommits(ctx context.Context, c *pgx.Conn) error {
	var v string
	if err := c.QueryRow(ctx, "SHOW synchronous_commit").Scan(&v); err != nil {
		return fmt.Errorf("read synchronous_commit: %w", err)
	}
	if v != "off" {
		return nil
	}
	if _, err := c.Exec(ctx, "SET synchronous_commit = on"); err != nil {
		return fmt.Errorf("set synchronous_commit: %w", err)
	}
	return nil
}
