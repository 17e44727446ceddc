// Package app wires the analytics service: configuration, the ClickHouse store, the usage.v1
// consumer and the HTTP API, and owns their start and shutdown order.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"tollgate/analytics/internal/api"
	"tollgate/analytics/internal/consume"
	"tollgate/analytics/internal/store/clickhouse"
	"tollgate/pkg/bus"
	"tollgate/pkg/retry"
	"tollgate/pkg/usage"
)

// Config is the whole configuration. Defaults come from DefaultConfig.
type Config struct {
	// ClickHouseDSN: clickhouse://host:native_port/database[?settings]. Native protocol only.
	ClickHouseDSN string
	// KafkaBrokers are the bootstrap brokers.
	KafkaBrokers []string
	// KafkaGroup is the consumer group on usage.v1. Default: "analytics".
	KafkaGroup string
	// KafkaPartitions is used only to create usage.v1 and usage.dlq.v1 when they are missing.
	KafkaPartitions int
	// ListenAddr serves /healthz, /readyz, /metrics and the /v1 queries.
	ListenAddr string
	// AdminToken guards /v1/*; empty leaves them open.
	AdminToken string
	// BatchRowsMax and BatchLinger: a batch is stored when it has this many records or this
	// long after its first, whichever comes first.
	BatchRowsMax int
	BatchLinger  time.Duration
	// CreditPriceMicroUSD values charged credits in USD for margin figures.
	CreditPriceMicroUSD int64
	// ShutdownTimeout bounds the HTTP server's graceful stop.
	ShutdownTimeout time.Duration
}

// DefaultConfig returns the defaults (DESIGN §7 ports).
func DefaultConfig() Config {
	return Config{
		ClickHouseDSN:       "clickhouse://127.0.0.1:19000/tollgate",
		KafkaBrokers:        []string{"127.0.0.1:9092"},
		KafkaGroup:          "analytics",
		KafkaPartitions:     usage.TopicPartitions,
		ListenAddr:          "127.0.0.1:8095",
		BatchRowsMax:        20000,
		BatchLinger:         time.Second,
		CreditPriceMicroUSD: 5000,
		ShutdownTimeout:     10 * time.Second,
	}
}

// Validate checks the whole configuration and reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if err := clickhouse.CheckDSN(c.ClickHouseDSN); err != nil {
		errs = append(errs, fmt.Errorf("clickhouse_dsn: %w", err))
	}
	if len(c.KafkaBrokers) == 0 {
		errs = append(errs, errors.New("kafka_brokers: empty"))
	}
	for _, b := range c.KafkaBrokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			errs = append(errs, fmt.Errorf("kafka_brokers: %q: %w", b, err))
		}
	}
	if c.KafkaGroup == "" {
		errs = append(errs, errors.New("kafka_group: empty"))
	}
	if c.KafkaPartitions < 1 || c.KafkaPartitions > 10000 {
		errs = append(errs, fmt.Errorf("kafka_partitions: %d not in [1, 10000]", c.KafkaPartitions))
	}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		errs = append(errs, fmt.Errorf("listen_addr: %w", err))
	}
	// The upper bound keeps one batch's memory (≈1 KiB per record) and insert size sane.
	if c.BatchRowsMax < 1 || c.BatchRowsMax > 1_000_000 {
		errs = append(errs, fmt.Errorf("batch_rows_max: %d not in [1, 1000000]", c.BatchRowsMax))
	}
	if c.BatchLinger <= 0 || c.BatchLinger > time.Minute {
		errs = append(errs, fmt.Errorf("batch_linger: %s not in (0, 1m]", c.BatchLinger))
	}
	if c.CreditPriceMicroUSD <= 0 {
		errs = append(errs, fmt.Errorf("credit_price_microusd: %d must be positive", c.CreditPriceMicroUSD))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("shutdown_timeout: %s must be positive", c.ShutdownTimeout))
	}
	return errors.Join(errs...)
}

