// Package clickhouse is the ClickHouse implementation of store.Sink and store.Reports, over
// clickhouse-go/v2's native protocol.
//
// It must work on Debian's ClickHouse 18.16 as well as on current releases. Two rules follow
// from 18.16 (DESIGN §10): every insert names its columns, and money stays in Int64. The HTTP
// protocol of clickhouse-go v2 does not work against 18.16, so Open refuses http DSNs.
package clickhouse

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"tollgate/analytics/internal/store"
	"tollgate/pkg/usage"
)

// Config configures the connection. Zero values take the documented defaults.
type Config struct {
	// DSN is clickhouse://[user[:password]@]host:port[/database][?setting=value...].
	// The database defaults to "tollgate"; it is created when missing. Query parameters that
	// are not client options are sent as ClickHouse settings (see cluster.sql for the ones a
	// cluster needs).
	DSN string
	// DialTimeout bounds connecting. Default: 5s.
	DialTimeout time.Duration
	// ReadTimeout bounds one read from the server. Default: 60s.
	ReadTimeout time.Duration
	// ConnsMax is the most open connections. Default: 8.
	ConnsMax int
	// IDQueryBytesMax bounds the request ids quoted into one existence query; ClickHouse
	// refuses queries longer than max_query_size (256 KiB by default). Default: 128 KiB.
	IDQueryBytesMax int
}

func (c *Config) setDefaults() {
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 60 * time.Second
	}
	if c.ConnsMax <= 0 {
		c.ConnsMax = 8
	}
	if c.IDQueryBytesMax <= 0 {
		c.IDQueryBytesMax = 128 << 10
	}
}

// Store talks to one ClickHouse database. Safe for concurrent use.
type Store struct {
	conn driver.Conn
	db   string
	cfg  Config
	log  *slog.Logger
}

var (
	_ store.Sink    = (*Store)(nil)
	_ store.Reports = (*Store)(nil)
)

// CheckDSN reports whether dsn is one Open accepts.
func CheckDSN(dsn string) error {
	_, _, err := parseDSN(dsn)
	return err
}

func parseDSN(dsn string) (*ch.Options, string, error) {
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		return nil, "", fmt.Errorf("parse clickhouse dsn: %w", err)
	}
	if opts.Protocol != ch.Native {
		return nil, "", errors.New("parse clickhouse dsn: only the native protocol (clickhouse://host:9000) is supported")
	}
	db := opts.Auth.Database
	if db == "" {
		db = DefaultDatabase
	}
	if !dbNameRe.MatchString(db) {
		return nil, "", fmt.Errorf("parse clickhouse dsn: database name %q: want letters, digits and _", db)
	}
	return opts, db, nil
}

// Open parses the DSN and builds the connection pool. It does not contact the server; use
// Ping or ApplySchema for that.
func Open(cfg Config, log *slog.Logger) (*Store, error) {
	cfg.setDefaults()
	opts, db, err := parseDSN(cfg.DSN)
	if err != nil {
		return nil, err
	}
	// Connect without a database: the server refuses a handshake naming one that does not
	// exist yet, and ApplySchema creates it. Every query names the database instead.
	opts.Auth.Database = ""
	opts.DialTimeout = cfg.DialTimeout
	opts.ReadTimeout = cfg.ReadTimeout
	opts.MaxOpenConns = cfg.ConnsMax
	opts.MaxIdleConns = cfg.ConnsMax
	opts.ConnMaxLifetime = time.Hour
	opts.ConnOpenStrategy = ch.ConnOpenInOrder
	if opts.Compression == nil {
		opts.Compression = &ch.Compression{Method: ch.CompressionLZ4}
	}
	opts.ClientInfo.Products = append(opts.ClientInfo.Products, struct{ Name, Version string }{"tollgate-analytics", "1"})
	conn, err := ch.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse: %w", err)
	}
	return &Store{conn: conn, db: db, cfg: cfg, log: log}, nil
}

// Database is the database the store uses.
func (s *Store) Database() string { return s.db }

// Ping checks that the server answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.conn.Ping(ctx); err != nil {
		return fmt.Errorf("ping clickhouse: %w", err)
	}
	return nil
}

