package app

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"tollgate/pkg/usage"
)

// Config of `ledgerd serve`. Every field has a flag and a TOLLGATE_ environment variable;
// the flag wins. Defaults are in DefaultConfig.
type Config struct {
	// DB is a SQLite file path or a postgres:// (postgresql://) DSN.
	// Default: $TOLLGATE_DATA_DIR/ledger.db.
	DB string
	// DataDir holds the SQLite ledger by default. Default: .data.
	DataDir string
	// KafkaBrokers are bootstrap addresses. Default: 127.0.0.1:9092.
	KafkaBrokers []string
	// KafkaPartitions is the partition count used when ledgerd creates missing topics, under the
	// same name as the edge's and analytics' setting (-kafka-partitions,
	// TOLLGATE_KAFKA_PARTITIONS). Default: usage.TopicPartitions (8).
	KafkaPartitions int
	// AdminAddr serves the admin API, /healthz, /readyz and /metrics. Default: 127.0.0.1:8091.
	AdminAddr string
	// InternalAddr serves the edge-facing API. Default: :8090.
	InternalAddr string
	// AdminToken is the admin API's bearer token; generated (and printed to stderr) when empty.
	AdminToken string
	// InternalSecret is the edges' bearer secret; generated (and printed) when empty.
	InternalSecret string
	// PlansFile replaces the embedded deploy/plans.yaml when set.
	PlansFile string
	// WebhookSecret is the payment provider's HMAC-SHA256 key for POST /webhooks/v1/payments
	// (on the admin listener, outside the admin token). Empty: the webhook refuses everything.
	WebhookSecret string
	// WebhookTolerance is how far a webhook signature's timestamp may be from now. Default: 5m.
	WebhookTolerance time.Duration
	// BatchMax is the most usage records per settlement transaction. Default: 10000, the
	// size that sustains 50,000 records/s into PostgreSQL (bench/results/settlement-*.md).
	BatchMax int
	// BatchLinger is how long a settlement batch gathers after its first record. Default: 200ms.
	BatchLinger time.Duration
	// LeaseTTL is a lease's lifetime without an extend. Default: 60s.
	LeaseTTL time.Duration
	// LeaseGrace is how long after expiry (or release) a lease's reservation is reclaimed.
	// Default: 30s.
	LeaseGrace time.Duration
	// ReapEvery is how often the lease reaper runs. Default: 5s.
	ReapEvery time.Duration
	// Retention is how long settled request ids are remembered (and the settlement window).
	// Default: 168h.
	Retention time.Duration
	// ShutdownTimeout bounds graceful shutdown. Default: 30s.
	ShutdownTimeout time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		DataDir:          ".data",
		KafkaBrokers:     []string{"127.0.0.1:9092"},
		KafkaPartitions:  usage.TopicPartitions,
		AdminAddr:        "127.0.0.1:8091",
		InternalAddr:     ":8090",
		BatchMax:         10_000,
		WebhookTolerance: 5 * time.Minute,
		BatchLinger:      200 * time.Millisecond,
		LeaseTTL:         60 * time.Second,
		LeaseGrace:       30 * time.Second,
		ReapEvery:        5 * time.Second,
		Retention:        7 * 24 * time.Hour,
		ShutdownTimeout:  30 * time.Second,
	}
}

// IsPostgres reports whether DB names a PostgreSQL database.
func (c Config) IsPostgres() bool {
	return strings.HasPrefix(c.DB, "postgres://") || strings.HasPrefix(c.DB, "postgresql://")
}

// SecretBytesMin is the shortest accepted admin token or internal secret.
const SecretBytesMin = 16

