// Package reqid makes the edge's request ids: UUIDv7 (RFC 9562), time-ordered to the
// millisecond, so ids sort roughly by arrival and support can find a request from its id
// alone. The id is the usage record's request_id and its idempotency key, so it must be
// unique across every node: 74 random bits per millisecond make a collision practically
// impossible without any coordination.
package reqid

import (
	"math/rand/v2"
	"time"
)

// New returns a fresh UUIDv7 in its canonical 36-character form.
func New() string {
	var b [36]byte
	Append(b[:0], time.Now())
	return string(b[:])
}

// Append appends a UUIDv7 for time t to dst. The random bits come from math/rand/v2's
// global generator: ChaCha8 seeded from the OS, per-thread, no locks, which is what the hot
// path wants; the ids are identifiers, not secrets.
func Append(dst []byte, t time.Time) []byte {
	var u [16]byte
	ms := uint64(t.UnixMilli())
	u[0], u[1], u[2] = byte(ms>>40), byte(ms>>32), byte(ms>>24)
	u[3], u[4], u[5] = byte(ms>>16), byte(ms>>8), byte(ms)
	r1, r2 := rand.Uint64(), rand.Uint64()
	u[6] = 0x70 | byte(r1>>60)&0x0f // version 7 + 4 random bits
	u[7] = byte(r1 >> 52)
	u[8] = 0x80 | byte(r2>>58)&0x3f // variant 10 + 6 random bits
	for i := 9; i < 16; i++ {
		u[i] = byte(r2 >> (8 * (i - 9)))
	}
	const hex = "0123456789abcdef"
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hex[c>>4], hex[c&0xf])
	}
	return dst
}
