package compare

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	_ "modernc.org/sqlite" // the "sqlite" driver, the one ledgerd's SQLite store uses

	"tollgate/bench/load"
	"tollgate/bench/load/procstat"
	"tollgate/bench/load/report"
	"tollgate/bench/verify"
)

// Bounds of the settle scenario's waits. Each ends the wait, not the run: what is still
// unsettled is reported.
const (
	// settleDrainMax bounds the wait, before the load, for earlier scenarios' records (which
	// the background, reniced, left behind) to settle, so the scenario's lag is its own.
	settleDrainMax = 90 * time.Second
	// settleWaitMax bounds the wait, after the load, for the scenario's own records.
	settleWaitMax = time.Minute
	// settlePoll is how often settled_requests is read during the waits. The lag comes from
	// ledgerd's settled_ms, not from when the poll saw a row, so the poll only sets how long
	// the wait lasts, and a slow poll costs the background less CPU.
	settlePoll = 500 * time.Millisecond
	// settleIntervalsMax bounds the lag-over-time series: intervals are whole seconds, as
	// many as fit, at most this many, so a disturbed second shows without a long run growing
	// the result.
	settleIntervalsMax = 40
	// settleQueryIDs is how many request ids one lookup carries (SQLite allows 32,766
	// parameters; a modest statement keeps each read transaction short beside the writer).
	settleQueryIDs = 500
)

// SettleTarget is the settlement-lag target: p99 at most 1 s at 5,000 req/s.
const (
	settleTargetP99  = time.Second
	settleTargetRate = 5000.0
	// settleRateShortfall is how far below the target rate the achieved rate may be (OK
	// answers over the time from the first send to the last answer, which includes the last
	// requests' latency) and still count as at the target rate.
	settleRateShortfall = 0.98
)

// SettleLag is how long after each response ended its usage record was settled in the ledger.
type SettleLag struct {
	// Billed counts the requests answered 200 with a request id: each must settle.
	Billed int64 `json:"billed"`
	// Settled counts those found in settled_requests; Missing those that were not.
	Settled int64 `json:"settled"`
	Missing int64 `json:"missing"`
	// NoEndTime counts settled requests whose log line has no end time (a log written before
	// end_unix_us existed); they are not in the histogram.
	NoEndTime int64 `json:"no_end_time,omitempty"`
	// Early counts requests whose settled_ms is before their end time; settled_ms is truncated
	// to the millisecond, so a lag under 1 ms can come out negative. They count as 0.
	Early int64 `json:"settled_before_end,omitempty"`
	// Lag is settled_ms − end time, in µs.
	Lag      load.Summary `json:"lag"`
	Spectrum []load.Point `json:"lag_spectrum,omitempty"`
	// Intervals is the lag by when the responses ended, so a stall (of ledgerd, the broker, or
	// another tenant of the machine) shows as the seconds it hit rather than only as a tail.
	Intervals []LagInterval `json:"lag_by_interval,omitempty"`
	// Hist holds every lag. Not serialized.
	Hist *hdrhistogram.Histogram `json:"-"`
}

// LagInterval is the lag of the responses that ended in [From, To) seconds after the first.
type LagInterval struct {
	From  float64 `json:"from_s"`
	To    float64 `json:"to_s"`
	Count int64   `json:"count"`
	P50Us int64   `json:"p50_us"`
	P99Us int64   `json:"p99_us"`
	MaxUs int64   `json:"max_us"`
}

