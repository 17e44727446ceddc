// Package wal is the edge's Sink: an on-disk write-ahead log of usage records, made durable
// by group commit and shipped to Kafka (usage.v1, key = account id) by a background shipper.
//
// Write path. Append encodes the record into the log's in-memory tail under a mutex (no
// I/O there) and waits. One committer goroutine takes the whole tail, writes it to the
// active segment with one write and makes it durable with one fsync, then wakes every
// Append it covered; whatever arrived during that fsync goes into the next one. So one
// fsync covers all records appended meanwhile, and an Append waits for at most the rest of
// the fsync in progress plus one more (the group-commit window: at most 2 fsyncs, 0.3 to
// 1.5 ms on the dev box's ext4). When Append returns, the record survives kill -9 and power
// loss alike.
//
// Where that sits in a request: Append runs from the proxy's finish, after the upstream's
// answer has been metered. A stream has passed every event to the client by then, so the
// fsync never delays the first byte or any token; it delays only the end of the response
// (fasthttp writes the last CRLF of the chunked body after the body stream is closed, and
// closing it is what calls Append), so a client that saw a complete stream has a durable
// record. A non-streaming answer is sent whole after the handler returns, so it waits for
// the fsync before its first byte: one group commit added to a response the upstream took
// seconds to produce, and in exchange no answer a client has received can lose its charge to
// a power cut. Sending first and syncing after would save that fraction of a millisecond
// and lose, on a power cut, the charges of every answer sent within the window.
//
// Segments. Records go to segment files named by the seq of their first record
// (%020d.wal). The active segment is sealed once it holds SegmentBytes and a new one is
// started (created, synced, and the directory synced before any record in it counts as
// durable). seq is assigned under the mutex, so it grows by one per record in file order,
// and across restarts: the newest segment's records or name give the next one. A fresh
// directory starts at the current Unix time in µs, above any stage-1 seq.
//
// Shipping. The shipper reads durable frames back from the files (the page cache, normally)
// and sends them in batches of BatchMax with RequiredAcks=all, retrying with backoff until
// Kafka acknowledges. One batch is in flight at a time, in log order, so "shipped" is a seq
// prefix; it is saved in the file "shipped" about once a second (not synced: a stale value
// only means re-sending). A sealed segment whose records are all acknowledged is deleted
// whole. On open, whatever is on disk above the saved prefix is shipped again: duplicates
// are expected and dropped downstream by request_id.
//
// Bound. The log holds at most BytesMax bytes on disk (plus in its tail): every request
// reserves reserveBytes before it is forwarded, and Reserve says no — the edge answers 503 —
// when the bytes on disk plus the reservations would pass BytesMax. A record larger than its
// reservation is still written (Append never drops), so the bound can be passed by what
// in-flight records exceed 2 KiB each; real records are about 750 bytes.
//
// Failure. A failed write or fsync leaves the page cache in an unknown state, so the log
// stops taking records: Reserve says no from then on (503), Err reports it (/readyz), and
// records whose Append could not be made durable are written to the log whole at error
// level ("unshipped_record") so nothing is lost silently. A restart recovers from disk.
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

// spareBytesMax is the largest tail buffer kept for reuse between commits.
const spareBytesMax = 4 << 20

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
}

// segment is one file. base is its name. Fields other than base and path are guarded by
// WAL.mu; the committer alone writes them.
type segment struct {
	base   uint64
	path   string
	size   int64 // bytes written and synced: the shipper reads up to here
	sealed bool  // no more writes: size is final
	f      *os.File
}

// round is one group commit: closed when the bytes it covers are durable (or failed).
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

	mu      sync.Mutex
	tail    []byte // frames appended since the committer last took them
	tailSeq uint64 // seq of tail's first frame
	round   *round // the commit that will cover tail
	nextSeq uint64
	segs    []*segment // oldest first; the last is active
	active  *segment   // segs' last, for the committer, which alone replaces it
	closed  bool
	failed  error
	broken  atomic.Bool // failed != nil, readable without the mutex on the request path

	wake       chan struct{} // committer: tail has frames, or closed
	shipWake   chan struct{} // shipper: more is durable
	commitDone chan struct{}
	spare      []byte // committer-owned second tail buffer

	reserved   atomic.Int64
	bytes      atomic.Int64  // segment bytes on disk + tail
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
	go w.commitLoop()
	return w, nil
}

// open is Open without starting the committer.
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
	switch {
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
		wake: make(chan struct{}, 1), shipWake: make(chan struct{}, 1), commitDone: make(chan struct{})}
	if err := w.recover(); err != nil {
		w.closeFiles()
		lock.Close()
		return nil, err
	}
	return w, nil
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

