// Package compare measures the edge against its floor and its ceiling in one run: the
// upstream (the mock) called directly, a bare fasthttp forwarder (bench/forwarder), and the
// full edge with its ledger, Kafka and analytics running (bench/stack). The three take turns
// in short rounds under the same load, so drift on a shared machine (other tenants, thermal,
// the page cache) spreads over all three instead of favouring one. Results go to
// bench/results as JSON, Markdown and an SVG chart; at the end the verifier checks that the
// edge's traffic was billed exactly.
package compare

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"tollgate/bench/load"
	"tollgate/bench/load/report"
	"tollgate/bench/stack"
	"tollgate/bench/verify"
	"tollgate/pkg/pricing"
)

// Config of a comparison run. Zero values take the defaults named on each field.
type Config struct {
	RepoDir string // repository root: deploy scripts, git commit for result names. Required.
	BinDir  string // built binaries: edge, ledgerd, analytics, bench, devstack. Required.
	// DataDir holds the stack's state and logs, the key file and the edge's request log.
	// Default: a new temporary directory, removed at the end unless the run fails.
	DataDir string
	// ResultsDir receives the result files. Default RepoDir/bench/results.
	ResultsDir string
	// Scenarios to run, by name (see Scenarios). Default DefaultScenarios.
	Scenarios []string
	// Rounds of each throughput scenario; each round runs every target. Default 3.
	Rounds int
	// Phase is the length of each closed-loop and each open-loop run. Default 3 s.
	Phase time.Duration
	// Rate of the open loop, requests/s. Default DefaultRate, the fixed rate the latency
	// targets are stated at — or half the lowest closed-loop throughput of the first round
	// when that is lower, so every target runs below saturation and latency means latency.
	Rate float64
	// SlowStreams is how many slow streams are held open at once. Default 10,000; lowered
	// (and said so) when the file descriptor limit cannot allow it.
	SlowStreams int
	// Soak is the length of the soak scenario. Default 10 min.
	Soak time.Duration
	// SoakRate is the soak's open-loop rate, requests/s. Default 300.
	SoakRate float64
	// SettleRate is the settle scenario's open-loop rate, requests/s. Default 5,000 (the
	// issue's settlement-lag target is stated at that rate).
	SettleRate float64
	// SettleDuration is the length of the settle scenario's load. Default 20 s.
	SettleDuration time.Duration
	// Accounts and keys the edge traffic uses; each account gets Credits whole credits.
	// Defaults 100 accounts, 1 key each, 100,000 credits.
	Accounts, KeysPerAccount int
	Credits                  int64
	// NoAnalytics runs the stack without ClickHouse; the verifier then checks the ledger only.
	NoAnalytics bool
	// NoVerify skips the money check at the end.
	NoVerify bool
	// BackgroundNice is the nice value given to the Kafka broker, ledgerd, analytics and
	// ClickHouse (every thread) after they start. In production they run on other machines;
	// here they share the edge's two cores, and at normal priority the broker, settlement and
	// inserts take more CPU per request than the edge itself, so a closed loop would measure
	// the machine rather than the edge. At 19 they run on what the edge leaves — they catch
	// up between rounds, and the money check at the end still sees every record — and their
	// CPU per request is still reported. The edge's own work for them (WAL, producing to
	// Kafka, lease calls) stays in the edge's figures. 0 leaves them alone. Default 19 (set
	// by the CLI).
	BackgroundNice int
	// BackgroundIdle runs the background processes nothing on the request path waits for —
	// the Kafka broker (the edge ships from its WAL in the background), analytics and
	// ClickHouse — under SCHED_IDLE instead of BackgroundNice: they run only on a core nobody
	// else wants, and a waking edge, generator or mock thread takes the core from them at
	// once. At nice 19 a background thread keeps the core for the rest of its slice (about a
	// millisecond), which showed as edge latency that the edge did not cause. ledgerd stays at
	// BackgroundNice: the edge's lease grants and key lookups wait on it, and starving it
	// (tried: all four under SCHED_IDLE) made requests wait. Their CPU is still reported,
	// during the closed loop and over the whole scenario, catch-up included. Default true (set
	// by the CLI).
	BackgroundIdle bool
	// Command is the command line, recorded in the results.
	Command string
	// Commit names the measured code in result names. Default: RepoDir's HEAD, "-dirty" when
	// tracked files differ from it.
	Commit string
	Logger *slog.Logger
	// Out receives progress lines. Default os.Stdout.
	Out io.Writer
}