// App is the running service.
type App struct {
	cfg      Config
	log      *slog.Logger
	reg      *prometheus.Registry
	metrics  *consume.Metrics
	store    *clickhouse.Store
	listener net.Listener
	server   *http.Server
	schemaOK atomic.Bool
}

// New validates cfg, opens the store (lazily connecting) and binds the listener, so a port
// conflict fails at start rather than later.
func New(cfg Config, log *slog.Logger) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := consume.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	st, err := clickhouse.Open(clickhouse.Config{DSN: cfg.ClickHouseDSN}, log)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	a := &App{cfg: cfg, log: log, reg: reg, metrics: m, store: st, listener: ln}
	h := api.New(api.Config{AdminToken: cfg.AdminToken, CreditPriceMicroUSD: cfg.CreditPriceMicroUSD},
		st, a.ready, reg, log)
	a.server = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute, // reports over long ranges take a while
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	return a, nil
}

// Addr is the address the HTTP server listens on.
func (a *App) Addr() string { return a.listener.Addr().String() }

func (a *App) ready(ctx context.Context) error {
	if !a.schemaOK.Load() {
		return errors.New("schema not applied yet (waiting for ClickHouse)")
	}
	return a.store.Ping(ctx)
}

// Run serves until ctx ends. Order: HTTP first (health answers at once, readiness once the
// schema is applied); then schema and topics, retried until ClickHouse and Kafka answer; then
// the consumer. Shutdown: stop the consumer (its batch in progress stays uncommitted and is
// redelivered), leave the group, close the DLQ producer, stop HTTP, close ClickHouse.
func (a *App) Run(ctx context.Context) error {
	httpErr := make(chan error, 1)
	go func() { httpErr <- a.server.Serve(a.listener) }()
	a.log.Info("analytics_listening", "addr", a.Addr(), "database", a.store.Database())

	runErr := a.consume(ctx)

	shutCtx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	if err := a.server.Shutdown(shutCtx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("stop http: %w", err))
	}
	if err := <-httpErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		runErr = errors.Join(runErr, fmt.Errorf("serve http: %w", err))
	}
	if err := a.store.Close(); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("close clickhouse: %w", err))
	}
	return runErr
}

// stepAttempt bounds one attempt of a start-up step (ClickHouse or Kafka).
const stepAttempt = 30 * time.Second

// backfillAttempt bounds one attempt of copying old request ids into request_ids, which runs
// for as long as the installation's history takes to copy; each statement of it has its own
// bound (clickhouse.Config's BackfillCopyTimeout and ReadTimeout).
const backfillAttempt = 7 * 24 * time.Hour

// retry runs a start-up step until it succeeds (true) or ctx ends (false).
func (a *App) retry(ctx context.Context, step string, f func(context.Context) error) bool {
	return retry.Until(ctx, a.log, step, stepAttempt, f) == nil
}

