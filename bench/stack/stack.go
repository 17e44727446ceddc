// Package stack starts the whole Tollgate stack on one machine as real processes: the dev
// Kafka broker (kfake), ClickHouse (a private server, when available), ledgerd, analytics, the
// mock upstream and one or more edges. `make run` uses it through cmd/devstack, and the
// end-to-end and fault tests use it to kill and restart real processes.
package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Ports of every listener. Zero values take the defaults of DESIGN §7.
type Ports struct {
	Edge           int // 8080; edge i listens on Edge+i
	EdgeOps        int // 9101; edge i on EdgeOps+i
	LedgerInternal int // 8090
	LedgerAdmin    int // 8091
	Analytics      int // 8095
	Mock           int // 8070
	Kafka          int // 9092
	CHNative       int // 19000
	CHHTTP         int // 18123
}

func (p *Ports) defaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&p.Edge, 8080)
	def(&p.EdgeOps, 9101)
	def(&p.LedgerInternal, 8090)
	def(&p.LedgerAdmin, 8091)
	def(&p.Analytics, 8095)
	def(&p.Mock, 8070)
	def(&p.Kafka, 9092)
	def(&p.CHNative, 19000)
	def(&p.CHHTTP, 18123)
}

// Config of a stack.
type Config struct {
	BinDir  string // where edge, ledgerd, analytics, bench and devstack binaries are
	RepoDir string // repository root, for deploy/dev scripts
	DataDir string // all state: broker log, ledger.db, ClickHouse data, logs
	Ports   Ports
	// Edges is the number of edge nodes. Default: 1.
	Edges int
	// UpstreamURL names a real upstream; empty starts the mock upstream.
	UpstreamURL  string
	UpstreamKeys string
	// ClickHouseDSN names an existing ClickHouse; empty starts a private one when possible.
	ClickHouseDSN string
	// NoAnalytics runs without ClickHouse and analytics.
	NoAnalytics bool
	// LedgerDB is a PostgreSQL DSN or SQLite path; empty uses SQLite under DataDir.
	LedgerDB       string
	AdminToken     string // generated when empty
	InternalSecret string // generated when empty
	// ExtraEnv is added to every service's environment (e.g. lease tuning in tests).
	ExtraEnv []string
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
}

// Stack is a running set of processes.
type Stack struct {
	cfg       Config
	logDir    string
	Kafka     *Proc
	Ledgerd   *Proc
	Analytics *Proc // nil when running without analytics
	Mock      *Proc // nil when UpstreamURL names a real upstream
	Edges     []*Proc
	// CHStarted is true when this stack started its own ClickHouse server.
	CHStarted     bool
	ClickHouseDSN string
	// Why analytics is off, when it is.
	AnalyticsOff string
	// LedgerDB is what ledgerd was given: Config.LedgerDB, or the SQLite file under DataDir.
	LedgerDB string
}

// Start brings every service up in dependency order and waits until each answers.
// On error everything already started is stopped.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	s := &Stack{}
	if err := s.start(ctx, cfg); err != nil {
		s.Stop() // whatever started before the failure
		return nil, err
	}
	return s, nil
}