func (c *Config) setDefaults() {
	if c.ResultsDir == "" {
		c.ResultsDir = filepath.Join(c.RepoDir, "bench", "results")
	}
	if len(c.Scenarios) == 0 {
		c.Scenarios = DefaultScenarios
	}
	if c.Rounds == 0 {
		c.Rounds = 3
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.Phase == 0 {
		c.Phase = 3 * time.Second
	}
	if c.SlowStreams == 0 {
		c.SlowStreams = 10_000
	}
	if c.Soak == 0 {
		c.Soak = 10 * time.Minute
	}
	if c.SoakRate == 0 {
		c.SoakRate = 300
	}
	if c.SettleRate == 0 {
		c.SettleRate = settleTargetRate
	}
	if c.SettleDuration == 0 {
		c.SettleDuration = 20 * time.Second
	}
	if c.Accounts == 0 {
		c.Accounts = 100
	}
	if c.KeysPerAccount == 0 {
		c.KeysPerAccount = 1
	}
	if c.Credits == 0 {
		c.Credits = 100_000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
}

// Bounds that keep a run's length and size in check whatever the flags say.
const (
	roundsMax      = 20
	phaseMax       = 2 * time.Minute
	soakMax        = 2 * time.Hour
	slowStreamsMax = 50_000
	settleMax      = 10 * time.Minute
	settleRateMax  = 50_000
)

func (c *Config) validate() error {
	var errs []error
	if c.RepoDir == "" || c.BinDir == "" {
		errs = append(errs, errors.New("repo dir and bin dir are required"))
	}
	if c.Rounds < 1 || c.Rounds > roundsMax {
		errs = append(errs, fmt.Errorf("rounds: want 1..%d", roundsMax))
	}
	if c.Phase < 500*time.Millisecond || c.Phase > phaseMax {
		errs = append(errs, fmt.Errorf("phase: want 500ms..%s", phaseMax))
	}
	if c.SlowStreams < 1 || c.SlowStreams > slowStreamsMax {
		errs = append(errs, fmt.Errorf("slow streams: want 1..%d", slowStreamsMax))
	}
	if c.Soak <= 0 || c.Soak > soakMax {
		errs = append(errs, fmt.Errorf("soak: want (0, %s]", soakMax))
	}
	if c.Rate < 0 || c.SoakRate <= 0 {
		errs = append(errs, errors.New("rate: negative"))
	}
	if c.SettleRate <= 0 || c.SettleRate > settleRateMax {
		errs = append(errs, fmt.Errorf("settle rate: want (0, %d] requests/s", settleRateMax))
	}
	if c.SettleDuration < time.Second || c.SettleDuration > settleMax {
		errs = append(errs, fmt.Errorf("settle duration: want 1s..%s", settleMax))
	}
	if c.Accounts < 1 || c.KeysPerAccount < 1 || c.Credits < 1 {
		errs = append(errs, errors.New("accounts, keys per account and credits must be positive"))
	}
	for _, s := range c.Scenarios {
		if _, ok := Scenarios(1)[s]; !ok {
			errs = append(errs, fmt.Errorf("unknown scenario %q", s))
		}
	}
	return errors.Join(errs...)
}

// forwarderUpstreamConns is the bare forwarder's default upstream connection limit.
const forwarderUpstreamConns = 20_000

// target is one system the load is sent to.
type target struct {
	name  string
	proxy string // the process whose overhead is measured; "" for direct
	url   string
	keys  []load.Key
	watch []load.Proc
	log   io.Writer // the edge's request log, for the verifier
}

// comparer is one run's state.
type comparer struct {
	cfg     Config
	meta    report.Meta
	stack   *stack.Stack
	keyring load.Keyring
	targets []target // direct, forwarder, edge
	fwd     *stack.Proc
	edgeLog *os.File
	// background are the processes that settle and record the edge's traffic (Kafka,
	// ledgerd, analytics, ClickHouse), reniced to BackgroundNice.
	background []load.Proc
	notes      []string // said in every scenario's summary
}

// Run runs the comparison. It returns an error when the stack cannot run, a scenario fails to
// produce results, or the money does not add up.
func Run(ctx context.Context, cfg Config) (err error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("compare config: %w", err)
	}
	c := &comparer{cfg: cfg}
	if cfg.Commit == "" {
		cfg.Commit = report.ShortCommit(ctx, cfg.RepoDir)
	}
	c.meta = report.Meta{Date: time.Now().UTC(), Commit: cfg.Commit, Command: cfg.Command, Machine: report.ReadMachine()}
	if la := report.LoadAvg(); la != "" {
		c.notes = append(c.notes, "load average (1, 5, 15 min) before the run: "+la)
	}

	if c.cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "tollgate-bench-")
		if err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
		c.cfg.DataDir = dir
		defer func() {
			if err == nil {
				_ = os.RemoveAll(dir)
			} else {
				c.progress("data and logs kept in %s", dir)
			}
		}()
	}
	c.fitSlowStreams()

	if err := c.start(ctx); err != nil {
		return err
	}
	defer c.stop()

	for _, name := range cfg.Scenarios {
		if err := c.scenario(ctx, name); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if cfg.NoVerify {
		return nil
	}
	return c.verify(ctx)
}

