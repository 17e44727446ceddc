package load

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is virtual time that moves only when told: the simulated server moves it by its
// service time, and SleepUntil returns at once, moving it to the wake-up time only when jump
// is set. (Without jump only the server moves time, which makes a one-worker run exactly
// reproducible; the dispatcher then spins until the worker advances the clock.)
type fakeClock struct {
	mu   sync.Mutex
	now  time.Time
	jump bool
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) SleepUntil(_ context.Context, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.jump && t.After(c.now) {
		c.now = t
	}
}

func (c *fakeClock) advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestScheduledAt(t *testing.T) {
	require.Equal(t, t0, scheduledAt(t0, 1000, 0))
	require.Equal(t, t0.Add(time.Millisecond), scheduledAt(t0, 1000, 1))
	require.Equal(t, t0.Add(time.Second), scheduledAt(t0, 1000, 1000))
	// No drift after millions of requests at a rate whose interval is not a whole ns.
	require.Equal(t, t0.Add(1000*time.Second), scheduledAt(t0, 3000, 3_000_000))
}

func TestDueCount(t *testing.T) {
	cases := []struct {
		name        string
		rate        float64
		next, limit int64
		at          time.Duration
		want        int64
	}{
		{"first is due at start", 1000, 0, 100, 0, 1},
		{"before start", 1000, 0, 100, -time.Millisecond, 0},
		{"half way to the second", 1000, 1, 100, 500 * time.Microsecond, 0},
		{"exactly the second", 1000, 1, 100, time.Millisecond, 1},
		{"behind by ten", 1000, 0, 100, 9 * time.Millisecond, 10},
		{"capped by limit", 1000, 95, 100, time.Second, 5},
		{"all sent", 1000, 100, 100, time.Second, 0},
		{"odd rate", 3, 0, 100, time.Second, 4}, // 0, 1/3, 2/3, 1 s
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, dueCount(t0, c.rate, c.next, c.limit, t0.Add(c.at)))
		})
	}
}

// A server that takes 10 ms per request, offered 1,000 requests/s on one connection: requests
// queue behind each other. Measured from the scheduled send time, request i completes at
// 10·(i+1) ms and was due at i ms, so its latency is 9i + 10 ms. Measured from when it was
// actually sent (coordinated omission) every request would show 10 ms.
func TestOpenLoopCountsQueueingFromScheduledTime(t *testing.T) {
	clk := &fakeClock{now: t0}
	const n = 50
	lat := make([]time.Duration, n)
	sentAt := make([]time.Duration, n)
	openLoop(context.Background(), clk, 1000, n, 1, func(_ int, j job) {
		sentAt[j.i] = clk.Now().Sub(t0)
		done := clk.advance(10 * time.Millisecond)
		lat[j.i] = done.Sub(j.scheduled)
	})
	for i := range n {
		require.Equal(t, time.Duration(9*i+10)*time.Millisecond, lat[i], "request %d", i)
		require.Equal(t, time.Duration(10*i)*time.Millisecond, sentAt[i], "request %d", i)
	}
}

// The same accounting through Run's histogram: the p50 and max follow the queue.
func TestOpenLoopLatencyHistogram(t *testing.T) {
	clk := &fakeClock{now: t0}
	h := newShardedHist()
	openLoop(context.Background(), clk, 1000, 101, 1, func(w int, j job) {
		h.record(w, clk.advance(10*time.Millisecond).Sub(j.scheduled))
	})
	s := Summarize(h.merged())
	require.Equal(t, int64(101), s.Count)
	// Latencies are 10, 19, …, 910 ms; p50 is the 51st value, 460 ms (within 0.1%).
	require.InDelta(t, 460_000, s.P50Us, 460)
	require.InDelta(t, 910_000, s.MaxUs, 910)
}

func TestOpenLoopSendsEveryRequestOnce(t *testing.T) {
	clk := &fakeClock{now: t0, jump: true}
	var mu sync.Mutex
	seen := map[int64]time.Time{}
	openLoop(context.Background(), clk, 2000, 1000, 8, func(_ int, j job) {
		mu.Lock()
		defer mu.Unlock()
		_, dup := seen[j.i]
		require.False(t, dup)
		seen[j.i] = j.scheduled
	})
	require.Len(t, seen, 1000)
	for i, at := range seen {
		require.Equal(t, scheduledAt(t0, 2000, i), at)
	}
}

func TestOpenLoopStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	clk := &fakeClock{now: t0}
	var n int
	openLoop(ctx, clk, 1000, 1_000_000, 1, func(_ int, j job) {
		n++
		if n == 10 {
			cancel()
		}
		clk.advance(time.Millisecond)
	})
	require.Less(t, n, 20)
}

func TestClosedLoopBounds(t *testing.T) {
	clk := &fakeClock{now: t0}
	var mu sync.Mutex
	seen := map[int64]bool{}
	closedLoop(context.Background(), clk, 500, 7, 0, time.Time{}, func(_ int, j job) {
		mu.Lock()
		seen[j.i] = true
		mu.Unlock()
	})
	require.Len(t, seen, 500)

	// A deadline stops it too: each request takes 1 ms of virtual time, the deadline is 100 ms.
	clk = &fakeClock{now: t0}
	var count int
	closedLoop(context.Background(), clk, 1_000_000, 1, 0, t0.Add(100*time.Millisecond), func(_ int, j job) {
		count++
		require.Equal(t, clk.Now(), j.scheduled, "closed-loop latency counts from the send")
		clk.advance(time.Millisecond)
	})
	require.Equal(t, 100, count)
}