// Validate checks the whole configuration and reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.DB == "" {
		bad("db", "empty")
	}
	if len(c.KafkaBrokers) == 0 {
		bad("kafka", "no brokers")
	}
	for _, b := range c.KafkaBrokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			bad("kafka", "broker %q: want host:port", b)
		}
	}
	for field, addr := range map[string]string{"admin-addr": c.AdminAddr, "internal-addr": c.InternalAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(field, "%q: want host:port", addr)
		}
	}
	if c.AdminAddr == c.InternalAddr && !strings.HasSuffix(c.AdminAddr, ":0") {
		bad("admin-addr", "same as internal-addr")
	}
	if c.AdminToken != "" && len(c.AdminToken) < SecretBytesMin {
		bad("admin-token", "shorter than %d bytes", SecretBytesMin)
	}
	if c.InternalSecret != "" && len(c.InternalSecret) < SecretBytesMin {
		bad("internal-secret", "shorter than %d bytes", SecretBytesMin)
	}
	if c.WebhookSecret != "" && len(c.WebhookSecret) < SecretBytesMin {
		bad("webhook-secret", "shorter than %d bytes", SecretBytesMin)
	}
	if c.WebhookSecret != "" && (c.WebhookSecret == c.AdminToken || c.WebhookSecret == c.InternalSecret) {
		bad("webhook-secret", "must differ from the admin token and the internal secret")
	}
	if c.WebhookTolerance <= 0 || c.WebhookTolerance > time.Hour {
		bad("webhook-tolerance", "%v not in (0, 1h]", c.WebhookTolerance)
	}
	if c.AdminToken != "" && c.AdminToken == c.InternalSecret {
		bad("internal-secret", "must differ from the admin token: edges must not hold admin rights")
	}
	if c.KafkaPartitions < 1 || c.KafkaPartitions > 1024 {
		bad("kafka-partitions", "%d not in 1..1024", c.KafkaPartitions)
	}
	if c.BatchMax < 1 || c.BatchMax > 100_000 {
		bad("batch-max", "%d not in 1..100000", c.BatchMax)
	}
	for field, d := range map[string]time.Duration{"batch-linger": c.BatchLinger, "lease-ttl": c.LeaseTTL,
		"lease-grace": c.LeaseGrace, "reap-every": c.ReapEvery, "retention": c.Retention, "shutdown-timeout": c.ShutdownTimeout} {
		if d <= 0 {
			bad(field, "must be positive")
		}
	}
	if c.Retention < 2*time.Hour {
		bad("retention", "%v: want at least 2h (it includes a 1h clock-skew margin)", c.Retention)
	}
	if c.PlansFile != "" {
		if _, err := os.Stat(c.PlansFile); err != nil {
			bad("plans", "%v", err)
		}
	}
	return errors.Join(errs...)
}

// Deprecated names of KafkaPartitions, accepted for one release after the rename to the name
// the edge and analytics use. Remove them (and resolvePartitions' alias handling) in the
// release after.
const (
	partitionsFlagOld = "topic-partitions"
	partitionsEnvOld  = "TOLLGATE_TOPIC_PARTITIONS"
	partitionsFlag    = "kafka-partitions"
	partitionsEnv     = "TOLLGATE_KAFKA_PARTITIONS"
)

