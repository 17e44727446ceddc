package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"tollgate/pkg/bus"
)

// shipper is Run's state: where in the log it is and the batch it is sending. Owned by the
// goroutine running Run.
type shipper struct {
	w       *WAL
	seg     *segment // the segment being read; nil: start at the oldest
	f       *os.File // the shipper's own descriptor of seg
	off     int64    // next frame to ship in seg
	rd      *reader
	arena   []byte // keys and values of the batch in flight
	msgs    []bus.Message
	saved   uint64 // last cursor written
	savedAt time.Time
	// lingerUntil: before it, a batch that would not be full waits (ShipLinger after the
	// last Send of a partial batch).
	lingerUntil time.Time
}

// Run ships durable records to Kafka, oldest first, until ctx ends; what is left is shipped
// by the next Run (after a restart, by the next Open's). Run at most once per WAL, and
// return from it before Close. It returns nil.
func (w *WAL) Run(ctx context.Context) error {
	if w.cfg.Ensure != nil {
		for attempt := 0; ; attempt++ {
			err := w.cfg.Ensure(ctx)
			if err == nil {
				break
			}
			w.log.Warn("ensure_topic_failed", "error", err, "attempt", attempt)
			if !w.sleep(ctx, attempt) {
				return nil
			}
		}
	}
	s := &shipper{w: w, rd: newReader(nil, 256<<10), saved: w.shippedSeq.Load(), savedAt: time.Now(),
		msgs: make([]bus.Message, 0, w.cfg.BatchMax)}
	defer s.stop()
	tick := time.NewTicker(w.cfg.CursorInterval)
	defer tick.Stop()
	for {
		if d := time.Until(s.lingerUntil); d > 0 {
			if !sleepCtx(ctx, d) {
				return nil
			}
		}
		progressed, err := s.step(ctx)
		if err != nil {
			return nil // ctx ended
		}
		if progressed {
			continue
		}
		select {
		case <-w.shipWake:
		case <-tick.C:
			s.saveCursor()
		case <-ctx.Done():
			return nil
		}
	}
}

// step ships one batch, or moves past (and deletes) a finished segment. It reports whether
// it did anything; the error is ctx's.
func (s *shipper) step(ctx context.Context) (bool, error) {
	w := s.w
	w.mu.Lock()
	if s.seg == nil {
		s.seg, s.off = w.segs[0], magicBytes
	}
	end, sealed := s.seg.size, s.seg.sealed
	final := sealed && s.seg.size == s.seg.written
	w.mu.Unlock()
	switch {
	case s.off < end:
		return true, s.ship(ctx, end, sealed)
	case final:
		s.trim()
		return true, nil
	}
	if time.Since(s.savedAt) >= w.cfg.CursorInterval {
		s.saveCursor()
	}
	return false, nil
}

