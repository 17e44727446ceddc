package compare

import (
	"math"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"tollgate/bench/load"
)

// Target names.
const (
	Direct    = "direct"
	Forwarder = "forwarder"
	Edge      = "edge"
)

// ProcAgg is one process's cost summed over the rounds of a phase.
type ProcAgg struct {
	Name            string  `json:"name"`
	CPUSeconds      float64 `json:"cpu_seconds"`
	CPUPerRequestUs float64 `json:"cpu_per_request_us"` // Σ CPU / Σ completed requests
	RSSPeakBytes    int64   `json:"rss_peak_bytes"`
	Error           string  `json:"error,omitempty"`
}

// Phase is one target's runs of one kind (closed or open loop) merged over the rounds.
type Phase struct {
	Runs          int              `json:"runs"`
	Sent          int64            `json:"sent"`
	OK            int64            `json:"ok"`
	Errors        map[string]int64 `json:"errors"`
	Elapsed       time.Duration    `json:"elapsed_ns"`
	Throughput    float64          `json:"throughput"` // Σ OK / Σ elapsed
	ThroughputMin float64          `json:"throughput_min"`
	ThroughputMax float64          `json:"throughput_max"`
	Latency       load.Summary     `json:"latency"`
	TTFT          load.Summary     `json:"ttft"`
	Lag           load.Summary     `json:"dispatch_lag_worst_round"`
	// Per round, in order: so one round disturbed by other work on the machine can be seen
	// (its dispatch lag is large) rather than hidden in the merged histogram.
	RoundP50Us    []int64      `json:"round_p50_us"`
	RoundP99Us    []int64      `json:"round_p99_us"`
	RoundLagP99Us []int64      `json:"round_dispatch_lag_p99_us"`
	Spectrum      []load.Point `json:"latency_spectrum"`
	TTFTSpectrum  []load.Point `json:"ttft_spectrum,omitempty"`
	Generator     ProcAgg      `json:"generator"`
	Procs         []ProcAgg    `json:"procs"`
}

// Proc returns the named process's aggregate, or a zero one.
func (p Phase) Proc(name string) ProcAgg {
	for _, a := range p.Procs {
		if a.Name == name {
			return a
		}
	}
	return ProcAgg{Name: name, Error: "not measured"}
}

// Aggregate merges the runs of one target and phase: counts and CPU add up, histograms merge,
// throughput is Σ OK over Σ elapsed (and its spread over the rounds is kept).
func Aggregate(runs []*load.Result) Phase {
	p := Phase{Runs: len(runs), Errors: map[string]int64{}, ThroughputMin: math.Inf(1)}
	lat, ttft := load.NewHistogram(), load.NewHistogram()
	procs := map[string]*ProcAgg{}
	var order []string
	addProc := func(dst *ProcAgg, u load.ProcUsage) {
		if u.Error != "" {
			dst.Error = u.Error
			return
		}
		dst.CPUSeconds += u.CPUSeconds
		dst.RSSPeakBytes = max(dst.RSSPeakBytes, u.RSSPeakBytes)
	}
	p.Generator.Name = "generator"
	for _, r := range runs {
		p.Sent += r.Sent
		p.OK += r.OK
		p.Elapsed += r.Elapsed
		for k, v := range r.Errors {
			p.Errors[k] += v
		}
		p.ThroughputMin = min(p.ThroughputMin, r.Throughput)
		p.ThroughputMax = max(p.ThroughputMax, r.Throughput)
		if r.Lag.P99Us > p.Lag.P99Us {
			p.Lag = r.Lag
		}
		p.RoundP50Us = append(p.RoundP50Us, r.Latency.P50Us)
		p.RoundP99Us = append(p.RoundP99Us, r.Latency.P99Us)
		p.RoundLagP99Us = append(p.RoundLagP99Us, r.Lag.P99Us)
		mergeInto(lat, r.LatencyHist)
		mergeInto(ttft, r.TTFTHist)
		addProc(&p.Generator, r.Generator)
		for _, u := range r.Procs {
			a, ok := procs[u.Name]
			if !ok {
				a = &ProcAgg{Name: u.Name}
				procs[u.Name] = a
				order = append(order, u.Name)
			}
			addProc(a, u)
		}
	}
	if len(runs) == 0 {
		p.ThroughputMin = 0
	}
	if p.Elapsed > 0 {
		p.Throughput = float64(p.OK) / p.Elapsed.Seconds()
	}
	perReq := func(a *ProcAgg) {
		if p.OK > 0 && a.Error == "" {
			a.CPUPerRequestUs = a.CPUSeconds * 1e6 / float64(p.OK)
		}
	}
	perReq(&p.Generator)
	for _, name := range order {
		perReq(procs[name])
		p.Procs = append(p.Procs, *procs[name])
	}
	p.Latency, p.TTFT = load.Summarize(lat), load.Summarize(ttft)
	p.Spectrum, p.TTFTSpectrum = load.Spectrum(lat), load.Spectrum(ttft)
	return p
}

