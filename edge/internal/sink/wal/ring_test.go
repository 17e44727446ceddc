package wal

import (
	"bytes"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/pkg/usage"
)

// crash drops w as a killed process would: no final round, files and lock let go.
func crash(t *testing.T, w *WAL) {
	t.Helper()
	w.closeFiles()
	require.NoError(t, w.ring.close())
	require.NoError(t, w.lock.Close())
}

// segmentRecords reads every record in dir's segments, in order.
func segmentRecords(t *testing.T, dir string) []usage.Record {
	t.Helper()
	bases, err := listSegments(dir)
	require.NoError(t, err)
	var out []usage.Record
	for _, base := range bases {
		b, err := os.ReadFile(segmentPath(dir, base))
		require.NoError(t, err)
		b = b[magicBytes:]
		for len(b) > 0 {
			fr, err := decodeFrame(b)
			require.NoError(t, err)
			rec, err := usage.Decode(fr.value)
			require.NoError(t, err)
			rec.Seq = fr.seq
			out = append(out, rec)
			b = b[fr.size:]
		}
	}
	return out
}

// requireRecords checks that dir's segments hold records 0..n-1 of testRecord, numbered from
// first without a gap.
func requireRecords(t *testing.T, dir string, first uint64, n int) {
	t.Helper()
	got := segmentRecords(t, dir)
	require.Len(t, got, n)
	for i, r := range got {
		require.Equal(t, first+uint64(i), r.Seq)
		require.Equal(t, testRecord(i).RequestID, r.RequestID)
	}
}

// What a killed process had in the ring — the round the syncer had not written yet, and the
// one it was writing — reaches the segments at the next Open, after what the segments hold.
func TestRingRecoversWhatTheSegmentsLack(t *testing.T) {
	cfg := internalConfig(t)
	w, err := open(cfg, nopKafka{}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	appendRecords(t, w, 0, 5)
	w.syncRound() // 0..4 in the segment; 5..9 only in the ring
	appendRecords(t, w, 5, 10)
	crash(t, w)
	requireRecords(t, cfg.Dir, cfg.FirstSeq, 5)

	var logs bytes.Buffer
	w, err = open(cfg, nopKafka{}, slog.New(slog.NewJSONHandler(&logs, nil)))
	require.NoError(t, err)
	requireRecords(t, cfg.Dir, cfg.FirstSeq, 10)
	require.Contains(t, logs.String(), `"msg":"wal_ring_recovered","records":5`)
	require.Equal(t, int64(10), w.pending.Load())
	appendRecords(t, w, 10, 11)
	go w.syncLoop()
	require.NoError(t, w.Close())
	requireRecords(t, cfg.Dir, cfg.FirstSeq, 11)
	_, err = os.Stat(w.ring.path)
	require.ErrorIs(t, err, os.ErrNotExist, "a clean Close removes the ring")
}

// A kill during the syncer's write leaves a torn frame at the end of the segment; Open cuts it
// off and takes that record, and the rest of its round, from the ring.
func TestRingRefillsATornSegmentTail(t *testing.T) {
	cfg := internalConfig(t)
	w, err := open(cfg, nopKafka{}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	appendRecords(t, w, 0, 8)
	w.syncRound()
	path := w.active.path
	crash(t, w)
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(path, st.Size()-100)) // the last frame is torn

	w, err = open(cfg, nopKafka{}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	requireRecords(t, cfg.Dir, cfg.FirstSeq, 8)
	go w.syncLoop()
	require.NoError(t, w.Close())
}

// When the syncer cannot keep up, Appends wait for it instead of outgrowing the ring half (the
// frames would then leave the ring for the heap); none is lost and seq stays in order.
func TestAppendsWaitForRoomInTheRing(t *testing.T) {
	cfg := internalConfig(t)
	w, err := open(cfg, nopKafka{}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)

	const n = 12_000 // more than one half holds
	done := make(chan struct{})
	go func() {
		defer close(done)
		appendRecords(t, w, 0, n)
	}()
	require.Eventually(t, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.waiting == 1
	}, 10*time.Second, time.Millisecond, "the appender waits: no syncer is running")
	w.mu.Lock()
	used, appended := len(w.unsynced), int(w.nextSeq-cfg.FirstSeq)
	require.Same(t, &w.ring.mem[0], &w.unsynced[:1][0], "the frames are still in the ring")
	w.mu.Unlock()
	require.Greater(t, used, ringHalfBytes-frameBytesMax, "it waited only once room ran short")
	require.Less(t, appended, n)

	go w.syncLoop()
	<-done
	require.NoError(t, w.Close())
	requireRecords(t, cfg.Dir, cfg.FirstSeq, n)
}

// Frames in the ring that do not continue the log (a ring from another life of the path) are
// not written after a gap: they go to the process log whole.
func TestRingFramesAfterAGapAreLogged(t *testing.T) {
	cfg := internalConfig(t) // a fresh log: its first seq is 1
	path := ringPath(cfg.Dir)
	mem := make([]byte, 2*ringHalfBytes)
	frames := func(seqs ...int) []byte {
		var b []byte
		for _, s := range seqs {
			var err error
			b, err = appendFrame(b, uint64(s), testRecord(s-1))
			require.NoError(t, err)
		}
		return b
	}
	copy(mem, frames(1, 2))
	copy(mem[ringHalfBytes:], frames(5, 6)) // 3 and 4 are nowhere
	require.NoError(t, os.WriteFile(path, mem, 0o600))

	var logs bytes.Buffer
	w, err := open(cfg, nopKafka{}, slog.New(slog.NewJSONHandler(&logs, nil)))
	require.NoError(t, err)
	require.Equal(t, int64(2), w.pending.Load())
	require.Equal(t, 2, bytes.Count(logs.Bytes(), []byte(`"msg":"unshipped_record"`)))
	require.Contains(t, logs.String(), testRecord(4).RequestID)
	require.Contains(t, logs.String(), testRecord(5).RequestID)
	go w.syncLoop()
	require.NoError(t, w.Close())
	requireRecords(t, cfg.Dir, 1, 2)
}

// FuzzRingRecovery: whatever a ring file holds after a crash (torn frames, stale rounds,
// garbage), the scan never panics and returns only whole, valid frames, consecutive in seq
// within each half's run.
func FuzzRingRecovery(f *testing.F) {
	var seed []byte
	for i := range 3 {
		var err error
		seed, err = appendFrame(seed, uint64(10+i), testRecord(i))
		require.NoError(f, err)
	}
	f.Add(seed, len(seed)/2)
	f.Add(seed[:len(seed)-7], 0)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, half []byte, cut int) {
		cut = min(max(cut, 0), len(half))
		a, b := ringRun(half[:cut]), ringRun(half[cut:])
		for _, run := range [][]ringFrame{a, b} {
			for i, fr := range run {
				got, err := decodeFrame(fr.raw)
				require.NoError(t, err)
				require.Equal(t, fr.seq, got.seq)
				require.Equal(t, int64(len(fr.raw)), got.size)
				require.Equal(t, fr.seq, frameSeq(fr.raw))
				require.Equal(t, len(fr.raw), frameLen(fr.raw))
				if i > 0 {
					require.Equal(t, run[i-1].seq+1, fr.seq)
				}
			}
		}
		merged := mergeRuns(a, b)
		require.Len(t, merged, len(a)+len(b))
	})
}