// Append implements sink.Sink: it sets rec.Seq, logs the record and returns once it is
// durable (see the package comment for the wait). It never drops: a record the log cannot
// take (closed, failed, too large) is written to the process log whole as unshipped_record.
func (w *WAL) Append(rec *usage.Record) {
	w.mu.Lock()
	if w.closed || w.failed != nil {
		w.mu.Unlock()
		w.reserved.Add(-1)
		w.logUnshipped(rec, "wal closed or failed")
		return
	}
	start := len(w.tail)
	rec.Seq = w.nextSeq
	var err error
	w.tail, err = appendFrame(w.tail, rec.Seq, rec)
	if err != nil {
		w.mu.Unlock()
		w.reserved.Add(-1)
		w.logUnshipped(rec, err.Error())
		return
	}
	if start == 0 {
		w.tailSeq = w.nextSeq
	}
	w.nextSeq++
	n := int64(len(w.tail) - start)
	r := w.round
	w.mu.Unlock()
	// The record's bytes count before its reservation goes, so Reserve never sees room
	// that is not there.
	w.bytes.Add(n)
	w.pending.Add(1)
	w.reserved.Add(-1)
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-r.done
	if r.err != nil {
		w.logUnshipped(rec, r.err.Error())
	}
}

// commitLoop is the committer: it writes and syncs the tail, one round at a time, until
// Close and the last round are done.
func (w *WAL) commitLoop() {
	defer close(w.commitDone)
	for {
		w.mu.Lock()
		if len(w.tail) == 0 {
			closed := w.closed
			w.mu.Unlock()
			if closed {
				return
			}
			<-w.wake
			continue
		}
		data, first, r, failed := w.tail, w.tailSeq, w.round, w.failed
		w.tail, w.spare = w.spare[:0], nil
		w.round = newRound()
		w.mu.Unlock()

		err := failed
		if err == nil {
			err = w.commit(data, first)
		}
		if cap(data) <= spareBytesMax {
			w.spare = data[:0]
		}
		r.err = err
		close(r.done)
	}
}

// commit writes data (whole frames, the first numbered first) to the active segment and
// syncs it. A failure is permanent: the log stops taking records.
func (w *WAL) commit(data []byte, first uint64) error {
	seg := w.active
	if seg.size >= w.cfg.SegmentBytes {
		var err error
		if seg, err = w.rotate(first); err != nil {
			return w.fail(err)
		}
	}
	if _, err := seg.f.WriteAt(data, seg.size); err != nil {
		return w.fail(fmt.Errorf("write segment %s: %w", seg.path, err))
	}
	if err := seg.f.Sync(); err != nil {
		return w.fail(fmt.Errorf("sync segment %s: %w", seg.path, err))
	}
	w.syncs.Add(1)
	w.mu.Lock()
	seg.size += int64(len(data))
	w.mu.Unlock()
	w.notifyShipper()
	return nil
}

// rotate seals the active segment (already synced by the last round) and starts the next,
// named first. The new file and its directory entry are synced before anything is written
// to it, so a durable record is never in a file that a power cut could unlink.
func (w *WAL) rotate(first uint64) (*segment, error) {
	seg, err := createSegment(w.cfg.Dir, first)
	if err != nil {
		return nil, err
	}
	w.bytes.Add(magicBytes)
	old := w.active
	w.mu.Lock()
	old.sealed = true
	w.segs = append(w.segs, seg)
	w.active = seg
	w.mu.Unlock()
	if err := old.f.Close(); err != nil {
		w.log.Warn("close_segment_failed", "path", old.path, "error", err)
	}
	w.notifyShipper()
	return seg, nil
}

func (w *WAL) fail(err error) error {
	w.mu.Lock()
	if w.failed == nil {
		w.failed = err
		w.broken.Store(true)
	}
	w.mu.Unlock()
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

// Bytes is the size of the log on disk, with the tail not yet written.
func (w *WAL) Bytes() int64 { return w.bytes.Load() }

// Shipped is the number of records Kafka acknowledged since Open.
func (w *WAL) Shipped() uint64 { return w.shipped.Load() }

// ShipErrors is the number of failed Send attempts.
func (w *WAL) ShipErrors() uint64 { return w.shipErrors.Load() }

// Unshipped is the number of records written to the process log because the WAL could not
// take them.
func (w *WAL) Unshipped() uint64 { return w.unshipped.Load() }

// Syncs is the number of group commits (fsyncs) since Open.
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
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.commitDone
	w.closeFiles()
	err := w.lock.Close()
	if err != nil {
		return fmt.Errorf("close wal lock: %w", err)
	}
	return w.Err()
}

func (w *WAL) closeFiles() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.segs {
		if s.f != nil && !s.sealed {
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
