// Package config is the edge's configuration: a typed struct with defaults in code, read from
// (in increasing precedence) an optional YAML file, TOLLGATE_* environment variables and
// command-line flags, then validated as a whole. Every option has exactly one flag and one
// environment variable; edge/README.md is the reference (a test keeps the two in step).
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"tollgate/pkg/usage"
)

// Config is the whole edge configuration. Units are in the field names or comments; the
// defaults are in Default.
type Config struct {
	// Addr is the client API listen address. Default: ":8080".
	Addr string `yaml:"addr"`
	// OpsAddr is the operator listener (/healthz, /readyz, /metrics). Default: "127.0.0.1:9101".
	OpsAddr string `yaml:"ops_addr"`
	// EdgeID names this node in usage records (edge_id). Default: "<hostname>-<pid>".
	EdgeID string `yaml:"edge_id"`
	// LogLevel is debug, info, warn or error. Default: "info".
	LogLevel string `yaml:"log_level"`
	// PricesFile is a price table (deploy/prices.yaml format); empty uses the embedded one.
	// It is reloaded on SIGHUP. Default: "".
	PricesFile string `yaml:"prices_file"`
	// DataDir holds the node's state: the usage record write-ahead log. Default: ".data".
	DataDir string `yaml:"data_dir"`

	Server   Server   `yaml:"server"`
	Upstream Upstream `yaml:"upstream"`
	Ledger   Ledger   `yaml:"ledger"`
	Kafka    Kafka    `yaml:"kafka"`
	Records  Records  `yaml:"records"`
}

