package mock

import (
	"math/rand/v2"
	"sync/atomic"
)

// idSuffixLen is the length of the random-looking part of every id the mock makes
// (msg_01…, toolu_01…, req_01…), like the API's.
const idSuffixLen = 22

// idGen makes unique ids without locks or allocation: a counter run through a bijective mix,
// so two calls never give the same id within one Server.
type idGen struct {
	seed uint64
	n    atomic.Uint64
}

func newIDGen() *idGen {
	return &idGen{seed: rand.Uint64()}
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// fill writes a fresh id suffix into dst[:idSuffixLen].
func (g *idGen) fill(dst []byte) {
	a := mix(g.n.Add(1) + g.seed)
	// The first 11 digits encode a in full (62^11 > 2^64): that is what makes ids unique.
	b := mix(a)
	for i := range 11 {
		dst[i] = base62[a%62]
		a /= 62
		dst[11+i] = base62[b%62]
		b /= 62
	}
}

// mix is the splitmix64 finalizer, a bijection on uint64.
func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// requestID appends a fresh upstream request id ("req_01…").
func (g *idGen) requestID(dst []byte) []byte {
	dst = append(dst, "req_01"...)
	n := len(dst)
	dst = append(dst, make([]byte, idSuffixLen)...)
	g.fill(dst[n:])
	return dst
}
