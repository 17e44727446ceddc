package app

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/bench/mock"
	"tollgate/edge/internal/config"
	"tollgate/pkg/bus/bustest"
	"tollgate/pkg/usage"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestStopIsNotHeldByIdleConnections: connections that never send a request, or stop half
// way through one, used to hold the graceful stop until -shutdown-timeout ran out. They are
// cut after the read grace, while a stream in flight still finishes.
func TestStopIsNotHeldByIdleConnections(t *testing.T) {
	mockURL, _ := mock.Start(t, mock.Config{})
	cfg := config.Default()
	cfg.Addr, cfg.OpsAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Upstream.URL = mockURL
	cfg.Upstream.Keys = []string{"sk-up"}
	cfg.Ledger.Secret = "unused"
	cfg.Kafka.Brokers = bustest.Start(t, 1, usage.Topic)
	cfg.Kafka.Partitions = 1
	// A held stop would wait out the shutdown timeout, well before the read timeout frees it.
	cfg.Server.ReadTimeout = 10 * time.Minute
	cfg.Server.ShutdownTimeout = 15 * time.Second
	require.NoError(t, cfg.Validate())
	const key = "sk-client"
	sum := sha256.Sum256([]byte(key))
	var logs syncBuffer
	a, err := build(cfg, slog.New(slog.NewJSONHandler(&logs, nil)), newStubLedger(hex.EncodeToString(sum[:])))
	require.NoError(t, err)
	a.conns.grace = 300 * time.Millisecond
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()

	// A stream in flight, paced over about a second.
	body := `{"model":"claude-haiku-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hi\nmock: output=200 events=20 tps=200"}]}`
	req, err := http.NewRequest(http.MethodPost, "http://"+a.Addr()+"/v1/messages", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("x-api-key", key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	r := bufio.NewReader(resp.Body)
	_, err = r.ReadString('\n')
	require.NoError(t, err)

	// Connections that sent nothing, and one that stopped in the middle of its headers.
	for i := range 4 {
		c, err := net.Dial("tcp", a.Addr())
		require.NoError(t, err)
		defer c.Close()
		if i == 0 {
			_, err = io.WriteString(c, "POST /v1/messages HTTP/1.1\r\nHost: edge\r\n")
			require.NoError(t, err)
		}
	}
	time.Sleep(50 * time.Millisecond) // let the server accept them

	stop()
	rest, err := io.ReadAll(r)
	require.NoError(t, err, "the stream finishes during the stop")
	require.Contains(t, string(rest), "event: message_stop")
	require.NoError(t, <-ran)
	require.NotContains(t, logs.String(), "requests_still_running_at_shutdown", "the stop waited out -shutdown-timeout")
}
