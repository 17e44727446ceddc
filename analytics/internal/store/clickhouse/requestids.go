package clickhouse

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"sync"
	"time"
)

// The existence check reads request_ids (deploy/clickhouse/schema.sql), a table of every
// stored request id sorted by id, which request_ids_mv fills in the same insert as requests.
// An installation that stored rows before that table existed has ids only in requests; they
// are copied once, in the background, by BackfillRequestIDs, newest day first. Until a day is
// copied, the check reads requests for it, as it did before request_ids existed: correct, only
// as slow as it was.
//
// The copy's progress is kept in request_ids_backfill, so that restarts resume it and several
// analytics instances share it: one copies (it holds a lease, renewed as a heartbeat), the
// others wait and follow its progress, and take over when the lease lapses.

// backfillSchema creates the record of the copy. ApplySchema runs it after schema.sql; on a
// cluster, cluster.sql creates a replicated, Distributed form of it first.
const backfillSchema = `CREATE TABLE IF NOT EXISTS tollgate.request_ids_backfill
(
    event      String,
    day        Date,
    owner      String,
    row_count  UInt64,
    at         DateTime('UTC') DEFAULT now()
)
ENGINE = MergeTree
ORDER BY (event, day)`

// Events of request_ids_backfill. ApplySchema empties the table when it creates request_ids
// or its view: the ids of rows stored while either was missing are unknown, and the copy
// starts again.
const (
	// evLease: owner copies, or is about to; written again every third of the lease TTL.
	evLease = "lease"
	// evPlan: day is the newest day requests had rows on when the copy was planned, after the
	// view existed, so every later day's ids reached request_ids through the view; row_count
	// is the rows to copy in all.
	evPlan = "plan"
	// evDay: every id requests had on day is in request_ids; row_count is how many rows.
	evDay = "day"
	// evComplete: every id requests had before the view existed is in request_ids.
	evComplete = "complete"
)

const secondsPerDay = 86400

// claimSettle is how long an instance waits after writing its claim before it reads the
// claims back. Lease times are whole seconds of the server's clock: a claim that another
// instance writes after this one's read back is then at least a second later, so it cannot
// win, and claims written together are both seen and ranked alike by every instance.
const claimSettle = 2 * time.Second

// idObjectRe matches the statements that create the id table, its view and the copy's record.
var idObjectRe = regexp.MustCompile(`^CREATE (?:TABLE|MATERIALIZED VIEW) IF NOT EXISTS \w+\.request_ids(?:_mv|_backfill)?\s`)

// idCoverage says on which days request_ids holds every stored id. Published whole through
// Store.ids and never changed afterwards.
type idCoverage struct {
	table    bool // request_ids exists, fed by request_ids_mv
	complete bool // every day
	planned  bool // the days after newest, and the copied ones
	newest   int64
	copied   map[int64]bool // by day number (Unix seconds / 86400)
}

// covers reports whether request_ids has every stored id of the days from Unix second lo to hi.
func (c *idCoverage) covers(lo, hi int64) bool {
	switch {
	case !c.table:
		return false
	case c.complete:
		return true
	case !c.planned || hi/secondsPerDay-lo/secondsPerDay > 366:
		return false
	}
	for d := lo / secondsPerDay; d <= hi/secondsPerDay; d++ {
		if d <= c.newest && !c.copied[d] {
			return false
		}
	}
	return true
}

// withDay returns a copy of c with day copied.
func (c *idCoverage) withDay(day int64) *idCoverage {
	n := *c
	n.copied = make(map[int64]bool, len(c.copied)+1)
	for d := range c.copied {
		n.copied[d] = true
	}
	n.copied[day] = true
	return &n
}

