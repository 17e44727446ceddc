package compare

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/bench/load"
	"tollgate/bench/load/report"
	"tollgate/bench/verify"
)

// run makes a load result whose latencies are the given values in µs, with the given process
// CPU seconds.
func run(elapsed time.Duration, ok int64, latUs []int64, cpu map[string]float64) *load.Result {
	r := &load.Result{Elapsed: elapsed, Sent: ok, OK: ok, Throughput: float64(ok) / elapsed.Seconds(),
		Errors: map[string]int64{}, LatencyHist: load.NewHistogram(), TTFTHist: load.NewHistogram(),
		Generator: load.ProcUsage{Name: "generator", CPUSeconds: 0.5}}
	for _, v := range latUs {
		_ = r.LatencyHist.RecordValue(v)
		_ = r.TTFTHist.RecordValue(v / 2)
	}
	r.Latency, r.TTFT = load.Summarize(r.LatencyHist), load.Summarize(r.TTFTHist)
	for _, name := range []string{"edge", "forwarder", "mock", "ledgerd", "kafka"} {
		if c, ok := cpu[name]; ok {
			r.Procs = append(r.Procs, load.ProcUsage{Name: name, CPUSeconds: c, RSSPeakBytes: int64(c * 1e6)})
		}
	}
	return r
}

func TestAggregate(t *testing.T) {
	a := run(2*time.Second, 2000, []int64{100, 200, 300}, map[string]float64{"edge": 0.1, "mock": 0.2})
	b := run(2*time.Second, 4000, []int64{400}, map[string]float64{"edge": 0.3, "mock": 0.2})
	b.Errors["status_402"] = 3
	b.Sent += 3
	p := Aggregate([]*load.Result{a, b})
	require.Equal(t, 2, p.Runs)
	require.Equal(t, int64(6003), p.Sent)
	require.Equal(t, int64(6000), p.OK)
	require.Equal(t, map[string]int64{"status_402": 3}, p.Errors)
	require.InDelta(t, 1500, p.Throughput, 1e-9) // 6000 over 4 s
	require.InDelta(t, 1000, p.ThroughputMin, 1e-9)
	require.InDelta(t, 2000, p.ThroughputMax, 1e-9)
	require.Equal(t, int64(4), p.Latency.Count)
	require.Equal(t, int64(400), p.Latency.MaxUs)
	require.Equal(t, []int64{200, 400}, p.RoundP50Us)
	edge := p.Proc("edge")
	require.InDelta(t, 0.4, edge.CPUSeconds, 1e-9)
	require.InDelta(t, 0.4e6/6000, edge.CPUPerRequestUs, 1e-9)
	require.Equal(t, int64(300_000), edge.RSSPeakBytes)
	require.InDelta(t, 1e6/6000, p.Generator.CPUPerRequestUs, 1e-9)
	require.Equal(t, "not measured", p.Proc("nope").Error)
	require.Equal(t, []string{"edge", "mock"}, []string{p.Procs[0].Name, p.Procs[1].Name})

	empty := Aggregate(nil)
	require.Zero(t, empty.Throughput)
	require.Zero(t, empty.ThroughputMin)
}

func threeTargets() (TargetResult, TargetResult, TargetResult) {
	mk := func(name, proxy string, tput time.Duration, latUs []int64, cpu map[string]float64) TargetResult {
		// tput is the elapsed time for 10,000 requests: shorter is faster.
		r := run(tput, 10_000, latUs, cpu)
		return TargetResult{Target: name, Proxy: proxy, Closed: Aggregate([]*load.Result{r}), Open: Aggregate([]*load.Result{r})}
	}
	direct := mk(Direct, "", time.Second, []int64{500, 1000}, map[string]float64{"mock": 0.2})
	fwd := mk(Forwarder, "forwarder", 2*time.Second, []int64{560, 1100}, map[string]float64{"forwarder": 0.25, "mock": 0.2})
	edge := mk(Edge, "edge", 2500*time.Millisecond, []int64{600, 1300},
		map[string]float64{"edge": 0.35, "mock": 0.2, "ledgerd": 0.1, "kafka": 0.05})
	return direct, fwd, edge
}

func TestComputeRatiosAndChecks(t *testing.T) {
	direct, fwd, edge := threeTargets()
	r := ComputeRatios(direct, fwd, edge)
	require.InDelta(t, 0.4, r.ThroughputEdgeVsDirect, 1e-9)
	require.InDelta(t, 0.8, r.ThroughputEdgeVsForwarder, 1e-9)
	require.InDelta(t, 0.5, r.ThroughputForwarderVsDirect, 1e-9)
	require.InDelta(t, 35, r.EdgeCPUPerRequestUs, 1e-9) // 0.35 s over 10,000 requests
	require.InDelta(t, 25, r.ForwarderCPUPerRequestUs, 1e-9)
	require.Equal(t, int64(100), r.EdgeAddedP50Us)
	require.Equal(t, int64(60), r.ForwarderAddedP50Us)
	require.Equal(t, int64(40), r.EdgeAddedP50OverForwarderUs)
	require.Equal(t, int64(300), r.EdgeAddedP99Us)
	require.Equal(t, int64(50), r.EdgeTTFTDeltaP50Us) // TTFT is half the latency in run()
	require.InDelta(t, 15, r.EdgeBackgroundCPUPerRequestUs, 1e-9)
	require.Equal(t, "ledgerd+kafka", r.EdgeBackgroundProcessesCounted)

	checks := Checks("nonstream", r)
	require.Len(t, checks, 4)
	ok := map[string]bool{}
	for _, c := range checks {
		ok[c.Name] = c.OK
	}
	require.Equal(t, map[string]bool{"throughput edge / direct": false, "throughput edge / forwarder": true,
		"edge CPU µs per request": true, "edge added p50 − forwarder added p50 (µs)": true}, ok)
	require.Len(t, Checks("stream20", r), 1)
	require.Empty(t, Checks("mixed", r))
}

