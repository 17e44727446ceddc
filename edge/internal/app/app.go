// Package app wires the edge together and owns its lifecycle: it builds every part from the
// configuration, serves the client API and the operator listener, and shuts down in a fixed
// order (see Run).
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"

	"tollgate/edge/internal/admit/lease"
	"tollgate/edge/internal/auth"
	"tollgate/edge/internal/config"
	"tollgate/edge/internal/ledger"
	"tollgate/edge/internal/metrics"
	"tollgate/edge/internal/proxy"
	"tollgate/edge/internal/sink/wal"
	"tollgate/pkg/bus"
	"tollgate/pkg/pricing"
	"tollgate/pkg/usage"
)

// App is a running edge node.
type App struct {
	cfg config.Config
	log *slog.Logger

	prices   atomic.Pointer[pricing.Table]
	ledger   ledgerClient
	auth     *auth.Authenticator
	admitter *lease.Admitter
	producer *bus.Producer
	wal      *wal.WAL
	metrics  *metrics.Edge
	proxy    *proxy.Proxy

	server *fasthttp.Server
	conns  *openConns // the server's connections, cut at stop when only reading (conns.go)
	ops    *http.Server
	ln     net.Listener
	opsLn  net.Listener
	ready  atomic.Bool
}

// ledgerClient is what the edge needs from ledgerd; *ledger.Client implements it.
type ledgerClient interface {
	auth.KeySource
	lease.Ledger
	Ping(ctx context.Context) error
	Close()
}

// New builds the edge and binds its listeners, so a taken port fails here rather than later.
func New(cfg config.Config, log *slog.Logger) (*App, error) {
	return build(cfg, log, ledger.New(ledger.Config{URL: cfg.Ledger.URL, Secret: cfg.Ledger.Secret, Timeout: cfg.Ledger.Timeout}))
}

