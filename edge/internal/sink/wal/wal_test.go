package wal_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/sink/wal"
	"tollgate/pkg/bus"
	"tollgate/pkg/bus/bustest"
	"tollgate/pkg/usage"
)

func record(i int) *usage.Record {
	return &usage.Record{V: usage.Version, RequestID: fmt.Sprintf("019a0000-0000-7000-8000-%012d", i),
		EdgeID: "edge-test", AccountID: fmt.Sprintf("acct-%d", i%3), KeyID: "key-1", Model: "claude-haiku-4-5",
		ModelRequested: "claude-haiku-4-5", Status: 200, Usage: usage.Tokens{Input: int64(i), Output: 7},
		CostMicrocredits: int64(1000 + i), PriceVersion: "2026-11-01", UpstreamKeyID: "uk_0123456789ab"}
}

// fakeKafka is a Publisher that keeps what it acknowledged and can be taken down.
type fakeKafka struct {
	mu    sync.Mutex
	down  bool
	got   []usage.Record
	keys  []string
	sends int
}

var errDown = errors.New("kafka down")

func (k *fakeKafka) Send(_ context.Context, msgs ...bus.Message) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sends++
	if k.down {
		return errDown
	}
	for _, m := range msgs {
		rec, err := usage.Decode(m.Value)
		if err != nil {
			return err
		}
		k.got = append(k.got, rec)
		k.keys = append(k.keys, string(m.Key))
	}
	return nil
}

func (k *fakeKafka) setDown(v bool) {
	k.mu.Lock()
	k.down = v
	k.mu.Unlock()
}

func (k *fakeKafka) records() []usage.Record {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]usage.Record(nil), k.got...)
}

// requestIDs counts each request id acknowledged.
func (k *fakeKafka) requestIDs() map[string]int {
	m := map[string]int{}
	for _, r := range k.records() {
		m[r.RequestID]++
	}
	return m
}

func testConfig(dir string) wal.Config {
	return wal.Config{Dir: dir, SegmentBytes: 64 << 10, BytesMax: 1 << 20, BatchMax: 16,
		BackoffMin: time.Millisecond, BackoffMax: 10 * time.Millisecond, CursorInterval: 10 * time.Millisecond,
		FirstSeq: 1000}
}

// node is one open WAL with its shipper running, as the edge runs it.
type node struct {
	t    testing.TB
	w    *wal.WAL
	stop context.CancelFunc
	done chan struct{}
	logs *bytes.Buffer
}

type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func open(t testing.TB, cfg wal.Config, pub wal.Publisher) *node {
	t.Helper()
	logs := &syncBuffer{}
	w, err := wal.Open(cfg, pub, slog.New(slog.NewJSONHandler(logs, nil)))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{t: t, w: w, stop: cancel, done: make(chan struct{}), logs: &logs.Buffer}
	go func() {
		defer close(n.done)
		_ = w.Run(ctx)
	}()
	t.Cleanup(n.close)
	return n
}

// close stops the shipper and closes the log, like a graceful stop.
func (n *node) close() {
	n.stop()
	<-n.done
	require.NoError(n.t, n.w.Close())
}

func (n *node) append(from, count int) []uint64 {
	seqs := make([]uint64, count)
	for i := range count {
		require.True(n.t, n.w.Reserve())
		r := record(from + i)
		n.w.Append(r)
		seqs[i] = r.Seq
	}
	return seqs
}

func (n *node) flush() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(n.t, n.w.Flush(ctx))
}

func segmentFiles(t testing.TB, dir string) []string {
	files, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	require.NoError(t, err)
	sort.Strings(files)
	return files
}

func TestConcurrentAppendsAreShippedOnceInSeqOrder(t *testing.T) {
	k := &fakeKafka{}
	n := open(t, testConfig(t.TempDir()), k)
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() { n.append(g*each, each) })
	}
	wg.Wait()
	n.flush()

	got := k.records()
	require.Len(t, got, writers*each)
	for i, r := range got {
		require.Equal(t, uint64(1000+i), r.Seq, "seq is assigned in log order, one per record, shipped in order")
		require.Equal(t, r.AccountID, k.keys[i], "keyed by account")
	}
	require.Len(t, k.requestIDs(), writers*each, "every record once")
	require.LessOrEqual(t, n.w.Syncs(), uint64(writers*each))
	require.Zero(t, n.w.Len())
	require.Zero(t, n.w.Unshipped())
}

