package wal

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"

	"tollgate/pkg/usage"
)

func testRecord(i int) *usage.Record {
	return &usage.Record{V: usage.Version, RequestID: fmt.Sprintf("019a0000-0000-7000-8000-%012d", i),
		EdgeID: "edge-test", AccountID: fmt.Sprintf("acct-%d", i%3), KeyID: "key-1", Model: "claude-haiku-4-5",
		ModelRequested: "claude-haiku-4-5", Status: 200, Usage: usage.Tokens{Input: int64(i), Output: 7},
		CostMicrocredits: int64(1000 + i), PriceVersion: "2026-11-01", UpstreamKeyID: "uk_0123456789ab"}
}

// frames encodes n records numbered from seq.
func frames(t testing.TB, seq uint64, n int) []byte {
	var b []byte
	for i := range n {
		var err error
		b, err = appendFrame(b, seq+uint64(i), testRecord(i))
		require.NoError(t, err)
	}
	return b
}

func TestFrameRoundTrip(t *testing.T) {
	rec := testRecord(42)
	b, err := appendFrame([]byte("prefix"), 77, rec)
	require.NoError(t, err)
	require.Equal(t, "prefix", string(b[:6]), "appends, does not overwrite")
	f, err := decodeFrame(b[6:])
	require.NoError(t, err)
	require.Equal(t, uint64(77), f.seq)
	require.Equal(t, rec.AccountID, string(f.key))
	require.Equal(t, string(rec.AppendJSON(nil)), string(f.value))
	require.Equal(t, int64(len(b)-6), f.size)
}

func TestFrameTooLarge(t *testing.T) {
	rec := testRecord(1)
	rec.UpstreamRequestID = strings.Repeat("x", frameBytesMax)
	b, err := appendFrame([]byte("keep"), 1, rec)
	require.ErrorIs(t, err, errTooLarge)
	require.Equal(t, "keep", string(b))
	rec = testRecord(1)
	rec.AccountID = strings.Repeat("a", 1<<16)
	_, err = appendFrame(nil, 1, rec)
	require.ErrorIs(t, err, errTooLarge)
}

func TestDecodeEveryTruncationIsTorn(t *testing.T) {
	b := frames(t, 1, 1)
	for n := range len(b) {
		_, err := decodeFrame(b[:n])
		require.ErrorIs(t, err, errTorn, "cut at %d of %d", n, len(b))
	}
}

func TestDecodeEveryBitFlipIsDetected(t *testing.T) {
	b := frames(t, 1, 1)
	for i := range len(b) {
		for bit := range 8 {
			c := bytes.Clone(b)
			c[i] ^= 1 << bit
			_, err := decodeFrame(c)
			// A flipped length may also ask for more bytes than there are: torn, not valid.
			require.Error(t, err, "byte %d bit %d", i, bit)
			require.True(t, err == errCorrupt || err == errTorn, "byte %d bit %d: %v", i, bit, err)
		}
	}
}

func TestDecodeRejectsBadLengths(t *testing.T) {
	for name, hdr := range map[string][]byte{
		"zero":      {0, 0, 0, 0, 0, 0, 0, 0},
		"too short": {9, 0, 0, 0, 0, 0, 0, 0},
		"too long":  {0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0},
	} {
		_, err := decodeFrame(append(hdr, make([]byte, 64)...))
		require.ErrorIs(t, err, errCorrupt, name)
	}
}

func TestReaderAcrossSmallReadsAndBuffers(t *testing.T) {
	const n = 50
	b := frames(t, 1000, n)
	for _, bufBytes := range []int{16, 100, 4096} {
		for name, r := range map[string]io.Reader{
			"whole":    bytes.NewReader(b),
			"one byte": iotest.OneByteReader(bytes.NewReader(b)),
			"half":     iotest.HalfReader(bytes.NewReader(b)),
		} {
			rd := newReader(r, bufBytes)
			for i := range n {
				f, err := rd.next()
				require.NoError(t, err, "%s/%d frame %d", name, bufBytes, i)
				require.Equal(t, uint64(1000+i), f.seq)
				require.Equal(t, testRecord(i).AccountID, string(f.key))
			}
			_, err := rd.next()
			require.ErrorIs(t, err, io.EOF)
			require.Equal(t, int64(len(b)), rd.off)
		}
	}
}

func TestReaderStopsAtTornOrCorruptTail(t *testing.T) {
	valid := frames(t, 1, 3)
	next := frames(t, 4, 1)
	flipped := bytes.Clone(next)
	flipped[20] ^= 0xff
	for name, tc := range map[string]struct {
		tail []byte
		err  error
	}{
		"partial header":  {next[:5], errTorn},
		"partial payload": {next[:len(next)-1], errTorn},
		"bad checksum":    {flipped, errCorrupt},
		"zeros":           {make([]byte, 4096), errCorrupt},
	} {
		rd := newReader(bytes.NewReader(append(bytes.Clone(valid), tc.tail...)), 64)
		for range 3 {
			_, err := rd.next()
			require.NoError(t, err, name)
		}
		_, err := rd.next()
		require.ErrorIs(t, err, tc.err, name)
		require.Equal(t, int64(len(valid)), rd.off, "%s: valid prefix", name)
	}
}

// FuzzReader: arbitrary bytes never panic the segment reader, what it returns is a valid
// prefix (each frame re-checks), and valid frames in front of any garbage are all recovered.
func FuzzReader(f *testing.F) {
	f.Add(uint8(0), []byte{})
	f.Add(uint8(2), []byte{})
	f.Add(uint8(1), []byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(uint8(3), frames(f, 9, 1)[:30])
	f.Add(uint8(0), frames(f, 1, 2))
	f.Add(uint8(1), []byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5})
	f.Fuzz(func(t *testing.T, n uint8, tail []byte) {
		prefix := frames(t, 1, int(n%8))
		data := append(bytes.Clone(prefix), tail...)
		rd := newReader(iotest.HalfReader(bytes.NewReader(data)), 16)
		var got []uint64
		for {
			fr, err := rd.next()
			if err != nil {
				if err != io.EOF && err != errTorn && err != errCorrupt {
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			if rd.off > int64(len(data)) {
				t.Fatalf("offset %d beyond %d bytes", rd.off, len(data))
			}
			again, err := decodeFrame(data[rd.off-fr.size : rd.off])
			if err != nil || again.seq != fr.seq || !bytes.Equal(again.value, fr.value) {
				t.Fatalf("frame at %d does not re-decode: %v", rd.off-fr.size, err)
			}
			got = append(got, fr.seq)
		}
		if len(got) < int(n%8) {
			t.Fatalf("recovered %d frames, want at least the %d valid ones", len(got), n%8)
		}
		for i := range int(n % 8) {
			if got[i] != uint64(1+i) {
				t.Fatalf("frame %d: seq %d", i, got[i])
			}
		}
	})
}

func BenchmarkAppendFrame(b *testing.B) {
	rec := testRecord(1)
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		buf, err = appendFrame(buf[:0], 1, rec)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}
