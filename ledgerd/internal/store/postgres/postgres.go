// Package postgres opens the production ledger on PostgreSQL through pgx's database/sql
// driver, so it runs the same SQL as the embedded SQLite ledger.
package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver

	"tollgate/ledgerd/internal/store/sqlstore"
)

// MaxConns bounds the connection pool. Default for Open.
const MaxConns = 16

// Open connects to dsn (a postgres:// URL or key=value string), checks it answers, and
// applies migrations. now may be nil (time.Now).
func Open(ctx context.Context, dsn string, logger *slog.Logger, now func() time.Time) (*sqlstore.Store, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
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
		},
	}, db.Close)
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}
