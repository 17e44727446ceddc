// Package retry runs a start-up step — reaching Kafka, creating a schema, reading offsets —
// until it succeeds: services start before their dependencies and wait for them.
package retry

import (
	"context"
	"log/slog"
	"time"
)

// Backoff bounds: the wait after a failure starts at First and doubles up to Max.
const (
	First = 200 * time.Millisecond
	Max   = 10 * time.Second
)

// Until runs f, each attempt bounded by attempt, until it returns nil (Until returns nil) or
// ctx ends (Until returns ctx.Err()). Every failure is logged at warn level as
// startup_step_failed, with step, the error and the wait before the next attempt.
func Until(ctx context.Context, log *slog.Logger, step string, attempt time.Duration, f func(context.Context) error) error {
	wait := First
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := f(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("startup_step_failed", "step", step, "error", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, Max)
	}
}
