package app

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/bench/mock"
	"tollgate/edge/internal/config"
	"tollgate/edge/internal/ledger"
	"tollgate/pkg/bus"
	"tollgate/pkg/bus/bustest"
	"tollgate/pkg/ledgerapi"
	"tollgate/pkg/usage"
)

// stubLedger stands in for ledgerd behind the client interface; the edge's end-to-end suite
// runs the real one. It grants every lease in full and remembers the spend released.
type stubLedger struct {
	keyHash string

	mu       sync.Mutex
	granted  int
	released map[string]int64 // lease id → spend reported
}

func newStubLedger(keyHash string) *stubLedger {
	return &stubLedger{keyHash: keyHash, released: map[string]int64{}}
}

func (s *stubLedger) LookupKey(_ context.Context, h string) (ledgerapi.Key, error) {
	if h != s.keyHash {
		return ledgerapi.Key{}, ledger.ErrNotFound
	}
	return ledgerapi.Key{KeyID: "k1", AccountID: "a1", AccountStatus: ledgerapi.StatusActive}, nil
}

func (*stubLedger) Balance(_ context.Context, id string) (ledgerapi.Balance, error) {
	return ledgerapi.Balance{AccountID: id, BalanceMicrocredits: 1e12, AvailableMicrocredits: 1e12}, nil
}

func (s *stubLedger) Grant(_ context.Context, g ledgerapi.Grant) (ledgerapi.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.granted++
	return ledgerapi.Lease{LeaseID: fmt.Sprint("lease_", s.granted), AccountID: g.AccountID,
		GrantedMicrocredits: g.WantMicrocredits, TTLMillis: 60_000}, nil
}

func (*stubLedger) Extend(_ context.Context, id string, e ledgerapi.Extend) (ledgerapi.Lease, error) {
	return ledgerapi.Lease{}, ledger.ErrLeaseClosed // the node then asks for a new lease
}

func (s *stubLedger) Release(_ context.Context, id string, r ledgerapi.Release) (ledgerapi.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.released[id] = r.SpentMicrocredits
	return ledgerapi.Lease{LeaseID: id}, nil
}

func (*stubLedger) Recalls(context.Context, string) ([]string, error) { return nil, nil }
func (*stubLedger) Ping(context.Context) error                        { return nil }
func (*stubLedger) Close()                                            {}

// TestGracefulStopFinishesStreamsAndShipsRecords stops the edge while a paced stream is in
// flight: the stream must finish for its client, and its record must reach Kafka before Run
// returns.
func TestGracefulStopFinishesStreamsAndShipsRecords(t *testing.T) {
	mockURL, _ := mock.Start(t, mock.Config{})
	brokers := bustest.Start(t, 1, usage.Topic)
	cfg := config.Default()
	cfg.Addr, cfg.OpsAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.EdgeID = "edge-app-test"
	cfg.DataDir = t.TempDir()
	cfg.Upstream.URL = mockURL
	cfg.Upstream.Keys = []string{"sk-up"}
	cfg.Ledger.Secret = "unused"
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.Partitions = 1
	require.NoError(t, cfg.Validate())

	const key = "sk-client"
	sum := sha256.Sum256([]byte(key))
	stub := newStubLedger(hex.EncodeToString(sum[:]))
	a, err := build(cfg, slog.New(slog.DiscardHandler), stub)
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()

	ops := "http://" + a.OpsAddr()
	for {
		resp, err := http.Get(ops + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}

	body := `{"model":"claude-haiku-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi\nmock: input=10 output=200 events=20 tps=400"}]}`
	req, err := http.NewRequest(http.MethodPost, "http://"+a.Addr()+"/v1/messages", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("x-api-key", key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	r := bufio.NewReader(resp.Body)
	first, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "event: message_start\n", first)

	stop() // SIGTERM, in effect, mid-stream
	rest, err := io.ReadAll(r)
	require.NoError(t, err, "the stream finishes during the graceful stop")
	require.Contains(t, string(rest), "event: message_stop")
	require.NoError(t, <-ran)

	cons := bus.NewConsumer(bus.ConsumerConfig{Brokers: brokers, Topic: usage.Topic, Group: "app-test"})
	defer cons.Close()
	fctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msgs, err := cons.FetchBatch(fctx, 10, 100*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	rec, err := usage.Decode(msgs[0].Value)
	require.NoError(t, err)
	require.Equal(t, resp.Header.Get("request-id"), rec.RequestID)
	require.Equal(t, "edge-app-test", rec.EdgeID)
	require.Equal(t, usage.Tokens{Input: 10, Output: 200}, rec.Usage)
	require.False(t, rec.Estimated)
	// 10 × 140 + 200 × 700 µcr (Haiku 4.5: $1 and $5 per MTok, 30% off, 200 credits per $).
	require.Equal(t, int64(141_400), rec.CostMicrocredits, fmt.Sprintf("%+v", rec))

	// The stop returned the credit lease, reporting the request's cost as its spend.
	stub.mu.Lock()
	defer stub.mu.Unlock()
	require.Equal(t, 1, stub.granted)
	require.Equal(t, map[string]int64{rec.LeaseID: 141_400}, stub.released)
}

func TestReadyzReportsLedgerDown(t *testing.T) {
	cfg := config.Default()
	cfg.Addr, cfg.OpsAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Upstream.Keys = []string{"sk-up"}
	cfg.Ledger.Secret = "s"
	cfg.DataDir = t.TempDir()
	cfg.Ledger.URL = "http://127.0.0.1:1" // nothing listens there
	cfg.Ledger.Timeout = 200 * time.Millisecond
	cfg.Kafka.Brokers = bustest.Start(t, 1, usage.Topic)
	a, err := New(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	defer func() { stop(); require.NoError(t, <-ran) }()

	var status int
	var body []byte
	for range 500 {
		resp, err := http.Get("http://" + a.OpsAddr() + "/readyz")
		if err == nil {
			status = resp.StatusCode
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.Equal(t, 200, status, "a shared dependency down does not take the node out of rotation")
	require.Contains(t, string(body), `"ledgerd":"unreachable"`)

	// And a request the ledger must authenticate gets 503 api_error with retry-after.
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.Addr()+"/v1/messages",
		strings.NewReader(`{"model":"claude-haiku-4-5","max_tokens":5,"messages":[]}`))
	req.Header.Set("x-api-key", "sk-any")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 503, resp.StatusCode)
	require.Equal(t, "2", resp.Header.Get("retry-after"))
	b, _ := io.ReadAll(resp.Body)
	require.Contains(t, string(b), `"type":"api_error"`)

	mresp, err := http.Get("http://" + a.OpsAddr() + "/metrics")
	require.NoError(t, err)
	mb, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	require.Contains(t, string(mb), `tollgate_edge_requests_total{route="messages",status="503"} 1`)
}