// ParseServe reads `ledgerd serve` flags over environment variables over defaults. It
// returns validateOnly when -validate was given. Deprecated names still in use are logged on
// log as warnings.
func ParseServe(args []string, getenv func(string) string, stderr io.Writer, log *slog.Logger) (cfg Config, validateOnly bool, err error) {
	cfg = DefaultConfig()
	fs := flag.NewFlagSet("ledgerd serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	var errs []error
	envDur := func(name string, def time.Duration) time.Duration {
		v := getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			return def
		}
		return d
	}
	envInt := func(name string, def int) int {
		v := getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			return def
		}
		return n
	}
	dataDir := env("TOLLGATE_DATA_DIR", cfg.DataDir)
	fs.StringVar(&cfg.DataDir, "data-dir", dataDir, "data directory (env TOLLGATE_DATA_DIR)")
	fs.StringVar(&cfg.DB, "db", getenv("TOLLGATE_LEDGER_DB"), "SQLite path or postgres:// DSN (env TOLLGATE_LEDGER_DB; default <data-dir>/ledger.db)")
	brokers := fs.String("kafka", env("TOLLGATE_KAFKA_BROKERS", strings.Join(cfg.KafkaBrokers, ",")), "Kafka brokers, comma-separated (env TOLLGATE_KAFKA_BROKERS)")
	fs.IntVar(&cfg.KafkaPartitions, partitionsFlag, envInt(partitionsEnv, cfg.KafkaPartitions), "partitions of topics ledgerd creates (env "+partitionsEnv+")")
	partitionsOld := fs.Int(partitionsFlagOld, 0, "deprecated: use -"+partitionsFlag+" (env "+partitionsEnvOld+", deprecated: use "+partitionsEnv+")")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", env("TOLLGATE_LEDGER_ADMIN_ADDR", cfg.AdminAddr), "admin API listen address (env TOLLGATE_LEDGER_ADMIN_ADDR)")
	fs.StringVar(&cfg.InternalAddr, "internal-addr", env("TOLLGATE_LEDGER_INTERNAL_ADDR", cfg.InternalAddr), "edge API listen address (env TOLLGATE_LEDGER_INTERNAL_ADDR)")
	fs.StringVar(&cfg.AdminToken, "admin-token", getenv("TOLLGATE_ADMIN_TOKEN"), "admin bearer token (env TOLLGATE_ADMIN_TOKEN; generated when empty)")
	fs.StringVar(&cfg.InternalSecret, "internal-secret", getenv("TOLLGATE_INTERNAL_SECRET"), "edge shared secret (env TOLLGATE_INTERNAL_SECRET; generated when empty)")
	fs.StringVar(&cfg.PlansFile, "plans", getenv("TOLLGATE_PLANS_FILE"), "plans file (env TOLLGATE_PLANS_FILE; default: embedded deploy/plans.yaml)")
	fs.StringVar(&cfg.WebhookSecret, "webhook-secret", getenv("TOLLGATE_WEBHOOK_SECRET"), "payment webhook HMAC key (env TOLLGATE_WEBHOOK_SECRET; webhook disabled when empty)")
	fs.DurationVar(&cfg.WebhookTolerance, "webhook-tolerance", envDur("TOLLGATE_WEBHOOK_TOLERANCE", cfg.WebhookTolerance), "webhook signature timestamp tolerance (env TOLLGATE_WEBHOOK_TOLERANCE)")
	fs.IntVar(&cfg.BatchMax, "batch-max", envInt("TOLLGATE_LEDGER_BATCH_MAX", cfg.BatchMax), "most usage records per settlement batch (env TOLLGATE_LEDGER_BATCH_MAX)")
	fs.DurationVar(&cfg.BatchLinger, "batch-linger", envDur("TOLLGATE_LEDGER_BATCH_LINGER", cfg.BatchLinger), "settlement batch linger (env TOLLGATE_LEDGER_BATCH_LINGER)")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", envDur("TOLLGATE_LEASE_TTL", cfg.LeaseTTL), "lease lifetime without extend (env TOLLGATE_LEASE_TTL)")
	fs.DurationVar(&cfg.LeaseGrace, "lease-grace", envDur("TOLLGATE_LEASE_GRACE", cfg.LeaseGrace), "grace after expiry before a lease is reclaimed (env TOLLGATE_LEASE_GRACE)")
	fs.DurationVar(&cfg.ReapEvery, "reap-every", envDur("TOLLGATE_LEASE_REAP_EVERY", cfg.ReapEvery), "lease reaper period (env TOLLGATE_LEASE_REAP_EVERY)")
	fs.DurationVar(&cfg.Retention, "retention", envDur("TOLLGATE_SETTLED_RETENTION", cfg.Retention), "how long settled request ids are kept (env TOLLGATE_SETTLED_RETENTION)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", envDur("TOLLGATE_SHUTDOWN_TIMEOUT", cfg.ShutdownTimeout), "graceful shutdown bound (env TOLLGATE_SHUTDOWN_TIMEOUT)")
	fs.BoolVar(&validateOnly, "validate", false, "check the configuration and exit")
	if err := fs.Parse(args); err != nil {
		return cfg, false, err
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %v", fs.Args()))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if err := resolvePartitions(&cfg, set, *partitionsOld, getenv, log); err != nil {
		errs = append(errs, err)
	}
	cfg.KafkaBrokers = nil
	for _, b := range strings.Split(*brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.KafkaBrokers = append(cfg.KafkaBrokers, b)
		}
	}
	if cfg.DB == "" {
		cfg.DB = filepath.Join(cfg.DataDir, "ledger.db")
	}
	return cfg, validateOnly, errors.Join(errs...)
}