func (a *App) consume(ctx context.Context) error {
	if !a.retry(ctx, "apply_schema", a.store.ApplySchema) {
		return nil
	}
	a.schemaOK.Store(true)
	// The copy of old request ids runs beside the consumer, whose existence check reads
	// requests for the days not copied yet; it ends with the consumer.
	backfillCtx, stopBackfill := context.WithCancel(ctx)
	backfillDone := make(chan struct{})
	go func() {
		defer close(backfillDone)
		_ = retry.Until(backfillCtx, a.log, "backfill_request_ids", backfillAttempt, a.store.BackfillRequestIDs)
	}()
	defer func() { stopBackfill(); <-backfillDone }()
	ensure := func(ctx context.Context) error {
		return bus.EnsureTopics(ctx, a.cfg.KafkaBrokers, a.cfg.KafkaPartitions, usage.Topic, usage.TopicDLQ)
	}
	if !a.retry(ctx, "ensure_topics", ensure) {
		return nil
	}
	if err := a.rewindToClickHouse(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopping
		}
		return err
	}
	src := bus.NewConsumer(bus.ConsumerConfig{Brokers: a.cfg.KafkaBrokers, Topic: usage.Topic,
		Group: a.cfg.KafkaGroup, MaxWait: 250 * time.Millisecond})
	dlq := bus.NewProducer(bus.ProducerConfig{Brokers: a.cfg.KafkaBrokers, Topic: usage.TopicDLQ})
	c := consume.New(consume.Config{BatchRowsMax: a.cfg.BatchRowsMax, BatchLinger: a.cfg.BatchLinger, Group: a.cfg.KafkaGroup},
		src, a.store, dlq, a.metrics, a.log)
	a.log.Info("analytics_consuming", "topic", usage.Topic, "group", a.cfg.KafkaGroup,
		"brokers", strings.Join(a.cfg.KafkaBrokers, ","))
	err := c.Run(ctx)
	if cerr := src.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close consumer: %w", cerr))
	}
	if perr := dlq.Close(); perr != nil {
		err = errors.Join(err, fmt.Errorf("close dlq producer: %w", perr))
	}
	return err
}

// rewindToClickHouse makes the consumer resume where ClickHouse's saved offsets say, never
// past them. Normally they are at or ahead of the group's committed offsets in Kafka (a batch
// saves them before it commits). ClickHouse restored from a backup is behind: the records
// between its offsets and Kafka's are not in it, and a consumer resuming at Kafka's offsets
// would never write them — finance's totals would silently lack them. Then the group is moved
// back to ClickHouse's offsets; the records read again that ClickHouse does have are skipped
// by the request_id check. A partition Kafka has committed but ClickHouse has no offset for
// (a backup that lacks that partition's row, or a new or lost and replaced ClickHouse) goes
// back to the earliest offset Kafka still holds. When ClickHouse has no offset for any
// partition of the group but does have usage rows, this is instead the first start with
// offset tracking (startTracking): the consumer resumes at Kafka's offsets. Kafka takes the
// move only while no member consumes: every instance must be stopped first, and this one stops
// with an error saying so when others still run. It runs before the consumer joins the group
// (bus.Consumer joins at its first fetch).
func (a *App) rewindToClickHouse(ctx context.Context) error {
	group, topic := a.cfg.KafkaGroup, usage.Topic
	var committed, stored, first map[int]int64
	// Kafka's offsets first, then ClickHouse's: a batch saves to ClickHouse before it commits
	// to Kafka, so read in this order an ordinary restart can never see ClickHouse behind,
	// even while other instances consume.
	readCommitted := func(ctx context.Context) (err error) {
		committed, err = bus.GroupOffsets(ctx, a.cfg.KafkaBrokers, group, topic)
		return err
	}
	readStored := func(ctx context.Context) (err error) {
		stored, err = a.store.Offsets(ctx, group, topic)
		return err
	}
	readFirst := func(ctx context.Context) (err error) {
		first, err = bus.FirstOffsets(ctx, a.cfg.KafkaBrokers, topic)
		return err
	}
	if !a.retry(ctx, "read_group_offsets", readCommitted) || !a.retry(ctx, "read_stored_offsets", readStored) {
		return ctx.Err()
	}
	if len(stored) == 0 && len(committed) > 0 {
		// No offset at all for the group, yet Kafka has commits: either the first start of a
		// version that tracks offsets on an installation that ran an older one (ClickHouse has
		// rows, in step with Kafka's commits), or a ClickHouse that is new or was lost and
		// replaced (no rows: everything Kafka still holds must be read again).
		var hasRows bool
		readHasRows := func(ctx context.Context) (err error) {
			hasRows, err = a.store.HasRequests(ctx)
			return err
		}
		if !a.retry(ctx, "read_requests_not_empty", readHasRows) {
			return ctx.Err()
		}
		if hasRows {
			return a.startTracking(ctx, committed)
		}
	}
	if !a.retry(ctx, "read_first_offsets", readFirst) {
		return ctx.Err()
	}
	back := rewindTargets(committed, stored, first)
	if len(back) == 0 {
		return nil
	}
	var absent []int
	for p := range back {
		if _, ok := stored[p]; !ok {
			absent = append(absent, p)
		} else if stored[p] < first[p] {
			a.log.Error("analytics_records_expired", "group", group, "topic", topic, "partition", p,
				"stored", stored[p], "first_available", first[p], "records_lost", first[p]-stored[p],
				"detail", "ClickHouse is older than the topic's retention: these records are gone from Kafka and "+
					"will be missing from ClickHouse; keep backups younger than the retention")
		}
	}
	sort.Ints(absent)
	a.log.Warn("clickhouse_behind_kafka", "group", group, "topic", topic, "committed", committed,
		"stored", stored, "rewind_to", back, "partitions_without_stored_offsets", absent,
		"detail", "ClickHouse lacks records the group has committed (restored from a backup?): moving the group "+
			"back to read them again; partitions without stored offsets go back to the earliest offset Kafka holds, "+
			"and records ClickHouse already has are skipped")
	if err := bus.SetGroupOffsetsWhenEmpty(ctx, a.cfg.KafkaBrokers, group, topic, back, bus.GroupEmptyWait); err != nil {
		return fmt.Errorf("ClickHouse is behind Kafka's offsets for group %s on %d partitions (restored from a "+
			"backup?); stop every analytics instance of the group, then start one, which moves the offsets back: %w",
			group, len(back), err)
	}
	// A backup's request_ids may be newer than its requests: ids of rows the restored requests
	// lacks would make the records read again look stored. Confirm found ids in requests.
	a.store.VerifyFoundIDs()
	a.log.Info("kafka_offsets_rewound", "group", group, "topic", topic, "offsets", back,
		"detail", "until the next start, request ids found in request_ids are confirmed in requests")
	return nil
}