func (c *comparer) progress(format string, args ...any) {
	fmt.Fprintf(c.cfg.Out, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// fitSlowStreams raises the open-file limit for the slow-streams scenario, which the
// children inherit: a proxy holds two sockets per stream (client and upstream). When the
// limit cannot go high enough, the stream count goes down, and the summary says so.
func (c *comparer) fitSlowStreams() {
	// fdReserve covers what a proxy holds besides its streams: listeners, upstream pools of
	// other kinds, WAL segments, Kafka and ledger connections, log files.
	const fdReserve = 1000
	want := uint64(2*c.cfg.SlowStreams + fdReserve)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < want {
		raised := syscall.Rlimit{Cur: max(want, lim.Cur), Max: max(want, lim.Max)}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			lim = raised
		} else if lim.Max > lim.Cur {
			lim.Cur = lim.Max
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		}
	}
	if lim.Cur < want {
		n := int(max(0, int64(lim.Cur)-fdReserve) / 2)
		c.notes = append(c.notes, fmt.Sprintf("slow streams lowered from %d to %d: open-file limit %d", c.cfg.SlowStreams, n, lim.Cur))
		c.cfg.SlowStreams = max(n, 1)
	}
}

// start brings up the stack, the forwarder and the accounts.
func (c *comparer) start(ctx context.Context) error {
	// The mock keeps no request copies during load runs (its README asks for -record -1); the
	// stack starts it with the launcher's environment.
	if err := os.Setenv("TOLLGATE_MOCK_RECORD", "-1"); err != nil {
		return fmt.Errorf("set mock env: %w", err)
	}
	ps, err := stack.FreePorts(10)
	if err != nil {
		return err
	}
	ports := stack.Ports{Edge: ps[0], EdgeOps: ps[1], LedgerInternal: ps[2], LedgerAdmin: ps[3],
		Analytics: ps[4], Mock: ps[5], Kafka: ps[6], CHNative: ps[7], CHHTTP: ps[8]}
	c.progress("starting the stack in %s", c.cfg.DataDir)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	// The edge may hold as many upstream connections as the forwarder (its default, 4096,
	// answers 503 beyond that many concurrent requests), so the slow-streams scenario compares
	// memory per stream rather than connection limits.
	upstreamConns := max(forwarderUpstreamConns, 2*c.cfg.SlowStreams)
	c.notes = append(c.notes, fmt.Sprintf("edge run with TOLLGATE_UPSTREAM_CONNS_MAX=%d, as the forwarder", upstreamConns))
	s, err := stack.Start(sctx, stack.Config{BinDir: c.cfg.BinDir, RepoDir: c.cfg.RepoDir, DataDir: c.cfg.DataDir,
		Ports: ports, Edges: 1, NoAnalytics: c.cfg.NoAnalytics,
		ExtraEnv: []string{fmt.Sprintf("TOLLGATE_UPSTREAM_CONNS_MAX=%d", upstreamConns)},
		Logf:     func(f string, a ...any) { c.progress(f, a...) }})
	if err != nil {
		return fmt.Errorf("start stack: %w", err)
	}
	c.stack = s
	if s.Mock == nil {
		return errors.New("the stack did not start the mock upstream (TOLLGATE_UPSTREAM_URL set?): the bench measures against the mock only")
	}
	if s.Analytics == nil {
		c.notes = append(c.notes, "analytics off: "+s.AnalyticsOff)
	}
	background := []load.Proc{{Name: "kafka", Pid: s.Kafka.Pid()}, {Name: "ledgerd", Pid: s.Ledgerd.Pid()}}
	if s.Analytics != nil {
		background = append(background, load.Proc{Name: "analytics", Pid: s.Analytics.Pid()})
	}
	if pid := s.ClickHousePid(); pid > 0 {
		background = append(background, load.Proc{Name: "clickhouse", Pid: pid})
	}
	c.background = background
	if c.backgroundTuned() {
		if err := c.setBackground(false); err != nil {
			return err
		}
		var names []string
		for _, p := range background {
			names = append(names, p.Name+" at "+c.backgroundPriority(p.Name).String())
		}
		c.notes = append(c.notes, fmt.Sprintf("%s (-background-nice, -background-idle): in production they run on other machines; "+
			"here they use what the edge leaves of the two cores and catch up between rounds", strings.Join(names, ", ")))
	}

	fwdAddr := fmt.Sprintf("127.0.0.1:%d", ps[9])
	fwd := &stack.Proc{Name: "forwarder", Path: filepath.Join(c.cfg.BinDir, "bench"),
		Args: []string{"forwarder", "-addr", fwdAddr, "-upstream", s.MockURL(),
			"-upstream-conns-max", fmt.Sprint(upstreamConns)},
		Ready: stack.TCPReady(fwdAddr)}
	if err := stack.StartProc(sctx, fwd, s.LogDir(), 30*time.Second); err != nil {
		return fmt.Errorf("start forwarder: %w", err)
	}
	c.targets = nil
	noKey := []load.Key{{Secret: "bench-no-billing"}} // the mock accepts any key
	c.targets = append(c.targets,
		target{name: Direct, url: s.MockURL(), keys: noKey,
			watch: []load.Proc{{Name: "mock", Pid: s.Mock.Pid()}}},
		target{name: Forwarder, proxy: "forwarder", url: "http://" + fwdAddr, keys: noKey,
			watch: []load.Proc{{Name: "forwarder", Pid: fwd.Pid()}, {Name: "mock", Pid: s.Mock.Pid()}}})
	c.fwd = fwd

	admin := stack.NewAdmin(s.AdminURL(), s.AdminToken())
	c.progress("creating %d accounts × %d keys with %d credits each", c.cfg.Accounts, c.cfg.KeysPerAccount, c.cfg.Credits)
	c.keyring, err = load.Provision(ctx, admin, fmt.Sprint(time.Now().UnixNano()), c.cfg.Accounts, c.cfg.KeysPerAccount, c.cfg.Credits)
	if err != nil {
		return err
	}
	if err := load.SaveKeyring(filepath.Join(c.cfg.DataDir, "keys.json"), c.keyring); err != nil {
		return err
	}
	c.edgeLog, err = os.Create(filepath.Join(c.cfg.DataDir, "edge-requests.jsonl"))
	if err != nil {
		return fmt.Errorf("create request log: %w", err)
	}
	edgeWatch := append([]load.Proc{{Name: "edge", Pid: s.Edges[0].Pid()}, {Name: "mock", Pid: s.Mock.Pid()}},
		background...)
	c.targets = append(c.targets, target{name: Edge, proxy: "edge", url: s.EdgeURL(0),
		keys: c.keyring.Keys(), watch: edgeWatch, log: c.edgeLog})

	// Warm up: connections, the mock's response cache, and on the edge every key's cache entry
	// and every account's credit lease, so rounds measure the steady state.
	for _, t := range c.targets {
		n := int64(max(400, 4*len(t.keys)))
		res, err := c.load(ctx, t, load.Config{Conns: 16, Requests: n, Duration: time.Minute,
			Shapes: []load.Shape{shapeJSON, shapeSSE20}})
		if err != nil {
			return fmt.Errorf("warm up %s: %w", t.name, err)
		}
		if res.OK != res.Sent {
			return fmt.Errorf("warm up %s: %d of %d requests failed: %s (logs in %s)", t.name,
				res.Sent-res.OK, res.Sent, report.Errors(res.Errors), s.LogDir())
		}
		c.progress("warmed up %s: %d requests", t.name, res.OK)
	}
	return nil
}

func (c *comparer) stop() {
	if c.fwd != nil {
		_ = c.fwd.Stop(5 * time.Second)
	}
	if c.stack != nil {
		c.stack.Stop()
	}
	if c.edgeLog != nil {
		_ = c.edgeLog.Close()
	}
}

// load runs one load against a target with the target's URL, keys, processes and log.
func (c *comparer) load(ctx context.Context, t target, lc load.Config) (*load.Result, error) {
	lc.URL, lc.Keys, lc.Watch, lc.Log = t.url, t.keys, t.watch, t.log
	res, err := load.Run(ctx, lc)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", t.name, err)
	}
	return res, nil
}