// ComputeSettleLag pairs each billed request of a log with the settled_ms of its request id
// (settledMs, as read from settled_requests) and returns the lag distribution, overall and by
// interval of end time. A request id the log holds twice counts once, at its first line.
func ComputeSettleLag(entries []load.LogEntry, settledMs map[string]int64) SettleLag {
	l := SettleLag{Hist: load.NewHistogram()}
	type measured struct{ endUs, lagUs int64 }
	var ms []measured
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		if !billed(e) || seen[e.RequestID] {
			continue
		}
		seen[e.RequestID] = true
		l.Billed++
		settled, ok := settledMs[e.RequestID]
		if !ok {
			l.Missing++
			continue
		}
		l.Settled++
		if e.EndUnixUs == 0 {
			l.NoEndTime++
			continue
		}
		lagUs := settled*1000 - e.EndUnixUs
		if lagUs < 0 {
			l.Early++
			lagUs = 0
		}
		load.RecordDuration(l.Hist, time.Duration(lagUs)*time.Microsecond)
		ms = append(ms, measured{e.EndUnixUs, lagUs})
	}
	l.Lag, l.Spectrum = load.Summarize(l.Hist), load.Spectrum(l.Hist)
	if len(ms) == 0 {
		return l
	}
	first, last := ms[0].endUs, ms[0].endUs
	for _, m := range ms {
		first, last = min(first, m.endUs), max(last, m.endUs)
	}
	// Whole seconds, as many as fit in settleIntervalsMax.
	const second = int64(time.Second / time.Microsecond)
	width := max(1, ((last-first)/second+settleIntervalsMax)/settleIntervalsMax) * second
	hists := make([]*hdrhistogram.Histogram, (last-first)/width+1)
	for _, m := range ms {
		i := (m.endUs - first) / width
		if hists[i] == nil {
			hists[i] = load.NewHistogram()
		}
		load.RecordDuration(hists[i], time.Duration(m.lagUs)*time.Microsecond)
	}
	for i, h := range hists {
		iv := LagInterval{From: float64(int64(i)*width) / 1e6, To: float64(int64(i+1)*width) / 1e6}
		if h != nil {
			s := load.Summarize(h)
			iv.Count, iv.P50Us, iv.P99Us, iv.MaxUs = s.Count, s.P50Us, s.P99Us, s.MaxUs
		}
		l.Intervals = append(l.Intervals, iv)
	}
	return l
}

// billed reports whether the edge billed a request: answered 200 with a request id, as the
// verifier counts it (a 200 cut short on the client is still billed in full).
func billed(e load.LogEntry) bool { return e.Status == 200 && e.RequestID != "" }

// billedIDs are the request ids of a log's billed requests, each once.
func billedIDs(entries []load.LogEntry) []string {
	seen := make(map[string]bool, len(entries))
	var ids []string
	for _, e := range entries {
		if billed(e) && !seen[e.RequestID] {
			seen[e.RequestID] = true
			ids = append(ids, e.RequestID)
		}
	}
	return ids
}

// settledReader reads settled_requests from ledgerd's SQLite file while ledgerd writes it.
type settledReader struct{ db *sql.DB }

