// Package sqlite opens the embedded ledger: a SQLite file (modernc.org/sqlite, no cgo) in WAL
// mode, with one writer connection and a small pool of readers.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"tollgate/ledgerd/internal/store/sqlstore"
)

// Readers is the size of the read pool. WAL mode lets readers run beside the writer.
const Readers = 4

// Open opens (creating if needed) the ledger file at path and applies migrations.
// now may be nil (time.Now).
func Open(ctx context.Context, path string, logger *slog.Logger, now func() time.Time) (*sqlstore.Store, error) {
	// WAL: readers never block the writer. busy_timeout: a second process (an operator's
	// sqlite3 shell) waits instead of failing at once. synchronous=FULL: a committed charge
	// survives power loss. _txlock=immediate: write transactions take the write lock at BEGIN,
	// so two of them never deadlock upgrading from a read lock.
	q := "_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)"
	w, err := sql.Open("sqlite", path+"?"+q+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	// One writer: SQLite allows one write transaction at a time; a single connection makes
	// that a queue in Go instead of SQLITE_BUSY retries.
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	r, err := sql.Open("sqlite", path+"?"+q+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	r.SetMaxOpenConns(Readers)
	r.SetMaxIdleConns(Readers)
	closeFn := func() error { return errors.Join(r.Close(), w.Close()) }
	s, err := sqlstore.New(ctx, sqlstore.Options{
		Write: w, Read: r, Logger: logger, Now: now,
		Dialect: sqlstore.Dialect{Name: "sqlite", Positional: true, ReuseStatements: true},
	}, closeFn)
	if err != nil {
		closeFn()
		return nil, err
	}
	return s, nil
}