// ship sends the next batch of frames from [s.off, end) of the current segment and waits
// for Kafka to acknowledge it, retrying with backoff. Frames at or below the shipped prefix
// (found on disk at Open, already acknowledged before the restart) are skipped. A batch
// that is not full starts the linger, unless the segment is sealed (more follows in the
// next one).
func (s *shipper) ship(ctx context.Context, end int64, sealed bool) error {
	w := s.w
	if s.f == nil {
		f, err := os.Open(s.seg.path)
		if err != nil {
			return s.retryLater(ctx, fmt.Errorf("open segment for shipping: %w", err))
		}
		s.f = f
	}
	s.rd.reset(io.NewSectionReader(s.f, s.off, end-s.off))
	s.arena, s.msgs = s.arena[:0], s.msgs[:0]
	done := w.shippedSeq.Load()
	var last uint64
	consumed := int64(0)
	for len(s.msgs) < w.cfg.BatchMax {
		fr, err := s.rd.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, errTorn) || errors.Is(err, errCorrupt) {
			// Bytes that were synced and then changed: the disk is failing. What is after
			// them up to end cannot be framed, but end is a commit boundary, so shipping
			// resumes there.
			w.log.Error("wal_corrupt_frames_skipped", "path", s.seg.path, "offset", s.off+s.rd.off,
				"bytes", end-s.off-s.rd.off, "error", err)
			consumed = end - s.off
			break
		}
		if err != nil {
			return s.retryLater(ctx, fmt.Errorf("read segment: %w", err))
		}
		consumed = s.rd.off
		if fr.seq <= done {
			continue
		}
		k := len(s.arena)
		s.arena = append(s.arena, fr.key...)
		v := len(s.arena)
		s.arena = append(s.arena, fr.value...)
		// Slices of an arena that grows later still point at the old array, which stays
		// valid until the batch is sent.
		s.msgs = append(s.msgs, bus.Message{Key: s.arena[k:v:v], Value: s.arena[v:len(s.arena):len(s.arena)]})
		last = fr.seq
	}
	if len(s.msgs) > 0 {
		for attempt := 0; ; attempt++ {
			err := w.pub.Send(ctx, s.msgs...)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			w.shipErrors.Add(1)
			w.log.Warn("ship_records_failed", "error", err, "records", len(s.msgs), "attempt", attempt)
			if !w.sleep(ctx, attempt) {
				return ctx.Err()
			}
		}
		w.shippedSeq.Store(last)
		w.shipped.Add(uint64(len(s.msgs)))
		w.pending.Add(-int64(len(s.msgs)))
		if len(s.msgs) < w.cfg.BatchMax && !sealed {
			s.lingerUntil = time.Now().Add(w.cfg.ShipLinger)
		}
	}
	s.off += consumed
	return nil
}

// retryLater logs a read problem and waits a little: the next step tries again.
func (s *shipper) retryLater(ctx context.Context, err error) error {
	s.w.log.Warn("wal_read_failed", "error", err)
	if !s.w.sleep(ctx, 4) {
		return ctx.Err()
	}
	return nil
}

// trim deletes the current segment — sealed, and every record in it acknowledged — and
// moves to the next.
func (s *shipper) trim() {
	w := s.w
	w.mu.Lock()
	if len(w.segs) < 2 || w.segs[0] != s.seg {
		w.mu.Unlock()
		panic("wal: trimming a segment that is not the oldest sealed one")
	}
	w.segs = w.segs[1:]
	size := s.seg.size
	w.mu.Unlock()
	if s.f != nil {
		s.f.Close()
	}
	// Save the position first: a restart after the delete then skips what the next segment
	// has already shipped instead of re-sending it.
	s.saveCursor()
	if err := os.Remove(s.seg.path); err != nil {
		w.log.Warn("remove_segment_failed", "path", s.seg.path, "error", err)
	}
	w.bytes.Add(-size)
	s.seg, s.f = nil, nil
}

func (s *shipper) saveCursor() {
	seq := s.w.shippedSeq.Load()
	if seq != s.saved {
		s.w.writeCursor(seq)
		s.saved = seq
	}
	s.savedAt = time.Now()
}

func (s *shipper) stop() {
	if s.f != nil {
		s.f.Close()
	}
	s.saveCursor()
}

// Flush waits until every record appended before the call has been acknowledged by Kafka
// (Run must be running), or ctx ends; then the error says how many records are left. They
// stay in the log either way.
func (w *WAL) Flush(ctx context.Context) error {
	w.mu.Lock()
	target := w.nextSeq - 1
	w.mu.Unlock()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for w.shippedSeq.Load() < target {
		select {
		case <-ctx.Done():
			return fmt.Errorf("flush wal: %d records not yet shipped (kept in %s): %w", w.pending.Load(), w.cfg.Dir, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// sleep waits for the backoff of attempt; false when ctx ended first.
func (w *WAL) sleep(ctx context.Context, attempt int) bool {
	return sleepCtx(ctx, min(w.cfg.BackoffMin<<min(attempt, 16), w.cfg.BackoffMax))
}

// sleepCtx waits d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
