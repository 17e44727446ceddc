// Package app assembles ledgerd: the ledger store, the admin and edge-facing HTTP listeners,
// the settlement consumer, the settled-id pruner and the lease reaper, and owns their order
// of start and shutdown.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tollgate/deploy"
	"tollgate/ledgerd/internal/admin"
	"tollgate/ledgerd/internal/edgeapi"
	"tollgate/ledgerd/internal/plan"
	"tollgate/ledgerd/internal/settle"
	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/postgres"
	"tollgate/ledgerd/internal/store/sqlite"
	"tollgate/ledgerd/internal/webhook"
	"tollgate/pkg/bus"
	"tollgate/pkg/retry"
	"tollgate/pkg/usage"
)

// App is a running ledgerd. Build it with New, run it once with Run.
type App struct {
	cfg      Config
	log      *slog.Logger
	store    store.Store
	consumer *bus.Consumer
	dlq      *bus.Producer
	settler  *settle.Consumer
	admin    *http.Server
	internal *http.Server
	adminLn  net.Listener
	intLn    net.Listener
	reaped   prometheus.Counter
}

// New opens the ledger, binds both listeners and wires every part. cfg must be valid and
// have its secrets filled.
func New(ctx context.Context, cfg Config, log *slog.Logger) (_ *App, err error) {
	a := &App{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			a.closeAll()
		}
	}()
	plansSrc, name := deploy.Plans, "embedded plans.yaml"
	if cfg.PlansFile != "" {
		if plansSrc, err = os.ReadFile(cfg.PlansFile); err != nil {
			return nil, fmt.Errorf("read plans: %w", err)
		}
		name = cfg.PlansFile
	}
	plans, err := plan.Parse(plansSrc)
	if err != nil {
		return nil, fmt.Errorf("plans %s: %w", name, err)
	}
	if cfg.IsPostgres() {
		a.store, err = postgres.Open(ctx, cfg.DB, log, nil)
	} else {
		if err := os.MkdirAll(filepath.Dir(cfg.DB), 0o750); err != nil {
			return nil, fmt.Errorf("create ledger directory: %w", err)
		}
		a.store, err = sqlite.Open(ctx, cfg.DB, log, nil)
	}
	if err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.reaped = prometheus.NewCounter(prometheus.CounterOpts{Name: "ledgerd_leases_reaped_total",
		Help: "Leases reclaimed after expiry plus grace."})
	reg.MustRegister(a.reaped)
	httpMetrics := newHTTPMetrics(reg)

	a.consumer = bus.NewConsumer(bus.ConsumerConfig{Brokers: cfg.KafkaBrokers, Topic: usage.Topic, Group: consumerGroup,
		MaxWait: cfg.BatchLinger})
	a.dlq = bus.NewProducer(bus.ProducerConfig{Brokers: cfg.KafkaBrokers, Topic: usage.TopicDLQ,
		BatchSize: 1000, BatchTimeout: 5 * time.Millisecond, WriteTimeout: 10 * time.Second})
	a.settler = settle.New(settle.Config{Source: a.consumer, DLQ: a.dlq, Store: a.store, Logger: log, Registerer: reg,
		Group: consumerGroup, Topic: usage.Topic, BatchMax: cfg.BatchMax, Linger: cfg.BatchLinger, Retention: cfg.Retention,
		ShutdownGrace: cfg.ShutdownTimeout})

	adminMux := http.NewServeMux()
	adminMux.Handle("/admin/", httpMetrics.wrap("admin", admin.New(admin.Config{Store: a.store, Plans: plans,
		Token: cfg.AdminToken, Logger: log})))
	// The payment webhook authenticates by signature, not by the admin token: a provider
	// cannot hold that token. Expose only this path publicly (through a proxy).
	adminMux.Handle(webhook.Path, httpMetrics.wrap("admin", webhook.New(webhook.Config{Store: a.store, Plans: plans,
		Secret: cfg.WebhookSecret, Tolerance: cfg.WebhookTolerance, Logger: log, Registerer: reg})))
	adminMux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	adminMux.HandleFunc("GET /readyz", a.ready)
	adminMux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))

	intMux := http.NewServeMux()
	intMux.Handle("/internal/", httpMetrics.wrap("internal", edgeapi.New(edgeapi.Config{Store: a.store,
		Secret: cfg.InternalSecret, LeaseTTL: cfg.LeaseTTL, Logger: log, Registerer: reg})))
	intMux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })

	if a.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
		return nil, fmt.Errorf("listen admin: %w", err)
	}
	if a.intLn, err = net.Listen("tcp", cfg.InternalAddr); err != nil {
		return nil, fmt.Errorf("listen internal: %w", err)
	}
	a.admin = newServer(adminMux, log)
	a.internal = newServer(intMux, log)
	return a, nil
}

func newServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// AdminAddr and InternalAddr are the bound listener addresses (useful with port 0).
func (a *App) AdminAddr() string    { return a.adminLn.Addr().String() }
func (a *App) InternalAddr() string { return a.intLn.Addr().String() }

func (a *App) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.store.Ping(ctx); err != nil {
		a.log.Warn("not_ready", "error", err)
		http.Error(w, "ledger database unreachable\n", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}

// Run serves until ctx ends or a part fails, then shuts down in this order:
//  1. settlement stops fetching, finishes and commits the batch in hand (bounded by
//     ShutdownTimeout), and the HTTP listeners stop accepting and finish their requests
//     (same bound) — these run side by side;
//  2. the Kafka clients close;
//  3. the ledger store closes, after everything that writes to it has stopped.
//
// It returns the first part's error (an invariant violation in settlement, a listener that
// failed), or nil on a clean shutdown.
func (a *App) Run(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 6)
	goRun := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(runCtx); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	goRun("admin listener", func(context.Context) error { return serve(a.admin, a.adminLn) })
	goRun("internal listener", func(context.Context) error { return serve(a.internal, a.intLn) })
	goRun("settlement", func(ctx context.Context) error {
		a.ensureTopics(ctx)
		if err := a.rewindToLedger(ctx); err != nil {
			if ctx.Err() != nil {
				return nil // stopping
			}
			return err
		}
		return a.settler.Run(ctx)
	})
	goRun("settled-id pruner", a.settler.Prune)
	goRun("lease reaper", a.reap)
	a.log.Info("ledgerd_started", "admin_addr", a.AdminAddr(), "internal_addr", a.InternalAddr(),
		"db", dbKind(a.cfg), "kafka", a.cfg.KafkaBrokers)

	<-runCtx.Done()
	a.log.Info("ledgerd_stopping")
	shutCtx, shutCancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownTimeout)
	defer shutCancel()
	var shutErrs []error
	var smu sync.Mutex
	var sw sync.WaitGroup
	for _, srv := range []*http.Server{a.admin, a.internal} {
		sw.Add(1)
		go func() {
			defer sw.Done()
			if err := srv.Shutdown(shutCtx); err != nil {
				smu.Lock()
				shutErrs = append(shutErrs, fmt.Errorf("shutdown listener: %w", err))
				smu.Unlock()
			}
		}()
	}
	sw.Wait()
	wg.Wait() // settlement has finished its batch
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	errs = append(errs, shutErrs...)
	a.closeAll()
	a.log.Info("ledgerd_stopped")
	return errors.Join(errs...)
}

