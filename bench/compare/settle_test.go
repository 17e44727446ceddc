package compare

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/bench/load"
	"tollgate/bench/load/procstat"
	"tollgate/bench/load/report"
)

// billedLine is a billed log line that ended at endUs.
func billedLine(id string, endUs int64) load.LogEntry {
	return load.LogEntry{RequestID: id, AccountID: "a", Status: 200, Complete: true, EndUnixUs: endUs}
}

func TestComputeSettleLag(t *testing.T) {
	const t0 = int64(1_700_000_000_000_000) // µs since the epoch
	ms := func(us int64) int64 { return us / 1000 }
	cases := []struct {
		name    string
		entries []load.LogEntry
		settled map[string]int64
		want    SettleLag // counts only
		lagsUs  []int64   // what the histogram must hold, in order of size
	}{
		{
			name:    "every request settled",
			entries: []load.LogEntry{billedLine("r1", t0), billedLine("r2", t0+500), billedLine("r3", t0+1_000_000)},
			settled: map[string]int64{"r1": ms(t0) + 250, "r2": ms(t0) + 1000, "r3": ms(t0+1_000_000) + 2000},
			want:    SettleLag{Billed: 3, Settled: 3},
			lagsUs:  []int64{250_000, 999_500, 2_000_000},
		},
		{
			name: "only billed requests count, each id once",
			entries: []load.LogEntry{billedLine("r1", t0),
				{RequestID: "r402", Status: 402, EndUnixUs: t0},                 // refused: nothing to settle
				{Status: 0, Error: "timeout", EndUnixUs: t0},                    // no answer
				{RequestID: "", Status: 200, EndUnixUs: t0},                     // no id: the verifier's error, not ours
				billedLine("r1", t0+5_000_000),                                  // the same id again: first line wins
				{RequestID: "cut", Status: 200, Complete: false, EndUnixUs: t0}, // cut short: billed in full
			},
			settled: map[string]int64{"r1": ms(t0) + 10, "cut": ms(t0) + 20, "r402": ms(t0)},
			want:    SettleLag{Billed: 2, Settled: 2},
			lagsUs:  []int64{10_000, 20_000},
		},
		{
			name:    "missing requests are counted, not measured",
			entries: []load.LogEntry{billedLine("r1", t0), billedLine("r2", t0)},
			settled: map[string]int64{"r2": ms(t0) + 5},
			want:    SettleLag{Billed: 2, Settled: 1, Missing: 1},
			lagsUs:  []int64{5000},
		},
		{
			name:    "an older log without end times",
			entries: []load.LogEntry{billedLine("r1", 0)},
			settled: map[string]int64{"r1": ms(t0)},
			want:    SettleLag{Billed: 1, Settled: 1, NoEndTime: 1},
		},
		{
			// settled_ms is truncated: a record settled 0.3 ms after an end at .900 ms reads
			// 0.6 ms early.
			name:    "settled_ms truncation below the end time counts as zero",
			entries: []load.LogEntry{billedLine("r1", t0+900)},
			settled: map[string]int64{"r1": ms(t0)},
			want:    SettleLag{Billed: 1, Settled: 1, Early: 1},
			lagsUs:  []int64{1}, // the histogram's floor
		},
		{
			name: "nothing billed",
			want: SettleLag{},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ComputeSettleLag(tc.entries, tc.settled)
			require.Equal(t, tc.want.Billed, got.Billed)
			require.Equal(t, tc.want.Settled, got.Settled)
			require.Equal(t, tc.want.Missing, got.Missing)
			require.Equal(t, tc.want.NoEndTime, got.NoEndTime)
			require.Equal(t, tc.want.Early, got.Early)
			require.Equal(t, int64(len(tc.lagsUs)), got.Lag.Count)
			require.Equal(t, int64(len(tc.lagsUs)), got.Hist.TotalCount())
			if len(tc.lagsUs) == 0 {
				require.Empty(t, got.Spectrum)
				return
			}
			// HDR keeps 3 significant digits.
			require.InEpsilon(t, tc.lagsUs[len(tc.lagsUs)-1], got.Lag.MaxUs, 1e-3)
			require.InEpsilon(t, tc.lagsUs[0], got.Hist.Min(), 1e-3)
			require.NotEmpty(t, got.Spectrum)
		})
	}
}

