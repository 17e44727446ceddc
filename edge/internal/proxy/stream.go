package proxy

import (
	"errors"
	"io"
	"time"

	"github.com/valyala/fasthttp"

	"tollgate/edge/internal/metrics"
)

// A streaming answer is the exchange itself set as the response body stream. fasthttp's
// connection goroutine pulls it: every Read takes what the upstream has sent so far, feeds
// it to the meter and returns it, and fasthttp writes it as one chunk and flushes, so bytes
// reach the client as they arrive with no goroutine or buffer of ours in between. When the
// response is done — or the client went away and the write failed — fasthttp calls
// CloseWithError, which finishes the record.

// drainBufferBytes is the read size while draining: nobody waits for these bytes, so big
// reads are cheapest.
const drainBufferBytes = 32 << 10

// errDrainTimeout interrupts a drain that took longer than DrainTimeout.
var errDrainTimeout = errors.New("drain timeout")

// Read implements io.Reader for fasthttp.
func (x *exchange) Read(b []byte) (int, error) {
	n, err := x.body.Read(b)
	if n > 0 {
		if !x.sawBytes {
			x.sawBytes = true
			x.rec.TtfbMs = time.Since(x.start).Milliseconds()
		}
		x.scan.Write(b[:n]) //nolint:errcheck // Scanner.Write never fails
	}
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		x.eof = true
	default:
		// The upstream cut the stream. Returning the error makes fasthttp end the response
		// without its terminating chunk, so the client sees the cut too.
		x.readErr = err
	}
	return n, err
}

// CloseWithError implements fasthttp.ReadCloserWithError: the response is over. writeErr is
// set when writing to the client failed (it went away).
func (x *exchange) CloseWithError(writeErr error) error {
	if !x.eof && x.readErr == nil {
		// The client stopped reading before the upstream finished (or the response was
		// never written). Aborting must not dodge the charge: read on to the end.
		x.drain()
	}
	x.uresp.CloseBodyStream() //nolint:errcheck // the stream is done either way
	fasthttp.ReleaseResponse(x.uresp)
	x.uresp = nil
	x.finish(x.status, x.scan.Result(), true)
	return nil
}

// drain reads the rest of an abandoned stream into the meter, within DrainTimeout and at
// most DrainsMax at a time. A drain that cannot run, or does not finish, leaves the result
// incomplete: it is billed on what was reported plus an estimate, and marked estimated.
func (x *exchange) drain() {
	p := x.p
	select {
	case p.drains <- struct{}{}:
	default:
		p.deps.Metrics.Drain(metrics.DrainRefused)
		return
	}
	p.deps.Metrics.DrainsActive.Inc()
	defer func() {
		p.deps.Metrics.DrainsActive.Dec()
		<-p.drains
	}()

	// Closing the upstream stream from the timer interrupts a Read blocked on the network.
	var timer *time.Timer
	if x.closer != nil {
		closer := x.closer
		timer = time.AfterFunc(p.cfg.DrainTimeout, func() { closer.CloseWithError(errDrainTimeout) }) //nolint:errcheck
	}
	if cap(x.scratch) < drainBufferBytes {
		x.scratch = make([]byte, 0, drainBufferBytes)
	}
	buf := x.scratch[:cap(x.scratch)]
	for {
		n, err := x.body.Read(buf)
		if n > 0 {
			x.scan.Write(buf[:n]) //nolint:errcheck // Scanner.Write never fails
		}
		if errors.Is(err, io.EOF) {
			x.eof = true
			break
		}
		if err != nil {
			x.readErr = err
			break
		}
	}
	if timer != nil {
		timer.Stop()
	}
	if x.eof {
		p.deps.Metrics.Drain(metrics.DrainCompleted)
	} else {
		p.deps.Metrics.Drain(metrics.DrainCut)
	}
}