// startTracking handles the first start with offset tracking on an installation that has
// rows but no saved offsets: the consumer resumes at Kafka's committed offsets, as the
// previous version did. Rewinding instead would read every retained record again (each is
// then skipped as already stored) and, during a rolling update, stop every new instance while
// an old one is still a member of the group. Kafka's committed offsets are saved as the
// starting point, so a partition that gets no record before the next restart is not taken for
// one restored without offsets and sent back to the earliest offset. The cost: a restore to a
// backup taken before this start cannot be detected (README, "Restoring ClickHouse").
func (a *App) startTracking(ctx context.Context, committed map[int]int64) error {
	group, topic := a.cfg.KafkaGroup, usage.Topic
	a.log.Warn("clickhouse_offsets_not_tracked_yet", "group", group, "topic", topic, "committed", committed,
		"detail", "ClickHouse has usage rows but no saved Kafka offsets (first start of a version that saves "+
			"them): resuming at Kafka's committed offsets and saving them; a restore from a backup is detected "+
			"from now on, not for backups taken before this start")
	save := func(ctx context.Context) error { return a.store.SaveOffsets(ctx, group, topic, committed) }
	if !a.retry(ctx, "save_committed_offsets", save) {
		return ctx.Err()
	}
	return nil
}

// rewindTargets returns the offsets to move the group back to, by partition: ClickHouse's
// stored one where it is below the committed one, and for a committed partition without a
// stored offset the first available one. A target below the first available offset is
// raised to it, as Kafka no longer has those records. Partitions that would not move back
// are left out; partitions the group never committed are left to the consumer, which starts
// them at the first offset anyway.
func rewindTargets(committed, stored, first map[int]int64) map[int]int64 {
	back := map[int]int64{}
	for p, c := range committed {
		to, ok := stored[p]
		if !ok {
			to = first[p]
		}
		to = max(to, first[p])
		if to < c {
			back[p] = to
		}
	}
	return back
}