func (s *Stack) start(ctx context.Context, cfg Config) error {
	cfg.Ports.defaults()
	if cfg.Edges <= 0 {
		cfg.Edges = 1
	}
	if cfg.AdminToken == "" {
		cfg.AdminToken = randomToken("tg-admin-")
	}
	if cfg.InternalSecret == "" {
		cfg.InternalSecret = randomToken("tg-internal-")
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	s.cfg, s.logDir = cfg, filepath.Join(cfg.DataDir, "logs")
	if err := os.MkdirAll(s.logDir, 0o755); err != nil {
		return fmt.Errorf("create log dir: %w", err)
	}
	p := cfg.Ports
	kafkaAddr := fmt.Sprintf("127.0.0.1:%d", p.Kafka)

	s.Kafka = &Proc{Name: "kafka", Path: s.bin("devstack"),
		Args:  []string{"kafka", "-addr", kafkaAddr, "-data-dir", filepath.Join(cfg.DataDir, "kafka")},
		Ready: TCPReady(kafkaAddr)}
	if err := s.startProc(ctx, s.Kafka); err != nil {
		return err
	}

	s.ClickHouseDSN = cfg.ClickHouseDSN
	if !cfg.NoAnalytics && s.ClickHouseDSN == "" {
		s.startClickHouse(ctx)
	}
	if cfg.NoAnalytics {
		s.AnalyticsOff = "disabled by configuration"
	}

	ledgerDB := cfg.LedgerDB
	if ledgerDB == "" {
		ledgerDB = filepath.Join(cfg.DataDir, "ledger.db")
	}
	s.LedgerDB = ledgerDB
	s.Ledgerd = &Proc{Name: "ledgerd", Path: s.bin("ledgerd"), Args: []string{"serve"},
		Env: s.env(
			"TOLLGATE_LEDGER_DB="+ledgerDB,
			"TOLLGATE_KAFKA_BROKERS="+kafkaAddr,
			fmt.Sprintf("TOLLGATE_LEDGER_ADMIN_ADDR=127.0.0.1:%d", p.LedgerAdmin),
			fmt.Sprintf("TOLLGATE_LEDGER_INTERNAL_ADDR=127.0.0.1:%d", p.LedgerInternal),
		),
		Ready: HTTPReady(fmt.Sprintf("http://127.0.0.1:%d/readyz", p.LedgerAdmin))}
	if err := s.startProc(ctx, s.Ledgerd); err != nil {
		return err
	}

	if s.ClickHouseDSN != "" {
		s.Analytics = &Proc{Name: "analytics", Path: s.bin("analytics"),
			Env: s.env(
				"TOLLGATE_CLICKHOUSE_DSN="+s.ClickHouseDSN,
				"TOLLGATE_KAFKA_BROKERS="+kafkaAddr,
				fmt.Sprintf("TOLLGATE_ANALYTICS_ADDR=127.0.0.1:%d", p.Analytics),
			),
			Ready: HTTPReady(fmt.Sprintf("http://127.0.0.1:%d/readyz", p.Analytics))}
		if err := s.startProc(ctx, s.Analytics); err != nil {
			return err
		}
	}

	upstream := cfg.UpstreamURL
	if upstream == "" {
		mockAddr := fmt.Sprintf("127.0.0.1:%d", p.Mock)
		upstream = "http://" + mockAddr
		s.Mock = &Proc{Name: "mock-upstream", Path: s.bin("bench"),
			Args: []string{"upstream", "-addr", mockAddr}, Ready: TCPReady(mockAddr)}
		if err := s.startProc(ctx, s.Mock); err != nil {
			return err
		}
	}
	keys := cfg.UpstreamKeys
	if keys == "" && cfg.UpstreamURL == "" {
		keys = "mock-upstream-key-1,mock-upstream-key-2"
	}
	for i := 0; i < cfg.Edges; i++ {
		e := &Proc{Name: "edge" + strconv.Itoa(i), Path: s.bin("edge"),
			Args: []string{
				"-addr", fmt.Sprintf("127.0.0.1:%d", p.Edge+i),
				"-ops-addr", fmt.Sprintf("127.0.0.1:%d", p.EdgeOps+i),
			},
			Env: s.env(
				"TOLLGATE_UPSTREAM_URL="+upstream,
				"TOLLGATE_UPSTREAM_KEYS="+keys,
				fmt.Sprintf("TOLLGATE_LEDGER_URL=http://127.0.0.1:%d", p.LedgerInternal),
				"TOLLGATE_KAFKA_BROKERS="+kafkaAddr,
				fmt.Sprintf("TOLLGATE_EDGE_ID=edge%d", i),
				"TOLLGATE_DATA_DIR="+filepath.Join(cfg.DataDir, fmt.Sprintf("edge%d", i)),
			),
			Ready: HTTPReady(fmt.Sprintf("http://127.0.0.1:%d/readyz", p.EdgeOps+i))}
		if err := s.startProc(ctx, e); err != nil {
			return err
		}
		s.Edges = append(s.Edges, e)
	}
	return nil
}

func (s *Stack) startProc(ctx context.Context, p *Proc) error {
	s.cfg.Logf("starting %s", p.Name)
	return p.start(ctx, s.logDir, 60*time.Second)
}

// Restart starts a stopped or killed process again.
func (s *Stack) Restart(ctx context.Context, p *Proc) error { return s.startProc(ctx, p) }

// startClickHouse runs deploy/dev/clickhouse.sh; failure leaves analytics off with a reason.
func (s *Stack) startClickHouse(ctx context.Context) {
	p := s.cfg.Ports
	script := filepath.Join(s.cfg.RepoDir, "deploy", "dev", "clickhouse.sh")
	s.cfg.Logf("starting clickhouse (installs clickhouse-server from Debian packages when missing)")
	cmd := exec.CommandContext(ctx, "bash", script, "start", filepath.Join(s.cfg.DataDir, "clickhouse"),
		strconv.Itoa(p.CHNative), strconv.Itoa(p.CHHTTP))
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.AnalyticsOff = fmt.Sprintf("ClickHouse could not be started (%v): %s", err, lastLine(out))
		return
	}
	s.CHStarted = true
	s.ClickHouseDSN = fmt.Sprintf("clickhouse://127.0.0.1:%d/tollgate", p.CHNative)
}

