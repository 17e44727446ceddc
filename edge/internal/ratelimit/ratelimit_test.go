package ratelimit_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/ratelimit"
)

func TestBurstThenSustainedRate(t *testing.T) {
	l := ratelimit.New(60) // one per second sustained, 60 back to back
	now := int64(1_000_000_000_000)
	for i := range 60 {
		ok, _ := l.Allow(now)
		require.True(t, ok, "request %d of the burst", i)
	}
	ok, retry := l.Allow(now)
	require.False(t, ok)
	require.Equal(t, time.Second, retry)

	ok, _ = l.Allow(now + int64(time.Second) - 1)
	require.False(t, ok)
	ok, _ = l.Allow(now + int64(time.Second))
	require.True(t, ok)
	ok, _ = l.Allow(now + int64(time.Second))
	require.False(t, ok)
}

func TestIdleRefills(t *testing.T) {
	l := ratelimit.New(2)
	now := int64(0)
	require.True(t, first(l.Allow(now)))
	require.True(t, first(l.Allow(now)))
	require.False(t, first(l.Allow(now)))
	now += int64(time.Minute)
	require.True(t, first(l.Allow(now)))
	require.True(t, first(l.Allow(now)))
	require.False(t, first(l.Allow(now)))
	require.Equal(t, 2, l.PerMinute())
}

func first(ok bool, _ time.Duration) bool { return ok }