// pause lets what a run left behind (closing connections, the edge's records on their way
// through Kafka to ledgerd and analytics) settle before the next target's turn.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// ScenarioResult is what a scenario's result files hold.
type ScenarioResult struct {
	Meta    report.Meta    `json:"meta"`
	Title   string         `json:"title"`
	Rounds  int            `json:"rounds,omitempty"`
	Phase   time.Duration  `json:"phase_ns,omitempty"`
	Conns   int            `json:"conns"`
	Rate    float64        `json:"open_loop_rate,omitempty"`
	Shapes  []load.Shape   `json:"shapes"`
	Targets []TargetResult `json:"targets,omitempty"`
	Ratios  *Ratios        `json:"ratios,omitempty"`
	Checks  []Check        `json:"checks,omitempty"`
	Slow    []SlowTarget   `json:"slow,omitempty"`
	Soak    *load.Result   `json:"soak,omitempty"`
	Settle  *SettleResult  `json:"settle,omitempty"`
	Verify  *verify.Report `json:"verify,omitempty"`
	Notes   []string       `json:"notes,omitempty"`
}

func (c *comparer) scenario(ctx context.Context, name string) error {
	sc := Scenarios(c.cfg.SlowStreams)[name]
	meta := c.meta
	meta.Scenario = sc.Name
	res := &ScenarioResult{Meta: meta, Title: sc.Title, Conns: sc.Conns, Shapes: sc.Shapes,
		Notes: append([]string(nil), c.notes...)}
	c.progress("scenario %s: %s (load average %s)", sc.Name, sc.Title, report.LoadAvg())
	if err := c.inScenario(sc, res, func() error { return c.run(ctx, sc, res) }); err != nil {
		return fmt.Errorf("scenario %s: %w", sc.Name, err)
	}
	res.Notes = append(res.Notes, "load average after the scenario, this run's own load included: "+report.LoadAvg())
	return c.write(res)
}

