// Package wal is the edge's Sink: an on-disk write-ahead log of usage records, made durable
// by group commit and shipped to Kafka (usage.v1, key = account id) by a background shipper.
//
// Write path. Append encodes the record, under a mutex, straight into the ring: a file in Dir
// mapped into memory (MAP_SHARED), so the record's bytes are in the kernel's
// page cache when Append returns and survive the process dying, kill -9 included — as a
// pwrite's would, for the price of a memory copy instead of a system call (see ring.go). One
// syncer goroutine writes each round's frames to the active segment (one pwrite per segment)
// and makes them durable with fsync, many records per round. When Append returns depends on
// Config.Sync:
//
//   - SyncInterval (the edge's default): as soon as the record is in the ring. The syncer
//     writes and fsyncs every SyncInterval while there is something to sync. A response
//     never waits for a disk flush; a power cut or kernel crash can lose the records of the
//     last SyncInterval (at 5,000 requests/s and 10 ms, about 50 records of one node).
//   - SyncAlways: once the fsync covering the record is done. One fsync covers every record
//     written while the previous one ran (group commit), so an Append waits for at most the
//     rest of the fsync in progress plus one more: 0.3 to 1.5 ms on the dev box's ext4.
//     Nothing whose Append returned is lost to a power cut.
//
// Where that sits in a request: Append runs from the proxy's finish, after the upstream's
// answer has been metered. A stream has passed every event to the client by then, so it
// delays only the end of the response (fasthttp writes the last CRLF of the chunked body
// after the body stream is closed, and closing it is what calls Append). A non-streaming
// answer is sent whole after the handler returns, so with SyncAlways it waits for a group
// commit before its first byte — which is why it is not the default: DESIGN asks that
// nothing that can wait be added to the response path, and what a power cut costs under
// SyncInterval is a few milliseconds of one node's charges.
//
// Segments. Records go to segment files named by the seq of their first record
// (%020d.wal). The active segment is sealed once it holds SegmentBytes: the syncer, which
// alone writes segments, creates the next file before writing the next frame, and the same
// round syncs the rest of the sealed segment, the new file and the directory before any
// record in the new file counts as durable. seq is assigned under the mutex, so it grows by
// one per record in ring and file order, and across restarts: the newest segment's records
// or name give the next one, and the ring's frames above it continue from there. A fresh
// directory starts at the current Unix time in µs, above any stage-1 seq.
//
// Shipping. The shipper reads durable (synced) frames back from the files (the page cache,
// normally) and sends them in batches of BatchMax with RequiredAcks=all, retrying with
// backoff until Kafka acknowledges. A batch that is not full waits until ShipLinger has
// passed since the previous Send, so records gather into fewer produce requests. One batch is in flight at a time, in log order, so
// "shipped" is a seq prefix; it is saved in the file "shipped" about once a second (not
// synced: a stale value only means re-sending). A sealed segment whose records are all
// acknowledged is deleted whole. On open, whatever is on disk above the saved prefix is
// shipped again: duplicates are expected and dropped downstream by request_id.
//
// Bound. The log holds at most BytesMax bytes on disk: every request reserves reserveBytes
// before it is forwarded, and Reserve says no — the edge answers 503 — when the bytes on
// disk plus the reservations would pass BytesMax. A record larger than its reservation is
// still written (Append never drops), so the bound can be passed by what in-flight records
// exceed 2 KiB each; real records are about 750 bytes.
//
// Failure. A failed write or fsync leaves the page cache in an unknown state, so the log
// stops taking records: Reserve says no from then on (503), Err reports it (/readyz), and
// every record of the failed round is written to the process log whole at error level
// ("unshipped_record") so nothing is lost silently. A restart recovers from disk and ring.
package wal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"tollgate/edge/internal/sink"
	"tollgate/pkg/bus"
	"tollgate/pkg/usage"
)

// reserveBytes is what one reservation counts against BytesMax until its record is written:
// well above a typical record's 750 bytes.
const reserveBytes = 2 << 10

// Publisher sends messages and returns once all are acknowledged. *bus.Producer implements it.
type Publisher interface {
	Send(ctx context.Context, msgs ...bus.Message) error
}

