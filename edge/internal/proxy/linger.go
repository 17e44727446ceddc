package proxy

import (
	"bufio"
	"io"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// Limits of a lingering close: what a refused client may still send, and for how long, while
// it gets to read its answer.
const (
	lingerTimeout  = 5 * time.Second
	lingerBytesMax = 64 << 20
)

// lingerClose answers a request the server could not read (413 for its size, 431, malformed
// HTTP) and lets the client read the answer. fasthttp writes the answer and closes the
// connection at once; when the client is still sending — the body of a request refused for
// its size — closing with unread data makes the kernel reset the connection, and the reset
// usually destroys the answer before the client reads it: the client saw "connection reset
// by peer" instead of the 413 (found by TestEdgeErrorsInAnthropicShape/body_too_large, which
// failed that way about one run in six). So the answer is written here, the sending side shut
// down, and what the client still sends is read and discarded, within lingerBytesMax and
// lingerTimeout, until it closes its side. net/http does the same with a 256 KiB bound; this
// one covers bodies up to twice the default limit, so an SDK that writes its whole body before
// reading (as Python's does) still gets its 413. fasthttp's own write of the answer afterwards
// fails on the shut socket and is dropped.
func lingerClose(ctx *fasthttp.RequestCtx) {
	c, ok := ctx.Conn().(*net.TCPConn)
	if !ok {
		return
	}
	ctx.SetConnectionClose()
	w := bufio.NewWriter(c) // an error path: the allocation does not matter
	if ctx.Response.Write(w) != nil || w.Flush() != nil {
		return
	}
	_ = c.CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.CopyN(io.Discard, c, lingerBytesMax)
}
