package wal

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/pkg/bus"
)

type nopKafka struct{}

func (nopKafka) Send(context.Context, ...bus.Message) error { return nil }

func internalConfig(t testing.TB) Config {
	return Config{Dir: t.TempDir(), SegmentBytes: 64 << 20, BytesMax: 1 << 40, BatchMax: 100, FirstSeq: 1}
}

// One fsync covers every record appended while the committer was busy: here the committer
// starts only once all appenders are waiting, so exactly one commit must release them all.
func TestOneFsyncCoversEveryWaitingAppend(t *testing.T) {
	w, err := open(internalConfig(t), nopKafka{}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	const n = 64
	var wg sync.WaitGroup
	for i := range n {
		require.True(t, w.Reserve())
		wg.Go(func() { w.Append(testRecord(i)) })
	}
	require.Eventually(t, func() bool { return w.pending.Load() == n }, 10*time.Second, time.Millisecond)
	require.Zero(t, w.Syncs(), "nothing committed yet: the appenders are all waiting")
	go w.commitLoop()
	wg.Wait()
	require.Equal(t, uint64(1), w.Syncs())
	require.NoError(t, w.Close())
}

// A failed write or fsync stops the log: the record that could not be made durable goes to
// the process log whole, and new requests are refused.
func TestWriteFailureStopsTheLog(t *testing.T) {
	var logs bytes.Buffer
	w, err := Open(internalConfig(t), nopKafka{}, slog.New(slog.NewJSONHandler(&logs, nil)))
	require.NoError(t, err)
	require.True(t, w.Reserve())
	require.NoError(t, w.active.f.Close()) // the disk goes away under the committer
	w.Append(testRecord(3))
	require.Error(t, w.Err())
	require.False(t, w.Reserve(), "refuse (503) rather than serve unbilled")
	require.Equal(t, uint64(1), w.Unshipped())
	require.Contains(t, logs.String(), `"msg":"wal_failed"`)
	require.Contains(t, logs.String(), `"msg":"unshipped_record"`)
	require.Contains(t, logs.String(), testRecord(3).RequestID)
	require.Error(t, w.Close())
}
