package proxy_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"

	"tollgate/bench/mock"
	"tollgate/edge/internal/admit/lease"
	"tollgate/edge/internal/admit/lease/leasetest"
	"tollgate/edge/internal/auth"
	"tollgate/edge/internal/ledger"
	"tollgate/edge/internal/metrics"
	"tollgate/edge/internal/proxy"
	"tollgate/edge/internal/sink/wal"
	"tollgate/pkg/bus"
	"tollgate/pkg/bus/bustest"
	"tollgate/pkg/ledgerapi"
	"tollgate/pkg/pricing"
	"tollgate/pkg/usage"
)

// The integration tests run the proxy with its real parts — the real auth cache, lease
// admitter, write-ahead log (in a temporary directory) and Kafka producer, the bench mock as
// upstream and an in-process kfake broker — behind a real fasthttp server, and talk to it
// with net/http. Only ledgerd is replaced, behind the edge's client interface (as the lease
// package's and edge/internal/app's tests do); the end-to-end suite runs the real one.

const upstreamKey = "sk-upstream-operator-secret"

// fakeLedger answers key lookups from memory, counting them, and leases through the lease
// admitter's test ledger (ledgerd's lease arithmetic, for this one node; nothing settles).
type fakeLedger struct {
	*leasetest.Ledger
	mu       sync.Mutex
	keys     map[string]ledgerapi.Key
	keyCalls atomic.Int32
}

func newFakeLedger() *fakeLedger {
	return &fakeLedger{Ledger: leasetest.New(), keys: map[string]ledgerapi.Key{}}
}

func (l *fakeLedger) LookupKey(_ context.Context, hashHex string) (ledgerapi.Key, error) {
	l.keyCalls.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	k, ok := l.keys[hashHex]
	if !ok {
		return ledgerapi.Key{}, ledger.ErrNotFound
	}
	return k, nil
}

func (l *fakeLedger) add(secret string, k ledgerapi.Key, balanceMicro int64) {
	sum := sha256.Sum256([]byte(secret))
	l.mu.Lock()
	defer l.mu.Unlock()
	l.keys[hex.EncodeToString(sum[:])] = k
	l.SetBalance(k.AccountID, balanceMicro)
}

type harness struct {
	t        testing.TB
	url      string // the edge
	mockURL  string
	mock     *mock.Server
	ledger   *fakeLedger
	admitter *lease.Admitter
	wal      *wal.WAL
	metrics  *metrics.Edge
	server   *fasthttp.Server
	brokers  []string
	client   *http.Client
	shutOnce sync.Once
}

// Test keys: each its own account.
const (
	keyRich      = "sk-test-rich"
	keyPoor      = "sk-test-poor"
	keyEmpty     = "sk-test-empty"
	keyRevoked   = "sk-test-revoked"
	keySuspended = "sk-test-suspended"
)

type option func(*proxy.Config, *wal.Config)