// Records that trickle in are gathered for ShipLinger into few Sends, not one per fsync; a
// backlog of full batches goes without waiting.
func TestShipLingerGathersRecords(t *testing.T) {
	k := &fakeKafka{}
	cfg := testConfig(t.TempDir())
	cfg.SyncInterval = time.Millisecond
	cfg.ShipLinger = 300 * time.Millisecond
	cfg.BatchMax = 64
	n := open(t, cfg, k)
	const count = 40
	for i := range count { // about 80 ms: some 40 fsyncs, within one linger after the first Send
		n.append(i, 1)
		time.Sleep(2 * time.Millisecond)
	}
	n.flush()
	require.Len(t, k.requestIDs(), count, "every record once")
	k.mu.Lock()
	sends := k.sends
	k.mu.Unlock()
	require.LessOrEqual(t, sends, 3, "the first record at once, the rest after the linger")

	// A backlog (Kafka was down): full batches are not held back; at most one linger, for a
	// batch formed before the backlog was all durable.
	k.setDown(true)
	n.append(count, 4*64)
	time.Sleep(50 * time.Millisecond)
	k.setDown(false)
	start := time.Now()
	n.flush()
	require.Len(t, k.requestIDs(), count+4*64)
	require.Less(t, time.Since(start), 2*cfg.ShipLinger, "full batches went without lingering")
}

func TestShipsToKafka(t *testing.T) {
	brokers := bustest.Start(t, 3, usage.Topic)
	prod := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.Topic, BatchTimeout: time.Millisecond})
	defer prod.Close()
	n := open(t, testConfig(t.TempDir()), prod)
	const count = 40
	n.append(0, count)
	n.flush()
	require.Equal(t, uint64(count), n.w.Shipped())

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons := bus.NewConsumer(bus.ConsumerConfig{Brokers: brokers, Topic: usage.Topic, Group: "t"})
	defer cons.Close()
	seen := map[string]bool{}
	for len(seen) < count {
		msgs, err := cons.FetchBatch(ctx, count, 50*time.Millisecond)
		require.NoError(t, err)
		for _, m := range msgs {
			rec, err := usage.Decode(m.Value)
			require.NoError(t, err)
			require.Equal(t, rec.AccountID, string(m.Key))
			require.False(t, seen[rec.RequestID])
			seen[rec.RequestID] = true
		}
	}
}

func TestSeqContinuesAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	k := &fakeKafka{}
	n := open(t, testConfig(dir), k)
	first := n.append(0, 5)
	n.flush()
	n.close()
	require.Equal(t, []uint64{1000, 1001, 1002, 1003, 1004}, first)

	// Everything was shipped: only the (empty-of-news) active segment is left, and its
	// records are not sent again.
	cfg := testConfig(dir)
	cfg.FirstSeq = 1 // ignored: the directory has a history
	n = open(t, cfg, k)
	require.Equal(t, []uint64{1005, 1006}, n.append(5, 2))
	n.flush()
	n.close()
	require.Len(t, k.records(), 7, "no replay of acknowledged records when the cursor was saved")

	// A segment boundary in between: rotation names the new segment by its first seq.
	cfg.SegmentBytes = 4 << 10
	n = open(t, cfg, k)
	seqs := n.append(7, 40)
	n.flush()
	n.close()
	require.Equal(t, uint64(1007), seqs[0])
	require.Equal(t, uint64(1046), seqs[39])
	n = open(t, cfg, k)
	require.Equal(t, []uint64{1047}, n.append(47, 1))
}

func TestReplaysWhatKafkaDidNotAcknowledge(t *testing.T) {
	dir := t.TempDir()
	k := &fakeKafka{}
	k.setDown(true)
	n := open(t, testConfig(dir), k)
	n.append(0, 30)
	require.Equal(t, int64(30), n.w.Len())
	n.close() // graceful stop with Kafka down: the records stay on disk

	k.setDown(false)
	n = open(t, testConfig(dir), k)
	n.flush()
	ids := k.requestIDs()
	require.Len(t, ids, 30)
	for id, c := range ids {
		require.Equal(t, 1, c, id)
	}
	require.Contains(t, n.logs.String(), `"msg":"wal_replay"`)
}

