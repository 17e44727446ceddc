package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ringHalfBytes is the size of each half of the ring: the most frames one sync round can
// gather. An Append waits for the syncer while less than frameBytesMax is left in its half, so
// a round holds at least 3 MiB of frames: about 4,000 records, 400,000 a second at the default
// 10-ms interval.
const ringHalfBytes = 4 << 20

// ring is where Append puts frames until the syncer writes them to a segment: the file "ring"
// in the log's directory, mapped into memory with MAP_SHARED. A store into the mapping is in
// the kernel's page cache once it is done, as a pwrite's bytes are, so a record whose Append
// returned survives the process dying, kill -9 included, and the next Open writes it to the
// log. It costs a memory copy instead of a system call on the request path, and the syncer
// writes a whole round with one pwrite per segment. Like the page cache, it does not survive a
// power cut: that is what the fsync every SyncInterval is for.
//
// The ring is never fsynced, so its pages stay dirty and mapped until the kernel's periodic
// writeback (about every 30 s), and a store rarely faults. (A segment mapped the same way cost
// more than pwrite: every fsync cleaned its pages, and the next store to each faulted.) On
// tmpfs the ring would save about 0.2 µs more per record, but it would no longer be on the
// log's disk: a container or pod recreated after a kill would lose it.
//
// The file is two halves. Append fills one from its start while the syncer writes out the
// other; each round the syncer takes the half Append filled and gives Append the one it wrote
// out in the previous round (already in a segment, so its frames may be overwritten). A half
// therefore holds the frames of the current round, consecutive in seq, then stale frames of
// older rounds, which are lower in seq and already in a segment. Recovery reads each half's
// run of consecutive seqs from its start and keeps what the segments lack.
type ring struct {
	path string
	f    *os.File
	mem  []byte
}

// ringPath is the ring's file for the log in dir.
func ringPath(dir string) string { return filepath.Join(dir, "ring") }

// mapRing maps the ring at path, creating it when missing, and returns the frames it held
// before (in seq order, both halves' runs merged; none for a new file), read before the
// mapping reuses the halves. The caller keeps what its segments lack. The file gets all its
// blocks at once (fallocate), so a full disk is an error here rather than a SIGBUS on a later
// store.
func mapRing(path string) (*ring, []ringFrame, error) {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("read wal ring: %w", err)
	}
	found := mergeRuns(ringRun(old[:len(old)/2]), ringRun(old[len(old)/2:]))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open wal ring: %w", err)
	}
	r := &ring{path: path, f: f}
	const size = 2 * ringHalfBytes
	if len(old) != size {
		if err := f.Truncate(0); err != nil {
			r.close()
			return nil, nil, fmt.Errorf("resize wal ring: %w", err)
		}
	}
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		r.close()
		return nil, nil, fmt.Errorf("allocate %d bytes for the wal ring %s (is the disk full?): %w", size, path, err)
	}
	r.mem, err = syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		r.close()
		return nil, nil, fmt.Errorf("map wal ring %s: %w", path, err)
	}
	return r, found, nil
}

// half returns half i (0 or 1) as an empty slice with the half's capacity: appending to it
// stores into the mapping as long as it stays within that capacity.
func (r *ring) half(i int) []byte {
	return r.mem[i*ringHalfBytes : i*ringHalfBytes : (i+1)*ringHalfBytes]
}

// close unmaps and closes the ring, leaving the file.
func (r *ring) close() error {
	var errs []error
	if r.mem != nil {
		errs = append(errs, syscall.Munmap(r.mem))
		r.mem = nil
	}
	if r.f != nil {
		errs = append(errs, r.f.Close())
		r.f = nil
	}
	return errors.Join(errs...)
}

// remove closes the ring and deletes its file: for a log closed with every frame durable.
func (r *ring) remove() error {
	return errors.Join(r.close(), os.Remove(r.path))
}

// ringFrame is one whole frame found in the ring.
type ringFrame struct {
	seq uint64
	raw []byte
}

// ringRun returns the frames at the start of half while they are valid and their seqs
// consecutive: the current round's frames, without the stale ones after them.
func ringRun(half []byte) []ringFrame {
	var run []ringFrame
	for len(half) > 0 {
		fr, err := decodeFrame(half)
		if err != nil || (len(run) > 0 && fr.seq != run[len(run)-1].seq+1) {
			break
		}
		run = append(run, ringFrame{seq: fr.seq, raw: half[:fr.size]})
		half = half[fr.size:]
	}
	return run
}

// mergeRuns orders two halves' runs by seq. The half being written out and the half being
// filled hold consecutive rounds, so the result is one run when both hold current frames; a
// stale run sorts below the segments' next seq and is dropped by the caller.
func mergeRuns(a, b []ringFrame) []ringFrame {
	if len(a) > 0 && len(b) > 0 && b[0].seq < a[0].seq {
		a, b = b, a
	}
	return append(a, b...)
}
