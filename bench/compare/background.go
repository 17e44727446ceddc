package compare

import (
	"context"
	"fmt"
	"time"

	"tollgate/bench/stack"
)

// The background: the Kafka broker, ledgerd, analytics and ClickHouse, which share the two
// cores with the targets (Config.BackgroundNice, Config.BackgroundIdle).

// backgroundCPU is the CPU time the background processes have used so far (those that can
// be read).
func (c *comparer) backgroundCPU() time.Duration {
	var sum time.Duration
	for _, s := range snapshots(c.background) {
		if s != nil {
			sum += s.CPU
		}
	}
	return sum
}

// Catching up: the background is done when it used less than catchUpQuietCPU in a
// catchUpWindow (its idle tick is about 2 %), or after catchUpMax.
const (
	catchUpWindow   = 1500 * time.Millisecond
	catchUpQuietCPU = 75 * time.Millisecond
	catchUpMax      = 30 * time.Second
)

// backgroundCatchUp waits until the background has done the work the edge's requests left it
// (settling, storing rows, the broker's share) and returns its CPU since start, how long it
// waited, and whether the background went quiet within catchUpMax.
func (c *comparer) backgroundCatchUp(ctx context.Context, start time.Duration) (time.Duration, time.Duration, bool) {
	began := time.Now()
	last := c.backgroundCPU()
	for time.Since(began) < catchUpMax && ctx.Err() == nil {
		pause(ctx, catchUpWindow)
		now := c.backgroundCPU()
		if now-last < catchUpQuietCPU {
			return now - start, time.Since(began), true
		}
		last = now
	}
	return last - start, time.Since(began), false
}

// backgroundTuned says whether the background runs below normal priority outside
// BackgroundNormal scenarios.
func (c *comparer) backgroundTuned() bool { return c.cfg.BackgroundIdle || c.cfg.BackgroundNice != 0 }

// backgroundPriority is the priority of background process name outside BackgroundNormal
// scenarios: SCHED_IDLE for what no request waits on (with BackgroundIdle), else
// BackgroundNice.
func (c *comparer) backgroundPriority(name string) stack.Priority {
	if c.cfg.BackgroundIdle && name != "ledgerd" {
		return stack.Priority{Idle: true}
	}
	return stack.Priority{Nice: c.cfg.BackgroundNice}
}

// setBackground gives every background process (Kafka, ledgerd, analytics, ClickHouse) its
// priority, or normal priority (nice 0) when normal is set.
func (c *comparer) setBackground(normal bool) error {
	for _, p := range c.background {
		var pr stack.Priority
		if !normal {
			pr = c.backgroundPriority(p.Name)
		}
		if err := stack.SetPriority(p.Pid, pr); err != nil {
			return fmt.Errorf("set %s to %s: %w", p.Name, pr, err)
		}
	}
	return nil
}