func build(cfg config.Config, log *slog.Logger, lc ledgerClient) (*App, error) {
	a := &App{cfg: cfg, log: log, ledger: lc}
	if err := a.ReloadPrices(); err != nil {
		return nil, err
	}
	a.metrics = metrics.New()

	var err error
	a.auth, err = auth.New(auth.Config{TTL: cfg.Ledger.KeyTTL, NegativeTTL: cfg.Ledger.KeyNegativeTTL,
		Timeout: cfg.Ledger.Timeout, CacheMax: cfg.Ledger.KeyCacheMax}, a.ledger, log)
	if err != nil {
		return nil, err
	}
	a.admitter, err = lease.New(lease.Config{
		EdgeID:     cfg.EdgeID,
		Timeout:    cfg.Ledger.Timeout,
		CacheMax:   cfg.Ledger.AccountCacheMax,
		Window:     cfg.Ledger.LeaseWindow,
		SizeMax:    int64(cfg.Ledger.LeaseMicrocreditsMax),
		RecallPoll: cfg.Ledger.LeaseRecallPoll,
		RecallWait: cfg.Ledger.LeaseRecallWait,
		Registerer: a.metrics.Registry,
	}, a.ledger, log)
	if err != nil {
		a.auth.Close()
		return nil, err
	}

	a.producer = bus.NewProducer(bus.ProducerConfig{Brokers: cfg.Kafka.Brokers, Topic: usage.Topic,
		BatchSize: min(cfg.Records.BatchMax, producerPartitionBatch), BatchTimeout: producerLinger,
		WriteTimeout: cfg.Kafka.WriteTimeout})
	a.wal, err = wal.Open(wal.Config{
		Dir:          cfg.WALPath(),
		SegmentBytes: int64(cfg.Records.WALSegmentBytes),
		BytesMax:     int64(cfg.Records.WALBytesMax),
		BatchMax:     cfg.Records.BatchMax,
		Sync:         walSync(cfg.Records.WALSync),
		SyncInterval: cfg.Records.WALSyncInterval,
		ShipLinger:   cfg.Records.Linger,
		Ensure: func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, cfg.Kafka.WriteTimeout)
			defer cancel()
			return bus.EnsureTopics(ctx, cfg.Kafka.Brokers, cfg.Kafka.Partitions, usage.Topic)
		},
	}, a.producer, log)
	if err != nil {
		a.closeParts()
		return nil, err
	}
	a.metrics.WatchQueue(a.wal)
	a.watchWAL()

	a.proxy, err = proxy.New(proxy.Config{
		EdgeID:                   cfg.EdgeID,
		UpstreamURL:              cfg.Upstream.URL,
		UpstreamKeys:             cfg.Upstream.Keys,
		UpstreamDialTimeout:      cfg.Upstream.DialTimeout,
		UpstreamWriteTimeout:     cfg.Upstream.WriteTimeout,
		UpstreamReadTimeout:      cfg.Upstream.ReadTimeout,
		UpstreamConnsMax:         cfg.Upstream.ConnsMax,
		UpstreamConnWaitTimeout:  cfg.Upstream.ConnWaitTimeout,
		UpstreamIdleConnTimeout:  cfg.Upstream.IdleConnTimeout,
		UpstreamResponseBytesMax: cfg.Upstream.ResponseBytesMax,
		BodyBytesMax:             cfg.Server.BodyBytesMax,
		DrainTimeout:             cfg.Upstream.DrainTimeout,
		DrainsMax:                cfg.Upstream.DrainsMax,
		LedgerTimeout:            cfg.Ledger.Timeout,
	}, proxy.Deps{
		Auth:     a.auth,
		Admitter: a.admitter,
		Prices:   &a.prices,
		Sink:     a.wal,
		Balances: a.admitter, // ledgerd's figures, net of this node's lease
		Metrics:  a.metrics,
	})
	if err != nil {
		a.closeParts()
		return nil, err
	}

	// Every option explicitly: fasthttp treats several zero values as "unlimited".
	a.conns = newOpenConns(min(stopReadGrace, cfg.Server.ShutdownTimeout))
	a.server = &fasthttp.Server{
		Handler:                       a.proxy.Handle,
		ErrorHandler:                  a.proxy.HandleError,
		Logger:                        fasthttpLogger{log},
		Concurrency:                   cfg.Server.ConnsMax,
		ReadBufferSize:                cfg.Server.HeaderBytesMax,
		WriteBufferSize:               16 << 10,
		ReadTimeout:                   cfg.Server.ReadTimeout,
		WriteTimeout:                  cfg.Server.WriteTimeout,
		IdleTimeout:                   cfg.Server.IdleTimeout,
		MaxRequestBodySize:            cfg.Server.BodyBytesMax,
		MaxRequestsPerConn:            0,
		DisableKeepalive:              false,
		TCPKeepalive:                  true,
		CloseOnShutdown:               true,
		StreamRequestBody:             false,
		ReduceMemoryUsage:             false,
		DisablePreParseMultipartForm:  true,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: false,
		SecureErrorLogMessage:         true,
		ConnState:                     a.conns.connState,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.Registry, promhttp.HandlerOpts{}))
	// Go's profiler, for the performance work in bench/README.md. The ops listener is on
	// loopback by default; whoever can reach it can also read /metrics.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	a.ops = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second}

	if a.ln, err = net.Listen("tcp", cfg.Addr); err != nil {
		a.closeParts()
		return nil, fmt.Errorf("listen %s: %w", cfg.Addr, err)
	}
	if a.opsLn, err = net.Listen("tcp", cfg.OpsAddr); err != nil {
		a.ln.Close()
		a.closeParts()
		return nil, fmt.Errorf("listen %s: %w", cfg.OpsAddr, err)
	}
	return a, nil
}

// Addr is the client API's listen address (useful with port 0).
func (a *App) Addr() string { return a.ln.Addr().String() }

// OpsAddr is the operator listener's address.
func (a *App) OpsAddr() string { return a.opsLn.Addr().String() }

