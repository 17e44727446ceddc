package load

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Clock is the time source of the drivers. Tests use a fake one; Run uses wall time.
type Clock interface {
	Now() time.Time
	// SleepUntil returns when t has come or ctx is done.
	SleepUntil(ctx context.Context, t time.Time)
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

func (wallClock) SleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

// job is one request to send: its index (which picks its shape and key) and the time it was
// meant to go out. Latency is measured from Scheduled, not from when a worker got to it: that
// is what keeps a stalled server from hiding its stall (coordinated omission).
type job struct {
	i         int64
	scheduled time.Time
}

// scheduledAt is when request i of an open loop is due: start + i/rate. Computing it from i,
// not by adding intervals, keeps rounding from drifting over a long run.
func scheduledAt(start time.Time, rate float64, i int64) time.Time {
	return start.Add(time.Duration(float64(i) * float64(time.Second) / rate))
}

// dueCount is how many requests from index next on are due at now, capped at limit−next.
func dueCount(start time.Time, rate float64, next, limit int64, now time.Time) int64 {
	if next >= limit {
		return 0
	}
	elapsed := now.Sub(start)
	if elapsed < 0 {
		return 0
	}
	// Index of the last due request, from the inverse of scheduledAt; +1 for the count.
	last := int64(elapsed.Seconds() * rate)
	// Float rounding may put last one too high or low; fix it against scheduledAt itself.
	for last >= 0 && scheduledAt(start, rate, last).After(now) {
		last--
	}
	for scheduledAt(start, rate, last+1).Compare(now) <= 0 {
		last++
	}
	n := last + 1 - next
	return max(0, min(n, limit-next))
}

// openLoop sends n requests at a fixed rate through workers goroutines, calling do for each
// with the time it was due. If every worker is busy the dispatcher waits for one, and the
// requests behind keep their original due times, so their wait counts in their latency.
// It returns after every dispatched request has finished.
func openLoop(ctx context.Context, clk Clock, rate float64, n int64, workers int,
	do func(worker int, j job)) {
	jobs := make(chan job) // unbuffered: a request is handed over only to an idle worker
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for j := range jobs {
				do(w, j)
			}
		})
	}
	start := clk.Now()
	var next int64
dispatch:
	for next < n {
		now := clk.Now()
		for k := dueCount(start, rate, next, n, now); k > 0; k-- {
			select {
			case jobs <- job{i: next, scheduled: scheduledAt(start, rate, next)}:
				next++
			case <-ctx.Done():
				break dispatch
			}
		}
		if ctx.Err() != nil {
			break
		}
		if next < n {
			clk.SleepUntil(ctx, scheduledAt(start, rate, next))
		}
	}
	close(jobs)
	wg.Wait()
}

// closedLoop runs workers that each send a request, wait for its answer and send the next,
// until n requests have started or deadline passes. Worker w starts after w·ramp/workers, so a
// large number of connections does not arrive as one burst. A request's latency counts from
// when its worker started it.
func closedLoop(ctx context.Context, clk Clock, n int64, workers int, ramp time.Duration,
	deadline time.Time, do func(worker int, j job)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := clk.Now()
	for w := range workers {
		wg.Go(func() {
			if ramp > 0 {
				clk.SleepUntil(ctx, start.Add(time.Duration(int64(ramp)*int64(w)/int64(workers))))
			}
			for ctx.Err() == nil {
				now := clk.Now()
				if !deadline.IsZero() && !now.Before(deadline) {
					return
				}
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				do(w, job{i: i, scheduled: now})
			}
		})
	}
	wg.Wait()
}
