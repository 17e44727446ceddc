package lease

import (
	"testing"
	"time"
)

// The spend-rate estimate follows increases at once and falls by at most half per
// rateHalfLife, so a pause inside a measurement span does not shrink the next lease to a
// few holds. Expected values are worked out by hand (5000 × 2^(−7.5/30) = 4204.48…).
func TestNextRate(t *testing.T) {
	s := int64(time.Second)
	for _, c := range []struct {
		name              string
		prev, spend, span int64
		want              int64
	}{
		{"steady", 5000, 12_500, 5 * s / 2, 5000},
		{"rising", 1000, 10_000, 2 * s, 5000},
		{"first measurement", 0, 3000, s, 3000},
		{"pause inside the span", 5000, 12_500, 15 * s / 2, 4204},
		{"idle for two half-lives", 5000, 0, 60 * s, 1250},
		{"slower, above the decayed estimate", 8000, 7900, s, 7900},
		{"slower, below the decayed estimate", 8000, 6000, s, 7817},
		{"nothing yet", 0, 0, s, 0},
	} {
		if got := nextRate(c.prev, c.spend, c.span); got != c.want {
			t.Errorf("%s: nextRate(%d, %d, %v) = %d, want %d", c.name, c.prev, c.spend, time.Duration(c.span), got, c.want)
		}
	}
}