// inScenario runs fn with the background at the scenario's priority, noting in res when that
// is not the usual one, and puts it back after.
func (c *comparer) inScenario(sc Scenario, res *ScenarioResult, fn func() error) (err error) {
	if !sc.BackgroundNormal || !c.backgroundTuned() {
		return fn()
	}
	if err := c.setBackground(true); err != nil {
		return err
	}
	res.Notes = append(res.Notes, "this scenario ran the background at normal priority (nice 0) and put it back after")
	defer func() {
		if rerr := c.setBackground(false); rerr != nil && err == nil {
			err = rerr
		}
	}()
	return fn()
}

// run runs the scenario's load.
func (c *comparer) run(ctx context.Context, sc Scenario, res *ScenarioResult) error {
	var err error
	switch sc.Kind {
	case Throughput:
		err = c.throughput(ctx, sc, res)
	case Slow:
		err = c.slow(ctx, sc, res)
	case Soak:
		err = c.soak(ctx, sc, res)
	case Settle:
		err = c.settle(ctx, sc, res)
	}
	return err
}

// throughput alternates the targets in rounds: first every target's closed loop, then every
// target's open loop at one fixed rate. The order rotates each round so no target always
// follows the edge (whose consumers keep working after its turn).
func (c *comparer) throughput(ctx context.Context, sc Scenario, res *ScenarioResult) error {
	res.Rounds, res.Phase, res.Rate = c.cfg.Rounds, c.cfg.Phase, c.cfg.Rate
	closed := map[string][]*load.Result{}
	open := map[string][]*load.Result{}
	bgStart := c.backgroundCPU()
	var edgeRequests int64 // every request the edge served in the scenario, touches included
	count := func(t target, n int64) {
		if t.name == Edge {
			edgeRequests += n
		}
	}
	for round := range c.cfg.Rounds {
		order := rotate(c.targets, round)
		for _, t := range order {
			n, err := c.touch(ctx, t, sc.Shapes)
			if err != nil {
				return err
			}
			count(t, n)
			r, err := c.load(ctx, t, load.Config{Conns: sc.Conns, Duration: c.cfg.Phase, Shapes: sc.Shapes,
				SampleEvery: 500 * time.Millisecond})
			if err != nil {
				return err
			}
			count(t, r.OK)
			closed[t.name] = append(closed[t.name], r)
			c.progress("  round %d/%d %-9s closed loop: %7.0f req/s, errors: %s", round+1, c.cfg.Rounds, t.name,
				r.Throughput, report.Errors(r.Errors))
			pause(ctx, time.Second)
		}
		if round == 0 {
			lowest := math.Inf(1)
			for _, t := range c.targets {
				lowest = min(lowest, closed[t.name][0].Throughput)
			}
			if half := niceRate(lowest / 2); half < res.Rate {
				res.Rate = half
				c.progress("  open-loop rate: %.0f req/s (half the lowest closed-loop throughput, below -rate %.0f)", res.Rate, c.cfg.Rate)
			} else {
				c.progress("  open-loop rate: %.0f req/s", res.Rate)
			}
		}
		for _, t := range order {
			n, err := c.touch(ctx, t, sc.Shapes)
			if err != nil {
				return err
			}
			count(t, n)
			r, err := c.load(ctx, t, load.Config{Rate: res.Rate, Conns: 1024, Duration: c.cfg.Phase,
				Shapes: sc.Shapes, SampleEvery: 500 * time.Millisecond})
			if err != nil {
				return err
			}
			count(t, r.OK)
			open[t.name] = append(open[t.name], r)
			c.progress("  round %d/%d %-9s open loop:   p50 %s p99 %s, errors: %s", round+1, c.cfg.Rounds, t.name,
				report.Us(float64(r.Latency.P50Us)), report.Us(float64(r.Latency.P99Us)), report.Errors(r.Errors))
			pause(ctx, time.Second)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	byName := map[string]TargetResult{}
	for _, t := range c.targets {
		tr := TargetResult{Target: t.name, Proxy: t.proxy, Closed: Aggregate(closed[t.name]), Open: Aggregate(open[t.name])}
		res.Targets = append(res.Targets, tr)
		byName[t.name] = tr
	}
	r := ComputeRatios(byName[Direct], byName[Forwarder], byName[Edge])
	bgCPU, wait, quiet := c.backgroundCatchUp(ctx, bgStart)
	if edgeRequests > 0 {
		r.EdgeBackgroundCPUPerRequestScenarioUs = float64(bgCPU.Microseconds()) / float64(edgeRequests)
	}
	busy := ""
	if !quiet {
		busy = " (it was still busy: counted up to then)"
	}
	res.Notes = append(res.Notes, fmt.Sprintf("after the last round the background took %s to catch up%s; its CPU from the "+
		"scenario's start to then is counted per edge request (%d, touches included)", wait.Round(100*time.Millisecond),
		busy, edgeRequests))
	res.Ratios = &r
	res.Checks = Checks(sc.Name, r)
	return nil
}

// touch sends one unmeasured request per key (at least 16) just before a measured phase. The edge trusts a
// key's record for at most ledger.key_ttl (5 s) and the other targets' turns take longer, so
// without it every edge phase began with one ledgerd call per key on the request path (100 of
// 6,000 requests in an open-loop phase: a cold start that steady traffic does not have, and
// enough to set the p99). The touch is logged like any request, so the money check covers it.
// It returns the number of requests sent.
func (c *comparer) touch(ctx context.Context, t target, shapes []load.Shape) (int64, error) {
	res, err := c.load(ctx, t, load.Config{Conns: 16, Requests: max(int64(len(t.keys)), 16), Duration: 30 * time.Second,
		Shapes: shapes})
	if err != nil {
		return 0, err
	}
	if res.OK != res.Sent {
		return 0, fmt.Errorf("touch %s before a phase: %d of %d requests failed: %s", t.name, res.Sent-res.OK, res.Sent,
			report.Errors(res.Errors))
	}
	return res.OK, nil
}

func rotate(ts []target, k int) []target {
	k %= len(ts)
	return append(append([]target(nil), ts[k:]...), ts[:k]...)
}

// niceRate rounds a rate down to two significant digits, so runs are easy to repeat by hand.
func niceRate(r float64) float64 {
	if r < 10 {
		return max(1, math.Floor(r))
	}
	p := math.Pow(10, math.Floor(math.Log10(r))-1)
	return math.Floor(r/p) * p
}

// slow holds SlowStreams streams open on each target in turn: one request per connection,
// connections opened over a ramp, each stream about 10 s long.
func (c *comparer) slow(ctx context.Context, sc Scenario, res *ScenarioResult) error {
	ramp := time.Duration(sc.Conns) * time.Second / 2000 // 2,000 new connections a second
	for i := range c.targets {
		if err := c.freshMock(ctx); err != nil {
			return err
		}
		t := c.targets[i]
		if waited, left := c.awaitTimeWait(ctx); waited > 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("before %s: waited %s for connections in TIME_WAIT to expire (%d left)",
				t.name, waited.Round(time.Second), left))
		}
		// Keys and leases warm, as in the throughput scenarios: the TIME_WAIT wait outlasts the
		// edge's key cache, and its idle leases have gone back to ledgerd. Short requests do
		// it; a slow stream each would take seconds.
		if _, err := c.touch(ctx, t, []load.Shape{shapeJSON}); err != nil {
			return err
		}
		r, err := c.load(ctx, t, load.Config{Conns: sc.Conns, Requests: int64(sc.Conns),
			Duration: ramp + slowStreamLength + time.Minute, Ramp: ramp, Timeout: time.Minute,
			Shapes: sc.Shapes, ResetPeak: true, SampleEvery: 250 * time.Millisecond})
		if err != nil {
			return err
		}
		res.Slow = append(res.Slow, SlowTarget{Target: t.name, Result: r, Memory: SlowMemory(r)})
		c.progress("  %-9s %d streams ok of %d, at most %d in flight, errors: %s", t.name, r.OK, r.Sent,
			r.MaxInFlight, report.Errors(r.Errors))
		pause(ctx, 3*time.Second) // let the connections close
	}
	return nil
}