// Config of the log.
type Config struct {
	// Dir holds the segments, the shipped cursor and a lock file. Created if missing; one
	// process at a time. Required.
	Dir string
	// SegmentBytes: a segment is sealed, and the next started, once it holds this many
	// bytes. Required (>= 4 KiB).
	SegmentBytes int64
	// BytesMax bounds the log on disk; past it Reserve says no. Required (>= 2 × SegmentBytes).
	BytesMax int64
	// BatchMax bounds records per Send. Required.
	BatchMax int
	// Ensure, when set, runs before the first Send until it succeeds (creates the topic).
	Ensure func(ctx context.Context) error
	// BackoffMin and BackoffMax bound the wait between failed Sends. Default: 50ms and 2s.
	BackoffMin, BackoffMax time.Duration
	// CursorInterval is how often the shipped position is saved. Default: 1s.
	CursorInterval time.Duration
	// FirstSeq is the first seq of a fresh directory. Default: the current Unix time in µs.
	FirstSeq uint64
	// Sync is when Append returns: after the record's write (SyncInterval) or after its
	// fsync (SyncAlways). See the package comment. Default: SyncInterval.
	Sync SyncMode
	// SyncInterval is the time between fsyncs under SyncInterval: the most a power cut can
	// lose. Default: 10ms.
	SyncInterval time.Duration
	// ShipLinger is the least time between two Sends of batches that are not full: durable
	// records gather for it, so a moderate rate ships in few, larger produce requests
	// (each costs the edge and the broker about the same whatever it carries). A full batch
	// (a backlog) goes at once. 0: ship whatever is durable as soon as it is.
	ShipLinger time.Duration
}

// SyncMode says what Append waits for.
type SyncMode int

const (
	// SyncInterval: Append returns once the record is written (survives kill -9); the log
	// is fsynced every Config.SyncInterval.
	SyncInterval SyncMode = iota
	// SyncAlways: Append returns once the record is fsynced (survives a power cut).
	SyncAlways
)

// segment is one file. base is its name. Fields other than base and path are guarded by
// WAL.mu.
type segment struct {
	base    uint64
	path    string
	written int64 // bytes written: the next frame goes here
	size    int64 // bytes written and synced: the shipper reads up to here
	sealed  bool  // no more writes: written is final, and so is size once it reaches it
	f       *os.File
}

// round is one fsync: closed when the bytes it covers are durable (or failed).
type round struct {
	done chan struct{}
	err  error
}

// WAL implements sink.Sink. Open starts the committer; Run ships; Flush waits for the
// shipper to catch up; Close stops. Safe for concurrent use.
type WAL struct {
	cfg  Config
	pub  Publisher
	log  *slog.Logger
	lock *os.File

	mu       sync.Mutex
	ring     *ring
	half     int       // the ring half Append fills
	unsynced []byte    // frames appended since the syncer last took them: ring half `half`
	room     sync.Cond // on mu: the syncer took a half (Appends wait for room on it)
	waiting  int       // Appends waiting for room: the syncer does not wait out its interval
	round    *round    // the sync round that will cover unsynced
	nextSeq  uint64
	segs     []*segment // oldest first; the last is active
	active   *segment   // segs' last, which the syncer alone replaces
	closed   bool
	failed   error
	broken   atomic.Bool // failed != nil, readable without the mutex on the request path

	wake     chan struct{} // syncer: something was appended, or closed
	shipWake chan struct{} // shipper: more is durable
	syncDone chan struct{}
	targets  []syncTarget // syncer-owned

	reserved   atomic.Int64
	bytes      atomic.Int64  // segment bytes on disk
	pending    atomic.Int64  // records appended and not yet acknowledged
	shippedSeq atomic.Uint64 // every record with seq <= this is acknowledged
	shipped    atomic.Uint64
	shipErrors atomic.Uint64
	unshipped  atomic.Uint64
	syncs      atomic.Uint64
}

var _ sink.Sink = (*WAL)(nil)

// Open recovers the log in cfg.Dir — truncating a torn tail, deleting segments already
// shipped — and starts the committer. Records found on disk are shipped again by Run.
func Open(cfg Config, pub Publisher, log *slog.Logger) (*WAL, error) {
	w, err := open(cfg, pub, log)
	if err != nil {
		return nil, err
	}
	go w.syncLoop()
	return w, nil
}