// Server configures the client-facing listener.
type Server struct {
	// BodyBytesMax bounds a request body; larger ones get 413. Default: 32 MiB.
	BodyBytesMax int `yaml:"body_bytes_max"`
	// HeaderBytesMax bounds the request line plus headers (it is fasthttp's per-connection
	// read buffer, so it also costs this much memory per connection). Default: 16 KiB.
	HeaderBytesMax int `yaml:"header_bytes_max"`
	// ReadTimeout bounds reading one whole request, body included. Default: 60s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing one whole response, a stream included, so it must exceed
	// the longest stream served. Default: 15m.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout closes keep-alive connections idle this long. Default: 120s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// ConnsMax bounds concurrent client connections; more are refused. Default: 20000.
	ConnsMax int `yaml:"conns_max"`
	// ShutdownTimeout is how long a graceful stop lets in-flight requests and streams
	// finish before the usage records are flushed. Default: 30s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// Upstream configures the provider the edge forwards to.
type Upstream struct {
	// URL is the upstream base URL; request paths are appended to it.
	// Default: "http://127.0.0.1:8070" (the bench mock).
	URL string `yaml:"url"`
	// Keys are the operator's upstream API keys, used round-robin. Secret: never logged,
	// never sent to clients; records carry a short hash id instead. Required.
	Keys []string `yaml:"keys"`
	// DialTimeout bounds opening one upstream connection. Default: 5s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// WriteTimeout bounds sending one request upstream. Default: 60s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// ReadTimeout bounds reading one whole upstream response, a stream included.
	// Default: 10m.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// ConnsMax bounds open upstream connections. Default: 4096.
	ConnsMax int `yaml:"conns_max"`
	// ConnWaitTimeout is how long a request waits for a free upstream connection when
	// ConnsMax are busy, before it gets 503. Default: 2s.
	ConnWaitTimeout time.Duration `yaml:"conn_wait_timeout"`
	// IdleConnTimeout closes upstream keep-alive connections idle this long. Default: 30s.
	IdleConnTimeout time.Duration `yaml:"idle_conn_timeout"`
	// ResponseBytesMax bounds a non-streaming upstream response body. Default: 64 MiB.
	ResponseBytesMax int `yaml:"response_bytes_max"`
	// DrainTimeout bounds reading a stream to its end after its client went away, so its
	// real usage can be billed. Default: 5m.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// DrainsMax bounds concurrent drains; beyond it an abandoned stream is cut and billed on
	// an estimate. Default: 256.
	DrainsMax int `yaml:"drains_max"`
}

// Ledger configures ledgerd's internal API and the caches in front of it.
type Ledger struct {
	// URL is ledgerd's internal API base URL. Default: "http://127.0.0.1:8090".
	URL string `yaml:"url"`
	// Secret is the shared secret for ledgerd's internal API. Required. Secret.
	Secret string `yaml:"secret"`
	// Timeout bounds one call to ledgerd. Default: 2s.
	Timeout time.Duration `yaml:"timeout"`
	// KeyTTL is how long a known key is trusted without asking ledgerd again; at most 5s
	// so a revoked key stops on every edge within 10s. Default: 5s.
	KeyTTL time.Duration `yaml:"key_ttl"`
	// KeyNegativeTTL is how long an unknown key is remembered as unknown, so a flood of
	// bad keys cannot reach ledgerd. Default: 3s.
	KeyNegativeTTL time.Duration `yaml:"key_negative_ttl"`
	// KeyCacheMax bounds cached keys (known and unknown). Default: 100000.
	KeyCacheMax int `yaml:"key_cache_max"`
	// AccountCacheMax bounds the accounts this node keeps a credit lease for; an account
	// evicted from the cache returns its lease. Default: 100000.
	AccountCacheMax int `yaml:"account_cache_max"`
	// LeaseWindow is how much of an account's recent spend on this node its lease covers:
	// longer means fewer ledgerd calls and more credit parked on the node. Default: 5s.
	LeaseWindow time.Duration `yaml:"lease_window"`
	// LeaseMicrocreditsMax bounds the lease size asked for, in µcr (a single request's hold
	// above it is still asked for on its own). Default: 1,000,000,000 (1,000 credits).
	LeaseMicrocreditsMax int `yaml:"lease_microcredits_max"`
	// LeaseRecallPoll is how often the node asks ledgerd which of its leases another node
	// needs back, and sweeps its leases for expiry and refreshes. Keep it well under
	// ledgerd's lease TTL: a lease stops being used two polls before it expires.
	// Default: 250ms.
	LeaseRecallPoll time.Duration `yaml:"lease_recall_poll"`
	// LeaseRecallWait is how long a request refused by ledgerd waits for credit that other
	// nodes were asked to return, before it gets 402. Default: 1s.
	LeaseRecallWait time.Duration `yaml:"lease_recall_wait"`
	// LeaseReturnTimeout bounds returning every lease to ledgerd at shutdown; leases not
	// returned expire and are reclaimed by ledgerd. Default: 10s.
	LeaseReturnTimeout time.Duration `yaml:"lease_return_timeout"`
}

// Kafka configures where usage records go.
type Kafka struct {
	// Brokers are Kafka bootstrap addresses. Default: ["127.0.0.1:9092"].
	Brokers []string `yaml:"brokers"`
	// Partitions is the partition count used when the edge creates usage.v1. Default: 8
	// (usage.TopicPartitions).
	Partitions int `yaml:"partitions"`
	// WriteTimeout bounds one produce request. Default: 10s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
}

// Records configures the way of usage records to Kafka: the write-ahead log and its shipper.
type Records struct {
	// WALDir holds the write-ahead log; one edge process per directory. Default: "", which
	// is DataDir/wal.
	WALDir string `yaml:"wal_dir"`
	// WALBytesMax bounds the write-ahead log on disk; when it is full (Kafka down long
	// enough), new requests get 503 rather than being served unbilled. Default: 2 GiB.
	WALBytesMax int `yaml:"wal_bytes_max"`
	// WALSegmentBytes is the size at which a log segment is sealed and a new one started;
	// shipped segments are deleted whole. Default: 16 MiB.
	WALSegmentBytes int `yaml:"wal_segment_bytes"`
	// WALSync is what a request waits for before its response: "interval" — the record's
	// write (it survives the process dying; a power cut can lose the last WALSyncInterval of
	// records) — or "always" — the record's fsync (group commit; survives a power cut; a
	// non-streaming response waits 0.3–1.5 ms more). Default: "interval".
	WALSync string `yaml:"wal_sync"`
	// WALSyncInterval is the time between WAL fsyncs under WALSync "interval". Default: 10ms.
	WALSyncInterval time.Duration `yaml:"wal_sync_interval"`
	// BatchMax bounds records in one Kafka produce call. Default: 1000.
	BatchMax int `yaml:"batch_max"`
	// Linger is how long the WAL shipper gathers durable records before a produce call that
	// is not full (BatchMax): fewer, larger calls cost the edge and the brokers less, and
	// settlement waits up to Linger more. Default: 50ms.
	Linger time.Duration `yaml:"linger"`
	// FlushTimeout bounds shipping the WAL at shutdown; records left stay on disk and ship
	// at the next start on the same WAL directory. Default: 15s.
	FlushTimeout time.Duration `yaml:"flush_timeout"`
}

// KeyTTLMax is the longest allowed KeyTTL: DESIGN §3 promises that a revoked key stops on
// every edge within 10 seconds, which leaves room for one TTL plus one ledger call.
const KeyTTLMax = 5 * time.Second

// Default returns the configuration with every default filled in.
func Default() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "edge"
	}
	return Config{
		Addr:     ":8080",
		OpsAddr:  "127.0.0.1:9101",
		EdgeID:   host + "-" + strconv.Itoa(os.Getpid()),
		LogLevel: "info",
		DataDir:  ".data",
		Server: Server{
			BodyBytesMax:    32 << 20,
			HeaderBytesMax:  16 << 10,
			ReadTimeout:     60 * time.Second,
			WriteTimeout:    15 * time.Minute,
			IdleTimeout:     120 * time.Second,
			ConnsMax:        20000,
			ShutdownTimeout: 30 * time.Second,
		},
		Upstream: Upstream{
			URL:              "http://127.0.0.1:8070",
			DialTimeout:      5 * time.Second,
			WriteTimeout:     60 * time.Second,
			ReadTimeout:      10 * time.Minute,
			ConnsMax:         4096,
			ConnWaitTimeout:  2 * time.Second,
			IdleConnTimeout:  30 * time.Second,
			ResponseBytesMax: 64 << 20,
			DrainTimeout:     5 * time.Minute,
			DrainsMax:        256,
		},
		Ledger: Ledger{
			URL:             "http://127.0.0.1:8090",
			Timeout:         2 * time.Second,
			KeyTTL:          5 * time.Second,
			KeyNegativeTTL:  3 * time.Second,
			KeyCacheMax:     100000,
			AccountCacheMax: 100000,

			LeaseWindow:          5 * time.Second,
			LeaseMicrocreditsMax: 1_000_000_000,
			LeaseRecallPoll:      250 * time.Millisecond,
			LeaseRecallWait:      time.Second,
			LeaseReturnTimeout:   10 * time.Second,
		},
		Kafka: Kafka{
			Brokers:      []string{"127.0.0.1:9092"},
			Partitions:   usage.TopicPartitions,
			WriteTimeout: 10 * time.Second,
		},
		Records: Records{
			WALBytesMax:     2 << 30,
			WALSegmentBytes: 16 << 20,
			WALSync:         "interval",
			WALSyncInterval: 10 * time.Millisecond,
			BatchMax:        1000,
			Linger:          50 * time.Millisecond,
			FlushTimeout:    15 * time.Second,
		},
	}
}