// Stop stops everything this stack started, edges first so they can flush to Kafka, then
// the consumers, then the broker and ClickHouse. Idempotent.
func (s *Stack) Stop() {
	var procs []*Proc
	procs = append(procs, s.Edges...)
	procs = append(procs, s.Mock, s.Analytics, s.Ledgerd, s.Kafka)
	for _, p := range procs {
		if p != nil && p.Running() {
			s.cfg.Logf("stopping %s", p.Name)
			_ = p.Stop(15 * time.Second)
		}
	}
	if s.CHStarted {
		s.cfg.Logf("stopping clickhouse")
		script := filepath.Join(s.cfg.RepoDir, "deploy", "dev", "clickhouse.sh")
		_ = exec.Command("bash", script, "stop", filepath.Join(s.cfg.DataDir, "clickhouse")).Run()
		s.CHStarted = false
	}
}

// ClickHousePid is the pid of the ClickHouse server this stack started, or 0.
func (s *Stack) ClickHousePid() int {
	if !s.CHStarted {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, "clickhouse", "pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// Addresses for clients.
func (s *Stack) EdgeURL(i int) string {
	return fmt.Sprintf("http://127.0.0.1:%d", s.cfg.Ports.Edge+i)
}
func (s *Stack) EdgeOpsURL(i int) string {
	return fmt.Sprintf("http://127.0.0.1:%d", s.cfg.Ports.EdgeOps+i)
}
func (s *Stack) AdminURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d", s.cfg.Ports.LedgerAdmin)
}
func (s *Stack) AnalyticsURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d", s.cfg.Ports.Analytics)
}
func (s *Stack) KafkaAddr() string  { return fmt.Sprintf("127.0.0.1:%d", s.cfg.Ports.Kafka) }
func (s *Stack) AdminToken() string { return s.cfg.AdminToken }
func (s *Stack) LogDir() string     { return s.logDir }

func (s *Stack) bin(name string) string { return filepath.Join(s.cfg.BinDir, name) }

func (s *Stack) env(kv ...string) []string {
	base := []string{
		"TOLLGATE_ADMIN_TOKEN=" + s.cfg.AdminToken,
		"TOLLGATE_INTERNAL_SECRET=" + s.cfg.InternalSecret,
		"TOLLGATE_DATA_DIR=" + s.cfg.DataDir,
	}
	out := append(base, s.cfg.ExtraEnv...)
	return append(out, kv...) // later entries win in os/exec
}

func randomToken(prefix string) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return prefix + hex.EncodeToString(b)
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// Binaries are the commands a stack runs, as package paths relative to the repository root.
var Binaries = []string{"./edge/cmd/edge", "./ledgerd/cmd/ledgerd", "./analytics/cmd/analytics",
	"./bench/cmd/bench", "./bench/cmd/devstack"}

// Build compiles every binary of the stack into binDir.
func Build(ctx context.Context, repoDir, binDir string) error {
	args := append([]string{"build", "-o", binDir + string(os.PathSeparator)}, Binaries...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = repoDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}