// ApplySchema creates the database, tables and views of deploy/clickhouse/schema.sql, and the
// consumer's offsets table, that do not exist yet. It never alters existing ones.
func (s *Store) ApplySchema(ctx context.Context) error {
	stmts, err := SchemaStatements(s.db)
	if err != nil {
		return err
	}
	offsets, err := Statements(offsetsSchema, s.db)
	if err != nil {
		return err
	}
	stmts = append(stmts, offsets...)
	for _, q := range stmts {
		if err := s.conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("apply schema statement %q: %w", firstLine(q), err)
		}
	}
	return nil
}

// Close closes the pool. Idempotent.
func (s *Store) Close() error { return s.conn.Close() }

// InsertColumns is the column list of every insert, every column but inserted_at: 18.16 needs it, and it keeps inserts
// working when columns are added to the table.
const InsertColumns = `ts, ts_start_ms, ts_end_ms, ttfb_ms, request_id, v, edge_id, seq,
	account_id, key_id, lease_id, model, model_requested, status, stream, stop_reason,
	error_type, input_tokens, output_tokens, cache_write_5m_tokens, cache_write_1h_tokens,
	cache_read_tokens, thinking_tokens, web_search_requests, estimated, cost_microcredits,
	upstream_cost_microusd, price_version, upstream_key_id, upstream_request_id`

// Insert writes recs as one batch over the native protocol.
func (s *Store) Insert(ctx context.Context, recs []usage.Record) error {
	if len(recs) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.db+".requests ("+InsertColumns+")")
	if err != nil {
		return fmt.Errorf("prepare insert: %w", err)
	}
	defer batch.Close()
	for i := range recs {
		r := &recs[i]
		u := r.Usage
		if err := batch.Append(
			time.Unix(TsSeconds(r.TsEndMs), 0).UTC(), r.TsStartMs, r.TsEndMs, r.TtfbMs,
			r.RequestID, uint32(r.V), r.EdgeID, r.Seq,
			r.AccountID, r.KeyID, r.LeaseID, r.Model, r.ModelRequested,
			int32(r.Status), boolU8(r.Stream), r.StopReason, r.ErrorType,
			u.Input, u.Output, u.CacheWrite5m, u.CacheWrite1h, u.CacheRead, u.Thinking,
			u.WebSearchRequests, boolU8(r.Estimated), r.CostMicrocredits,
			r.UpstreamCostMicroUSD, r.PriceVersion, r.UpstreamKeyID, r.UpstreamRequestID,
		); err != nil {
			return fmt.Errorf("append row %s: %w", r.RequestID, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rows: %w", len(recs), err)
	}
	return nil
}

// Existing asks which request ids of recs are stored. A redelivered record is byte-identical
// to the stored one, so its row has the same ts; each query is narrowed to the ts range of its
// records, which lets ClickHouse skip the partitions and parts outside it (request_id alone
// has no index). Records are sorted by time first so each chunk's range is tight.
func (s *Store) Existing(ctx context.Context, recs []usage.Record) (map[string]struct{}, error) {
	found := make(map[string]struct{})
	if len(recs) == 0 {
		return found, nil
	}
	byTime := make([]*usage.Record, len(recs))
	for i := range recs {
		byTime[i] = &recs[i]
	}
	slices.SortFunc(byTime, func(a, b *usage.Record) int { return cmp.Compare(a.TsEndMs, b.TsEndMs) })

	q := "SELECT request_id FROM " + s.db + ".requests" +
		" WHERE ts >= toDateTime(?) AND ts <= toDateTime(?)" +
		" AND request_id IN (SELECT arrayJoin(?))"
	for start := 0; start < len(byTime); {
		end, size := start, 0
		for end < len(byTime) && (end == start || size+len(byTime[end].RequestID)+4 <= s.cfg.IDQueryBytesMax) {
			size += len(byTime[end].RequestID) + 4 // quotes, comma, space
			end++
		}
		chunk := byTime[start:end]
		ids := make([]string, len(chunk))
		for i, r := range chunk {
			ids[i] = r.RequestID
		}
		lo, hi := TsSeconds(chunk[0].TsEndMs), TsSeconds(chunk[len(chunk)-1].TsEndMs)
		if err := s.collectIDs(ctx, found, q, lo, hi, ids); err != nil {
			return nil, err
		}
		start = end
	}
	return found, nil
}

func (s *Store) collectIDs(ctx context.Context, into map[string]struct{}, q string, args ...any) error {
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("query existing request ids: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return fmt.Errorf("scan request id: %w", err)
		}
		into[id] = struct{}{}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read existing request ids: %w", err)
	}
	return nil
}