// resolvePartitions applies the deprecated -topic-partitions and TOLLGATE_TOPIC_PARTITIONS,
// each as an alias of the new name at its own level: the old flag stands in for
// -kafka-partitions and the old variable for TOLLGATE_KAFKA_PARTITIONS, and a flag still beats
// a variable. Old and new name both set at one level to different values is an error, since
// either guess could be the stale one. cfg.KafkaPartitions holds the value already resolved
// from the new flag, the new variable and the default; flagsSet names the flags given.
func resolvePartitions(cfg *Config, flagsSet map[string]bool, flagOld int, getenv func(string) string, log *slog.Logger) error {
	var errs []error
	if v := getenv(partitionsEnvOld); v != "" {
		log.Warn("config_name_deprecated", "deprecated", partitionsEnvOld, "use", partitionsEnv)
		old, err := strconv.Atoi(v)
		switch newV := getenv(partitionsEnv); {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", partitionsEnvOld, err))
		case newV == "":
			if !flagsSet[partitionsFlag] && !flagsSet[partitionsFlagOld] {
				cfg.KafkaPartitions = old
			}
		case newV != strconv.Itoa(old):
			// An unparsable new value was reported already; a conflict would only add noise.
			if n, err := strconv.Atoi(newV); err != nil || n == old {
				break
			}
			errs = append(errs, fmt.Errorf("%s=%s and %s=%s differ: keep %s and remove %s, its deprecated old name",
				partitionsEnvOld, v, partitionsEnv, newV, partitionsEnv, partitionsEnvOld))
		}
	}
	if flagsSet[partitionsFlagOld] {
		log.Warn("config_name_deprecated", "deprecated", "-"+partitionsFlagOld, "use", "-"+partitionsFlag)
		switch {
		case !flagsSet[partitionsFlag]:
			cfg.KafkaPartitions = flagOld
		case cfg.KafkaPartitions != flagOld:
			errs = append(errs, fmt.Errorf("-%s=%d and -%s=%d differ: keep -%s and remove -%s, its deprecated old name",
				partitionsFlagOld, flagOld, partitionsFlag, cfg.KafkaPartitions, partitionsFlag, partitionsFlagOld))
		}
	}
	return errors.Join(errs...)
}

// FillSecrets generates the admin token and internal secret when empty and reports each one
// generated on w, since nobody else can know them.
func (c *Config) FillSecrets(w io.Writer) error {
	for _, s := range []struct {
		v    *string
		name string
	}{{&c.AdminToken, "TOLLGATE_ADMIN_TOKEN"}, {&c.InternalSecret, "TOLLGATE_INTERNAL_SECRET"}} {
		if *s.v != "" {
			continue
		}
		var b [24]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("generate %s: %w", s.name, err)
		}
		*s.v = hex.EncodeToString(b[:])
		fmt.Fprintf(w, "ledgerd: %s was not set; generated for this run: %s\n", s.name, *s.v)
	}
	return nil
}
