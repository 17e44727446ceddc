package wal

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"

	"tollgate/pkg/usage"
)

// On-disk format. A segment file is the 8-byte magic followed by frames:
//
//	length  uint32 LE   bytes of payload
//	crc     uint32 LE   CRC-32C (Castagnoli) of the 4 length bytes, then the payload
//	payload:
//	  seq     uint64 LE
//	  keyLen  uint16 LE
//	  key     keyLen bytes (the account id: the Kafka key)
//	  value   the rest (the record's JSON: the Kafka value)
//
// The checksum covers the length too, so a corrupted length is caught rather than followed.
// A frame is the unit of atomicity: a crash can leave a partial last frame (a torn tail),
// which the CRC or a short read exposes; it is truncated on open and never shipped.
const (
	magic              = "TGWAL01\n"
	magicBytes         = int64(len(magic))
	frameHeaderBytes   = 8
	payloadHeaderBytes = 10
	// frameBytesMax bounds one frame. A record is about 750 bytes; the bound only keeps a
	// corrupted length from making the reader allocate or read gigabytes.
	frameBytesMax = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	// errTorn: the input ends inside a frame — the tail a crash leaves mid-write.
	errTorn = errors.New("wal: torn frame at end of segment")
	// errCorrupt: a length out of range or a checksum mismatch.
	errCorrupt = errors.New("wal: corrupt frame")
	// errTooLarge: a record that cannot be framed (over frameBytesMax, or a key over 64 KiB).
	errTooLarge = errors.New("wal: record too large for a frame")
)

// frame is one decoded record. key and value alias the reader's buffer.
type frame struct {
	seq   uint64
	key   []byte
	value []byte
	size  int64 // bytes on disk, header included
}

// appendFrame appends rec, numbered seq, as one frame. It does not allocate when dst has
// room. On errTooLarge dst is returned unchanged.
func appendFrame(dst []byte, seq uint64, rec *usage.Record) ([]byte, error) {
	start := len(dst)
	if len(rec.AccountID) > 0xffff {
		return dst, errTooLarge
	}
	var hdr [frameHeaderBytes + payloadHeaderBytes]byte
	dst = append(dst, hdr[:]...)
	dst = append(dst, rec.AccountID...)
	dst = rec.AppendJSON(dst)
	payload := len(dst) - start - frameHeaderBytes
	if frameHeaderBytes+payload > frameBytesMax {
		return dst[:start], errTooLarge
	}
	f := dst[start:]
	binary.LittleEndian.PutUint32(f[0:4], uint32(payload))
	binary.LittleEndian.PutUint64(f[8:16], seq)
	binary.LittleEndian.PutUint16(f[16:18], uint16(len(rec.AccountID)))
	binary.LittleEndian.PutUint32(f[4:8], frameCRC(f[0:4], f[frameHeaderBytes:]))
	return dst, nil
}

// frameSeq is the seq of the whole, valid frame at the start of b.
func frameSeq(b []byte) uint64 {
	return binary.LittleEndian.Uint64(b[frameHeaderBytes : frameHeaderBytes+8])
}

// frameLen is the size of the whole, valid frame at the start of b, header included.
func frameLen(b []byte) int {
	return frameHeaderBytes + int(binary.LittleEndian.Uint32(b[0:4]))
}

func frameCRC(length, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(length, castagnoli), castagnoli, payload)
}

// decodeFrame decodes the frame at the start of b. It returns errTorn when b ends inside
// the frame (more bytes might complete it) and errCorrupt when the frame is invalid.
func decodeFrame(b []byte) (frame, error) {
	if len(b) < frameHeaderBytes {
		return frame{}, errTorn
	}
	n := int64(binary.LittleEndian.Uint32(b[0:4]))
	if n < payloadHeaderBytes || frameHeaderBytes+n > frameBytesMax {
		return frame{}, errCorrupt
	}
	if int64(len(b)) < frameHeaderBytes+n {
		return frame{}, errTorn
	}
	payload := b[frameHeaderBytes : frameHeaderBytes+n]
	if frameCRC(b[0:4], payload) != binary.LittleEndian.Uint32(b[4:8]) {
		return frame{}, errCorrupt
	}
	keyLen := int64(binary.LittleEndian.Uint16(payload[8:10]))
	if payloadHeaderBytes+keyLen > n {
		return frame{}, errCorrupt
	}
	return frame{
		seq:   binary.LittleEndian.Uint64(payload[0:8]),
		key:   payload[payloadHeaderBytes : payloadHeaderBytes+keyLen],
		value: payload[payloadHeaderBytes+keyLen:],
		size:  frameHeaderBytes + n,
	}, nil
}

// reader reads consecutive frames from an io.Reader that starts at a frame boundary. Not safe
// for concurrent use; a frame's slices are valid until the next call to next.
type reader struct {
	r        io.Reader
	buf      []byte
	pos, end int   // unread bytes are buf[pos:end]
	eof      bool  // r is exhausted
	off      int64 // bytes of valid frames returned so far: where the next frame starts
}

// newReader reads from r with an initial buffer of bufBytes (it grows to one whole frame
// when needed).
func newReader(r io.Reader, bufBytes int) *reader {
	return &reader{r: r, buf: make([]byte, bufBytes)}
}

// reset reuses the reader (and its buffer) for r.
func (rd *reader) reset(r io.Reader) {
	rd.r, rd.pos, rd.end, rd.eof, rd.off = r, 0, 0, false, 0
}

// next returns the next frame; io.EOF at a clean end (the input ended on a frame boundary),
// errTorn when it ended inside a frame, errCorrupt on an invalid frame, or a read error.
// After an error, off is where the valid prefix ends.
func (rd *reader) next() (frame, error) {
	for {
		f, err := decodeFrame(rd.buf[rd.pos:rd.end])
		if err == nil {
			rd.pos += int(f.size)
			rd.off += f.size
			return f, nil
		}
		if err != errTorn {
			return frame{}, err
		}
		if rd.eof {
			if rd.pos == rd.end {
				return frame{}, io.EOF
			}
			return frame{}, errTorn
		}
		if err := rd.fill(); err != nil {
			return frame{}, err
		}
	}
}

// fill reads more input, first making room: unread bytes move to the front, and the buffer
// grows when a whole frame (whose length is already known to be in bounds) does not fit.
func (rd *reader) fill() error {
	if rd.pos > 0 {
		rd.end = copy(rd.buf, rd.buf[rd.pos:rd.end])
		rd.pos = 0
	}
	if rd.end == len(rd.buf) {
		rd.buf = append(rd.buf, make([]byte, len(rd.buf))...)
	}
	n, err := rd.r.Read(rd.buf[rd.end:])
	rd.end += n
	switch {
	case err == io.EOF:
		rd.eof = true
	case err != nil:
		return err
	}
	return nil
}