// open is Open without starting the syncer.
func open(cfg Config, pub Publisher, log *slog.Logger) (*WAL, error) {
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 50 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 2 * time.Second
	}
	if cfg.CursorInterval <= 0 {
		cfg.CursorInterval = time.Second
	}
	if cfg.FirstSeq == 0 {
		cfg.FirstSeq = uint64(time.Now().UnixMicro())
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = 10 * time.Millisecond
	}
	switch {
	case cfg.Sync != SyncInterval && cfg.Sync != SyncAlways:
		return nil, fmt.Errorf("open wal: unknown sync mode %d", cfg.Sync)
	case cfg.Dir == "":
		return nil, errors.New("open wal: no directory")
	case cfg.SegmentBytes < 4<<10:
		return nil, fmt.Errorf("open wal: segment bytes %d below 4 KiB", cfg.SegmentBytes)
	case cfg.BytesMax < 2*cfg.SegmentBytes:
		return nil, fmt.Errorf("open wal: bytes max %d below two segments", cfg.BytesMax)
	case cfg.BatchMax <= 0:
		return nil, errors.New("open wal: batch max must be positive")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create wal dir: %w", err)
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	w := &WAL{cfg: cfg, pub: pub, log: log, lock: lock, round: newRound(),
		wake: make(chan struct{}, 1), shipWake: make(chan struct{}, 1), syncDone: make(chan struct{})}
	w.room.L = &w.mu
	if err := w.recover(); err != nil {
		w.closeFiles()
		lock.Close()
		return nil, err
	}
	if err := w.replayRing(); err != nil {
		w.closeFiles()
		if w.ring != nil {
			w.ring.close()
		}
		lock.Close()
		return nil, err
	}
	return w, nil
}

// replayRing maps the ring and writes to the log, durably, the frames it holds that the
// segments lack: those of Appends that returned before the process died.
func (w *WAL) replayRing() error {
	path := ringPath(w.cfg.Dir)
	r, found, err := mapRing(path)
	if err != nil {
		return err
	}
	w.ring, w.half = r, 0
	w.unsynced = r.half(0)
	var kept int
	for i, fr := range found {
		if fr.seq < w.nextSeq {
			continue // in a segment already
		}
		if fr.seq != w.nextSeq {
			// Cannot happen with this log's ring (its frames continue the segments); keep
			// what cannot be placed in the process log rather than drop it.
			for _, lost := range found[i:] {
				w.logUnshippedFrames(lost.raw, fmt.Errorf("wal ring %s: seq %d does not continue the log at %d", path, lost.seq, w.nextSeq))
			}
			break
		}
		if cap(w.unsynced)-len(w.unsynced) < len(fr.raw) {
			w.syncRound()
		}
		w.unsynced = append(w.unsynced, fr.raw...)
		w.nextSeq++
		w.bytes.Add(int64(len(fr.raw)))
		w.pending.Add(1)
		kept++
	}
	if kept > 0 {
		w.syncRound()
		w.log.Info("wal_ring_recovered", "records", kept, "ring", path)
	}
	return w.Err()
}

// lockDir takes an exclusive lock on dir/LOCK, so two processes never share a log. The
// kernel drops the lock when the process dies, kill -9 included.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open wal lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock wal dir %s (another edge uses it?): %w", dir, err)
	}
	return f, nil
}

func newRound() *round { return &round{done: make(chan struct{})} }

// Reserve implements sink.Sink: false when the log is full or has failed.
func (w *WAL) Reserve() bool {
	n := w.reserved.Add(1)
	if w.bytes.Load()+n*reserveBytes > w.cfg.BytesMax || w.broken.Load() {
		w.reserved.Add(-1)
		return false
	}
	return true
}

// Release implements sink.Sink.
func (w *WAL) Release() { w.reserved.Add(-1) }

// Append implements sink.Sink: it sets rec.Seq and writes the record, and returns once it
// is written or durable as Config.Sync says. It never drops: a record the log cannot take
// (closed, failed, too large) is written to the process log whole as unshipped_record.
func (w *WAL) Append(rec *usage.Record) {
	w.mu.Lock()
	// Room for the largest frame, so encoding into the ring half never outgrows it (append
	// would then move the frames to the heap, out of the ring).
	for !w.closed && w.failed == nil && cap(w.unsynced)-len(w.unsynced) < frameBytesMax {
		w.waiting++
		w.wakeSyncer()
		w.room.Wait()
		w.waiting--
	}
	if w.closed || w.failed != nil {
		w.mu.Unlock()
		w.reserved.Add(-1)
		w.logUnshipped(rec, "wal closed or failed")
		return
	}
	rec.Seq = w.nextSeq
	start := len(w.unsynced)
	var err error
	if w.unsynced, err = appendFrame(w.unsynced, rec.Seq, rec); err != nil {
		w.mu.Unlock()
		w.reserved.Add(-1)
		w.logUnshipped(rec, err.Error())
		return
	}
	w.nextSeq++
	n, r := int64(len(w.unsynced)-start), w.round
	w.mu.Unlock()
	// The record's bytes count before its reservation goes, so Reserve never sees room
	// that is not there.
	w.bytes.Add(n)
	w.pending.Add(1)
	w.reserved.Add(-1)
	w.wakeSyncer()
	if w.cfg.Sync == SyncAlways {
		<-r.done // a failed fsync logs the record itself
	}
}

