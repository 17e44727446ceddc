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
	"strconv"
	"strings"
	"sync/atomic"
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
	// BackfillLeaseTTL: the instance copying old ids into request_ids (BackfillRequestIDs)
	// renews its lease every third of this; one silent for this long is taken for dead and
	// another instance takes over. Default: 1m; at least 3s (claims settle for 2s).
	BackfillLeaseTTL time.Duration
	// BackfillPoll is how often an instance waiting for another's copy reads its progress.
	// Default: 10s.
	BackfillPoll time.Duration
	// BackfillCopyTimeout bounds copying one day's ids (one INSERT ... SELECT) and listing the
	// days to copy; it replaces ReadTimeout for those statements. Default: 1h.
	BackfillCopyTimeout time.Duration
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
	if c.BackfillLeaseTTL <= 0 {
		c.BackfillLeaseTTL = time.Minute
	}
	c.BackfillLeaseTTL = max(c.BackfillLeaseTTL, claimSettle+time.Second)
	if c.BackfillPoll <= 0 {
		c.BackfillPoll = 10 * time.Second
	}
	if c.BackfillCopyTimeout <= 0 {
		c.BackfillCopyTimeout = time.Hour
	}
}

// Store talks to one ClickHouse database. Safe for concurrent use.
type Store struct {
	conn  driver.Conn
	db    string
	cfg   Config
	log   *slog.Logger
	owner string // this store in request_ids_backfill
	// ids is where request_ids is complete; until ApplySchema has read it, nowhere, and the
	// existence check reads requests.
	ids atomic.Pointer[idCoverage]
	// verifyFound: confirm in requests the ids found in request_ids (VerifyFoundIDs).
	verifyFound atomic.Bool
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
	s := &Store{conn: conn, db: db, cfg: cfg, log: log, owner: newOwner()}
	s.ids.Store(&idCoverage{})
	return s, nil
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

// ApplySchema creates the database, tables and views of deploy/clickhouse/schema.sql, the
// consumer's offsets table and the record of the request id copy, that do not exist yet. It
// never alters existing ones. It then reads how far request_ids is complete (see
// BackfillRequestIDs), which decides what the existence check reads.
func (s *Store) ApplySchema(ctx context.Context) error {
	stmts, err := SchemaStatements(s.db)
	if err != nil {
		return err
	}
	for _, extra := range []string{offsetsSchema, backfillSchema} {
		more, err := Statements(extra, s.db)
		if err != nil {
			return err
		}
		stmts = append(stmts, more...)
	}
	return s.applyIDSchema(ctx, stmts)
}

// Close closes the pool. Idempotent.
func (s *Store) Close() error { return s.conn.Close() }

// insertColumns are the columns of every insert (all but inserted_at: 18.16 needs the list,
// and it keeps inserts working when columns are added to the table) and how each is filled
// from the records, as the slice type clickhouse-go's column of that ClickHouse type appends.
var insertColumns = []insertColumn{
	col("ts", i64Buf, func(r *usage.Record) int64 { return TsSeconds(r.TsEndMs) }), // DateTime takes Unix seconds
	col("ts_start_ms", i64Buf, func(r *usage.Record) int64 { return r.TsStartMs }),
	col("ts_end_ms", i64Buf, func(r *usage.Record) int64 { return r.TsEndMs }),
	col("ttfb_ms", i64Buf, func(r *usage.Record) int64 { return r.TtfbMs }),
	col("request_id", strBuf, func(r *usage.Record) string { return r.RequestID }),
	col("v", nil, func(r *usage.Record) uint32 { return uint32(r.V) }),
	col("edge_id", strBuf, func(r *usage.Record) string { return r.EdgeID }),
	col("seq", nil, func(r *usage.Record) uint64 { return r.Seq }),
	col("account_id", strBuf, func(r *usage.Record) string { return r.AccountID }),
	col("key_id", strBuf, func(r *usage.Record) string { return r.KeyID }),
	col("lease_id", strBuf, func(r *usage.Record) string { return r.LeaseID }),
	col("model", strBuf, func(r *usage.Record) string { return r.Model }),
	col("model_requested", strBuf, func(r *usage.Record) string { return r.ModelRequested }),
	col("status", nil, func(r *usage.Record) int32 { return int32(r.Status) }),
	col("stream", u8Buf, func(r *usage.Record) uint8 { return boolU8(r.Stream) }),
	col("stop_reason", strBuf, func(r *usage.Record) string { return r.StopReason }),
	col("error_type", strBuf, func(r *usage.Record) string { return r.ErrorType }),
	col("input_tokens", i64Buf, func(r *usage.Record) int64 { return r.Usage.Input }),
	col("output_tokens", i64Buf, func(r *usage.Record) int64 { return r.Usage.Output }),
	col("cache_write_5m_tokens", i64Buf, func(r *usage.Record) int64 { return r.Usage.CacheWrite5m }),
	col("cache_write_1h_tokens", i64Buf, func(r *usage.Record) int64 { return r.Usage.CacheWrite1h }),
	col("cache_read_tokens", i64Buf, func(r *usage.Record) int64 { return r.Usage.CacheRead }),
	col("thinking_tokens", i64Buf, func(r *usage.Record) int64 { return r.Usage.Thinking }),
	col("web_search_requests", i64Buf, func(r *usage.Record) int64 { return r.Usage.WebSearchRequests }),
	col("estimated", u8Buf, func(r *usage.Record) uint8 { return boolU8(r.Estimated) }),
	col("cost_microcredits", i64Buf, func(r *usage.Record) int64 { return r.CostMicrocredits }),
	col("upstream_cost_microusd", i64Buf, func(r *usage.Record) int64 { return r.UpstreamCostMicroUSD }),
	col("price_version", strBuf, func(r *usage.Record) string { return r.PriceVersion }),
	col("upstream_key_id", strBuf, func(r *usage.Record) string { return r.UpstreamKeyID }),
	col("upstream_request_id", strBuf, func(r *usage.Record) string { return r.UpstreamRequestID }),
}

// InsertColumns is the column list of every insert, from insertColumns.
var InsertColumns = func() string {
	names := make([]string, len(insertColumns))
	for i, c := range insertColumns {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}()

// insertColumnByName indexes insertColumns.
var insertColumnByName = func() map[string]insertColumn {
	m := make(map[string]insertColumn, len(insertColumns))
	for _, c := range insertColumns {
		m[c.name] = c
	}
	return m
}()

// insertColumn is one column of insertColumns: values returns its values for recs, in a
// slice that stays valid until the next call with the same scratch.
type insertColumn struct {
	name   string
	values func(c *columnScratch, recs []usage.Record) any
}

// columnScratch holds one slice of each Go type most insert columns take, reused from column
// to column: clickhouse-go copies an appended slice into the column's own buffer.
type columnScratch struct {
	str []string
	i64 []int64
	u8  []uint8
}

// The scratch slices a column may reuse; nil (for the types of one column each) allocates.
func strBuf(c *columnScratch) *[]string { return &c.str }
func i64Buf(c *columnScratch) *[]int64  { return &c.i64 }
func u8Buf(c *columnScratch) *[]uint8   { return &c.u8 }

// col makes the insert column name, filled by value from each record into scratch's buffer.
func col[T any](name string, scratch func(*columnScratch) *[]T, value func(*usage.Record) T) insertColumn {
	return insertColumn{name: name, values: func(c *columnScratch, recs []usage.Record) any {
		buf := new([]T)
		if scratch != nil {
			buf = scratch(c)
		}
		return fill(buf, recs, value)
	}}
}

// Insert writes recs as one batch over the native protocol. The batch is filled a column at
// a time, each from one typed slice: batch.Append(row...) boxes a row's 30 values in
// interfaces and type-switches on each, which cost more CPU than decoding the record
// (BenchmarkConsumeToClickHouse in analytics/internal/consume).
func (s *Store) Insert(ctx context.Context, recs []usage.Record) error {
	if len(recs) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.db+".requests ("+InsertColumns+")")
	if err != nil {
		return fmt.Errorf("prepare insert: %w", err)
	}
	defer batch.Close()
	// The server's header names the columns; they are filled by name, so the order of
	// insertColumns does not matter. A column it names that insertColumns lacks, or one left
	// short, would send a broken block: both are refused here.
	var scratch columnScratch
	for i, bc := range batch.Columns() {
		c, ok := insertColumnByName[bc.Name()]
		if !ok {
			return fmt.Errorf("insert: no values for column %q of the server's insert header", bc.Name())
		}
		if err := batch.Column(i).Append(c.values(&scratch, recs)); err != nil {
			return fmt.Errorf("append column %s: %w", bc.Name(), err)
		}
		if bc.Rows() != len(recs) {
			return fmt.Errorf("append column %s: %d rows, want %d", bc.Name(), bc.Rows(), len(recs))
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rows: %w", len(recs), err)
	}
	return nil
}

// fill sets *buf to value(r) for each of recs, reusing its array, and returns it.
func fill[T any](buf *[]T, recs []usage.Record, value func(*usage.Record) T) []T {
	if cap(*buf) < len(recs) {
		*buf = make([]T, len(recs))
	}
	s := (*buf)[:len(recs)]
	for i := range recs {
		s[i] = value(&recs[i])
	}
	*buf = s
	return s
}

// Existing asks which request ids of recs are stored. A redelivered record is byte-identical
// to the stored one, so its row has the same ts; each query is narrowed to the ts range of its
// records. Records are sorted by time first so each chunk's range is tight.
//
// The query reads request_ids, sorted by request_id: edge ids are UUIDv7, ordered by time, so
// a chunk's ids lie together and its primary key reads only the granules around them, however
// many rows the day has. For days whose ids are not all in request_ids yet (an installation
// upgraded while BackfillRequestIDs copies its old ids), it reads requests instead, which is
// sorted by day and account first: the ts range lets ClickHouse skip other days, but within
// the day it reads every granule that holds an account boundary, up to the whole day. After
// VerifyFoundIDs, ids found in request_ids are confirmed in requests.
//
// The ids are written into the query by appendQuoted, not bound as a []string argument:
// clickhouse-go formats each element of a bound slice through reflection, a string replacer
// and fmt, which cost more than the rest of the check. The query then has no arguments, so
// clickhouse-go leaves it untouched (it would otherwise look for placeholders in the ids).
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

	cov, verify := s.ids.Load(), s.verifyFound.Load()
	var q []byte
	for start := 0; start < len(byTime); {
		end, size := start, 0
		for end < len(byTime) && (end == start || size+len(byTime[end].RequestID)+4 <= s.cfg.IDQueryBytesMax) {
			size += len(byTime[end].RequestID) + 4 // quotes, comma, space
			end++
		}
		chunk := byTime[start:end]
		start = end
		covered := cov.covers(TsSeconds(chunk[0].TsEndMs), TsSeconds(chunk[len(chunk)-1].TsEndMs))
		if !covered || !verify {
			table := "requests"
			if covered {
				table = "request_ids"
			}
			q = s.appendExistsQuery(q[:0], table, chunk)
			if err := s.collectIDs(ctx, found, string(q)); err != nil {
				return nil, err
			}
			continue
		}
		q = s.appendExistsQuery(q[:0], "request_ids", chunk)
		inIDs := make(map[string]struct{})
		if err := s.collectIDs(ctx, inIDs, string(q)); err != nil {
			return nil, err
		}
		if len(inIDs) == 0 {
			continue
		}
		confirm := make([]*usage.Record, 0, len(inIDs)) // still sorted by time
		for _, r := range chunk {
			if _, ok := inIDs[r.RequestID]; ok {
				confirm = append(confirm, r)
			}
		}
		q = s.appendExistsQuery(q[:0], "requests", confirm)
		if err := s.collectIDs(ctx, found, string(q)); err != nil {
			return nil, err
		}
	}
	return found, nil
}

// appendExistsQuery appends the query for which ids of recs (sorted by time) table holds
// within their ts range: request_ids and requests both have request_id and ts.
func (s *Store) appendExistsQuery(q []byte, table string, recs []*usage.Record) []byte {
	q = append(q, "SELECT request_id FROM "...)
	q = append(q, s.db...)
	q = append(q, '.')
	q = append(q, table...)
	q = append(q, " WHERE ts >= toDateTime("...)
	q = strconv.AppendInt(q, TsSeconds(recs[0].TsEndMs), 10)
	q = append(q, ") AND ts <= toDateTime("...)
	q = strconv.AppendInt(q, TsSeconds(recs[len(recs)-1].TsEndMs), 10)
	q = append(q, ") AND request_id IN (SELECT arrayJoin(["...)
	for i, r := range recs {
		if i > 0 {
			q = append(q, ", "...)
		}
		q = appendQuoted(q, r.RequestID)
	}
	return append(q, "]))"...)
}

// appendQuoted appends v as a ClickHouse string literal, escaped as clickhouse-go escapes a
// bound string: backslash, quote and NUL get a backslash. Any other byte, UTF-8 included,
// stands for itself inside quotes.
func appendQuoted(dst []byte, v string) []byte {
	dst = append(dst, '\'')
	if !strings.ContainsAny(v, "\\'\x00") {
		dst = append(dst, v...)
		return append(dst, '\'')
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\', '\'':
			dst = append(dst, '\\', c)
		case 0:
			dst = append(dst, '\\', '0')
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '\'')
}

func (s *Store) collectIDs(ctx context.Context, into map[string]struct{}, q string) error {
	rows, err := s.conn.Query(ctx, q)
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