// The percentiles of a known distribution: 1,000 requests whose lags are 1..1000 ms.
// The lag by interval of end time: whole seconds while they fit, wider beyond
// settleIntervalsMax, empty intervals kept so the series stays evenly spaced.
func TestComputeSettleLagIntervals(t *testing.T) {
	const t0, s = int64(1_700_000_000_000_000), int64(1_000_000)
	entries := []load.LogEntry{billedLine("a", t0), billedLine("b", t0+s/2), billedLine("c", t0+2*s+1)}
	settled := map[string]int64{"a": (t0 + 100_000) / 1000, "b": (t0 + s/2 + 300_000) / 1000, "c": (t0 + 2*s + 1 + 2_000_000) / 1000}
	l := ComputeSettleLag(entries, settled)
	require.Len(t, l.Intervals, 3)
	require.Equal(t, LagInterval{From: 0, To: 1, Count: 2, P50Us: l.Intervals[0].P50Us, P99Us: l.Intervals[0].P99Us,
		MaxUs: l.Intervals[0].MaxUs}, l.Intervals[0])
	require.InEpsilon(t, 100_000, l.Intervals[0].P50Us, 1e-3)
	require.InEpsilon(t, 300_000, l.Intervals[0].MaxUs, 1e-3)
	require.Equal(t, LagInterval{From: 1, To: 2}, l.Intervals[1], "no response ended in the second second")
	require.Equal(t, int64(1), l.Intervals[2].Count)
	require.InEpsilon(t, 1_999_000, l.Intervals[2].MaxUs, 1e-3) // settled_ms truncates the end's µs

	// 100 s of responses: 3-second intervals, 34 of them.
	entries, settled = nil, map[string]int64{}
	for i := range int64(101) {
		id := fmt.Sprint(i)
		entries = append(entries, billedLine(id, t0+i*s))
		settled[id] = (t0+i*s)/1000 + 5
	}
	l = ComputeSettleLag(entries, settled)
	require.Len(t, l.Intervals, 34)
	require.Equal(t, 3.0, l.Intervals[1].From)
	var n int64
	for _, iv := range l.Intervals {
		n += iv.Count
	}
	require.Equal(t, int64(101), n)
	require.Equal(t, int64(2), l.Intervals[33].Count) // 99 s and 100 s
}

func TestComputeSettleLagPercentiles(t *testing.T) {
	const t0 = int64(1_700_000_000_000_000)
	var entries []load.LogEntry
	settled := map[string]int64{}
	for i := range 1000 {
		id := fmt.Sprintf("r%d", i)
		entries = append(entries, billedLine(id, t0))
		settled[id] = t0/1000 + int64(i+1)
	}
	l := ComputeSettleLag(entries, settled)
	require.Equal(t, int64(1000), l.Lag.Count)
	require.InEpsilon(t, 500_000, l.Lag.P50Us, 2e-3)
	require.InEpsilon(t, 900_000, l.Lag.P90Us, 2e-3)
	require.InEpsilon(t, 990_000, l.Lag.P99Us, 2e-3)
	require.InEpsilon(t, 1_000_000, l.Lag.MaxUs, 2e-3)
}