func serve(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// ensureTopics creates the topics if missing, retrying until Kafka answers: ledgerd serves
// its APIs meanwhile, and settlement starts when Kafka is there.
func (a *App) ensureTopics(ctx context.Context) {
	_ = retry.Until(ctx, a.log, "create topics", kafkaAttempt, func(ctx context.Context) error { // fails only when ctx ends
		return bus.EnsureTopics(ctx, a.cfg.KafkaBrokers, a.cfg.KafkaPartitions, usage.Topic, usage.TopicDLQ)
	})
}

// kafkaAttempt bounds one attempt of a start-up call to Kafka.
const kafkaAttempt = 10 * time.Second

// consumerGroup is ledgerd's consumer group on usage.v1, also the key of its offsets in the
// database.
const consumerGroup = "ledgerd"

// rewindToLedger makes settlement resume where the database says, never past it. Normally
// the database's stored offsets are at or ahead of the group's committed ones in Kafka (a
// batch is committed to the database first). A database restored from a backup is behind:
// the records between its offsets and Kafka's were never applied to it, and a consumer
// resuming at Kafka's offsets would skip them — charges lost. Then the group's offsets are
// moved back to the database's, which Kafka accepts only while no ledgerd consumes: every
// ledgerd must be stopped first, and this one stops with an error saying so when others
// still run. A database without any offsets (new) is left to start from the group's.
func (a *App) rewindToLedger(ctx context.Context) error {
	var committed, stored map[int]int64
	// Kafka's offsets first, then the database's: read in that order, an ordinary restart
	// can never see the database behind.
	if err := retry.Until(ctx, a.log, "read consumer offsets", kafkaAttempt, func(ctx context.Context) error {
		var err error
		committed, err = bus.GroupOffsets(ctx, a.cfg.KafkaBrokers, consumerGroup, usage.Topic)
		return err
	}); err != nil {
		return err
	}
	stored, err := a.store.Offsets(ctx, consumerGroup, usage.Topic)
	if err != nil {
		return fmt.Errorf("read stored offsets: %w", err)
	}
	if len(stored) == 0 {
		if len(committed) > 0 {
			a.log.Warn("ledger_offsets_empty", "group", consumerGroup, "committed_partitions", len(committed),
				"detail", "the database holds no Kafka offsets but the group has committed some: starting from the group's")
		}
		return nil
	}
	back := map[int]int64{}
	for p, s := range stored {
		if c, ok := committed[p]; ok && c > s {
			back[p] = s
		}
	}
	if len(back) == 0 {
		return nil
	}
	a.log.Warn("ledger_behind_kafka", "group", consumerGroup, "partitions", len(back), "stored", back, "committed", committed,
		"detail", "the database is older than the group's position (restored from a backup?): moving the group back to settle what the database lacks")
	if err := bus.SetGroupOffsetsWhenEmpty(ctx, a.cfg.KafkaBrokers, consumerGroup, usage.Topic, back, bus.GroupEmptyWait); err != nil {
		return fmt.Errorf("the database is behind Kafka's offsets for group %s on %d partitions "+
			"(restored from a backup?); stop every ledgerd, then start one, which moves the offsets back: %w",
			consumerGroup, len(back), err)
	}
	a.log.Info("ledger_offsets_rewound", "group", consumerGroup, "offsets", back)
	return nil
}

// reap reclaims expired leases every ReapEvery. Errors are logged and retried next round:
// a late reclaim only keeps credit reserved a little longer.
func (a *App) reap(ctx context.Context) error {
	t := time.NewTicker(a.cfg.ReapEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for {
			n, err := a.store.ReapLeases(ctx, a.cfg.LeaseGrace, 1000)
			if err != nil {
				if ctx.Err() == nil {
					a.log.Warn("lease_reap_failed", "error", err)
				}
				break
			}
			a.reaped.Add(float64(n))
			if n > 0 {
				a.log.Info("leases_reaped", "count", n)
			}
			if n < 1000 {
				break
			}
		}
	}
}

// closeAll closes whatever New opened. Safe after a partial New.
func (a *App) closeAll() {
	if a.adminLn != nil {
		a.adminLn.Close()
	}
	if a.intLn != nil {
		a.intLn.Close()
	}
	if a.consumer != nil {
		if err := a.consumer.Close(); err != nil {
			a.log.Warn("close_kafka_consumer", "error", err)
		}
	}
	if a.dlq != nil {
		if err := a.dlq.Close(); err != nil {
			a.log.Warn("close_dlq_producer", "error", err)
		}
	}
	if a.store != nil {
		if err := a.store.Close(); err != nil {
			a.log.Warn("close_store", "error", err)
		}
	}
}

func dbKind(c Config) string {
	if c.IsPostgres() {
		return "postgres"
	}
	return "sqlite:" + c.DB
}

// httpMetrics counts requests and their latency by listener, route pattern and status.
type httpMetrics struct {
	requests *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ledgerd_http_requests_total",
			Help: "HTTP requests by listener, route and status code."}, []string{"listener", "route", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ledgerd_http_request_seconds",
			Help: "HTTP request latency by listener and route.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)},
			[]string{"listener", "route"}),
	}
	reg.MustRegister(m.requests, m.seconds)
	return m
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (m *httpMetrics) wrap(listener string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		// The inner mux records the matched pattern on the request; unmatched and
		// unauthenticated requests have none. Patterns keep the label set bounded.
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		m.requests.WithLabelValues(listener, route, strconv.Itoa(sw.code)).Inc()
		m.seconds.WithLabelValues(listener, route).Observe(time.Since(start).Seconds())
	})
}