// applyIDSchema runs the schema statements, except on a cluster (requests is a Distributed
// table) that lacks the id table, its view or the copy's record: created here they would be
// plain tables on one server, and a view on the Distributed table sees only the inserts made
// through that server, so the check would miss ids. There analytics keeps checking requests
// and says to apply cluster.sql. When it creates request_ids or its view, the copy starts over.
// Then it reads how far the copy is; on an installation without rows it is done.
func (s *Store) applyIDSchema(ctx context.Context, stmts []string) error {
	engines, err := s.tableEngines(ctx)
	if err != nil {
		return err
	}
	missing := engines["request_ids"] == "" || engines["request_ids_mv"] == "" || engines["request_ids_backfill"] == ""
	skipIDs := missing && engines["requests"] == "Distributed"
	for _, q := range stmts {
		if skipIDs && idObjectRe.MatchString(q) {
			continue
		}
		if err := s.conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("apply schema statement %q: %w", firstLine(q), err)
		}
	}
	if skipIDs {
		s.ids.Store(&idCoverage{})
		s.log.Error("request_ids_missing", "database", s.db,
			"detail", "requests is a Distributed table but request_ids, request_ids_mv or request_ids_backfill is "+
				"missing: apply deploy/clickhouse/cluster.sql; until then the existence check reads requests")
		return nil
	}
	if engines["request_ids"] == "" || engines["request_ids_mv"] == "" {
		if err := s.conn.Exec(ctx, "TRUNCATE TABLE "+s.db+".request_ids_backfill"); err != nil {
			return fmt.Errorf("empty request_ids_backfill: %w", err)
		}
	}
	st, err := s.readBackfill(ctx)
	if err != nil {
		return err
	}
	if !st.cov.complete {
		// The view exists now, so with no rows in requests there is nothing to copy.
		has, err := s.HasRequests(ctx)
		if err != nil {
			return err
		}
		if !has {
			if err := s.logBackfill(ctx, evComplete, 0, 0); err != nil {
				return err
			}
			st.cov.complete = true
		}
	}
	s.ids.Store(&st.cov)
	return nil
}

// tableEngines returns the engine of each table and view of the database, by name.
func (s *Store) tableEngines(ctx context.Context) (map[string]string, error) {
	rows, err := s.conn.Query(ctx, "SELECT name, engine FROM system.tables WHERE database = ?", s.db)
	if err != nil {
		return nil, fmt.Errorf("query tables: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, engine string
		if err := rows.Scan(&name, &engine); err != nil {
			return nil, fmt.Errorf("scan table: %w", err)
		}
		out[name] = engine
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read tables: %w", err)
	}
	return out, nil
}

// backfillState is what request_ids_backfill says.
type backfillState struct {
	cov idCoverage
	// holder is the instance whose lease is fresh and oldest (ties: the smaller owner), or "".
	holder string
}

// readBackfill reads the copy's record. Lease ages are the server's clock, so instances whose
// clocks differ agree on them.
func (s *Store) readBackfill(ctx context.Context) (backfillState, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadTimeout) // the caller's may be days away
	defer cancel()
	rows, err := s.conn.Query(ctx, "SELECT event, toInt64(toUInt32(day)), owner, toInt64(min(at)),"+
		" toInt64(now()) - toInt64(max(at)) FROM "+s.db+".request_ids_backfill GROUP BY event, day, owner")
	if err != nil {
		return backfillState{}, fmt.Errorf("query request_ids backfill: %w", err)
	}
	defer rows.Close()
	st := backfillState{cov: idCoverage{table: true, copied: map[int64]bool{}}}
	var holderFirst int64
	for rows.Next() {
		var event, owner string
		var day, first, ageSecs int64
		if err := rows.Scan(&event, &day, &owner, &first, &ageSecs); err != nil {
			return backfillState{}, fmt.Errorf("scan request_ids backfill: %w", err)
		}
		switch event {
		case evComplete:
			st.cov.complete = true
		case evPlan:
			// Two instances that planned at once: either plan is right (each listed the days
			// after the view existed), and the earlier one covers more days.
			if !st.cov.planned || day < st.cov.newest {
				st.cov.newest = day
			}
			st.cov.planned = true
		case evDay:
			st.cov.copied[day] = true
		case evLease:
			if time.Duration(ageSecs)*time.Second >= s.cfg.BackfillLeaseTTL {
				continue
			}
			if st.holder == "" || first < holderFirst || (first == holderFirst && owner < st.holder) {
				st.holder, holderFirst = owner, first
			}
		}
	}
	if err := rows.Err(); err != nil {
		return backfillState{}, fmt.Errorf("read request_ids backfill: %w", err)
	}
	return st, nil
}

