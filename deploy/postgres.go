package deploy

import "embed"

// LedgerMigrations are ledgerd's schema migrations (postgres/NNNN_name.sql), applied in order
// at start on PostgreSQL and on the embedded SQLite alike. The files a DBA reviews are the
// files ledgerd runs.
//
//go:embed postgres/*.sql
var LedgerMigrations embed.FS