// freshMock restarts the mock upstream before each slow-stream target, so every target meets
// an upstream that has not just served other traffic: the mock's heap and socket tables grow
// with ~10,000 streams (430–550 MiB after two targets), so without it the edge, always the
// last target, met the most worn mock, and the first target one worn by the throughput
// scenarios. The targets' watch lists follow the new pid. With a real upstream it does
// nothing.
func (c *comparer) freshMock(ctx context.Context) error {
	m := c.stack.Mock
	if m == nil {
		return nil
	}
	if err := m.Stop(5 * time.Second); err != nil {
		return fmt.Errorf("stop the mock upstream: %w", err)
	}
	if err := c.stack.Restart(ctx, m); err != nil {
		return fmt.Errorf("restart the mock upstream: %w", err)
	}
	for i := range c.targets {
		for j := range c.targets[i].watch {
			if c.targets[i].watch[j].Name == "mock" {
				c.targets[i].watch[j].Pid = m.Pid()
			}
		}
	}
	return nil
}

// timeWaitMax is how many loopback connections may linger in TIME_WAIT when a slow-stream
// target starts; timeWaitWait bounds the wait for them. The kernel keeps each for 60 s after
// its close, and a proxy closes its idle upstream connections 30 s after the streams end
// (the edge's default upstream-idle-conn-timeout; the forwarder does the same), so the last
// of a target's go about 90 s after it.
const (
	timeWaitMax  = 1000
	timeWaitWait = 150 * time.Second
)

