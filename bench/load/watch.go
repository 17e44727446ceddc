package load

import "bytes"

// streamWatch looks for three markers in an SSE body as it arrives, across read boundaries:
// the first content_block_delta (time to first token), message_stop (the stream finished) and
// an error event. It does not parse events: the generator must stay cheap, and the proxies
// under test are what parse SSE. It keeps a fixed tail, so it allocates nothing.
type streamWatch struct {
	tail    [watchTailMax]byte
	tailN   int
	delta   bool
	stop    bool
	errored bool
}

var (
	markDelta = []byte("content_block_delta")
	markStop  = []byte("message_stop")
	markError = []byte("event: error")
)

// watchTailMax is the longest marker minus one: enough to see a marker cut by a read.
const watchTailMax = 18

// feed scans the next bytes of the body and reports whether the first content_block_delta
// arrived in them.
func (w *streamWatch) feed(p []byte) (firstDelta bool) {
	if len(p) == 0 {
		return false
	}
	// Markers that straddle the previous read and this one: search the tail joined to the
	// head of p. Markers wholly inside p are found in p itself.
	var joint [2 * watchTailMax]byte
	n := copy(joint[:], w.tail[:w.tailN])
	n += copy(joint[n:], p[:min(len(p), watchTailMax)])
	hadDelta := w.delta
	w.look(joint[:n])
	w.look(p)
	w.keepTail(p)
	return !hadDelta && w.delta
}

func (w *streamWatch) look(b []byte) {
	if !w.delta && bytes.Contains(b, markDelta) {
		w.delta = true
	}
	if !w.stop && bytes.Contains(b, markStop) {
		w.stop = true
	}
	if !w.errored && bytes.Contains(b, markError) {
		w.errored = true
	}
}

func (w *streamWatch) keepTail(p []byte) {
	if len(p) >= watchTailMax {
		w.tailN = copy(w.tail[:], p[len(p)-watchTailMax:])
		return
	}
	// Short read: keep the end of (old tail + p).
	keep := min(w.tailN, watchTailMax-len(p))
	copy(w.tail[:], w.tail[w.tailN-keep:w.tailN])
	copy(w.tail[keep:], p)
	w.tailN = keep + len(p)
}
