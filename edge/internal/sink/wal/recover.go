package wal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const (
	segmentSuffix = ".wal"
	cursorFile    = "shipped"
)

func segmentPath(dir string, base uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", base, segmentSuffix))
}

// listSegments returns the bases of the segment files in dir, ascending. Other files (the
// lock, the cursor) are ignored.
func listSegments(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list wal dir: %w", err)
	}
	var bases []uint64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), segmentSuffix)
		if !ok || len(name) != 20 || !e.Type().IsRegular() {
			continue
		}
		base, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		bases = append(bases, base)
	}
	slices.Sort(bases)
	return bases, nil
}

// scanResult is what recovery learns from one segment.
type scanResult struct {
	records  int64
	pending  int64  // records above the shipped cursor
	firstNew uint64 // first seq above the cursor; 0 when none
	lastSeq  uint64 // 0 when the segment has no records
}

// recover rebuilds the log's state from dir: every segment is read and checked, a torn or
// corrupt end is cut off, segments already shipped are deleted, and the next seq and the
// shipped prefix are found. It runs before the syncer starts.
func (w *WAL) recover() error {
	dir := w.cfg.Dir
	bases, err := listSegments(dir)
	if err != nil {
		return err
	}
	cursor := w.readCursor()
	if len(bases) == 0 {
		seg, err := createSegment(dir, w.cfg.FirstSeq)
		if err != nil {
			return err
		}
		w.segs, w.active = []*segment{seg}, seg
		w.nextSeq = w.cfg.FirstSeq
		w.shippedSeq.Store(w.cfg.FirstSeq - 1)
		w.bytes.Store(seg.size)
		return nil
	}

	var firstNew uint64
	var pending int64
	next := bases[len(bases)-1]
	rd := newReader(nil, 64<<10)
	for i, base := range bases {
		last := i == len(bases)-1
		seg, res, err := w.scanSegment(rd, base, last, cursor)
		if err != nil {
			return err
		}
		if res.lastSeq > 0 {
			next = max(next, res.lastSeq+1)
		}
		if !last && (res.records == 0 || res.lastSeq <= cursor) {
			// Every record in it was shipped before the restart (or it is empty).
			if err := os.Remove(seg.path); err != nil {
				return fmt.Errorf("remove shipped segment: %w", err)
			}
			continue
		}
		if firstNew == 0 && res.firstNew != 0 {
			firstNew = res.firstNew
		}
		pending += res.pending
		w.segs = append(w.segs, seg)
		w.bytes.Add(seg.size)
	}
	w.active = w.segs[len(w.segs)-1]
	w.nextSeq = next
	w.pending.Store(pending)
	if firstNew != 0 {
		w.shippedSeq.Store(firstNew - 1)
	} else {
		w.shippedSeq.Store(next - 1)
	}
	if pending > 0 {
		w.log.Info("wal_replay", "records", pending, "segments", len(w.segs), "dir", dir)
	}
	return nil
}