// The reader against a real SQLite file with ledgerd's table: lookups span several chunks,
// a row committed during the wait is found, and ids never settled are left out when the wait
// runs out.
func TestSettledReader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	w, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)")
	require.NoError(t, err)
	defer w.Close()
	_, err = w.Exec(`CREATE TABLE settled_requests (request_id TEXT PRIMARY KEY, account_id TEXT NOT NULL,
		tx_id TEXT NOT NULL, cost BIGINT NOT NULL, settled_ms BIGINT NOT NULL)`)
	require.NoError(t, err)
	var ids []string
	tx, err := w.Begin()
	require.NoError(t, err)
	for i := range 1200 { // more than two lookups' worth
		id := fmt.Sprintf("req_%04d", i)
		ids = append(ids, id)
		_, err := tx.Exec(`INSERT INTO settled_requests VALUES (?, 'a', 'jtx', 1, ?)`, id, 1000+i)
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit())

	r, err := openSettled(path)
	require.NoError(t, err)
	defer r.Close()
	ctx := context.Background()

	got, err := r.wait(ctx, ids, 0)
	require.NoError(t, err)
	require.Len(t, got, 1200)
	require.Equal(t, int64(1000+1199), got["req_1199"])

	late := time.AfterFunc(100*time.Millisecond, func() {
		_, _ = w.Exec(`INSERT INTO settled_requests VALUES ('late', 'a', 'jtx', 1, 7)`)
	})
	defer late.Stop()
	got, err = r.wait(ctx, []string{"req_0001", "late"}, time.Minute)
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"req_0001": 1001, "late": 7}, got)

	got, err = r.wait(ctx, []string{"req_0002", "never"}, 0)
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"req_0002": 1002}, got)

	_, err = r.db.Exec(`DELETE FROM settled_requests`)
	require.Error(t, err, "the reader must not be able to write the ledger")

	_, err = openSettled(filepath.Join(t.TempDir(), "absent.db"))
	require.Error(t, err)
	_, err = openSettled("postgres://u@127.0.0.1/ledger")
	require.ErrorContains(t, err, "not a SQLite file")
}

func TestParseLedgerMetrics(t *testing.T) {
	text := `# HELP ledgerd_settle_batches_total Settlement batches committed.
# TYPE ledgerd_settle_batches_total counter
ledgerd_settle_batches_total 12
ledgerd_settle_records_total{result="duplicate"} 3
ledgerd_settle_records_total{result="settled"} 6000
ledgerd_settle_batch_seconds_bucket{le="0.005"} 1
ledgerd_settle_batch_seconds_sum 1.2
ledgerd_settle_batch_seconds_count 12
`
	after, err := parseLedgerMetrics(strings.NewReader(text))
	require.NoError(t, err)
	require.Equal(t, ledgerMetrics{batches: 12, records: 6000, seconds: 1.2, observed: 12}, after)
	s := batchStats(ledgerMetrics{batches: 2, records: 1000, seconds: 0.2, observed: 2}, after)
	require.Equal(t, int64(10), s.Batches)
	require.Equal(t, int64(5000), s.Records)
	require.InDelta(t, 0.1, s.MeanSeconds, 1e-9)
	require.InDelta(t, 500, s.RecordsPerBatch, 1e-9)

	_, err = parseLedgerMetrics(strings.NewReader("ledgerd_settle_batches_total 1\n"))
	require.ErrorContains(t, err, "lack")
	_, err = parseLedgerMetrics(strings.NewReader(strings.Replace(text, " 12\n", " twelve\n", 1)))
	require.Error(t, err)
}

func settleResult(p99Us int64, throughput float64, missing int64, failed int64) *SettleResult {
	r := run(20*time.Second, int64(throughput*20), []int64{2000}, map[string]float64{"edge": 2, "ledgerd": 3})
	r.Throughput, r.Sent, r.Rate = throughput, r.OK+failed, 5000
	if failed > 0 {
		r.Errors["status_503"] = failed
	}
	s := &SettleResult{Rate: 5000, Duration: 20 * time.Second, Load: r, Wait: 1500 * time.Millisecond,
		Lag:     SettleLag{Billed: r.OK, Settled: r.OK - missing, Missing: missing, Hist: load.NewHistogram()},
		Batches: BatchStats{Batches: 40, Records: r.OK, MeanSeconds: 0.05, RecordsPerBatch: float64(r.OK) / 40}}
	load.RecordDuration(s.Lag.Hist, time.Duration(p99Us)*time.Microsecond)
	s.Lag.Lag, s.Lag.Spectrum = load.Summarize(s.Lag.Hist), load.Spectrum(s.Lag.Hist)
	s.Lag.Intervals = []LagInterval{{From: 0, To: 1, Count: 1, P50Us: s.Lag.Lag.P50Us, P99Us: s.Lag.Lag.P99Us, MaxUs: s.Lag.Lag.MaxUs},
		{From: 1, To: 2}}
	s.Procs = settleProcs(r, []*procstat.Snapshot{{CPU: time.Second}, {CPU: 0}}, []*procstat.Snapshot{{CPU: time.Second}, nil}, s.Lag.Billed)
	return s
}