func TestReplayWithoutCursorSendsAgainNeverLoses(t *testing.T) {
	dir := t.TempDir()
	k := &fakeKafka{}
	n := open(t, testConfig(dir), k)
	n.append(0, 20)
	n.flush()
	n.close()
	// A lost cursor (power cut before it reached the disk) means re-sending, not losing.
	require.NoError(t, os.Remove(filepath.Join(dir, "shipped")))
	n = open(t, testConfig(dir), k)
	n.append(20, 1)
	n.flush()
	ids := k.requestIDs()
	require.Len(t, ids, 21)
	require.Equal(t, 41, len(k.records()), "the 20 on disk were sent again: duplicates, dropped downstream by request_id")
}

func TestRotationAndTrimming(t *testing.T) {
	dir := t.TempDir()
	k := &fakeKafka{}
	k.setDown(true)
	cfg := testConfig(dir)
	cfg.SegmentBytes = 4 << 10
	cfg.Sync = wal.SyncAlways // each Append returns once its record is in a segment, synced
	n := open(t, cfg, k)
	n.append(0, 60) // ~450 bytes per frame: several segments
	segs := segmentFiles(t, dir)
	require.Greater(t, len(segs), 3, "rotated")
	require.Equal(t, len(segs), n.w.Segments())
	var onDisk int64
	for _, s := range segs {
		st, err := os.Stat(s)
		require.NoError(t, err)
		onDisk += st.Size()
	}
	require.Equal(t, onDisk, n.w.Bytes())

	k.setDown(false)
	n.flush()
	require.Len(t, k.requestIDs(), 60)
	// Sealed segments are deleted once shipped; the active one stays (it names the next seq).
	require.Eventually(t, func() bool { return len(segmentFiles(t, dir)) == 1 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, segs[len(segs)-1], segmentFiles(t, dir)[0])
	st, err := os.Stat(segs[len(segs)-1])
	require.NoError(t, err)
	require.Equal(t, st.Size(), n.w.Bytes())
}

func TestBoundRefusesThenRecovers(t *testing.T) {
	k := &fakeKafka{}
	k.setDown(true)
	cfg := testConfig(t.TempDir())
	cfg.SegmentBytes = 4 << 10
	cfg.BytesMax = 16 << 10
	n := open(t, cfg, k)

	accepted := 0
	for n.w.Reserve() {
		n.w.Append(record(accepted))
		accepted++
		require.Less(t, accepted, 1000, "the bound must bite")
	}
	require.True(t, n.w.Full())
	// Reservations count too: the bytes on disk plus one reservation never pass the bound.
	require.LessOrEqual(t, n.w.Bytes()+2<<10, cfg.BytesMax+2<<10)
	require.Greater(t, n.w.Bytes(), cfg.BytesMax-4<<10)

	// Outstanding reservations count against the bound as well.
	n2 := open(t, testConfig(t.TempDir()), k)
	held := 0
	for n2.w.Reserve() {
		held++
		require.Less(t, held, 10000)
	}
	require.Equal(t, int((1<<20-n2.w.Bytes())/(2<<10)), held)
	for range held {
		n2.w.Release()
	}
	require.True(t, n2.w.Reserve())
	n2.w.Release()

	k.setDown(false)
	n.flush()
	require.Len(t, k.requestIDs(), accepted)
	require.Eventually(t, func() bool { return n.w.Reserve() }, 10*time.Second, 5*time.Millisecond,
		"room again once shipped segments are deleted")
	n.w.Release()
}

func TestTornTailIsTruncatedOnOpen(t *testing.T) {
	for name, tail := range map[string]func(valid []byte) []byte{
		"partial header":  func(v []byte) []byte { return v[:5] },
		"partial payload": func(v []byte) []byte { return v[:len(v)-3] },
		"bad checksum": func(v []byte) []byte {
			c := bytes.Clone(v)
			c[len(c)-2] ^= 0x40
			return c
		},
		"zeros":   func([]byte) []byte { return make([]byte, 512) },
		"garbage": func([]byte) []byte { return []byte(strings.Repeat("\xde\xad\xbe\xef", 100)) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			k := &fakeKafka{}
			k.setDown(true)
			n := open(t, testConfig(dir), k)
			n.append(0, 10)
			n.close()
			segs := segmentFiles(t, dir)
			require.Len(t, segs, 1)
			before, err := os.ReadFile(segs[0])
			require.NoError(t, err)
			// What a crash mid-write leaves: part of one more frame (a copy of the last one,
			// mangled), or junk.
			last := lastFrame(t, before)
			f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
			require.NoError(t, err)
			_, err = f.Write(tail(last))
			require.NoError(t, err)
			require.NoError(t, f.Close())

			k.setDown(false)
			n = open(t, testConfig(dir), k)
			after, err := os.ReadFile(segs[0])
			require.NoError(t, err)
			require.Equal(t, before, after, "cut back to the last valid frame")
			require.Contains(t, n.logs.String(), "wal_torn_tail_truncated")
			seqs := n.append(10, 2)
			require.Equal(t, []uint64{1010, 1011}, seqs, "seq continues after the last valid frame")
			n.flush()
			ids := k.requestIDs()
			require.Len(t, ids, 12, "every valid record shipped, the torn one never")
			for _, r := range k.records() {
				require.NoError(t, r.Validate())
			}
		})
	}
}

