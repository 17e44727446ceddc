package clickhouse_test

import (
	"bytes"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/stretchr/testify/require"

	chstore "tollgate/analytics/internal/store/clickhouse"
	"tollgate/analytics/internal/store/storetest"
	"tollgate/pkg/usage"
)

// TestExistingReadsIDTable: on a day of 200,000 rows of 1,000 accounts merged into one part,
// the check of a batch of 2,000 new records plus 5 stored ones from hours earlier (edge WAL
// replays) reads a few granules of request_ids, not the day. The same check on requests (what
// a store that has not seen request_ids complete runs) reads the whole day, and both find the
// same ids. An id present only in request_ids is reported (the check reads that table), until
// VerifyFoundIDs, after which found ids are confirmed in requests.
func TestExistingReadsIDTable(t *testing.T) {
	s, dsn := storetest.Open(t)
	ctx := ctxT(t)
	conn := storetest.Conn(t, dsn)
	dayStart := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const dayRows, span = 200_000, 23 * time.Hour
	for i := range 4 {
		part := span / 4
		recs := storetest.DayRecords(uint64(i), dayRows/4, dayStart.Add(time.Duration(i)*part), part, 1000)
		require.NoError(t, s.Insert(ctx, recs))
	}
	old := storetest.DayRecords(9, 5, dayStart.Add(span-10*time.Hour), 9*time.Hour, 1000)
	require.NoError(t, s.Insert(ctx, old))
	storetest.MergeFinal(t, conn, s.Database(), "requests", "request_ids")
	batch := append(storetest.DayRecords(10, 2000, dayStart.Add(span-2*time.Second), 2*time.Second, 1000), old...)
	want := map[string]struct{}{}
	for _, r := range old {
		want[r.RequestID] = struct{}{}
	}

	rctx, read := storetest.RowsRead(ctx)
	got, err := s.Existing(rctx, batch)
	require.NoError(t, err)
	require.Equal(t, want, got)
	idRows := read()

	before, err := chstore.Open(chstore.Config{DSN: dsn}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer before.Close()
	rctx, read = storetest.RowsRead(ctx)
	got, err = before.Existing(rctx, batch)
	require.NoError(t, err)
	require.Equal(t, want, got)
	t.Logf("rows read: request_ids %d, requests %d", idRows, read())
	// One granule (8,192 rows) or two around the new ids, one (two when it sits on a granule's
	// edge) per straggler; the day has 25.
	require.LessOrEqual(t, idRows, uint64(12*8192), "the check reads request_ids around the batch's ids")
	require.GreaterOrEqual(t, read(), uint64(dayRows), "the check on requests reads the whole day")

	extra := requireChecksIDTable(t, s, conn, s.Database(), batch[0])
	s.VerifyFoundIDs()
	got, err = s.Existing(ctx, append(batch, extra))
	require.NoError(t, err)
	require.Equal(t, want, got, "after VerifyFoundIDs an id only in request_ids is not taken as stored")
}

// requireChecksIDTable stores the id of a new record at like's time in request_ids alone, as no
// insert into requests would, and requires Existing to report it: the check reads request_ids.
// It returns that record.
func requireChecksIDTable(t *testing.T, s *chstore.Store, conn driver.Conn, db string, like usage.Record) usage.Record {
	t.Helper()
	ctx := ctxT(t)
	r := like
	r.RequestID = "only-in-request_ids-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	require.NoError(t, conn.Exec(ctx, "INSERT INTO "+db+".request_ids (request_id, ts) SELECT '"+r.RequestID+
		"', toDateTime("+strconv.FormatInt(chstore.TsSeconds(r.TsEndMs), 10)+")"))
	got, err := s.Existing(ctx, []usage.Record{r})
	require.NoError(t, err)
	require.Contains(t, got, r.RequestID, "the check reads request_ids")
	return r
}

// install is a database set up as an installation from before request_ids.
type install struct {
	s    *chstore.Store // has not applied the current schema
	conn driver.Conn
	db   string
	dsn  string
}

