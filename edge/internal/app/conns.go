package app

import (
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// stopReadGrace is how long, once a graceful stop begins, a request still arriving (headers
// or body) has to finish arriving.
const stopReadGrace = 5 * time.Second

// openConns tracks the client API's connections so that a graceful stop can cut those that
// are only waiting for a request. fasthttp's Shutdown closes kept-alive connections between
// requests, but waits for a connection that has not sent its whole request until the read
// timeout (-read-timeout, a minute by default) runs out: a client or balancer that opens
// connections ahead of use, or an idle or slow client, held every stop for the whole
// -shutdown-timeout (found by TestStopIsNotHeldByIdleConnections). Cutting reads does not
// touch responses being written, streams included: fasthttp does not read from a
// connection while it answers on it, and ends the connection after that answer. Safe for
// concurrent use.
type openConns struct {
	grace time.Duration // a request still arriving when the stop begins has this long

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	stopping bool
}

func newOpenConns(grace time.Duration) *openConns {
	return &openConns{grace: grace, conns: map[net.Conn]struct{}{}}
}

// connState is the server's ConnState hook. It takes the lock only when a connection opens
// or closes, never per request.
func (o *openConns) connState(c net.Conn, s fasthttp.ConnState) {
	switch s {
	case fasthttp.StateNew:
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.stopping {
			// Accepted after the stop began, before the listener closed: fasthttp would
			// give it a fresh read deadline, so it is closed now; the client retries
			// elsewhere, nothing of it was read.
			_ = c.Close()
			return
		}
		o.conns[c] = struct{}{}
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		o.mu.Lock()
		delete(o.conns, c)
		o.mu.Unlock()
	}
}

// stopReads gives every open connection until grace from now to finish the request it is
// reading, and closes connections opened from now on.
func (o *openConns) stopReads() {
	deadline := time.Now().Add(o.grace)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stopping = true
	for c := range o.conns {
		_ = c.SetReadDeadline(deadline)
	}
}