// openSettled opens the ledger file read-only. In WAL mode a reader never blocks ledgerd's
// writer and sees only committed rows; the busy timeout covers the moments SQLite itself
// holds a lock (a checkpoint, the WAL index being rebuilt).
func openSettled(path string) (*settledReader, error) {
	if strings.Contains(path, "://") {
		return nil, fmt.Errorf("ledger %q is not a SQLite file: the settle scenario reads the stack's SQLite ledger", path)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open ledger file: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)&_pragma=query_only(1)")
	if err != nil {
		return nil, fmt.Errorf("open ledger file %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	return &settledReader{db: db}, nil
}

func (r *settledReader) Close() error { return r.db.Close() }

// lookup adds to into the settled_ms of those ids that are in settled_requests.
func (r *settledReader) lookup(ctx context.Context, ids []string, into map[string]int64) error {
	for start := 0; start < len(ids); start += settleQueryIDs {
		part := ids[start:min(start+settleQueryIDs, len(ids))]
		args := make([]any, len(part))
		for i, id := range part {
			args[i] = id
		}
		q := "SELECT request_id, settled_ms FROM settled_requests WHERE request_id IN (?" +
			strings.Repeat(",?", len(part)-1) + ")"
		rows, err := r.db.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("query settled requests: %w", err)
		}
		for rows.Next() {
			var id string
			var ms int64
			if err := rows.Scan(&id, &ms); err != nil {
				rows.Close()
				return fmt.Errorf("scan settled request: %w", err)
			}
			into[id] = ms
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("query settled requests: %w", err)
		}
	}
	return nil
}

// wait polls until every id is in settled_requests or limit has passed, and returns the
// settled_ms of those found. Each poll asks only for the ids still missing.
func (r *settledReader) wait(ctx context.Context, ids []string, limit time.Duration) (map[string]int64, error) {
	found := make(map[string]int64, len(ids))
	deadline := time.Now().Add(limit)
	missing := ids
	for {
		if err := r.lookup(ctx, missing, found); err != nil {
			return found, err
		}
		var rest []string
		for _, id := range missing {
			if _, ok := found[id]; !ok {
				rest = append(rest, id)
			}
		}
		missing = rest
		if len(missing) == 0 || !time.Now().Before(deadline) {
			return found, nil
		}
		select {
		case <-ctx.Done():
			return found, ctx.Err()
		case <-time.After(settlePoll):
		}
	}
}

// BatchStats is what ledgerd's settlement metrics say about the scenario: how the records
// were grouped into batches and how long a batch took from fetch to commit. settled_ms is
// taken when a batch's transaction starts, so the balance becomes visible up to one batch's
// database time later than the lag says; these figures bound that.
type BatchStats struct {
	Batches         int64   `json:"batches"`
	Records         int64   `json:"records_settled"`
	MeanSeconds     float64 `json:"mean_fetch_to_commit_seconds"`
	RecordsPerBatch float64 `json:"records_per_batch"`
	Error           string  `json:"error,omitempty"`
}

// ledgerMetrics are the counters BatchStats is computed from.
type ledgerMetrics struct{ batches, records, seconds, observed float64 }

// readLedgerMetrics scrapes ledgerd's /metrics (the admin listener; no token needed).
func readLedgerMetrics(ctx context.Context, adminURL string) (ledgerMetrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, adminURL+"/metrics", nil)
	if err != nil {
		return ledgerMetrics{}, fmt.Errorf("metrics request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ledgerMetrics{}, fmt.Errorf("get ledgerd metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ledgerMetrics{}, fmt.Errorf("get ledgerd metrics: %s", resp.Status)
	}
	return parseLedgerMetrics(io.LimitReader(resp.Body, 4<<20))
}

// parseLedgerMetrics reads the settlement counters from Prometheus text exposition.
func parseLedgerMetrics(r io.Reader) (ledgerMetrics, error) {
	var m ledgerMetrics
	want := map[string]*float64{
		"ledgerd_settle_batches_total":                   &m.batches,
		`ledgerd_settle_records_total{result="settled"}`: &m.records,
		"ledgerd_settle_batch_seconds_sum":               &m.seconds,
		"ledgerd_settle_batch_seconds_count":             &m.observed,
	}
	found := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if dst := want[name]; ok && dst != nil {
			v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil {
				return ledgerMetrics{}, fmt.Errorf("metric %s: %w", name, err)
			}
			*dst = v
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return ledgerMetrics{}, fmt.Errorf("read metrics: %w", err)
	}
	if found < len(want) {
		return ledgerMetrics{}, errors.New("ledgerd metrics lack the settlement counters")
	}
	return m, nil
}

func batchStats(before, after ledgerMetrics) BatchStats {
	s := BatchStats{Batches: int64(after.batches - before.batches), Records: int64(after.records - before.records)}
	if n := after.observed - before.observed; n > 0 {
		s.MeanSeconds = (after.seconds - before.seconds) / n
	}
	if s.Batches > 0 {
		s.RecordsPerBatch = float64(s.Records) / float64(s.Batches)
	}
	return s
}

// SettleProc is one process's CPU over the settle scenario: during the load, and from the
// load's end until every record had settled (the background's catch-up).
type SettleProc struct {
	Name          string  `json:"name"`
	LoadCPUSec    float64 `json:"load_cpu_seconds"`
	LoadCores     float64 `json:"load_cores"` // LoadCPUSec over the load's elapsed time
	WaitCPUSec    float64 `json:"wait_cpu_seconds"`
	CPUPerRequest float64 `json:"cpu_per_request_us"` // (load + wait) CPU per billed request
	RSSPeakBytes  int64   `json:"rss_peak_bytes"`
	Error         string  `json:"error,omitempty"`
}

// SettleResult is what the settle scenario measured.
type SettleResult struct {
	Rate     float64       `json:"rate"`
	Duration time.Duration `json:"duration_ns"`
	Load     *load.Result  `json:"load"`
	Lag      SettleLag     `json:"settlement_lag"`
	// Wait runs from the load's end until the last record settled (or the wait gave up).
	Wait time.Duration `json:"wait_ns"`
	// Drain is how long earlier scenarios' records took to settle before the load began;
	// DrainLeft how many of them still had not.
	Drain     time.Duration `json:"drain_ns"`
	DrainLeft int           `json:"drain_left"`
	Procs     []SettleProc  `json:"procs"`
	Batches   BatchStats    `json:"ledgerd_batches"`
}

// settle runs the edge in an open loop at SettleRate with the background at normal priority,
// then measures, per request, how long after its response ended ledgerd settled it.
func (c *comparer) settle(ctx context.Context, sc Scenario, res *ScenarioResult) error {
	edge := c.targets[len(c.targets)-1]
	res.Rate = c.cfg.SettleRate
	out := &SettleResult{Rate: c.cfg.SettleRate, Duration: c.cfg.SettleDuration}
	res.Settle = out
	reader, err := openSettled(c.stack.LedgerDB)
	if err != nil {
		return err
	}
	defer reader.Close()

	// The lag includes the consumers' CPU: the scenario runs them at normal priority
	// (BackgroundNormal), as on their own machines.
	offset, err := c.edgeLog.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("request log offset: %w", err)
	}
	earlier, err := c.readEdgeLog(0, offset)
	if err != nil {
		return err
	}
	t0 := time.Now()
	ids := billedIDs(earlier)
	found, err := reader.wait(ctx, ids, settleDrainMax)
	if err != nil {
		return err
	}
	out.Drain, out.DrainLeft = time.Since(t0), len(ids)-len(found)
	c.progress("  settle: %d earlier records settled in %s (%d left)", len(found), out.Drain.Round(time.Millisecond), out.DrainLeft)

	before, merr := readLedgerMetrics(ctx, c.stack.AdminURL())
	c.progress("  settle: %s at %.0f req/s against the edge, background at nice 0", c.cfg.SettleDuration, c.cfg.SettleRate)
	r, err := c.load(ctx, edge, load.Config{Rate: c.cfg.SettleRate, Conns: sc.Conns, Duration: c.cfg.SettleDuration,
		Shapes: sc.Shapes, SampleEvery: 500 * time.Millisecond})
	if err != nil {
		return err
	}
	out.Load = r
	loadEnd := time.Now()
	atLoadEnd := snapshots(edge.watch)

	entries, err := c.readEdgeLog(offset, -1)
	if err != nil {
		return err
	}
	settled, err := reader.wait(ctx, billedIDs(entries), settleWaitMax)
	if err != nil {
		return err
	}
	out.Wait = time.Since(loadEnd)
	atSettled := snapshots(edge.watch)
	out.Lag = ComputeSettleLag(entries, settled)
	out.Procs = settleProcs(r, atLoadEnd, atSettled, out.Lag.Billed)
	if merr == nil {
		var after ledgerMetrics
		if after, merr = readLedgerMetrics(ctx, c.stack.AdminURL()); merr == nil {
			out.Batches = batchStats(before, after)
		}
	}
	if merr != nil {
		out.Batches.Error = merr.Error()
	}
	res.Checks = SettleChecks(out)
	c.progress("  settle: %d ok of %d (%.0f req/s), errors: %s; lag p50 %s p99 %s max %s; %d of %d settled after %s",
		r.OK, r.Sent, r.Throughput, report.Errors(r.Errors), us(out.Lag.Lag.P50Us), us(out.Lag.Lag.P99Us),
		us(out.Lag.Lag.MaxUs), out.Lag.Settled, out.Lag.Billed, out.Wait.Round(time.Millisecond))
	return nil
}

