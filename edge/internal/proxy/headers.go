package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// Header handling: what crosses the edge in each direction. The functions here are pure and
// allocation-free; names are compared case-insensitively (fasthttp normalizes them, but a
// server configured not to would hand them over as sent).

// isHopByHop reports whether a header belongs to one connection and must not be forwarded
// (RFC 9110 §7.6.1): Connection, Keep-Alive, Proxy-* (Proxy-Connection, Proxy-Authenticate,
// Proxy-Authorization, …), TE, Trailer, Transfer-Encoding, Upgrade.
func isHopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		return equalFold(name, "te")
	case 7:
		return equalFold(name, "trailer") || equalFold(name, "upgrade")
	case 10:
		if equalFold(name, "connection") || equalFold(name, "keep-alive") {
			return true
		}
	case 17:
		if equalFold(name, "transfer-encoding") {
			return true
		}
	}
	return len(name) >= 6 && equalFold(name[:6], "proxy-")
}

// listedInConnection reports whether name is one of the comma-separated tokens of a
// Connection header value: those headers are hop-by-hop for this message too.
func listedInConnection(connection, name []byte) bool {
	for len(connection) > 0 {
		var tok []byte
		if i := bytes.IndexByte(connection, ','); i >= 0 {
			tok, connection = connection[:i], connection[i+1:]
		} else {
			tok, connection = connection, nil
		}
		if equalFoldBytes(trimOWS(tok), name) {
			return true
		}
	}
	return false
}

// forwardRequestHeader reports whether a client request header goes upstream. Besides
// hop-by-hop headers, the edge drops the client's credentials (the operator's key replaces
// them), Host and Content-Length (set for the upstream request) and Accept-Encoding (forced
// to identity: compressed SSE would hide usage and delay tokens).
func forwardRequestHeader(name, connection []byte) bool {
	switch {
	case isHopByHop(name),
		equalFold(name, "x-api-key"),
		equalFold(name, "authorization"),
		equalFold(name, "host"),
		equalFold(name, "content-length"),
		equalFold(name, "accept-encoding"),
		equalFold(name, "expect"):
		return false
	}
	return len(connection) == 0 || !listedInConnection(connection, name)
}

// forwardResponseHeader reports whether an upstream response header goes to the client. The
// upstream's request-id is renamed upstream-request-id (the edge's own id takes its name);
// Content-Length is recomputed; anthropic-organization-id names the operator's upstream
// account, which is not the client's business.
func forwardResponseHeader(name, connection []byte) bool {
	switch {
	case isHopByHop(name),
		equalFold(name, "content-length"),
		equalFold(name, "request-id"),
		equalFold(name, "anthropic-organization-id"):
		return false
	}
	return len(connection) == 0 || !listedInConnection(connection, name)
}

// copyRequestHeaders adds the forwardable headers of src to dst.
func copyRequestHeaders(dst, src *fasthttp.RequestHeader) {
	conn := connectionValue(src.Peek(fasthttp.HeaderConnection))
	for k, v := range src.All() {
		if forwardRequestHeader(k, conn) {
			dst.AddBytesKV(k, v)
		}
	}
}

// copyResponseHeaders adds the forwardable headers of src to dst and returns the upstream's
// request id (aliasing src).
func copyResponseHeaders(dst, src *fasthttp.ResponseHeader) (upstreamRequestID []byte) {
	conn := connectionValue(src.Peek(fasthttp.HeaderConnection))
	for k, v := range src.All() {
		if equalFold(k, "request-id") {
			upstreamRequestID = v
		}
		if forwardResponseHeader(k, conn) {
			dst.AddBytesKV(k, v)
		}
	}
	return upstreamRequestID
}

// connectionValue drops the values fasthttp synthesizes for its own Connection handling
// ("close", "keep-alive"), which name no headers, so the common case skips the token scan.
func connectionValue(v []byte) []byte {
	if equalFold(v, "close") || equalFold(v, "keep-alive") {
		return nil
	}
	return v
}

// hasContext1M reports whether an anthropic-beta header value (comma-separated tokens) asks
// for the 1M-token context window ("context-1m-2025-08-07" and later dates).
func hasContext1M(beta []byte) bool {
	for len(beta) > 0 {
		var tok []byte
		if i := bytes.IndexByte(beta, ','); i >= 0 {
			tok, beta = beta[:i], beta[i+1:]
		} else {
			tok, beta = beta, nil
		}
		if bytes.HasPrefix(trimOWS(tok), []byte("context-1m")) {
			return true
		}
	}
	return false
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold compares b with the lower-case ASCII string s, ignoring b's case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