// lastFrame returns the bytes of the last frame of a segment (found by its length fields).
func lastFrame(t *testing.T, seg []byte) []byte {
	off, last := 8, 0
	for off < len(seg) {
		n := int(seg[off]) | int(seg[off+1])<<8 | int(seg[off+2])<<16 | int(seg[off+3])<<24
		last = off
		off += 8 + n
	}
	require.Equal(t, len(seg), off)
	return seg[last:]
}

func TestCorruptSealedSegmentKeepsItsValidPrefix(t *testing.T) {
	dir := t.TempDir()
	k := &fakeKafka{}
	k.setDown(true)
	cfg := testConfig(dir)
	cfg.SegmentBytes = 4 << 10
	n := open(t, cfg, k)
	n.append(0, 30)
	n.close()
	segs := segmentFiles(t, dir)
	require.Greater(t, len(segs), 2)
	b, err := os.ReadFile(segs[0])
	require.NoError(t, err)
	b[len(b)/2] ^= 0xff // a bad sector in the middle of the oldest segment
	require.NoError(t, os.WriteFile(segs[0], b, 0o644))

	k.setDown(false)
	n = open(t, cfg, k)
	n.flush()
	require.Contains(t, n.logs.String(), "wal_corrupt_segment_truncated")
	got := k.requestIDs()
	require.Greater(t, len(got), 20, "the frames before the damage and every later segment are shipped")
	require.Less(t, len(got), 30)
}

func TestForeignFileRefusesToOpen(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "00000000000000000001.wal"), []byte("not a wal segment"), 0o644))
	_, err := wal.Open(testConfig(dir), &fakeKafka{}, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "bad magic")
}

func TestOneProcessPerDirectory(t *testing.T) {
	dir := t.TempDir()
	open(t, testConfig(dir), &fakeKafka{})
	_, err := wal.Open(testConfig(dir), &fakeKafka{}, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "another edge")
}

func TestAppendAfterCloseIsLoggedWhole(t *testing.T) {
	k := &fakeKafka{}
	n := open(t, testConfig(t.TempDir()), k)
	require.True(t, n.w.Reserve())
	n.close()
	n.w.Append(record(7))
	require.Equal(t, uint64(1), n.w.Unshipped())
	require.Contains(t, n.logs.String(), `"msg":"unshipped_record"`)
	require.Contains(t, n.logs.String(), record(7).RequestID)
}

func TestFlushGivesUpAtItsDeadline(t *testing.T) {
	k := &fakeKafka{}
	k.setDown(true)
	n := open(t, testConfig(t.TempDir()), k)
	n.append(0, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := n.w.Flush(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "3 records not yet shipped")
	require.Positive(t, n.w.ShipErrors())
}