// awaitTimeWait waits until fewer than timeWaitMax TCP connections are in TIME_WAIT, at most
// timeWaitWait, and says how long it waited (0: not at all) and how many were left. Each slow-stream target
// opens ~10,000 connections to the mock from 28,000 ephemeral ports, and the previous
// target's closed ones stay in TIME_WAIT for a minute: every connect then searches past them
// for a free port (in one run the edge, third, spent 16 % of its CPU in connect() against the
// forwarder's 3 %, and its TTFT was 6.9 s against 2.2 s and direct's 0.5 s), which measured
// the order of the targets, not the targets.
func (c *comparer) awaitTimeWait(ctx context.Context) (waited time.Duration, left int) {
	start := time.Now()
	for paused := false; ; paused = true {
		n, err := timeWaitCount()
		if err != nil || n < timeWaitMax || time.Since(start) >= timeWaitWait || ctx.Err() != nil {
			if !paused {
				return 0, n
			}
			return time.Since(start), n
		}
		c.progress("  %d connections in TIME_WAIT (they slow every new connection): waiting", n)
		pause(ctx, 5*time.Second)
	}
}

// timeWaitCount counts the TCP sockets in TIME_WAIT (state 06 in /proc/net/tcp and tcp6).
func timeWaitCount() (int, error) {
	n := 0
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(name)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return 0, fmt.Errorf("count TIME_WAIT sockets: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if f := strings.Fields(line); len(f) > 3 && f[3] == "06" {
				n++
			}
		}
	}
	return n, nil
}