func (w *WAL) wakeSyncer() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// writeOut writes data — whole frames in seq order — at the end of the active segment,
// starting the next segment first whenever the active one holds SegmentBytes. Only the
// syncer writes segments. It reports whether it created one; a failure stops the log.
func (w *WAL) writeOut(data []byte) (created bool, err error) {
	for len(data) > 0 {
		seg := w.active
		if seg.written >= w.cfg.SegmentBytes {
			if seg, err = w.rotate(frameSeq(data)); err != nil {
				return created, w.fail(err)
			}
			created = true
		}
		n, room := 0, w.cfg.SegmentBytes-seg.written
		for n < len(data) && int64(n) < room {
			n += frameLen(data[n:])
		}
		if _, err := seg.f.WriteAt(data[:n], seg.written); err != nil {
			return created, w.fail(fmt.Errorf("write segment %s: %w", seg.path, err))
		}
		w.mu.Lock()
		seg.written += int64(n)
		w.mu.Unlock()
		data = data[n:]
	}
	return created, nil
}

// rotate seals the active segment and starts the next, named by base, the seq of the next
// frame, without waiting for the disk: the round that called it syncs what the sealed segment
// still lacks, the new file and the directory, in that order, before it counts any record of
// the new segment as durable — so a durable record is never in a file that a power cut could
// unlink.
func (w *WAL) rotate(base uint64) (*segment, error) {
	seg, err := newSegment(w.cfg.Dir, base)
	if err != nil {
		return nil, err
	}
	w.bytes.Add(magicBytes)
	w.mu.Lock()
	w.active.sealed = true
	w.segs = append(w.segs, seg)
	w.active = seg
	w.mu.Unlock()
	return seg, nil
}

// syncLoop is the syncer: it makes written frames durable, one round at a time, until Close
// and the last round are done. Under SyncInterval it waits SyncInterval between rounds (not
// after Close).
func (w *WAL) syncLoop() {
	defer close(w.syncDone)
	var last time.Time
	for {
		w.mu.Lock()
		idle, closed, hurry := len(w.unsynced) == 0, w.closed, w.waiting > 0
		w.mu.Unlock()
		if idle {
			if closed {
				return
			}
			<-w.wake
			continue
		}
		if w.cfg.Sync == SyncInterval && !closed && !hurry {
			if d := w.cfg.SyncInterval - time.Since(last); d > 0 {
				time.Sleep(d)
			}
		}
		last = time.Now()
		w.syncRound()
	}
}

// syncTarget is one segment a round syncs, and how far.
type syncTarget struct {
	seg *segment
	f   *os.File
	end int64
}

// syncRound takes the ring half Append filled (giving it the other, written out in the
// previous round), writes its frames to the segments, and makes everything written durable:
// every segment with unsynced bytes (a sealed one first, then the active one), then the
// directory when a segment was created. Only then are the new sizes published to the
// shipper. A sealed segment's file is closed once it is synced whole; only the syncer
// writes, syncs or closes segments' files.
func (w *WAL) syncRound() {
	w.mu.Lock()
	data, r, err := w.unsynced, w.round, w.failed
	w.half ^= 1
	w.unsynced = w.ring.half(w.half)
	w.round = newRound()
	w.room.Broadcast()
	w.mu.Unlock()

	var dir bool
	if err == nil {
		dir, err = w.writeOut(data)
	}
	targets := w.targets[:0]
	w.mu.Lock()
	for _, seg := range w.segs {
		if seg.written > seg.size {
			targets = append(targets, syncTarget{seg: seg, f: seg.f, end: seg.written})
		}
	}
	w.mu.Unlock()
	for _, t := range targets {
		if err != nil {
			break
		}
		if serr := t.f.Sync(); serr != nil {
			err = w.fail(fmt.Errorf("sync segment %s: %w", t.seg.path, serr))
		}
	}
	if err == nil && dir {
		if derr := syncDir(w.cfg.Dir); derr != nil {
			err = w.fail(derr)
		}
	}
	if err == nil {
		w.syncs.Add(1)
		var done []*os.File
		w.mu.Lock()
		for _, t := range targets {
			t.seg.size = max(t.seg.size, t.end)
			if t.seg.sealed && t.seg.size == t.seg.written && t.seg.f != nil {
				done = append(done, t.seg.f)
				t.seg.f = nil
			}
		}
		w.mu.Unlock()
		for _, f := range done {
			if cerr := f.Close(); cerr != nil {
				w.log.Warn("close_segment_failed", "path", f.Name(), "error", cerr)
			}
		}
		w.notifyShipper()
	} else {
		w.logUnshippedFrames(data, err)
	}
	w.targets = targets[:0]
	r.err = err
	close(r.done)
}

