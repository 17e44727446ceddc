package compare

import (
	"fmt"
	"strings"
	"time"

	"tollgate/bench/load"
	"tollgate/pkg/usage"
)

// Kind is how a scenario loads the targets.
type Kind int

const (
	// Throughput runs, per round and target, a closed loop (saturation throughput, CPU per
	// request) and then an open loop at a fixed rate (latency without coordinated omission).
	Throughput Kind = iota
	// Slow holds many slow streams open at once (memory per in-flight stream).
	Slow
	// Soak runs the edge alone at a fixed rate for a long time, sampling memory.
	Soak
	// Settle runs the edge at a fixed rate with the background at normal priority and
	// measures how long after each response ledgerd settled it.
	Settle
)

// Scenario is one comparison.
type Scenario struct {
	Name   string
	Title  string
	Kind   Kind
	Shapes []load.Shape
	// Conns for the closed loop (Throughput), the number of streams held open (Slow), or the
	// most requests in flight of the open loop (Soak, Settle).
	Conns int
	// BackgroundNormal runs the background (Kafka, ledgerd, analytics, ClickHouse) at nice 0
	// for the scenario instead of Config.BackgroundNice: for what waits on it — settlement
	// lag, and new streams' lease grants, which time out (503) when a saturated edge starves
	// a reniced ledgerd (185 of 9,500 slow streams in one run).
	BackgroundNormal bool
}

// The request shapes. Usage is spelled out so every request's cost is known (the verifier
// relies on it); prompts are padded to their input size by load.Shape.Body.
var (
	// A typical cached chat turn: the DESIGN's example directive.
	shapeJSON = load.Shape{Name: "sonnet-json", Model: "claude-sonnet-4-5", Weight: 1,
		Tokens: usage.Tokens{Input: 200, Output: 120, CacheRead: 900}}
	// The same turn streamed as 20 text deltas, 0.25 ms apart (each its own write and flush,
	// so a proxy's per-event path is exercised, not one buffered blob).
	shapeSSE20 = load.Shape{Name: "sonnet-sse20", Model: "claude-sonnet-4-5", Stream: true, Weight: 1,
		Tokens: usage.Tokens{Input: 200, Output: 120, CacheRead: 900}, Extra: "events=20 tps=24000"}
	// Other models and categories for the mixed scenario, so the verifier sees every rate.
	shapeHaikuWrite = load.Shape{Name: "haiku-json-cachewrite", Model: "claude-haiku-4-5", Weight: 1,
		Tokens: usage.Tokens{Input: 300, Output: 60, CacheWrite5m: 800, CacheWrite1h: 100}}
	shapeOpusThink = load.Shape{Name: "opus-sse-thinking", Model: "claude-opus-4-5", Stream: true, Weight: 1,
		Tokens: usage.Tokens{Input: 150, Output: 200, Thinking: 80, CacheRead: 400},
		Extra:  "events=10 tps=40000"}
)

// slowShape is a long stream: first token after 500 ms, then 20 deltas 0.5 s apart (120
// output tokens at 12 tokens/s), about 10 s in all.
var slowShape = load.Shape{Name: "sonnet-slow-sse", Model: "claude-sonnet-4-5", Stream: true, Weight: 1,
	Tokens: usage.Tokens{Input: 200, Output: 120, CacheRead: 900}, Extra: "events=20 tps=12 ttft_ms=500"}

// Scenarios lists every scenario by name. slowN is the number of concurrent slow streams.
func Scenarios(slowN int) map[string]Scenario {
	mixed := []load.Shape{shapeJSON, shapeSSE20, shapeHaikuWrite, shapeOpusThink}
	mixed[0].Weight, mixed[1].Weight, mixed[2].Weight, mixed[3].Weight = 3, 3, 2, 2
	return map[string]Scenario{
		"nonstream": {Name: "nonstream", Title: "non-streaming", Kind: Throughput, Conns: 32,
			Shapes: []load.Shape{shapeJSON}},
		"stream20": {Name: "stream20", Title: "streaming, 20 events", Kind: Throughput, Conns: 64,
			Shapes: []load.Shape{shapeSSE20}},
		"mixed": {Name: "mixed", Title: "mixed: 50% streaming, four models", Kind: Throughput, Conns: 48,
			Shapes: mixed},
		"slow": {Name: fmt.Sprintf("slow%d", slowN), Title: fmt.Sprintf("%d concurrent slow streams", slowN),
			Kind: Slow, Conns: slowN, Shapes: []load.Shape{slowShape}, BackgroundNormal: true},
		"soak": {Name: "soak", Title: "soak: the edge alone at a fixed rate, mixed load", Kind: Soak, Conns: 256,
			Shapes: mixed},
		// Non-streaming only: settlement does the same per record whatever the response was
		// (one usage record per request), so the request shape that costs the edge and the mock
		// least leaves the most of the two shared cores to the pipeline being measured. The
		// mix would add stream handling on the same cores without changing what settles.
		"settle": {Name: "settle", Title: "settlement lag: response end to balance settled", Kind: Settle, Conns: 1024,
			Shapes: []load.Shape{shapeJSON}, BackgroundNormal: true},
	}
}

// DefaultScenarios is what `make bench` runs (soak is added by SOAK=1). settle comes last:
// the slow scenario leaves the background time to catch up, so settle's drain is short.
var DefaultScenarios = []string{"nonstream", "stream20", "mixed", "slow", "settle"}

// DefaultRate is the open-loop rate of the throughput scenarios, requests/s: the issue's
// "added latency at a fixed 2,000 req/s".
const DefaultRate = 2000

// ParseScenarios checks a comma-separated list of scenario names.
func ParseScenarios(list string) ([]string, error) {
	known := Scenarios(1)
	var out []string
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if _, ok := known[name]; !ok {
			return nil, fmt.Errorf("unknown scenario %q (known: nonstream, stream20, mixed, slow, soak, settle)", name)
		}
		out = append(out, name)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no scenario in %q", list)
	}
	return out, nil
}

// slowStreamLength is about how long one slow stream lasts (ttft + 19 gaps of 0.5 s).
const slowStreamLength = 10 * time.Second