// logBackfill appends one event to request_ids_backfill, as s.owner.
func (s *Store) logBackfill(ctx context.Context, event string, day int64, rowCount uint64) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadTimeout) // the caller's may be days away
	defer cancel()
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.db+".request_ids_backfill (event, day, owner, row_count)")
	if err != nil {
		return fmt.Errorf("prepare request_ids backfill %s: %w", event, err)
	}
	defer batch.Close()
	if err := batch.Append(event, time.Unix(day*secondsPerDay, 0).UTC(), s.owner, rowCount); err != nil {
		return fmt.Errorf("append request_ids backfill %s: %w", event, err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert request_ids backfill %s: %w", event, err)
	}
	return nil
}

// BackfillRequestIDs copies into request_ids the ids that requests held before request_ids_mv
// existed, then records that request_ids is complete; from then on the existence check reads
// only request_ids. It returns at once when that is recorded already (every start after the
// first, and every installation that had no rows when the view was created), and after
// ApplySchema refused to create the id table on a cluster. Run it after ApplySchema, beside
// the consumer: until a day is copied the check reads requests for that day. ctx may allow it
// days (a long history); each statement has its own bound, ReadTimeout or, for copying a day
// and listing the days, BackfillCopyTimeout.
//
// One instance copies at a time: it takes a lease in request_ids_backfill and renews it every
// third of BackfillLeaseTTL. The others wait, reading the progress every BackfillPoll (so
// their checks move to request_ids day by day too), and take over when the lease lapses. Two
// that claim at once agree on the holder (the older claim; claimSettle). On a cluster this
// relies on the servers' clocks agreeing to within a second. Days are copied newest first, so
// the check of current traffic is the first to move; each copied day is recorded, so a copy
// that stops (a crash, a timeout) resumes at the next day not recorded. A day copied twice
// (stopped between its insert and its record) leaves its ids twice, which parts merge away
// and the check does not mind. On error, some days may be copied; call it again.
func (s *Store) BackfillRequestIDs(ctx context.Context) error {
	if !s.ids.Load().table {
		return nil
	}
	waitingFor := ""
	for {
		st, err := s.readBackfill(ctx)
		if err != nil {
			return err
		}
		s.ids.Store(&st.cov)
		var wait time.Duration
		switch {
		case st.cov.complete:
			if waitingFor != "" {
				s.log.Info("request_ids_backfill_done_elsewhere", "holder", waitingFor)
			}
			return nil
		case st.holder == s.owner:
			return s.copyIDs(ctx, st.cov)
		case st.holder == "":
			// Claim, then read again once every claim made before this one was read is visible
			// and every later one has a later time: the older claim wins.
			if err := s.logBackfill(ctx, evLease, 0, 0); err != nil {
				return err
			}
			wait = claimSettle
		default:
			if waitingFor != st.holder {
				waitingFor = st.holder
				s.log.Info("request_ids_backfill_waiting", "holder", st.holder, "owner", s.owner,
					"detail", "another analytics instance copies the old request ids; this one follows its progress")
			}
			wait = s.cfg.BackfillPoll
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// copyIDs copies the days cov lacks, newest first, holding the lease.
func (s *Store) copyIDs(ctx context.Context, cov idCoverage) error {
	stop := s.renewLease(ctx)
	defer stop()
	days, err := s.requestDays(ctx)
	if err != nil {
		return err
	}
	if !cov.planned {
		if len(days) == 0 {
			return s.completeBackfill(ctx, &cov, 0, 0, time.Now())
		}
		var total uint64
		for _, d := range days {
			total += d.rows
		}
		if err := s.logBackfill(ctx, evPlan, days[0].day, total); err != nil {
			return err
		}
		cov.planned, cov.newest = true, days[0].day
	}
	var todo []dayRows
	var rowsTotal uint64
	for _, d := range days {
		if d.day <= cov.newest && !cov.copied[d.day] {
			todo = append(todo, d)
			rowsTotal += d.rows
		}
	}
	start := time.Now()
	s.log.Info("request_ids_backfill_started", "days", len(todo), "rows", rowsTotal, "owner", s.owner,
		"detail", "copying the request ids stored before request_ids existed, newest day first; until a day "+
			"is copied the existence check reads requests for it")
	cur := &cov
	var rowsDone uint64
	for i, d := range todo {
		dayStart := time.Now()
		cctx, cancel := context.WithTimeout(ctx, s.cfg.BackfillCopyTimeout)
		err := s.conn.Exec(cctx, "INSERT INTO "+s.db+".request_ids (request_id, ts) SELECT request_id, ts FROM "+
			s.db+".requests WHERE toDate(ts) = toDate('"+dayString(d.day)+"')")
		cancel()
		if err != nil {
			return fmt.Errorf("copy request ids of %s: %w", dayString(d.day), err)
		}
		if err := s.logBackfill(ctx, evDay, d.day, d.rows); err != nil {
			return err
		}
		cur = cur.withDay(d.day)
		s.ids.Store(cur)
		rowsDone += d.rows
		s.log.Info("request_ids_backfill_day", "day", dayString(d.day), "rows", d.rows,
			"seconds", time.Since(dayStart).Seconds(), "days_done", i+1, "days", len(todo),
			"rows_done", rowsDone, "rows_total", rowsTotal)
	}
	return s.completeBackfill(ctx, cur, len(todo), rowsDone, start)
}

func (s *Store) completeBackfill(ctx context.Context, cov *idCoverage, days int, rowCount uint64, start time.Time) error {
	if err := s.logBackfill(ctx, evComplete, 0, rowCount); err != nil {
		return err
	}
	done := *cov
	done.complete = true
	s.ids.Store(&done)
	s.log.Info("request_ids_backfill_done", "days", days, "rows", rowCount,
		"seconds", time.Since(start).Seconds(), "detail", "the existence check reads request_ids only")
	return nil
}

// renewLease writes a lease event every third of the TTL until the returned stop is called.
func (s *Store) renewLease(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(s.cfg.BackfillLeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := s.logBackfill(ctx, evLease, 0, 0); err != nil && ctx.Err() == nil {
				s.log.Warn("request_ids_backfill_lease_failed", "error", err,
					"effect", "another instance may take over and copy the same days again")
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

type dayRows struct {
	day  int64 // Unix seconds / 86400
	rows uint64
}

// requestDays lists the days requests has rows on, newest first. It reads the ts column of
// every row: done once per copy.
func (s *Store) requestDays(ctx context.Context) ([]dayRows, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.BackfillCopyTimeout)
	defer cancel()
	rows, err := s.conn.Query(cctx, "SELECT toInt64(toUInt32(toDate(ts))) AS day, count() FROM "+s.db+".requests"+
		" GROUP BY day ORDER BY day DESC")
	if err != nil {
		return nil, fmt.Errorf("query days of requests: %w", err)
	}
	defer rows.Close()
	var out []dayRows
	for rows.Next() {
		var d dayRows
		if err := rows.Scan(&d.day, &d.rows); err != nil {
			return nil, fmt.Errorf("scan day of requests: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read days of requests: %w", err)
	}
	return out, nil
}

// VerifyFoundIDs makes the existence check confirm in requests every id that request_ids
// reports, for the rest of the store's life. The app calls it when it finds ClickHouse
// restored from a backup: a request_ids copied later than requests holds ids whose rows the
// restored requests lacks, and without this the records read again to restore those rows
// would be skipped as stored. It costs a query on requests only for batches in which ids are
// found (records read again), never for new ones.
func (s *Store) VerifyFoundIDs() { s.verifyFound.Store(true) }

func dayString(day int64) string { return time.Unix(day*secondsPerDay, 0).UTC().Format(time.DateOnly) }

// newOwner names this store in request_ids_backfill: host name and a random suffix, so that
// two processes on one host differ.
func newOwner() string {
	host, err := os.Hostname()
	if err != nil {
		host = "analytics"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}
