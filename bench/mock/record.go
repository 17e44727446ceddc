package mock

import (
	"strings"
	"sync"
)

// Request is a request as the mock received it, kept so tests can check what a proxy forwarded
// and what it stripped.
type Request struct {
	Method string
	Path   string
	Query  string // raw query string, without '?'
	// Header holds every header by lower-case name, values in arrival order.
	Header map[string][]string
	// Body is a copy of the body, cut to recordBodyBytesMax.
	Body []byte
}

// Get returns the first value of a header, by case-insensitive name, or "".
func (r Request) Get(name string) string {
	if v := r.Header[strings.ToLower(name)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// recordBodyBytesMax bounds the body copy kept per recorded request.
const recordBodyBytesMax = 1 << 20

// recorder keeps the last n requests in a ring. Safe for concurrent use.
type recorder struct {
	mu   sync.Mutex
	ring []Request
	next int // index of the slot to write next
	full bool
}

func newRecorder(n int) *recorder {
	return &recorder{ring: make([]Request, n)}
}

func (r *recorder) add(req Request) {
	r.mu.Lock()
	r.ring[r.next] = req
	r.next++
	if r.next == len(r.ring) {
		r.next, r.full = 0, true
	}
	r.mu.Unlock()
}

// all returns the kept requests, oldest first.
func (r *recorder) all() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return append([]Request(nil), r.ring[:r.next]...)
	}
	out := make([]Request, 0, len(r.ring))
	out = append(out, r.ring[r.next:]...)
	return append(out, r.ring[:r.next]...)
}

func (r *recorder) last() (Request, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full && r.next == 0 {
		return Request{}, false
	}
	i := r.next - 1
	if i < 0 {
		i = len(r.ring) - 1
	}
	return r.ring[i], true
}