// ReloadPrices loads the price table (the configured file, else the embedded default) and
// swaps it in; requests already admitted keep the table they started with. On error the
// current table stays.
func (a *App) ReloadPrices() error {
	var t *pricing.Table
	var err error
	if a.cfg.PricesFile == "" {
		t, err = pricing.Default()
	} else {
		var data []byte
		data, err = os.ReadFile(a.cfg.PricesFile)
		if err != nil {
			return fmt.Errorf("read price table: %w", err)
		}
		t, err = pricing.Load(data)
	}
	if err != nil {
		return err
	}
	a.prices.Store(t)
	a.log.Info("prices_loaded", "version", t.Version(), "file", a.cfg.PricesFile)
	return nil
}

// Run serves until ctx ends, then shuts down gracefully. The order matters and is:
//
//  1. Report not ready and answer new requests on kept-alive connections with 503, so the
//     balancer moves traffic away.
//  2. Stop accepting connections and wait, up to ShutdownTimeout, for in-flight requests and
//     streams to finish — abandoned streams being drained and billed included.
//  3. Ship the write-ahead log to Kafka, up to FlushTimeout. Records not shipped by then
//     stay in the WAL and ship at the next start on the same directory. Records of streams
//     still running past step 2 are appended while the WAL is open, and written to the
//     process log (unshipped_record) after it is closed.
//  4. Return every credit lease to ledgerd with this node's spend from it, up to
//     LeaseReturnTimeout (after the requests, so the spend is final; after the flush, so
//     the records are on their way to settle it). Leases not returned expire and ledgerd
//     reclaims them after its TTL and grace.
//  5. Stop the shipper, close the WAL, the Kafka producer, caches and connections.
//
// It returns the first serving error, or the flush error (records left in the WAL).
func (a *App) Run(ctx context.Context) error {
	shipCtx, stopShip := context.WithCancel(context.Background())
	defer stopShip()
	shipped := make(chan struct{})
	go func() {
		defer close(shipped)
		_ = a.wal.Run(shipCtx)
	}()
	serveErr := make(chan error, 2)
	go func() {
		if err := a.server.Serve(a.ln); err != nil {
			serveErr <- fmt.Errorf("serve client API: %w", err)
		}
	}()
	go func() {
		if err := a.ops.Serve(a.opsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("serve operator listener: %w", err)
		}
	}()
	a.ready.Store(true)
	a.log.Info("edge_started", "addr", a.Addr(), "ops_addr", a.OpsAddr(), "edge_id", a.cfg.EdgeID,
		"upstream", a.cfg.Upstream.URL, "upstream_keys", len(a.cfg.Upstream.Keys))

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serveErr:
		a.log.Error("serve_failed", "error", runErr)
	}

	a.log.Info("edge_stopping")
	a.ready.Store(false)
	a.proxy.BeginShutdown()
	a.conns.stopReads()

	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.Server.ShutdownTimeout)
	if err := a.server.ShutdownWithContext(sctx); err != nil {
		a.log.Warn("requests_still_running_at_shutdown", "error", err)
	}
	cancel()

	fctx, cancel := context.WithTimeout(context.Background(), a.cfg.Records.FlushTimeout)
	if err := a.wal.Flush(fctx); err != nil {
		a.log.Error("records_flush_incomplete", "error", err)
		runErr = errors.Join(runErr, err)
	}
	cancel()

	lctx, cancel := context.WithTimeout(context.Background(), a.cfg.Ledger.LeaseReturnTimeout)
	if err := a.admitter.Close(lctx); err != nil {
		a.log.Warn("leases_not_returned", "error", err)
	}
	cancel()

	stopShip()
	<-shipped
	if err := a.wal.Close(); err != nil {
		a.log.Error("close_wal_failed", "error", err)
		runErr = errors.Join(runErr, err)
	}

	octx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = a.ops.Shutdown(octx)
	cancel()
	a.closeParts()
	a.log.Info("edge_stopped", "records_shipped", a.wal.Shipped(), "records_in_wal", a.wal.Len())
	return runErr
}