func newHarness(t testing.TB, opts ...option) *harness {
	t.Helper()
	mockURL, mockSrv := mock.Start(t, mock.Config{Keys: []string{upstreamKey}})
	brokers := bustest.Start(t, 1, usage.Topic)
	log := slog.New(slog.DiscardHandler)

	fl := newFakeLedger()
	active := ledgerapi.StatusActive
	fl.add(keyRich, ledgerapi.Key{KeyID: "key-rich", AccountID: "acct-rich", AccountStatus: active}, 1_000_000_000_000)
	fl.add(keyPoor, ledgerapi.Key{KeyID: "key-poor", AccountID: "acct-poor", AccountStatus: active}, 50_000)
	fl.add(keyEmpty, ledgerapi.Key{KeyID: "key-empty", AccountID: "acct-empty", AccountStatus: active}, 0)
	fl.add(keyRevoked, ledgerapi.Key{KeyID: "key-revoked", AccountID: "acct-revoked", Revoked: true, AccountStatus: active}, 1_000_000)
	fl.add(keySuspended, ledgerapi.Key{KeyID: "key-susp", AccountID: "acct-susp", AccountStatus: ledgerapi.StatusSuspended}, 1_000_000)

	m := metrics.New()
	authn, adm := authAndAdmitter(t, fl, "edge-test", m)
	cfg := testProxyConfig("edge-test", mockURL, 64)
	wcfg := wal.Config{Dir: t.TempDir(), SegmentBytes: 1 << 20, BytesMax: 64 << 20, BatchMax: 100}
	for _, o := range opts {
		o(&cfg, &wcfg)
	}

	prod := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.Topic, BatchTimeout: time.Millisecond})
	t.Cleanup(func() { prod.Close() })
	w, err := wal.Open(wcfg, prod, log)
	require.NoError(t, err)
	runCtx, stopRun := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		_ = w.Run(runCtx) // returns nil
	}()
	t.Cleanup(func() {
		stopRun()
		<-ran
		require.NoError(t, w.Close())
	})

	p, err := proxy.New(cfg, proxy.Deps{Auth: authn, Admitter: adm, Prices: testPrices(t), Sink: w, Balances: adm, Metrics: m})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	srv := edgeServer(p, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(ln) //nolint:errcheck // ends at shutdown

	h := &harness{t: t, url: "http://" + ln.Addr().String(), mockURL: mockURL, mock: mockSrv, ledger: fl,
		admitter: adm, wal: w, metrics: m, server: srv, brokers: brokers,
		client: &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 30 * time.Second}}
	t.Cleanup(h.shutdown)
	return h
}

// authAndAdmitter builds the edge's real key cache and lease admitter on fl, stopped (the
// admitter's leases returned) when the test ends.
func authAndAdmitter(t testing.TB, fl *fakeLedger, edgeID string, m *metrics.Edge) (*auth.Authenticator, *lease.Admitter) {
	log := slog.New(slog.DiscardHandler)
	authn, err := auth.New(auth.Config{TTL: 5 * time.Second, NegativeTTL: time.Minute, Timeout: time.Second, CacheMax: 1000}, fl, log)
	require.NoError(t, err)
	t.Cleanup(authn.Close)
	adm, err := lease.New(lease.Config{EdgeID: edgeID, Timeout: time.Second, CacheMax: 1000, Registerer: m.Registry}, fl, log)
	require.NoError(t, err)
	t.Cleanup(func() { closeAdmitter(t, adm) })
	return authn, adm
}

// testProxyConfig is the proxy configuration of a test edge in front of upstreamURL.
func testProxyConfig(edgeID, upstreamURL string, upstreamConnsMax int) proxy.Config {
	return proxy.Config{
		EdgeID:                   edgeID,
		UpstreamURL:              upstreamURL,
		UpstreamKeys:             []string{upstreamKey},
		UpstreamDialTimeout:      time.Second,
		UpstreamWriteTimeout:     10 * time.Second,
		UpstreamReadTimeout:      30 * time.Second,
		UpstreamConnsMax:         upstreamConnsMax,
		UpstreamConnWaitTimeout:  time.Second,
		UpstreamIdleConnTimeout:  10 * time.Second,
		UpstreamResponseBytesMax: 8 << 20,
		BodyBytesMax:             1 << 20,
		DrainTimeout:             10 * time.Second,
		DrainsMax:                8,
		LedgerTimeout:            time.Second,
	}
}

// testPrices is the embedded price table, as the proxy takes it.
func testPrices(t testing.TB) *atomic.Pointer[pricing.Table] {
	table, err := pricing.Default()
	require.NoError(t, err)
	var prices atomic.Pointer[pricing.Table]
	prices.Store(table)
	return &prices
}