// scanSegment checks one segment and cuts it after its last valid frame. The last segment
// stays open for writing; the others are closed (the shipper opens its own descriptor).
func (w *WAL) scanSegment(rd *reader, base uint64, last bool, cursor uint64) (*segment, scanResult, error) {
	path := segmentPath(w.cfg.Dir, base)
	var res scanResult
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, res, fmt.Errorf("open segment: %w", err)
	}
	seg := &segment{base: base, path: path, f: f, sealed: !last}
	fail := func(err error) (*segment, scanResult, error) {
		f.Close()
		return nil, res, err
	}
	st, err := f.Stat()
	if err != nil {
		return fail(fmt.Errorf("stat segment: %w", err))
	}
	size := st.Size()
	var head [magicBytes]byte
	if size < magicBytes {
		// Created but not yet (fully) given its magic when the process died.
		w.log.Warn("wal_segment_reinitialized", "path", path, "bytes", size)
		if err := f.Truncate(0); err != nil {
			return fail(fmt.Errorf("truncate segment: %w", err))
		}
		if _, err := f.WriteAt([]byte(magic), 0); err != nil {
			return fail(fmt.Errorf("write segment magic: %w", err))
		}
		size = magicBytes
	} else {
		if _, err := f.ReadAt(head[:], 0); err != nil {
			return fail(fmt.Errorf("read segment magic: %w", err))
		}
		if string(head[:]) != magic {
			return fail(fmt.Errorf("open wal: %s is not a wal segment (bad magic); move it away to start", path))
		}
	}

	rd.reset(io.NewSectionReader(f, magicBytes, size-magicBytes))
	var scanErr error
	for {
		fr, err := rd.next()
		if err != nil {
			if err != io.EOF {
				scanErr = err
			}
			break
		}
		res.records++
		res.lastSeq = fr.seq
		if fr.seq > cursor {
			res.pending++
			if res.firstNew == 0 {
				res.firstNew = fr.seq
			}
		}
	}
	valid := magicBytes + rd.off
	switch {
	case scanErr == nil:
	case last && (errors.Is(scanErr, errTorn) || errors.Is(scanErr, errCorrupt)):
		// The normal result of a crash mid-write: a partial frame, or (after a power cut)
		// a file whose size reached the disk before its data, so zeros or stale blocks.
		// A partial frame was never acknowledged to anyone (Append returns after its
		// write); whole frames lost to a power cut are those of the last SyncInterval
		// (none under SyncAlways, where Append returns after the fsync).
		w.log.Warn("wal_torn_tail_truncated", "path", path, "valid_bytes", valid, "dropped_bytes", size-valid)
	case errors.Is(scanErr, errTorn), errors.Is(scanErr, errCorrupt):
		// Frames after a bad one cannot be found again (its length is not to be trusted).
		w.log.Error("wal_corrupt_segment_truncated", "path", path, "valid_bytes", valid,
			"dropped_bytes", size-valid, "records_kept", res.records, "error", scanErr)
	default:
		return fail(fmt.Errorf("read segment %s: %w", path, scanErr))
	}
	if valid < size {
		if err := f.Truncate(valid); err != nil {
			return fail(fmt.Errorf("truncate segment: %w", err))
		}
	}
	// Recovered bytes may be only in the page cache (the process died, the machine did
	// not); they count as durable from here, so make them so.
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("sync segment: %w", err))
	}
	seg.size, seg.written = valid, valid
	if !last {
		if err := f.Close(); err != nil {
			return nil, res, fmt.Errorf("close segment: %w", err)
		}
		seg.f = nil
	}
	return seg, res, nil
}

// createSegment creates segment base with its magic, and syncs it and the directory.
func createSegment(dir string, base uint64) (*segment, error) {
	seg, err := newSegment(dir, base)
	if err != nil {
		return nil, err
	}
	if err := seg.f.Sync(); err != nil {
		seg.f.Close()
		return nil, fmt.Errorf("sync segment: %w", err)
	}
	if err := syncDir(dir); err != nil {
		seg.f.Close()
		return nil, err
	}
	return seg, nil
}

// newSegment creates segment base with its magic, not synced.
func newSegment(dir string, base uint64) (*segment, error) {
	path := segmentPath(dir, base)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create segment: %w", err)
	}
	if _, err := f.WriteAt([]byte(magic), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("write segment magic: %w", err)
	}
	return &segment{base: base, path: path, size: magicBytes, written: magicBytes, f: f}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open wal dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync wal dir: %w", err)
	}
	return nil
}

// readCursor returns the saved shipped prefix, or 0 (ship everything on disk) when there is
// none or it cannot be read.
func (w *WAL) readCursor() uint64 {
	b, err := os.ReadFile(filepath.Join(w.cfg.Dir, cursorFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err == nil {
		if v, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); perr == nil {
			return v
		}
	}
	w.log.Warn("wal_cursor_unreadable", "error", err, "content", string(b))
	return 0
}

// writeCursor saves the shipped prefix: write and rename, not synced — after a power cut an
// older value only makes the shipper send some records again.
func (w *WAL) writeCursor(seq uint64) {
	tmp := filepath.Join(w.cfg.Dir, cursorFile+".tmp")
	err := os.WriteFile(tmp, strconv.AppendUint(nil, seq, 10), 0o644)
	if err == nil {
		err = os.Rename(tmp, filepath.Join(w.cfg.Dir, cursorFile))
	}
	if err != nil {
		w.log.Warn("wal_cursor_save_failed", "error", err)
	}
}