// closeParts closes what New built, in dependency order.
func (a *App) closeParts() {
	if a.proxy != nil {
		a.proxy.Close()
	}
	if a.wal != nil {
		_ = a.wal.Close() // idempotent; Run reports its error
	}
	if a.producer != nil {
		if err := a.producer.Close(); err != nil {
			a.log.Warn("close_producer_failed", "error", err)
		}
	}
	if a.admitter != nil {
		// Run has returned the leases; after a failed build there are none. Idempotent.
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Ledger.LeaseReturnTimeout)
		_ = a.admitter.Close(ctx)
		cancel()
	}
	if a.auth != nil {
		a.auth.Close()
	}
	if a.ledger != nil {
		a.ledger.Close()
	}
}

// readyz answers 200 when this node should get traffic: it is serving and its write-ahead log
// works and has room. ledgerd and Kafka are reported in the body but do not make the node
// unready: they are shared by every edge, so failing readiness on them would take the whole
// fleet out of the load balancer at once, while DESIGN §3 wants edges to keep serving within
// their leases through a ledger outage and into their WAL through a Kafka outage.
func (a *App) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	reason := ""
	switch {
	case !a.ready.Load():
		reason = "not serving"
	case a.wal.Err() != nil:
		reason = "usage record WAL failed"
	case a.wal.Full():
		reason = "usage record WAL full"
	}
	if reason != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, `{"status":"not_ready","reason":%q}`, reason)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	state := func(err error) string {
		if err != nil {
			return "unreachable"
		}
		return "ok"
	}
	_, _ = fmt.Fprintf(w, `{"status":"ready","ledgerd":%q,"kafka":%q}`,
		state(a.ledger.Ping(ctx)), state(a.pingKafka(ctx)))
}

// pingKafka succeeds when any broker accepts a TCP connection.
func (a *App) pingKafka(ctx context.Context) error {
	var d net.Dialer
	var errs []error
	for _, b := range a.cfg.Kafka.Brokers {
		c, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			return c.Close()
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// watchWAL exports the write-ahead log's size and commits, beside the record counters of
// metrics.WatchQueue.
func (a *App) watchWAL() {
	a.metrics.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_edge_wal_bytes", Help: "Bytes of the usage record write-ahead log on disk.",
		}, func() float64 { return float64(a.wal.Bytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_edge_wal_bytes_max", Help: "Bound of the write-ahead log; past it requests get 503.",
		}, func() float64 { return float64(a.cfg.Records.WALBytesMax) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_edge_wal_segments", Help: "Segment files of the write-ahead log.",
		}, func() float64 { return float64(a.wal.Segments()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tollgate_edge_wal_syncs_total", Help: "Group commits (fsyncs) of the write-ahead log.",
		}, func() float64 { return float64(a.wal.Syncs()) }),
	)
}

// fasthttpLogger sends fasthttp's own messages (connection-level errors) to slog at debug
// level: at info they would be a per-request log line under attack.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp", "message", fmt.Sprintf(format, args...))
}

// producerPartitionBatch bounds the records of one produce request to one partition. The WAL
// shipper sends what one or a few fsync intervals gathered — tens of records per partition
// even at 10,000 requests/s — and kafka-go allocates room for the whole bound in every
// partition batch (see bus.ProducerConfig.BatchSize): at records-batch-max (1,000) that was
// most of the edge's allocation. A backlog's larger sends are split into several requests.
const producerPartitionBatch = 64

// producerLinger is how long kafka-go holds a partition batch that is not full before
// sending it. Every Send carries a whole batch the WAL shipper has already gathered (for
// records.linger), so there is nothing more to wait for; kafka-go takes 0 as "1 second".
const producerLinger = time.Millisecond

// walSync maps the validated records.wal_sync setting to the log's mode.
func walSync(s string) wal.SyncMode {
	if s == "always" {
		return wal.SyncAlways
	}
	return wal.SyncInterval
}
