package bus_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/pkg/bus"
	"tollgate/pkg/bus/bustest"
)

// TestConsumerCatchesUpOnBacklog is the regression test of a consumer that never caught up:
// the fetch wait used to be the caller's batch linger (20 ms in a fault test), which is also
// all the time kafka-go gives the broker to start answering a fetch. Once a backlog made each
// answer a full MaxBytes one that took longer to start, every fetch timed out and was retried
// from the same offset, forever (ledgerd restarted after kill -9 settled nothing). A tiny
// MaxWait must not stop a consumer from draining a backlog many fetches deep.
func TestConsumerCatchesUpOnBacklog(t *testing.T) {
	brokers := bustest.Start(t, 1, "backlog")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	p := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: "backlog"})
	defer p.Close()
	const n, size = 60_000, 800 // ~48 MB: three full 16 MiB fetches
	value := bytes.Repeat([]byte("x"), size)
	msgs := make([]bus.Message, 1000)
	for i := range msgs {
		msgs[i] = bus.Message{Key: []byte("acct"), Value: value}
	}
	for range n / len(msgs) {
		require.NoError(t, p.Send(ctx, msgs...))
	}

	c := bus.NewConsumer(bus.ConsumerConfig{Brokers: brokers, Topic: "backlog", Group: "g", MaxWait: time.Millisecond})
	defer c.Close()
	got := 0
	for got < n {
		batch, err := c.FetchBatch(ctx, 20_000, 10*time.Millisecond)
		require.NoError(t, err, "after %d of %d messages", got, n)
		got += len(batch)
		require.NoError(t, c.Commit(ctx, batch...))
	}
	require.Equal(t, n, got)
}
