// Package flight makes concurrent callers asking for the same key share one call: the edge's
// caches use it so that a burst of requests for a key that is not cached (or a flood of one
// unknown key) turns into one ledgerd call, not one per request. It is golang.org/x/sync's
// singleflight reduced to what the edge needs, with generics, to avoid a module for 40 lines.
package flight

import "sync"

// Group runs at most one call per key at a time. The zero value is ready to use.
type Group[K comparable, V any] struct {
	mu    sync.Mutex
	calls map[K]*call[V]
}

type call[V any] struct {
	done chan struct{}
	dups int // callers waiting on this call; guarded by Group.mu
	val  V
	err  error
}

// Do runs fn for key unless a call for key is already running, in which case it waits for
// that call and returns its result. shared reports whether the result came from another
// caller's call. fn runs on the first caller's goroutine. If fn panics, the panic goes on
// in that goroutine and the waiting callers get the zero value and a nil error, so fn must
// not panic.
func (g *Group[K, V]) Do(key K, fn func() (V, error)) (v V, err error, shared bool) {
	g.mu.Lock()
	if c, ok := g.calls[key]; ok {
		c.dups++
		g.mu.Unlock()
		<-c.done
		return c.val, c.err, true
	}
	c := &call[V]{done: make(chan struct{})}
	if g.calls == nil {
		g.calls = make(map[K]*call[V])
	}
	g.calls[key] = c
	g.mu.Unlock()

	defer func() {
		g.mu.Lock()
		delete(g.calls, key)
		g.mu.Unlock()
		close(c.done)
	}()
	c.val, c.err = fn()
	return c.val, c.err, false
}

// waiting returns how many callers wait on the running call for key (for tests).
func (g *Group[K, V]) waiting(key K) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.calls[key]; ok {
		return c.dups
	}
	return 0
}