// sumColumns are the totals of a report, in store.Totals order. FINAL makes ClickHouse
// collapse duplicate rows (same sorting key, which ends with request_id) before summing, so
// a duplicate that is not merged away yet is not counted; the WHERE clauses filter on ts,
// ts_end_ms and account_id, which duplicates share, so filtering before or after the
// collapse gives the same rows.
const sumColumns = `count(), sum(input_tokens), sum(output_tokens),
	sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cache_read_tokens),
	sum(thinking_tokens), sum(web_search_requests), sum(cost_microcredits),
	sum(upstream_cost_microusd)`

// rangeWhere selects [from, to) on ts_end_ms; the ts bounds let ClickHouse prune partitions.
const rangeWhere = `ts >= toDateTime(?) AND ts <= toDateTime(?) AND ts_end_ms >= ? AND ts_end_ms < ?`

func rangeArgs(from, to time.Time) []any {
	fromMs, toMs := from.UnixMilli(), to.UnixMilli()
	return []any{TsSeconds(fromMs), TsSeconds(toMs - 1), fromMs, toMs}
}

// ByModel implements store.Reports.
func (s *Store) ByModel(ctx context.Context, from, to time.Time) ([]store.ModelTotals, error) {
	q := "SELECT model, " + sumColumns + " FROM " + s.db + ".requests FINAL WHERE " + rangeWhere +
		" GROUP BY model ORDER BY model"
	rows, err := s.conn.Query(ctx, q, rangeArgs(from, to)...)
	if err != nil {
		return nil, fmt.Errorf("query totals by model: %w", err)
	}
	defer rows.Close()
	var out []store.ModelTotals
	for rows.Next() {
		var m store.ModelTotals
		if err := scanTotals(rows, &m.Totals, &m.Model); err != nil {
			return nil, fmt.Errorf("scan totals by model: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read totals by model: %w", err)
	}
	return out, nil
}

// AccountDaily implements store.Reports.
func (s *Store) AccountDaily(ctx context.Context, accountID string, from, to time.Time) ([]store.DayModelTotals, error) {
	q := "SELECT toString(toDate(ts)) AS day, model, " + sumColumns + " FROM " + s.db + ".requests FINAL" +
		" WHERE account_id = ? AND " + rangeWhere + " GROUP BY day, model ORDER BY day, model"
	rows, err := s.conn.Query(ctx, q, append([]any{accountID}, rangeArgs(from, to)...)...)
	if err != nil {
		return nil, fmt.Errorf("query account usage: %w", err)
	}
	defer rows.Close()
	var out []store.DayModelTotals
	for rows.Next() {
		var d store.DayModelTotals
		if err := scanTotals(rows, &d.Totals, &d.Day, &d.Model); err != nil {
			return nil, fmt.Errorf("scan account usage: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read account usage: %w", err)
	}
	return out, nil
}

// scanTotals scans one row: the key columns into keys, then sumColumns into t. count() is
// UInt64 in ClickHouse; Totals stays all int64 so callers add without conversions.
func scanTotals(rows driver.Rows, t *store.Totals, keys ...any) error {
	var n uint64
	dst := append(keys, &n, &t.InputTokens, &t.OutputTokens, &t.CacheWrite5mTokens,
		&t.CacheWrite1hTokens, &t.CacheReadTokens, &t.ThinkingTokens, &t.WebSearchRequests,
		&t.CostMicrocredits, &t.UpstreamCostMicroUSD)
	if err := rows.Scan(dst...); err != nil {
		return err
	}
	if n > math.MaxInt64 {
		return fmt.Errorf("count %d overflows int64", n)
	}
	t.Requests = int64(n)
	return nil
}

// TsSeconds converts Unix milliseconds to the seconds stored in the ts column (DateTime, a
// UInt32), flooring and clamping to its range. Out-of-range times are a producer's bug, but
// the row is still stored — with its exact ts_end_ms — rather than refused.
func TsSeconds(ms int64) int64 {
	s := ms / 1000
	if ms < 0 && ms%1000 != 0 {
		s-- // floor, not truncate
	}
	return min(max(s, 0), math.MaxUint32)
}

func boolU8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