// edgeServer is the fasthttp server in front of p, configured as edge/internal/app does.
func edgeServer(p *proxy.Proxy, cfg proxy.Config) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:               p.Handle,
		ErrorHandler:          p.HandleError,
		MaxRequestBodySize:    cfg.BodyBytesMax,
		ReadBufferSize:        16 << 10,
		WriteBufferSize:       16 << 10,
		ReadTimeout:           10 * time.Second,
		WriteTimeout:          time.Minute,
		IdleTimeout:           10 * time.Second,
		TCPKeepalive:          true,
		CloseOnShutdown:       true,
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		Logger:                quietLogger{},
	}
}

// shutdown stops the edge server (waiting for streams and drains), returns the leases and
// waits until Kafka has acknowledged every record in the log.
func (h *harness) shutdown() {
	h.shutOnce.Do(func() {
		h.client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		require.NoError(h.t, h.server.ShutdownWithContext(ctx))
		closeAdmitter(h.t, h.admitter)
		require.NoError(h.t, h.wal.Flush(ctx))
	})
}

// closeAdmitter returns the admitter's leases to the ledger and stops it. Idempotent.
func closeAdmitter(t testing.TB, adm *lease.Admitter) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, adm.Close(ctx))
}

// records stops the edge and returns every record it shipped to Kafka, in order.
func (h *harness) records() []usage.Record {
	h.t.Helper()
	h.shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := kafka.DialLeader(ctx, "tcp", h.brokers[0], usage.Topic, 0)
	require.NoError(h.t, err)
	last, err := conn.ReadLastOffset()
	conn.Close()
	require.NoError(h.t, err)
	if last == 0 {
		return nil
	}
	cons := bus.NewConsumer(bus.ConsumerConfig{Brokers: h.brokers, Topic: usage.Topic, Group: "test-" + h.t.Name()})
	defer cons.Close()
	var out []usage.Record
	for int64(len(out)) < last {
		msgs, err := cons.FetchBatch(ctx, 1000, 50*time.Millisecond)
		require.NoError(h.t, err)
		for _, m := range msgs {
			rec, err := usage.Decode(m.Value)
			require.NoError(h.t, err)
			require.Equal(h.t, rec.AccountID, string(m.Key), "records are keyed by account")
			out = append(out, rec)
		}
	}
	return out
}

// byRequestID indexes records, failing on duplicates.
func byRequestID(t *testing.T, recs []usage.Record) map[string]usage.Record {
	t.Helper()
	out := map[string]usage.Record{}
	for _, r := range recs {
		_, dup := out[r.RequestID]
		require.False(t, dup, "request %s recorded twice", r.RequestID)
		out[r.RequestID] = r
	}
	return out
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// post sends a Messages-style request to the edge.
func (h *harness) post(path, key string, body string, hdr ...string) response {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.url+path, strings.NewReader(body))
	require.NoError(h.t, err)
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	if key != "" {
		req.Header.Set("x-api-key", key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return h.do(req)
}

func (h *harness) get(path, key string) response {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.url+path, nil)
	require.NoError(h.t, err)
	if key != "" {
		req.Header.Set("x-api-key", key)
	}
	return h.do(req)
}

func (h *harness) do(req *http.Request) response {
	h.t.Helper()
	resp, err := h.client.Do(req)
	require.NoError(h.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(h.t, err)
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

// messagesBody is a Messages request whose last user message carries a mock directive.
func messagesBody(model string, stream bool, directive string) string {
	return fmt.Sprintf(`{"model":%q,"max_tokens":1024,"stream":%v,"messages":[{"role":"user","content":"Hello.\nmock: %s"}]}`,
		model, stream, directive)
}

// counter reads a counter or gauge from the edge's registry.
func counter(t *testing.T, m *metrics.Edge, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := m.Registry.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, mt := range f.GetMetric() {
			if matches(mt.GetLabel(), labels) {
				if c := mt.GetCounter(); c != nil {
					return c.GetValue()
				}
				return mt.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func matches(pairs []*dto.LabelPair, want map[string]string) bool {
	n := 0
	for _, p := range pairs {
		if v, ok := want[p.GetName()]; ok {
			if v != p.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}
