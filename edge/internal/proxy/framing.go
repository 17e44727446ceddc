package proxy

import (
	"bytes"

	"tollgate/edge/internal/apierr"
)

// errFramingConflict answers a request that carries both Content-Length and
// Transfer-Encoding. Such a request can be framed two ways, and a proxy in front of the edge
// that picks the other way lets a second request hide in the body of the first (request
// smuggling). fasthttp frames it by Transfer-Encoding and keeps the connection; RFC 9112
// §6.1 allows refusing it and requires closing the connection after answering, which is
// what the edge does, so nothing that followed on the connection is ever read.
var errFramingConflict = apierr.Invalid("a request must not carry both Content-Length and Transfer-Encoding")

// framingConflict reports whether raw request headers (fasthttp's RawHeaders: the header
// lines as received, without the request line) name both Content-Length and
// Transfer-Encoding. fasthttp forgets which of them a request had once it has read the body,
// so the raw lines are the only place to look. It costs a pass over the header lines, with
// no allocation.
func framingConflict(raw []byte) bool {
	var cl, te bool
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		switch {
		case isField(line, "content-length"):
			cl = true
		case isField(line, "transfer-encoding"):
			te = true
		}
	}
	return cl && te
}

// isField reports whether a header line starts with name (lower case) and a colon, ASCII
// case-insensitively (letters only: folding every byte with |0x20 would read "Content\rLength"
// as content-length). fasthttp refuses space before the colon, so none is allowed here.
func isField(line []byte, name string) bool {
	if len(line) <= len(name) || line[len(name)] != ':' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := line[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}