// fail stops the log for good.
func (w *WAL) fail(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed == nil {
		w.failed = err
		w.broken.Store(true)
		w.room.Broadcast() // waiting Appends log their records instead
	}
	w.log.Error("wal_failed", "error", err, "dir", w.cfg.Dir)
	return err
}

func (w *WAL) notifyShipper() {
	select {
	case w.shipWake <- struct{}{}:
	default:
	}
}

// Err is the error that stopped the log, or nil.
func (w *WAL) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failed
}

// Full reports whether Reserve would refuse for lack of room right now.
func (w *WAL) Full() bool {
	return w.bytes.Load()+(w.reserved.Load()+1)*reserveBytes > w.cfg.BytesMax
}

// Len is the number of records reserved or in the log and not yet acknowledged by Kafka.
func (w *WAL) Len() int64 { return w.pending.Load() + w.reserved.Load() }

// Bytes is the size of the log on disk.
func (w *WAL) Bytes() int64 { return w.bytes.Load() }

// Shipped is the number of records Kafka acknowledged since Open.
func (w *WAL) Shipped() uint64 { return w.shipped.Load() }

// ShipErrors is the number of failed Send attempts.
func (w *WAL) ShipErrors() uint64 { return w.shipErrors.Load() }

// Unshipped is the number of records written to the process log because the WAL could not
// take them.
func (w *WAL) Unshipped() uint64 { return w.unshipped.Load() }

// Syncs is the number of fsyncs by the syncer since Open.
func (w *WAL) Syncs() uint64 { return w.syncs.Load() }

// Segments is the number of segment files.
func (w *WAL) Segments() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.segs)
}

// Close stops taking records (later Appends are logged as unshipped_record), waits for the
// last commit, and closes the files and the directory lock. Call it after Run has returned.
// Records not yet shipped stay on disk for the next Open. Idempotent.
func (w *WAL) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.room.Broadcast()
	w.mu.Unlock()
	w.wakeSyncer()
	<-w.syncDone
	w.closeFiles()
	failed := w.Err()
	// Every frame is in a segment and durable now, unless the log failed: then the ring
	// keeps them for the next Open.
	closeRing := w.ring.close
	if failed == nil {
		closeRing = w.ring.remove
	}
	if err := closeRing(); err != nil {
		w.log.Warn("close_wal_ring_failed", "path", w.ring.path, "error", err)
	}
	if err := w.lock.Close(); err != nil {
		return fmt.Errorf("close wal lock: %w", err)
	}
	return failed
}

func (w *WAL) closeFiles() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.segs {
		if s.f != nil {
			if err := s.f.Close(); err != nil {
				w.log.Warn("close_segment_failed", "path", s.path, "error", err)
			}
			s.f = nil
		}
	}
}

func (w *WAL) logUnshipped(rec *usage.Record, reason string) {
	w.unshipped.Add(1)
	w.log.Error("unshipped_record", "reason", reason, "record", string(rec.AppendJSON(nil)))
}

// logUnshippedFrames logs each record of frames (whole frames, as Append wrote them) as
// unshipped: they were written but could not be made durable.
func (w *WAL) logUnshippedFrames(frames []byte, cause error) {
	for len(frames) > 0 {
		fr, err := decodeFrame(frames)
		if err != nil { // cannot happen: Append wrote them whole
			w.log.Error("unshipped_frames_unreadable", "bytes", len(frames), "error", err)
			return
		}
		w.unshipped.Add(1)
		w.log.Error("unshipped_record", "reason", cause.Error(), "record", string(fr.value))
		frames = frames[fr.size:]
	}
}
