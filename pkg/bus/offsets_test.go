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

// produced starts a broker with topic t1 on 2 partitions and sends it n messages keyed by
// i % keys; the context ends with the test or after a minute.
func produced(t *testing.T, n, keys int) (context.Context, []string) {
	t.Helper()
	brokers := bustest.Start(t, 2, "t1")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	p := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: "t1"})
	defer p.Close()
	for i := range n {
		require.NoError(t, p.Send(ctx, bus.Message{Key: []byte(fmt.Sprint(i % keys)), Value: []byte(fmt.Sprint(i))}))
	}
	return ctx, brokers
}

// A group's offsets read back as committed; moved back from outside the group (while no
// member runs), the next member reads again from there; with a member running, nothing moves.
func TestGroupOffsetsSetAndReread(t *testing.T) {
	const n = 40
	ctx, brokers := produced(t, n, 5)

	got, err := bus.GroupOffsets(ctx, brokers, "g", "t1")
	require.NoError(t, err)
	require.Empty(t, got, "nothing committed yet")

	// Read everything and commit it.
	c := bus.NewConsumer(bus.ConsumerConfig{Brokers: brokers, Topic: "t1", Group: "g"})
	ends := map[int]int64{}
	for read := 0; read < n; {
		batch, err := c.FetchBatch(ctx, 100, 50*time.Millisecond)
		require.NoError(t, err)
		read += len(batch)
		for _, m := range batch {
			ends[m.Partition] = max(ends[m.Partition], m.Offset+1)
		}
		require.NoError(t, c.Commit(ctx, batch...))
	}
	require.Len(t, ends, 2, "keys spread over both partitions")

	got, err = bus.GroupOffsets(ctx, brokers, "g", "t1")
	require.NoError(t, err)
	require.Equal(t, ends, got)

	// A member is running: the group's offsets cannot move.
	err = bus.SetGroupOffsets(ctx, brokers, "g", "t1", map[int]int64{0: 0})
	require.ErrorIs(t, err, bus.ErrGroupActive)
	require.NoError(t, c.Close())

	// No member: partition 0 goes back by 3, and the next member reads those 3 again.
	back := map[int]int64{0: ends[0] - 3}
	require.Eventually(t, func() bool {
		err = bus.SetGroupOffsets(ctx, brokers, "g", "t1", back)
		return err == nil
	}, 30*time.Second, 100*time.Millisecond, "the group empties once its member has left: %v", err)
	got, err = bus.GroupOffsets(ctx, brokers, "g", "t1")
	require.NoError(t, err)
	require.Equal(t, map[int]int64{0: ends[0] - 3, 1: ends[1]}, got)

	c2 := bus.NewConsumer(bus.ConsumerConfig{Brokers: brokers, Topic: "t1", Group: "g"})
	defer c2.Close()
	batch, err := c2.FetchBatch(ctx, 100, 500*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, batch, 3)
	for i, m := range batch {
		require.Equal(t, 0, m.Partition)
		require.Equal(t, ends[0]-3+int64(i), m.Offset)
	}
}

// FirstOffsets gives every partition's earliest offset; SetGroupOffsetsWhenEmpty gives up
// with ErrGroupActive while a member stays past the wait, and succeeds once it leaves.
func TestFirstOffsetsAndSetWhenEmpty(t *testing.T) {
	ctx, brokers := produced(t, 10, 10)
	first, err := bus.FirstOffsets(ctx, brokers, "t1")
	require.NoError(t, err)
	require.Equal(t, map[int]int64{0: 0, 1: 0}, first)
	_, err = bus.FirstOffsets(ctx, brokers, "no-such-topic")
	require.Error(t, err)

	c := bus.NewConsumer(bus.ConsumerConfig{Brokers: brokers, Topic: "t1", Group: "g"})
	_, err = c.FetchBatch(ctx, 1, 0) // joins the group
	require.NoError(t, err)
	start := time.Now()
	err = bus.SetGroupOffsetsWhenEmpty(ctx, brokers, "g", "t1", map[int]int64{0: 0}, time.Second)
	require.ErrorIs(t, err, bus.ErrGroupActive)
	require.GreaterOrEqual(t, time.Since(start), time.Second, "waited before giving up")

	go func() {
		time.Sleep(500 * time.Millisecond)
		_ = c.Close()
	}()
	require.NoError(t, bus.SetGroupOffsetsWhenEmpty(ctx, brokers, "g", "t1", map[int]int64{0: 0, 1: 0}, 30*time.Second))
	got, err := bus.GroupOffsets(ctx, brokers, "g", "t1")
	require.NoError(t, err)
	require.Equal(t, map[int]int64{0: 0, 1: 0}, got)
}
