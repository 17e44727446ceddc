package gather_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/gather"
)

// What arrives during the wait joins the round, up to max; what is left stays queued.
func TestRoundTakesWhatArrivedDuringTheWait(t *testing.T) {
	q := make(chan int, 10)
	go func() {
		for i := 1; i <= 5; i++ {
			q <- i
		}
	}()
	start := time.Now()
	round, ok := gather.Round(context.Background(), q, []int{0}, 50*time.Millisecond, 4)
	require.True(t, ok)
	require.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)
	require.Equal(t, []int{0, 1, 2, 3}, round)
	require.Len(t, q, 2)
}

// A round with nothing more queued is what it was; one already full takes nothing.
func TestRoundWithNothingMore(t *testing.T) {
	q := make(chan int, 1)
	round, ok := gather.Round(context.Background(), q, []int{7}, time.Millisecond, 10)
	require.True(t, ok)
	require.Equal(t, []int{7}, round)
	q <- 8
	round, ok = gather.Round(context.Background(), q, round, time.Millisecond, 1)
	require.True(t, ok)
	require.Equal(t, []int{7}, round)
	require.Len(t, q, 1)
}

// A cancelled context ends the wait at once.
func TestRoundCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	round, ok := gather.Round(ctx, make(chan int), []int{1}, time.Hour, 10)
	require.False(t, ok)
	require.Equal(t, []int{1}, round)
	require.Less(t, time.Since(start), time.Minute)
}