func mergeInto(dst, src *hdrhistogram.Histogram) {
	if src != nil {
		dst.Merge(src)
	}
}

// TargetResult is one target's measurements in a throughput scenario.
type TargetResult struct {
	Target string `json:"target"`
	// Proxy is the process whose overhead is measured: "" for direct.
	Proxy  string `json:"proxy,omitempty"`
	Closed Phase  `json:"closed_loop"`
	Open   Phase  `json:"open_loop"`
}

// Ratios are the comparisons the bench exists for. Throughput ratios come from the closed
// loop; latency deltas from the open loop at the same fixed rate; CPU is the proxy process's
// own, per completed request.
type Ratios struct {
	ThroughputEdgeVsDirect         float64 `json:"throughput_edge_vs_direct"`
	ThroughputEdgeVsForwarder      float64 `json:"throughput_edge_vs_forwarder"`
	ThroughputForwarderVsDirect    float64 `json:"throughput_forwarder_vs_direct"`
	EdgeCPUPerRequestUs            float64 `json:"edge_cpu_per_request_us"`
	ForwarderCPUPerRequestUs       float64 `json:"forwarder_cpu_per_request_us"`
	EdgeCPUPerRequestOpenUs        float64 `json:"edge_cpu_per_request_open_loop_us"`
	ForwarderCPUPerRequestOpenUs   float64 `json:"forwarder_cpu_per_request_open_loop_us"`
	EdgeAddedP50Us                 int64   `json:"edge_added_p50_us"`
	EdgeAddedP99Us                 int64   `json:"edge_added_p99_us"`
	ForwarderAddedP50Us            int64   `json:"forwarder_added_p50_us"`
	ForwarderAddedP99Us            int64   `json:"forwarder_added_p99_us"`
	EdgeAddedP50OverForwarderUs    int64   `json:"edge_added_p50_over_forwarder_us"`
	EdgeTTFTDeltaP50Us             int64   `json:"edge_ttft_delta_p50_us,omitempty"`
	EdgeTTFTDeltaP99Us             int64   `json:"edge_ttft_delta_p99_us,omitempty"`
	ForwarderTTFTDeltaP50Us        int64   `json:"forwarder_ttft_delta_p50_us,omitempty"`
	ForwarderTTFTDeltaP99Us        int64   `json:"forwarder_ttft_delta_p99_us,omitempty"`
	EdgeBackgroundCPUPerRequestUs  float64 `json:"edge_background_cpu_per_request_us"`
	EdgeBackgroundProcessesCounted string  `json:"edge_background_processes"`
	// EdgeBackgroundCPUPerRequestScenarioUs is the background's CPU from the scenario's start
	// until it caught up after the last round, per request the edge served: what billing costs
	// beside the edge, wherever it ran.
	EdgeBackgroundCPUPerRequestScenarioUs float64 `json:"edge_background_cpu_per_request_scenario_us,omitempty"`
}