func TestSettleChecks(t *testing.T) {
	cases := []struct {
		name string
		s    *SettleResult
		want map[string]bool
	}{
		{"met", settleResult(400_000, 4995, 0, 0), map[string]bool{"lag": true, "rate": true, "settled": true, "failed": true}},
		{"lag too long", settleResult(1_500_000, 5000, 0, 0), map[string]bool{"lag": false, "rate": true, "settled": true, "failed": true}},
		{"rate not reached", settleResult(400_000, 3000, 0, 0), map[string]bool{"lag": false, "rate": false, "settled": true, "failed": true}},
		{"a request never settled", settleResult(400_000, 5000, 1, 0), map[string]bool{"lag": false, "rate": true, "settled": false, "failed": true}},
		{"failed requests", settleResult(400_000, 5000, 0, 7), map[string]bool{"lag": false, "rate": true, "settled": true, "failed": false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := SettleChecks(tc.s)
			require.Len(t, c, 4)
			got := map[string]bool{"lag": c[0].OK, "rate": c[1].OK, "settled": c[2].OK, "failed": c[3].OK}
			require.Equal(t, tc.want, got)
		})
	}
	require.False(t, SettleChecks(&SettleResult{})[0].OK, "nothing measured is not a pass")
}

func TestSettleProcs(t *testing.T) {
	s := settleResult(400_000, 5000, 0, 0)
	require.Len(t, s.Procs, 3)
	require.Equal(t, "generator", s.Procs[0].Name)
	edge := s.Procs[1]
	require.Equal(t, "edge", edge.Name)
	require.InDelta(t, 0.1, edge.LoadCores, 1e-9)                     // 2 s of CPU over 20 s
	require.InDelta(t, 2e6/100_000, edge.CPUPerRequest, 1e-9)         // no CPU after the load
	require.Equal(t, "not readable after the load", s.Procs[2].Error) // ledgerd's end snapshot is missing
}

func TestSettleMarkdownAndChart(t *testing.T) {
	meta := report.Meta{Scenario: "settle", Date: time.Unix(0, 0), Commit: "c0ffee", Command: "bench compare -scenarios settle"}
	s := settleResult(400_000, 4995, 0, 0)
	res := &ScenarioResult{Meta: meta, Title: "settlement lag", Conns: 1024, Rate: 5000, Shapes: []load.Shape{shapeJSON},
		Settle: s, Checks: SettleChecks(s)}
	md := Markdown(res)
	for _, want := range []string{"| settlement lag p99 (s) at 5,000 req/s | 0.40 | ≤ 1 | met |", "| settlement lag | 1 |",
		"PostgreSQL on another machine", "same machine's wall clock", "| settled / not settled | 99900 / 0 |",
		"| edge | 2.00 | 0.10 | 0.00 | 20.0 |", "| 0–1 | 1 | 400.1 ms |"} {
		require.Contains(t, md, want)
	}
	validXML(t, Chart(res))

	empty := &ScenarioResult{Meta: meta, Title: "settlement lag", Settle: &SettleResult{Batches: BatchStats{Error: "no metrics"}}}
	require.Contains(t, Markdown(empty), "n/a: no metrics")
	validXML(t, Chart(empty))
}
