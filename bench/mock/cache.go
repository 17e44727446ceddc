package mock

import "sync"

// cache holds rendered responses by spec, bounded by an estimate of the bytes they hold. When
// full, Put evicts arbitrary entries (Go's map order) until the new one fits: the load
// generator repeats few specs, so anything smarter buys nothing. An entry larger than an
// eighth of the bound is not cached at all, so one huge response cannot flush the rest.
type cache struct {
	mu       sync.RWMutex
	m        map[spec]*rendered
	bytes    int64
	bytesMax int64
}

func newCache(bytesMax int64) *cache {
	return &cache{m: make(map[spec]*rendered), bytesMax: bytesMax}
}

func (c *cache) get(k *spec) (*rendered, bool) {
	c.mu.RLock()
	r, ok := c.m[*k]
	c.mu.RUnlock()
	return r, ok
}

func (c *cache) put(k *spec, r *rendered) {
	size := r.size()
	if size > c.bytesMax/8 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[*k]; ok {
		c.bytes -= old.size()
	}
	for victim, v := range c.m {
		if c.bytes+size <= c.bytesMax {
			break
		}
		delete(c.m, victim)
		c.bytes -= v.size()
	}
	c.m[*k] = r
	c.bytes += size
}
