package retry_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/pkg/retry"
)

func TestUntilRetriesThenSucceeds(t *testing.T) {
	var logs bytes.Buffer
	calls := 0
	err := retry.Until(context.Background(), slog.New(slog.NewTextHandler(&logs, nil)), "reach kafka", time.Second,
		func(ctx context.Context) error {
			calls++
			_, bounded := ctx.Deadline()
			require.True(t, bounded, "each attempt has its own deadline")
			if calls < 3 {
				return errors.New("connection refused")
			}
			return nil
		})
	require.NoError(t, err)
	require.Equal(t, 3, calls)
	require.Equal(t, 2, strings.Count(logs.String(), "startup_step_failed"), logs.String())
	require.Contains(t, logs.String(), `step="reach kafka"`)
}

func TestUntilStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := retry.Until(ctx, slog.New(slog.DiscardHandler), "never", time.Second, func(context.Context) error {
		calls++
		cancel()
		return errors.New("down")
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 1, calls)
}
