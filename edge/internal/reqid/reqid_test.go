package reqid_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/reqid"
)

func TestNewIsUUIDv7(t *testing.T) {
	before := time.Now().UnixMilli()
	id := reqid.New()
	after := time.Now().UnixMilli()

	u, err := uuid.Parse(id)
	require.NoError(t, err)
	require.Len(t, id, 36)
	require.Equal(t, uuid.Version(7), u.Version())
	require.Equal(t, uuid.RFC4122, u.Variant())
	sec, nsec := u.Time().UnixTime()
	ms := sec*1000 + nsec/1e6
	require.GreaterOrEqual(t, ms, before)
	require.LessOrEqual(t, ms, after)
}

func TestIDsSortByMillisecond(t *testing.T) {
	t0 := time.UnixMilli(1_763_800_000_000)
	a := string(reqid.Append(nil, t0))
	b := string(reqid.Append(nil, t0.Add(time.Millisecond)))
	require.Less(t, a, b)
}

func TestUnique(t *testing.T) {
	seen := make(map[string]bool, 100000)
	for range 100000 {
		id := reqid.New()
		require.False(t, seen[id], "duplicate id %s", id)
		seen[id] = true
	}
}

func TestAppendAllocatesNothing(t *testing.T) {
	buf := make([]byte, 0, 64)
	now := time.Now()
	allocs := testing.AllocsPerRun(1000, func() { buf = reqid.Append(buf[:0], now) })
	require.Zero(t, allocs)
}
