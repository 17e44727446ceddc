package proxy

import (
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// eventReader returns one SSE event per Read, round and round, as an upstream that flushes
// each event does.
type eventReader struct {
	events [][]byte
	i      int
}

func (r *eventReader) Read(p []byte) (int, error) {
	n := copy(p, r.events[r.i%len(r.events)])
	r.i++
	return n, nil
}

// TestStreamReadAllocatesNothing holds the per-event budget of a stream: forwarding and
// metering an event allocates nothing once the stream has started (the message id is the
// one allocation per stream, at message_start).
func TestStreamReadAllocatesNothing(t *testing.T) {
	x := &exchange{body: &eventReader{events: [][]byte{
		[]byte("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" the API** with \\\"your\\\" key;\\n\"}}\n\n"),
		[]byte("event: ping\ndata: {\"type\": \"ping\"}\n\n"),
		[]byte("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"every "),
		[]byte("request\"}}\n\n"),
	}}}
	buf := make([]byte, 4096)
	read := func() {
		n, err := x.Read(buf)
		if n == 0 || err != nil {
			panic(io.ErrUnexpectedEOF)
		}
	}
	read() // the first bytes note the time to first byte and size the meter's buffer
	require.Zero(t, testing.AllocsPerRun(1000, read))
	require.Positive(t, x.scan.Result().TextBytes)
}
