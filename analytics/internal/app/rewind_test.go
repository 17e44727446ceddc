package app

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRewindTargets(t *testing.T) {
	cases := []struct {
		name                     string
		committed, stored, first map[int]int64
		want                     map[int]int64
	}{
		{"new group", map[int]int64{}, map[int]int64{}, map[int]int64{0: 0, 1: 0}, map[int]int64{}},
		{"in step", map[int]int64{0: 10, 1: 5}, map[int]int64{0: 10, 1: 5}, map[int]int64{0: 0, 1: 0}, map[int]int64{}},
		{"clickhouse ahead (crash before the commit)", map[int]int64{0: 10}, map[int]int64{0: 12}, map[int]int64{0: 0}, map[int]int64{}},
		{"restored: behind", map[int]int64{0: 10, 1: 5}, map[int]int64{0: 4, 1: 5}, map[int]int64{0: 0, 1: 0}, map[int]int64{0: 4}},
		{"no stored offset: earliest", map[int]int64{0: 10, 1: 5}, map[int]int64{1: 5}, map[int]int64{0: 3, 1: 0}, map[int]int64{0: 3}},
		{"no stored offset, nothing retained", map[int]int64{0: 10}, map[int]int64{}, map[int]int64{0: 10}, map[int]int64{}},
		{"stored before retention: earliest", map[int]int64{0: 10}, map[int]int64{0: 2}, map[int]int64{0: 6}, map[int]int64{0: 6}},
		{"stored but never committed", map[int]int64{}, map[int]int64{0: 7}, map[int]int64{0: 0}, map[int]int64{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, rewindTargets(c.committed, c.stored, c.first))
		})
	}
}
