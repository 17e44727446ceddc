package bus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/pkg/bus"
	"tollgate/pkg/bus/bustest"
)

func TestProduceConsumeCommit(t *testing.T) {
	brokers := bustest.Start(t, 3, "t1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, bus.EnsureTopics(ctx, brokers, 3, "t1", "t2"))

	p := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: "t1"})
	defer p.Close()
	const n = 500
	msgs := make([]bus.Message, n)
	for i := range msgs {
		msgs[i] = bus.Message{Key: []byte(fmt.Sprint(i % 7)), Value: []byte(fmt.Sprint(i))}
	}
	require.NoError(t, p.Send(ctx, msgs...))

	c := bus.NewConsumer(bus.ConsumerConfig{Brokers: brokers, Topic: "t1", Group: "g"})
	seen := map[string]bool{}
	for len(seen) < n {
		batch, err := c.FetchBatch(ctx, 100, 50*time.Millisecond)
		require.NoError(t, err)
		require.LessOrEqual(t, len(batch), 100)
		for _, m := range batch {
			seen[string(m.Value)] = true
		}
		require.NoError(t, c.Commit(ctx, batch...))
	}
	require.NoError(t, c.Close())
	require.Len(t, seen, n)
}
