package memq_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/sink/memq"
	"tollgate/pkg/bus"
	"tollgate/pkg/bus/bustest"
	"tollgate/pkg/usage"
)

func record(i int) *usage.Record {
	return &usage.Record{V: usage.Version, RequestID: fmt.Sprintf("req-%04d", i), AccountID: fmt.Sprintf("acct-%d", i%3),
		Model: "claude-haiku-4-5", CostMicrocredits: int64(i)}
}

func TestShipsEveryRecordToKafka(t *testing.T) {
	brokers := bustest.Start(t, 3, usage.Topic)
	prod := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.Topic, BatchTimeout: time.Millisecond})
	defer prod.Close()
	q := memq.New(memq.Config{QueueMax: 100, BatchMax: 7}, prod, slog.New(slog.DiscardHandler))
	runErr := make(chan error, 1)
	go func() { runErr <- q.Run(context.Background()) }()

	const n = 50
	for i := range n {
		require.True(t, q.Reserve())
		q.Append(record(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, q.Close(ctx))
	require.NoError(t, <-runErr)
	require.Equal(t, uint64(n), q.Shipped())
	require.Zero(t, q.Len())

	cons := bus.NewConsumer(bus.ConsumerConfig{Brokers: brokers, Topic: usage.Topic, Group: "t"})
	defer cons.Close()
	seen := map[string]bool{}
	for len(seen) < n {
		msgs, err := cons.FetchBatch(ctx, n, 100*time.Millisecond)
		require.NoError(t, err)
		for _, m := range msgs {
			rec, err := usage.Decode(m.Value)
			require.NoError(t, err)
			require.Equal(t, rec.AccountID, string(m.Key), "keyed by account")
			require.False(t, seen[rec.RequestID], "duplicate %s", rec.RequestID)
			seen[rec.RequestID] = true
		}
	}
}

func TestReserveIsBounded(t *testing.T) {
	q := memq.New(memq.Config{QueueMax: 3, BatchMax: 10}, failing{}, slog.New(slog.DiscardHandler))
	require.True(t, q.Reserve())
	require.True(t, q.Reserve())
	require.True(t, q.Reserve())
	require.False(t, q.Reserve(), "full: the request must be refused")
	q.Release()
	require.True(t, q.Reserve())
	q.Append(record(1)) // a used reservation still counts until shipped
	require.False(t, q.Reserve())
	require.Equal(t, int64(3), q.Len())
}

type failing struct{}

func (failing) Send(context.Context, ...bus.Message) error { return errors.New("kafka down") }

// lockedBuffer is a log sink safe for the shipper's goroutine and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestCloseLogsWhatKafkaNeverTook(t *testing.T) {
	var logs lockedBuffer
	q := memq.New(memq.Config{QueueMax: 10, BatchMax: 2, BackoffMin: time.Millisecond, BackoffMax: time.Millisecond},
		failing{}, slog.New(slog.NewJSONHandler(&logs, nil)))
	go q.Run(context.Background())
	for i := range 5 {
		require.True(t, q.Reserve())
		q.Append(record(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.Error(t, q.Close(ctx))
	require.Zero(t, q.Len())

	// A record appended after Close (a stream that outlived the shutdown deadline) is logged too.
	require.True(t, q.Reserve())
	q.Append(record(99))

	out := logs.String()
	for _, id := range []string{"req-0000", "req-0001", "req-0002", "req-0003", "req-0004", "req-0099"} {
		require.Contains(t, out, id)
	}
	require.Equal(t, 6, strings.Count(out, `"msg":"unshipped_record"`))
}