// readEdgeLog reads the edge's request log from byte from to byte to (-1: to the end).
func (c *comparer) readEdgeLog(from, to int64) ([]load.LogEntry, error) {
	f, err := os.Open(c.edgeLog.Name())
	if err != nil {
		return nil, fmt.Errorf("open request log: %w", err)
	}
	defer f.Close()
	if to < 0 {
		st, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("stat request log: %w", err)
		}
		to = st.Size()
	}
	return verify.ReadLog(io.NewSectionReader(f, from, to-from))
}

// snapshots reads every process of ps; a process that cannot be read gets a nil entry.
func snapshots(ps []load.Proc) []*procstat.Snapshot {
	out := make([]*procstat.Snapshot, len(ps))
	for i, p := range ps {
		if s, err := procstat.Read(p.Pid); err == nil {
			out[i] = &s
		}
	}
	return out
}

// settleProcs joins the load's own process figures with each process's CPU during the wait.
// atLoadEnd and atSettled follow the load's watch list, the order of r.Procs.
func settleProcs(r *load.Result, atLoadEnd, atSettled []*procstat.Snapshot, billed int64) []SettleProc {
	var out []SettleProc
	add := func(u load.ProcUsage, wait float64, waitErr string) {
		p := SettleProc{Name: u.Name, LoadCPUSec: u.CPUSeconds, WaitCPUSec: wait, RSSPeakBytes: u.RSSPeakBytes, Error: u.Error}
		if p.Error == "" {
			p.Error = waitErr
		}
		if r.Elapsed > 0 {
			p.LoadCores = u.CPUSeconds / r.Elapsed.Seconds()
		}
		if billed > 0 {
			p.CPUPerRequest = (u.CPUSeconds + wait) * 1e6 / float64(billed)
		}
		out = append(out, p)
	}
	add(r.Generator, 0, "")
	for i, u := range r.Procs {
		var wait float64
		waitErr := "not readable after the load"
		if i < len(atLoadEnd) && atLoadEnd[i] != nil && atSettled[i] != nil {
			wait, waitErr = (atSettled[i].CPU - atLoadEnd[i].CPU).Seconds(), ""
		}
		add(u, wait, waitErr)
	}
	return out
}

// SettleChecks evaluates the settlement-lag target: p99 ≤ 1 s at 5,000 req/s, with
// every billed request settled and none refused.
func SettleChecks(s *SettleResult) []Check {
	p99 := time.Duration(s.Lag.Lag.P99Us) * time.Microsecond
	rate := 0.0
	var errs int64
	if s.Load != nil {
		rate = s.Load.Throughput
		errs = s.Load.Sent - s.Load.OK
	}
	rateOK := rate >= settleRateShortfall*settleTargetRate
	allSettled := s.Lag.Billed > 0 && s.Lag.Missing == 0
	return []Check{
		{"settlement lag p99 (s) at 5,000 req/s", p99.Seconds(), "≤ 1", p99 <= settleTargetP99 && rateOK && allSettled && errs == 0},
		{"achieved rate (req/s)", rate, fmt.Sprintf("≥ %.0f", settleRateShortfall*settleTargetRate), rateOK},
		{"billed requests not settled", float64(s.Lag.Missing), "0", allSettled},
		{"failed requests", float64(errs), "0", errs == 0},
	}
}