// soak runs the edge alone at a fixed rate for a long time, sampling memory every 5 s.
func (c *comparer) soak(ctx context.Context, sc Scenario, res *ScenarioResult) error {
	edge := c.targets[len(c.targets)-1]
	res.Rate = c.cfg.SoakRate
	c.progress("  soak: %s at %.0f req/s against the edge", c.cfg.Soak, c.cfg.SoakRate)
	r, err := c.load(ctx, edge, load.Config{Rate: c.cfg.SoakRate, Conns: sc.Conns, Duration: c.cfg.Soak,
		Shapes: sc.Shapes, SampleEvery: 5 * time.Second})
	if err != nil {
		return err
	}
	res.Soak = r
	c.progress("  soak: %d ok of %d, errors: %s", r.OK, r.Sent, report.Errors(r.Errors))
	return nil
}

// verify checks that the edge's traffic (warm-up included) was billed exactly, and writes the
// verdict as its own result files.
func (c *comparer) verify(ctx context.Context) error {
	if err := c.edgeLog.Sync(); err != nil {
		return fmt.Errorf("sync request log: %w", err)
	}
	f, err := os.Open(c.edgeLog.Name())
	if err != nil {
		return fmt.Errorf("open request log: %w", err)
	}
	entries, err := verify.ReadLog(f)
	f.Close()
	if err != nil {
		return err
	}
	table, err := pricing.Default()
	if err != nil {
		return fmt.Errorf("load price table: %w", err)
	}
	dsn := ""
	if c.stack.Analytics != nil {
		dsn = c.stack.ClickHouseDSN
	}
	c.progress("verifying %d logged edge requests against the ledger%s", len(entries),
		map[bool]string{true: " and ClickHouse", false: ""}[dsn != ""])
	rep, verr := verify.Run(ctx, verify.Config{Entries: entries, Keyring: c.keyring,
		Ledger: verify.AdminLedger{Admin: stack.NewAdmin(c.stack.AdminURL(), c.stack.AdminToken())},
		Pricer: verify.TablePricer(table), ClickHouseDSN: dsn, Timeout: 90 * time.Second, Logger: c.cfg.Logger})
	meta := c.meta
	meta.Scenario = "verify"
	res := &ScenarioResult{Meta: meta, Title: "money check of every edge request in this run", Verify: &rep,
		Notes: append(append([]string(nil), c.notes...),
			"expected costs come from pkg/pricing's embedded table (the end-to-end tests check against an independent list-price table)")}
	if err := c.write(res); err != nil {
		return err
	}
	c.progress("verify: %s", verdictLine(rep))
	if verr != nil {
		return fmt.Errorf("verify: %w", verr)
	}
	return nil
}

func verdictLine(r verify.Report) string {
	var b strings.Builder
	if r.OK {
		b.WriteString("OK")
	} else {
		b.WriteString("FAILED")
	}
	fmt.Fprintf(&b, ": %d requests billed, expected %d µcr", r.Billed, r.Expected)
	if r.Ledger != nil {
		fmt.Fprintf(&b, ", ledger debited %d µcr (%d accounts off)", r.Ledger.Debited, len(r.Ledger.Diffs))
	}
	if r.ClickHouse != nil {
		fmt.Fprintf(&b, ", ClickHouse FINAL %d µcr over %d ids (missing %d, extra %d, cost mismatch %d, duplicated %d)",
			r.ClickHouse.FinalSum, r.ClickHouse.Distinct, r.ClickHouse.Missing, r.ClickHouse.Extra,
			r.ClickHouse.CostMismatch, r.ClickHouse.Duplicated)
	} else if r.ClickHouseSkipped != "" {
		fmt.Fprintf(&b, ", ClickHouse not checked: %s", r.ClickHouseSkipped)
	}
	return b.String()
}

// write writes a scenario's JSON, Markdown and chart.
func (c *comparer) write(res *ScenarioResult) error {
	doc, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	base, err := report.WriteFiles(res.Meta.Base(c.cfg.ResultsDir), doc, []byte(Markdown(res)), Chart(res))
	if err != nil {
		return err
	}
	c.progress("  wrote %s.{json,md%s}", base, map[bool]string{true: ",svg", false: ""}[Chart(res) != nil])
	return nil
}
