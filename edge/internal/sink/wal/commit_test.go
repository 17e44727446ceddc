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

// appendRecords appends testRecord(from) … testRecord(to-1), each after its reservation.
func appendRecords(t testing.TB, w *WAL, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		require.True(t, w.Reserve())
		w.Append(testRecord(i))
	}
}

// Under SyncAlways one fsync covers every record written while the syncer was busy: here the
// syncer starts only once all appenders are waiting, so exactly one fsync must release them.
func TestOneFsyncCoversEveryWaitingAppend(t *testing.T) {
	cfg := internalConfig(t)
	cfg.Sync = SyncAlways
	w, err := open(cfg, nopKafka{}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	const n = 64
	var wg sync.WaitGroup
	for i := range n {
		require.True(t, w.Reserve())
		wg.Go(func() { w.Append(testRecord(i)) })
	}
	require.Eventually(t, func() bool { return w.pending.Load() == n }, 10*time.Second, time.Millisecond)
	require.Zero(t, w.Syncs(), "nothing committed yet: the appenders are all waiting")
	go w.syncLoop()
	wg.Wait()
	require.Equal(t, uint64(1), w.Syncs())
	require.NoError(t, w.Close())
}

// A failed write or fsync stops the log: the record that could not be made durable goes to
// the process log whole, and new requests are refused. The ring keeps it for the next Open.
func TestWriteFailureStopsTheLog(t *testing.T) {
	var logs bytes.Buffer
	cfg := internalConfig(t)
	w, err := Open(cfg, nopKafka{}, slog.New(slog.NewJSONHandler(&logs, nil)))
	require.NoError(t, err)
	require.True(t, w.Reserve())
	require.NoError(t, w.active.f.Close()) // the disk goes away under the committer
	w.Append(testRecord(3))                // returns once the record is in the ring
	require.Eventually(t, func() bool { return w.Err() != nil }, 10*time.Second, time.Millisecond,
		"the syncer's write fails")
	require.False(t, w.Reserve(), "refuse (503) rather than serve unbilled")
	require.Error(t, w.Close()) // waits for the syncer, so its log lines are all written
	require.Equal(t, uint64(1), w.Unshipped())
	require.Contains(t, logs.String(), `"msg":"wal_failed"`)
	require.Contains(t, logs.String(), `"msg":"unshipped_record"`)
	require.Contains(t, logs.String(), testRecord(3).RequestID)

	w, err = open(cfg, nopKafka{}, slog.New(slog.DiscardHandler)) // the disk is back
	require.NoError(t, err)
	require.Equal(t, int64(1), w.pending.Load(), "the record came back from the ring")
	require.Equal(t, cfg.FirstSeq+1, w.nextSeq)
	go w.syncLoop()
	require.NoError(t, w.Close())
}

// Under SyncInterval, Append returns once the record is in the ring — before any write or
// fsync of a segment — and the syncer then syncs at most once per SyncInterval however many
// records arrive.
func TestIntervalAppendReturnsBeforeTheFsync(t *testing.T) {
	cfg := internalConfig(t)
	cfg.SyncInterval = 50 * time.Millisecond
	w, err := open(cfg, nopKafka{}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	appendRecords(t, w, 0, 10) // would block forever if Append waited: the syncer is not running
	require.Zero(t, w.Syncs())
	require.Len(t, ringRun(w.ring.mem[:ringHalfBytes]), 10, "every record is in the ring")
	st, err := w.active.f.Stat()
	require.NoError(t, err)
	require.Equal(t, magicBytes, st.Size(), "the syncer writes the segments")
	require.Equal(t, magicBytes, w.active.size, "nothing is durable, so nothing ships yet")

	go w.syncLoop()
	require.Eventually(t, func() bool { return w.Syncs() == 1 }, 10*time.Second, time.Millisecond)
	start := time.Now()
	appendRecords(t, w, 10, 2010)
	require.NoError(t, w.Close())
	elapsed := time.Since(start)
	// The first round may start at once; each later one waits SyncInterval; Close adds one.
	maxSyncs := uint64(elapsed/cfg.SyncInterval) + 3
	require.LessOrEqual(t, w.Syncs(), maxSyncs, "elapsed %s", elapsed)
	w.mu.Lock()
	require.Equal(t, w.active.written, w.active.size, "Close syncs what was written")
	w.mu.Unlock()
}

// A failed fsync under SyncInterval stops the log, and the records written since the last
// good fsync — whose Appends had already returned — go to the process log whole.
func TestIntervalSyncFailureLogsWhatWasNotDurable(t *testing.T) {
	var logs bytes.Buffer
	w, err := open(internalConfig(t), nopKafka{}, slog.New(slog.NewJSONHandler(&logs, nil)))
	require.NoError(t, err)
	appendRecords(t, w, 0, 3)
	require.NoError(t, w.active.f.Close()) // the disk goes away before the fsync
	w.syncRound()
	require.Error(t, w.Err())
	require.False(t, w.Reserve())
	require.Equal(t, uint64(3), w.Unshipped())
	for i := range 3 {
		require.Contains(t, logs.String(), testRecord(i).RequestID)
	}
	go w.syncLoop()
	require.Error(t, w.Close())
}