// oldInstall creates the schema as it was before request_ids (schema.sql without its
// request_ids statements), with recs stored, the first dup of them twice (raw duplicate rows,
// as a rebalance can leave).
func oldInstall(t *testing.T, recs []usage.Record, dup int, logs *syncBuffer) install {
	t.Helper()
	ctx := ctxT(t)
	dsn, db := storetest.DSN(t, "")
	in := install{conn: storetest.Conn(t, dsn), db: db, dsn: dsn}
	stmts, err := chstore.SchemaStatements(db)
	require.NoError(t, err)
	for _, q := range stmts {
		if !strings.Contains(q, ".request_ids") {
			require.NoError(t, in.conn.Exec(ctx, q), q)
		}
	}
	in.s = openStore(t, dsn, logs)
	require.NoError(t, in.s.Insert(ctx, recs))
	require.NoError(t, in.s.Insert(ctx, recs[:dup]))
	return in
}

// openStore opens a store that polls the copy's progress every 50 ms and takes a lease for
// dead after 3 s.
func openStore(t *testing.T, dsn string, logs *syncBuffer) *chstore.Store {
	t.Helper()
	s, err := chstore.Open(chstore.Config{DSN: dsn, BackfillPoll: 50 * time.Millisecond, BackfillLeaseTTL: 3 * time.Second},
		slog.New(slog.NewJSONHandler(logs, nil)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func (in install) count(t *testing.T, q string) uint64 {
	t.Helper()
	var n uint64
	require.NoError(t, in.conn.QueryRow(ctxT(t), q).Scan(&n), q)
	return n
}

// TestBackfillRequestIDs: an installation upgraded from before request_ids, with rows on 40
// days (two months) and duplicate rows, gets request_ids and its view at start; its check
// reads requests until the old ids are copied (request_ids is empty then, and every stored
// record is still found); BackfillRequestIDs copies every day once, logging each, and from
// then on the check reads request_ids. A second run, or a new store's start, copies nothing.
func TestBackfillRequestIDs(t *testing.T) {
	logs := &syncBuffer{}
	old := storetest.Records(21, 3000, time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC))
	in := oldInstall(t, old, 100, logs)
	s, db := in.s, in.db
	ctx := ctxT(t)

	require.NoError(t, s.ApplySchema(ctx))
	require.Zero(t, in.count(t, "SELECT count() FROM "+db+".request_ids"))
	got, err := s.Existing(ctx, old)
	require.NoError(t, err)
	require.Len(t, got, len(old), "before the copy, every stored record is found (in requests)")

	// Rows stored after the view exists reach request_ids through it.
	newer := storetest.Records(22, 500, time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC))
	require.NoError(t, s.Insert(ctx, newer))
	require.Equal(t, uint64(len(newer)), in.count(t, "SELECT count() FROM "+db+".request_ids"))

	days := in.count(t, "SELECT uniqExact(toDate(ts)) FROM "+db+".requests")
	rows := in.count(t, "SELECT count() FROM "+db+".requests")
	require.NoError(t, s.BackfillRequestIDs(ctx))
	logged := logs.String()
	require.Equal(t, 1, strings.Count(logged, `"msg":"request_ids_backfill_started"`))
	require.Equal(t, int(days), strings.Count(logged, `"msg":"request_ids_backfill_day"`), "one line per day")
	require.Contains(t, logged, `"msg":"request_ids_backfill_done"`)
	require.Contains(t, logged, `"rows_total":`+strconv.FormatUint(rows, 10))

	all := append(append([]usage.Record{}, old...), newer...)
	require.Equal(t, uint64(len(all)), in.count(t, "SELECT uniqExact(request_id) FROM "+db+".request_ids"))
	got, err = s.Existing(ctx, all)
	require.NoError(t, err)
	require.Len(t, got, len(all))
	requireChecksIDTable(t, s, in.conn, db, old[0])

	// Run again, and start a new store: nothing is copied or recorded. (Raw counts of
	// request_ids only fall as parts merge; a copy would add thousands of rows.)
	events := in.count(t, "SELECT count() FROM "+db+".request_ids_backfill")
	idRows := in.count(t, "SELECT count() FROM "+db+".request_ids")
	require.NoError(t, s.BackfillRequestIDs(ctx))
	again := openStore(t, in.dsn, logs)
	require.NoError(t, again.ApplySchema(ctx))
	require.NoError(t, again.BackfillRequestIDs(ctx))
	require.Equal(t, events, in.count(t, "SELECT count() FROM "+db+".request_ids_backfill"))
	require.LessOrEqual(t, in.count(t, "SELECT count() FROM "+db+".request_ids"), idRows)
	require.Equal(t, 1, strings.Count(logs.String(), `"msg":"request_ids_backfill_started"`))
	requireChecksIDTable(t, again, in.conn, db, newer[0])
}

// TestBackfillOneCopier: two instances starting on an upgraded installation at once copy the
// old ids once between them: one holds the lease, the other waits and then finds the copy
// done. When request_ids is dropped and created again, the copy starts over; an instance that
// finds a lease whose holder stopped renewing it waits for it to lapse, then copies.
func TestBackfillOneCopier(t *testing.T) {
	logsA, logsB := &syncBuffer{}, &syncBuffer{}
	old := storetest.Records(23, 2000, time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC))
	in := oldInstall(t, old, 0, logsA)
	a, b, db := in.s, openStore(t, in.dsn, logsB), in.db
	ctx := ctxT(t)
	require.NoError(t, a.ApplySchema(ctx))
	require.NoError(t, b.ApplySchema(ctx))

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, st := range []*chstore.Store{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = st.BackfillRequestIDs(ctx) }()
	}
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	started := strings.Count(logsA.String(), `"msg":"request_ids_backfill_started"`) +
		strings.Count(logsB.String(), `"msg":"request_ids_backfill_started"`)
	require.Equal(t, 1, started, "one instance copies")
	require.Equal(t, uint64(len(old)), in.count(t, "SELECT uniqExact(request_id) FROM "+db+".request_ids"))
	require.LessOrEqual(t, in.count(t, "SELECT count() FROM "+db+".request_ids"), uint64(len(old)), "each id copied once")

	// request_ids dropped by hand and created again by the next start: the ids stored while
	// it was missing are unknown, so the copy starts over.
	require.NoError(t, in.conn.Exec(ctx, "DROP TABLE "+db+".request_ids_mv"))
	require.NoError(t, in.conn.Exec(ctx, "DROP TABLE "+db+".request_ids"))
	logsC := &syncBuffer{}
	c := openStore(t, in.dsn, logsC)
	require.NoError(t, c.ApplySchema(ctx))
	got, err := c.Existing(ctx, old)
	require.NoError(t, err)
	require.Len(t, got, len(old), "request_ids is empty again: the check reads requests")
	// A lease held by an instance that died: c waits until it lapses (3 s), then copies.
	require.NoError(t, in.conn.Exec(ctx, "INSERT INTO "+db+".request_ids_backfill (event, day, owner, row_count)"+
		" SELECT 'lease', toDate('1970-01-01'), 'a-dead-instance', 0")) // INSERT ... VALUES hangs 18.16's native protocol
	require.NoError(t, c.BackfillRequestIDs(ctx))
	require.Contains(t, logsC.String(), `"holder":"a-dead-instance"`, "it waited for the lease first")
	require.Contains(t, logsC.String(), `"msg":"request_ids_backfill_done"`)
	require.Equal(t, uint64(len(old)), in.count(t, "SELECT uniqExact(request_id) FROM "+db+".request_ids"))
	requireChecksIDTable(t, c, in.conn, db, old[0])
}

// syncBuffer is a bytes.Buffer safe for a logger used from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
