package load

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

const sampleStream = "event: message_start\ndata: {\"type\":\"message_start\"}\n\n" +
	"event: content_block_delta\ndata: {\"type\":\"content_block_delta\"}\n\n" +
	"event: message_delta\ndata: {}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"

// feedInPieces feeds s cut at the given sizes (cycled) and reports at which piece the first
// delta was announced.
func feedInPieces(w *streamWatch, s []byte, sizes []int) (firstAt int) {
	firstAt = -1
	for k := 0; len(s) > 0; k++ {
		n := min(sizes[k%len(sizes)], len(s))
		if w.feed(s[:n]) {
			if firstAt >= 0 {
				panic("first delta announced twice")
			}
			firstAt = k
		}
		s = s[n:]
	}
	return firstAt
}

func TestStreamWatch(t *testing.T) {
	for _, sizes := range [][]int{{1 << 20}, {1}, {2}, {3, 7}, {17}, {18}, {19}, {5, 1, 30}} {
		var w streamWatch
		first := feedInPieces(&w, []byte(sampleStream), sizes)
		require.GreaterOrEqual(t, first, 0, "sizes %v", sizes)
		require.True(t, w.delta && w.stop && !w.errored, "sizes %v", sizes)
	}

	var w streamWatch
	require.False(t, w.feed([]byte("event: message_start\n\n")))
	require.False(t, w.delta || w.stop)
	feedInPieces(&w, []byte("event: error\ndata: {}\n\n"), []int{4})
	require.True(t, w.errored)
	require.False(t, w.stop)
	require.False(t, w.feed(nil))
}

// The watcher must agree with a plain search of the whole body, however it is cut.
func FuzzStreamWatch(f *testing.F) {
	f.Add([]byte(sampleStream), uint8(3))
	f.Add([]byte("content_block_deltmessage_stopevent: error"), uint8(1))
	f.Fuzz(func(t *testing.T, body []byte, cut uint8) {
		var w streamWatch
		feedInPieces(&w, body, []int{int(cut%40) + 1, int(cut%7) + 1})
		require.Equal(t, bytes.Contains(body, markDelta), w.delta)
		require.Equal(t, bytes.Contains(body, markStop), w.stop)
		require.Equal(t, bytes.Contains(body, markError), w.errored)
	})
}