func TestSlowMemory(t *testing.T) {
	r := &load.Result{MaxInFlight: 1000,
		Generator: load.ProcUsage{Name: "generator", RSSStartBytes: 10 << 20, RSSPeakBytes: 20 << 20},
		Procs:     []load.ProcUsage{{Name: "edge", RSSStartBytes: 30 << 20, RSSPeakBytes: 30<<20 + 64_000_000}, {Name: "gone", Error: "x"}}}
	m := SlowMemory(r)
	require.Len(t, m, 3)
	require.InDelta(t, float64(10<<20)/1000, m[0].BytesPerStream, 1e-9)
	require.InDelta(t, 64_000, m[1].BytesPerStream, 1e-9)
	require.Zero(t, m[2].BytesPerStream)
}

func TestNiceRateAndRotate(t *testing.T) {
	require.Equal(t, 3000.0, niceRate(3005.5))
	require.Equal(t, 1500.0, niceRate(1572))
	require.Equal(t, 99.0, niceRate(99.9))
	require.Equal(t, 5.0, niceRate(5.7))
	require.Equal(t, 1.0, niceRate(0.2))
	ts := []target{{name: "a"}, {name: "b"}, {name: "c"}}
	names := func(ts []target) string {
		var s []string
		for _, t := range ts {
			s = append(s, t.name)
		}
		return strings.Join(s, "")
	}
	require.Equal(t, "abc", names(rotate(ts, 0)))
	require.Equal(t, "bca", names(rotate(ts, 1)))
	require.Equal(t, "cab", names(rotate(ts, 5)))
	require.Equal(t, "abc", names(ts), "rotate must not modify its input")
}

func TestParseScenarios(t *testing.T) {
	got, err := ParseScenarios("nonstream, slow,soak")
	require.NoError(t, err)
	require.Equal(t, []string{"nonstream", "slow", "soak"}, got)
	_, err = ParseScenarios("nonstream,bogus")
	require.Error(t, err)
	_, err = ParseScenarios(" , ")
	require.Error(t, err)
	for _, name := range DefaultScenarios {
		sc := Scenarios(10_000)[name]
		require.NotEmpty(t, sc.Shapes, name)
		for _, s := range sc.Shapes {
			require.NotEmpty(t, s.Name)
			tok, _, err := load.ParseDirective(strings.TrimPrefix(s.Directive(), "mock:"))
			require.NoError(t, err)
			require.Equal(t, s.Tokens, tok)
		}
	}
	require.Equal(t, "slow10000", Scenarios(10_000)["slow"].Name)
}

func validXML(t *testing.T, doc []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(doc))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			return
		}
		require.NoError(t, err)
	}
}

func TestMarkdownAndChart(t *testing.T) {
	direct, fwd, edge := threeTargets()
	r := ComputeRatios(direct, fwd, edge)
	meta := report.Meta{Scenario: "nonstream", Date: time.Unix(0, 0), Commit: "c0ffee", Command: "bench compare"}
	res := &ScenarioResult{Meta: meta, Title: "non-streaming", Rounds: 3, Phase: 3 * time.Second, Conns: 32,
		Rate: 2000, Shapes: []load.Shape{shapeJSON}, Targets: []TargetResult{direct, fwd, edge}, Ratios: &r,
		Checks: Checks("nonstream", r), Notes: []string{"a note"}}
	md := Markdown(res)
	for _, want := range []string{"| throughput vs direct | 0.40× | 0.50× |", "| edge CPU µs per request | 35.00 | ≤ 40 | met |",
		"| throughput edge / direct | 0.40 | ≥ 0.5 | **missed** |", "## Latency at 2000 req/s", "- a note",
		"`mock: input=200 output=120 cache_write_5m=0 cache_write_1h=0 cache_read=900 thinking=0 web_search=0`"} {
		require.Contains(t, md, want)
	}
	validXML(t, Chart(res))

	slowRes := &ScenarioResult{Meta: meta, Title: "slow", Conns: 100, Slow: []SlowTarget{
		{Target: Edge, Result: run(time.Second, 100, []int64{10_000_000}, map[string]float64{"edge": 1})}}}
	slowRes.Slow[0].Memory = SlowMemory(slowRes.Slow[0].Result)
	require.Contains(t, Markdown(slowRes), "| edge | edge |")
	validXML(t, Chart(slowRes))

	soak := run(time.Minute, 100, []int64{1000}, map[string]float64{"edge": 1})
	soak.Samples = []load.Sample{{At: time.Second, RSSBytes: []int64{1 << 20, 2 << 20}}, {At: 2 * time.Second, RSSBytes: []int64{1 << 20, 3 << 20}}}
	soakRes := &ScenarioResult{Meta: meta, Title: "soak", Soak: soak}
	require.Contains(t, Markdown(soakRes), "## Soak")
	validXML(t, Chart(soakRes))

	v := &ScenarioResult{Meta: meta, Title: "verify", Verify: &verify.Report{OK: false, Billed: 3,
		Ledger: &verify.LedgerCheck{Diffs: []verify.AccountDiff{{ID: "a", Expected: 5, Debited: 6}}}, ClickHouseSkipped: "off"}}
	vmd := Markdown(v)
	require.Contains(t, vmd, "**the money does not add up**")
	require.Contains(t, vmd, "| a | 5 | 6 |")
	require.Nil(t, Chart(v))
}