// Option describes one setting for documentation: its flag, environment variable, unit,
// default and meaning.
type Option struct {
	Flag    string
	Env     string
	Unit    string
	Default string
	Help    string
	ptr     any
}

// options binds every flag to its field in c. The order is the order of -help and README.
func options(c *Config) []Option {
	o := func(flag, unit, help string, ptr any) Option {
		return Option{Flag: flag, Env: "TOLLGATE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_")),
			Unit: unit, Help: help, ptr: ptr}
	}
	// The listen addresses carry EDGE in their variables: a shell that runs the whole stack
	// also sets ledgerd's and analytics' addresses.
	env := func(op Option, name string) Option { op.Env = name; return op }
	return []Option{
		env(o("addr", "host:port", "client API listen address", &c.Addr), "TOLLGATE_EDGE_ADDR"),
		env(o("ops-addr", "host:port", "operator listener: /healthz, /readyz, /metrics, /debug/pprof/", &c.OpsAddr), "TOLLGATE_EDGE_OPS_ADDR"),
		o("edge-id", "string", "this node's id in usage records (edge_id)", &c.EdgeID),
		o("log-level", "level", "debug, info, warn or error", &c.LogLevel),
		o("prices-file", "path", "price table file; empty = embedded deploy/prices.yaml; reloaded on SIGHUP", &c.PricesFile),
		o("data-dir", "path", "the node's state (the usage record WAL)", &c.DataDir),

		o("body-bytes-max", "bytes", "largest request body; larger gets 413", &c.Server.BodyBytesMax),
		o("header-bytes-max", "bytes", "largest request line + headers (also the per-connection read buffer)", &c.Server.HeaderBytesMax),
		o("read-timeout", "duration", "time to read one whole request", &c.Server.ReadTimeout),
		o("write-timeout", "duration", "time to write one whole response, streams included", &c.Server.WriteTimeout),
		o("idle-timeout", "duration", "keep-alive idle time before a client connection is closed", &c.Server.IdleTimeout),
		o("conns-max", "count", "concurrent client connections", &c.Server.ConnsMax),
		o("shutdown-timeout", "duration", "graceful stop: time for in-flight requests and streams to finish", &c.Server.ShutdownTimeout),

		o("upstream-url", "URL", "upstream base URL", &c.Upstream.URL),
		o("upstream-keys", "comma list", "operator's upstream API keys, used round-robin (required, secret)", &c.Upstream.Keys),
		o("upstream-dial-timeout", "duration", "time to open one upstream connection", &c.Upstream.DialTimeout),
		o("upstream-write-timeout", "duration", "time to send one request upstream", &c.Upstream.WriteTimeout),
		o("upstream-read-timeout", "duration", "time to read one whole upstream response, streams included", &c.Upstream.ReadTimeout),
		o("upstream-conns-max", "count", "open upstream connections", &c.Upstream.ConnsMax),
		o("upstream-conn-wait-timeout", "duration", "wait for a free upstream connection before answering 503", &c.Upstream.ConnWaitTimeout),
		o("upstream-idle-conn-timeout", "duration", "idle upstream keep-alive connections are closed after this", &c.Upstream.IdleConnTimeout),
		o("upstream-response-bytes-max", "bytes", "largest non-streaming upstream response body", &c.Upstream.ResponseBytesMax),
		o("drain-timeout", "duration", "time to read an abandoned stream to its end to bill it", &c.Upstream.DrainTimeout),
		o("drains-max", "count", "concurrent drains of abandoned streams; beyond it they are billed on an estimate", &c.Upstream.DrainsMax),

		o("ledger-url", "URL", "ledgerd internal API base URL", &c.Ledger.URL),
		o("internal-secret", "string", "shared secret for ledgerd's internal API (required, secret)", &c.Ledger.Secret),
		o("ledger-timeout", "duration", "time for one ledgerd call", &c.Ledger.Timeout),
		o("key-ttl", "duration", "how long a known key is trusted without asking ledgerd (at most 5s)", &c.Ledger.KeyTTL),
		o("key-negative-ttl", "duration", "how long an unknown key is remembered as unknown", &c.Ledger.KeyNegativeTTL),
		o("key-cache-max", "count", "cached keys, known and unknown", &c.Ledger.KeyCacheMax),
		o("account-cache-max", "count", "accounts with a credit lease on this node; an evicted one returns its lease", &c.Ledger.AccountCacheMax),
		o("lease-window", "duration", "a lease covers this much of the account's recent spend on this node", &c.Ledger.LeaseWindow),
		o("lease-microcredits-max", "µcr", "largest lease asked for (a larger hold is still asked for alone)", &c.Ledger.LeaseMicrocreditsMax),
		o("lease-recall-poll", "duration", "how often recalled leases are polled and leases swept; well under ledgerd's lease TTL", &c.Ledger.LeaseRecallPoll),
		o("lease-recall-wait", "duration", "how long a refused request waits for credit recalled from other nodes before 402", &c.Ledger.LeaseRecallWait),
		o("lease-return-timeout", "duration", "time to return leases to ledgerd at shutdown", &c.Ledger.LeaseReturnTimeout),

		o("kafka-brokers", "comma list", "Kafka bootstrap addresses", &c.Kafka.Brokers),
		o("kafka-partitions", "count", "partitions of usage.v1 when the edge creates it", &c.Kafka.Partitions),
		o("kafka-write-timeout", "duration", "time for one produce request", &c.Kafka.WriteTimeout),

		o("wal-dir", "path", "usage record write-ahead log; empty = <data-dir>/wal; one edge per directory", &c.Records.WALDir),
		o("wal-bytes-max", "bytes", "bound of the WAL on disk; when full, new requests get 503", &c.Records.WALBytesMax),
		o("wal-segment-bytes", "bytes", "WAL segment size; shipped segments are deleted whole", &c.Records.WALSegmentBytes),
		o("wal-sync", "interval|always", "response waits for the record's write (interval) or its fsync (always)", &c.Records.WALSync),
		o("wal-sync-interval", "duration", "time between WAL fsyncs with wal-sync=interval: what a power cut can lose", &c.Records.WALSyncInterval),
		o("records-batch-max", "records", "records in one produce call", &c.Records.BatchMax),
		o("records-linger", "duration", "time the WAL shipper gathers records before a produce call that is not full", &c.Records.Linger),
		o("records-flush-timeout", "duration", "time to ship the WAL at shutdown; what is left ships at the next start", &c.Records.FlushTimeout),
	}
}