// backgroundProcs run beside the edge and do work per request later (settlement, analytics,
// the broker). Their CPU during the edge's rounds is reported apart from the edge's own.
var backgroundProcs = []string{"ledgerd", "kafka", "analytics", "clickhouse"}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// ComputeRatios compares the three targets of a throughput scenario.
func ComputeRatios(direct, fwd, edge TargetResult) Ratios {
	r := Ratios{
		ThroughputEdgeVsDirect:       ratio(edge.Closed.Throughput, direct.Closed.Throughput),
		ThroughputEdgeVsForwarder:    ratio(edge.Closed.Throughput, fwd.Closed.Throughput),
		ThroughputForwarderVsDirect:  ratio(fwd.Closed.Throughput, direct.Closed.Throughput),
		EdgeCPUPerRequestUs:          edge.Closed.Proc(edge.Proxy).CPUPerRequestUs,
		ForwarderCPUPerRequestUs:     fwd.Closed.Proc(fwd.Proxy).CPUPerRequestUs,
		EdgeCPUPerRequestOpenUs:      edge.Open.Proc(edge.Proxy).CPUPerRequestUs,
		ForwarderCPUPerRequestOpenUs: fwd.Open.Proc(fwd.Proxy).CPUPerRequestUs,
		EdgeAddedP50Us:               edge.Open.Latency.P50Us - direct.Open.Latency.P50Us,
		EdgeAddedP99Us:               edge.Open.Latency.P99Us - direct.Open.Latency.P99Us,
		ForwarderAddedP50Us:          fwd.Open.Latency.P50Us - direct.Open.Latency.P50Us,
		ForwarderAddedP99Us:          fwd.Open.Latency.P99Us - direct.Open.Latency.P99Us,
	}
	r.EdgeAddedP50OverForwarderUs = r.EdgeAddedP50Us - r.ForwarderAddedP50Us
	if direct.Open.TTFT.Count > 0 {
		r.EdgeTTFTDeltaP50Us = edge.Open.TTFT.P50Us - direct.Open.TTFT.P50Us
		r.EdgeTTFTDeltaP99Us = edge.Open.TTFT.P99Us - direct.Open.TTFT.P99Us
		r.ForwarderTTFTDeltaP50Us = fwd.Open.TTFT.P50Us - direct.Open.TTFT.P50Us
		r.ForwarderTTFTDeltaP99Us = fwd.Open.TTFT.P99Us - direct.Open.TTFT.P99Us
	}
	var bg float64
	var counted []string
	for _, name := range backgroundProcs {
		if a := edge.Closed.Proc(name); a.Error == "" {
			bg += a.CPUPerRequestUs
			counted = append(counted, name)
		}
	}
	r.EdgeBackgroundCPUPerRequestUs = bg
	for i, n := range counted {
		if i > 0 {
			r.EdgeBackgroundProcessesCounted += "+"
		}
		r.EdgeBackgroundProcessesCounted += n
	}
	return r
}

// Check is one of the reference targets from the issue, evaluated.
type Check struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Want  string  `json:"want"`
	OK    bool    `json:"ok"`
}

// Checks evaluates the reference targets that apply to a scenario.
func Checks(scenario string, r Ratios) []Check {
	switch scenario {
	case "nonstream":
		return []Check{
			{"throughput edge / direct", r.ThroughputEdgeVsDirect, "≥ 0.5", r.ThroughputEdgeVsDirect >= 0.5},
			{"throughput edge / forwarder", r.ThroughputEdgeVsForwarder, "≥ 0.75", r.ThroughputEdgeVsForwarder >= 0.75},
			{"edge CPU µs per request", r.EdgeCPUPerRequestUs, "≤ 40", r.EdgeCPUPerRequestUs > 0 && r.EdgeCPUPerRequestUs <= 40},
			{"edge added p50 − forwarder added p50 (µs)", float64(r.EdgeAddedP50OverForwarderUs), "≤ 50",
				r.EdgeAddedP50OverForwarderUs <= 50},
		}
	case "stream20":
		return []Check{
			{"throughput edge / direct", r.ThroughputEdgeVsDirect, "≥ 0.8", r.ThroughputEdgeVsDirect >= 0.8},
		}
	}
	return nil
}

// ProcMem is one process's memory in a slow-streams run.
type ProcMem struct {
	Name          string  `json:"name"`
	RSSStartBytes int64   `json:"rss_start_bytes"`
	RSSPeakBytes  int64   `json:"rss_peak_bytes"`
	CPUSeconds    float64 `json:"cpu_seconds"`
	// BytesPerStream is (peak − start) / the most streams in flight.
	BytesPerStream float64 `json:"bytes_per_in_flight_stream"`
	Error          string  `json:"error,omitempty"`
}

// SlowTarget is one target's slow-streams run.
type SlowTarget struct {
	Target string       `json:"target"`
	Result *load.Result `json:"result"`
	Memory []ProcMem    `json:"memory"`
}

// SlowMemory computes memory per in-flight stream for every measured process of a run.
func SlowMemory(r *load.Result) []ProcMem {
	var out []ProcMem
	for _, u := range append([]load.ProcUsage{r.Generator}, r.Procs...) {
		m := ProcMem{Name: u.Name, RSSStartBytes: u.RSSStartBytes, RSSPeakBytes: u.RSSPeakBytes,
			CPUSeconds: u.CPUSeconds, Error: u.Error}
		if u.Error == "" && r.MaxInFlight > 0 {
			m.BytesPerStream = float64(u.RSSPeakBytes-u.RSSStartBytes) / float64(r.MaxInFlight)
		}
		out = append(out, m)
	}
	return out
}
