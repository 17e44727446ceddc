package deploy

import "embed"

// ClickHouse holds the analytics schemas: clickhouse/schema.sql (single node, applied by the
// analytics service at start) and clickhouse/cluster.sql (the replicated production form).
//
//go:embed clickhouse/*.sql
var ClickHouse embed.FS