// Options documents every setting with its default, for -help and the README.
func Options() []Option {
	c := Default()
	c.EdgeID = "<hostname>-<pid>"
	opts := options(&c)
	for i := range opts {
		opts[i].Default = format(opts[i].ptr, opts[i].Unit == "bytes")
		opts[i].ptr = nil
	}
	return opts
}

// Command is the result of parsing the command line.
type Command struct {
	Config Config
	// ValidateOnly is set by -validate: check the configuration and exit.
	ValidateOnly bool
}

// Parse builds the configuration from args (without the program name), the environment
// (lookupEnv, usually os.LookupEnv) and the file named by -config / TOLLGATE_EDGE_CONFIG,
// then validates it. Help goes to out; -h returns flag.ErrHelp.
func Parse(args []string, lookupEnv func(string) (string, bool), out io.Writer) (Command, error) {
	cfg := Default()
	opts := options(&cfg)

	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	fs.SetOutput(out)
	var cmd Command
	var file string
	if v, ok := lookupEnv("TOLLGATE_EDGE_CONFIG"); ok {
		file = v
	}
	fs.StringVar(&file, "config", file, "YAML config file (env TOLLGATE_EDGE_CONFIG); flags and env override it")
	fs.BoolVar(&cmd.ValidateOnly, "validate", false, "validate the configuration and exit")
	flagVals := map[string]string{}
	for _, op := range Options() {
		name := op.Flag
		help := fmt.Sprintf("%s (%s; env %s; default %s)", op.Help, op.Unit, op.Env, op.Default)
		fs.Func(name, help, func(v string) error { flagVals[name] = v; return nil })
	}
	if err := fs.Parse(args); err != nil {
		return Command{}, err
	}
	if fs.NArg() > 0 {
		return Command{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	if file != "" {
		if err := loadFile(&cfg, file); err != nil {
			return Command{}, err
		}
	}
	var errs []error
	for _, op := range opts {
		if v, ok := lookupEnv(op.Env); ok {
			if err := set(op.ptr, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", op.Env, err))
			}
		}
	}
	for _, op := range opts {
		if v, ok := flagVals[op.Flag]; ok {
			if err := set(op.ptr, v); err != nil {
				errs = append(errs, fmt.Errorf("-%s: %w", op.Flag, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Command{}, fmt.Errorf("parse config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return Command{}, err
	}
	cmd.Config = cfg
	return cmd, nil
}

// loadFile reads a YAML file over cfg, refusing unknown keys.
func loadFile(cfg *Config, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("parse config file %s: %w", path, err)
	}
	return nil
}

// set parses s into the field ptr points to.
func set(ptr any, s string) error {
	switch p := ptr.(type) {
	case *string:
		*p = s
	case *int:
		v, err := parseSize(s)
		if err != nil {
			return err
		}
		*p = v
	case *time.Duration:
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*p = v
	case *[]string:
		*p = splitList(s)
	default:
		panic(fmt.Sprintf("config: unsupported option type %T", ptr))
	}
	return nil
}

// parseSize parses an integer with an optional binary suffix: "32MiB", "16KiB", "1000".
func parseSize(s string) (int, error) {
	mult := 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = rest, u.mult
			break
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("want an integer, optionally with KiB, MiB or GiB: %w", err)
	}
	if v != 0 && (v*mult)/mult != v {
		return 0, errors.New("out of range")
	}
	return v * mult, nil
}

func format(ptr any, bytes bool) string {
	switch p := ptr.(type) {
	case *string:
		if *p == "" {
			return `""`
		}
		return *p
	case *int:
		v := *p
		if !bytes {
			return strconv.Itoa(v)
		}
		for _, u := range []struct {
			suffix string
			mult   int
		}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
			if v >= u.mult && v%u.mult == 0 {
				return strconv.Itoa(v/u.mult) + u.suffix
			}
		}
		return strconv.Itoa(v)
	case *time.Duration:
		return p.String()
	case *[]string:
		if len(*p) == 0 {
			return `""`
		}
		return strings.Join(*p, ",")
	}
	return fmt.Sprint(ptr)
}

// splitList splits a comma list, dropping blanks around and between items.
func splitList(s string) []string {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// WALPath is the write-ahead log's directory: WALDir, else DataDir/wal.
func (c *Config) WALPath() string {
	if c.Records.WALDir != "" {
		return c.Records.WALDir
	}
	return filepath.Join(c.DataDir, "wal")
}

// Validate checks the whole configuration and reports every problem, each with the path of
// its field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	addr := func(path, v string) {
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			bad(path, "want host:port, got %q", v)
		}
	}
	httpURL := func(path, v string) {
		u, err := url.Parse(v)
		switch {
		case err != nil:
			bad(path, "not a URL: %v", err)
		case u.Scheme != "http" && u.Scheme != "https":
			bad(path, "want an http or https URL, got %q", v)
		case u.Host == "":
			bad(path, "no host in %q", v)
		case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
			bad(path, "must not carry a query, fragment or user info")
		}
	}
	positive := func(path string, v time.Duration) {
		if v <= 0 {
			bad(path, "must be positive, got %s", v)
		}
	}
	between := func(path string, v, lo, hi int) {
		if v < lo || v > hi {
			bad(path, "want %d..%d, got %d", lo, hi, v)
		}
	}

	addr("addr", c.Addr)
	addr("ops_addr", c.OpsAddr)
	if c.EdgeID == "" || len(c.EdgeID) > 128 || strings.ContainsFunc(c.EdgeID, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		bad("edge_id", "want 1 to 128 printable characters without spaces, got %q", c.EdgeID)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "want debug, info, warn or error, got %q", c.LogLevel)
	}

	s := &c.Server
	between("server.body_bytes_max", s.BodyBytesMax, 1, 1<<30)
	between("server.header_bytes_max", s.HeaderBytesMax, 4<<10, 1<<20)
	positive("server.read_timeout", s.ReadTimeout)
	positive("server.write_timeout", s.WriteTimeout)
	positive("server.idle_timeout", s.IdleTimeout)
	between("server.conns_max", s.ConnsMax, 1, 10_000_000)
	positive("server.shutdown_timeout", s.ShutdownTimeout)

	u := &c.Upstream
	httpURL("upstream.url", u.URL)
	if len(u.Keys) == 0 {
		bad("upstream.keys", "at least one key is required")
	}
	seen := map[string]bool{}
	for i, k := range u.Keys {
		// Never echo a key: it is a secret and this error may end up in a log.
		switch {
		case k == "" || strings.ContainsFunc(k, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			bad(fmt.Sprintf("upstream.keys[%d]", i), "empty or contains spaces or control characters")
		case seen[k]:
			bad(fmt.Sprintf("upstream.keys[%d]", i), "duplicate key")
		}
		seen[k] = true
	}
	positive("upstream.dial_timeout", u.DialTimeout)
	positive("upstream.write_timeout", u.WriteTimeout)
	positive("upstream.read_timeout", u.ReadTimeout)
	between("upstream.conns_max", u.ConnsMax, 1, 1_000_000)
	positive("upstream.conn_wait_timeout", u.ConnWaitTimeout)
	positive("upstream.idle_conn_timeout", u.IdleConnTimeout)
	between("upstream.response_bytes_max", u.ResponseBytesMax, 1<<10, 1<<30)
	positive("upstream.drain_timeout", u.DrainTimeout)
	between("upstream.drains_max", u.DrainsMax, 1, 1_000_000)

	l := &c.Ledger
	httpURL("ledger.url", l.URL)
	if l.Secret == "" {
		bad("ledger.secret", "required (TOLLGATE_INTERNAL_SECRET)")
	}
	positive("ledger.timeout", l.Timeout)
	if l.KeyTTL <= 0 || l.KeyTTL > KeyTTLMax {
		bad("ledger.key_ttl", "want (0, %s] so revoked keys stop within 10s, got %s", KeyTTLMax, l.KeyTTL)
	}
	if l.KeyNegativeTTL <= 0 || l.KeyNegativeTTL > time.Minute {
		bad("ledger.key_negative_ttl", "want (0, 1m], got %s", l.KeyNegativeTTL)
	}
	between("ledger.key_cache_max", l.KeyCacheMax, 1, 100_000_000)
	between("ledger.account_cache_max", l.AccountCacheMax, 1, 100_000_000)
	if l.LeaseWindow <= 0 || l.LeaseWindow > 10*time.Minute {
		bad("ledger.lease_window", "want (0, 10m], got %s", l.LeaseWindow)
	}
	// ledgerd accepts at most 10⁶ credits in one lease call.
	if l.LeaseMicrocreditsMax < 1 || int64(l.LeaseMicrocreditsMax) > 1_000_000_000_000 {
		bad("ledger.lease_microcredits_max", "want 1..1000000000000 µcr, got %d", l.LeaseMicrocreditsMax)
	}
	if l.LeaseRecallPoll < 10*time.Millisecond || l.LeaseRecallPoll > time.Minute {
		bad("ledger.lease_recall_poll", "want [10ms, 1m], got %s", l.LeaseRecallPoll)
	}
	if l.LeaseRecallWait < 0 || l.LeaseRecallWait > time.Minute {
		bad("ledger.lease_recall_wait", "want [0, 1m], got %s", l.LeaseRecallWait)
	}
	positive("ledger.lease_return_timeout", l.LeaseReturnTimeout)

	k := &c.Kafka
	if len(k.Brokers) == 0 {
		bad("kafka.brokers", "at least one broker is required")
	}
	for i, b := range k.Brokers {
		addr(fmt.Sprintf("kafka.brokers[%d]", i), b)
	}
	between("kafka.partitions", k.Partitions, 1, 10_000)
	positive("kafka.write_timeout", k.WriteTimeout)

	if c.DataDir == "" {
		bad("data_dir", "required")
	}
	r := &c.Records
	between("records.wal_segment_bytes", r.WALSegmentBytes, 64<<10, 1<<30)
	if r.WALBytesMax < 2*r.WALSegmentBytes || r.WALBytesMax > 1<<40 {
		bad("records.wal_bytes_max", "want 2 × wal_segment_bytes (%d) to 1 TiB, got %d", 2*r.WALSegmentBytes, r.WALBytesMax)
	}
	if r.WALSync != "interval" && r.WALSync != "always" {
		bad("records.wal_sync", `want "interval" or "always", got %q`, r.WALSync)
	}
	if r.WALSyncInterval < time.Millisecond || r.WALSyncInterval > time.Second {
		bad("records.wal_sync_interval", "want [1ms, 1s], got %s", r.WALSyncInterval)
	}
	between("records.batch_max", r.BatchMax, 1, 1_000_000)
	if r.Linger < 0 || r.Linger > time.Second {
		bad("records.linger", "want [0, 1s], got %s", r.Linger)
	}
	positive("records.flush_timeout", r.FlushTimeout)

	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid config: %w", err)
	}
	return nil
}
