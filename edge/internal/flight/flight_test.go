package flight

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestConcurrentCallersShareOneCall(t *testing.T) {
	var g Group[string, int]
	var calls atomic.Int32
	release := make(chan struct{})
	entered := make(chan struct{})

	const n = 50
	var wg sync.WaitGroup
	results := make([]int, n)
	shared := make([]bool, n)
	do := func(i int) {
		defer wg.Done()
		v, err, sh := g.Do("k", func() (int, error) {
			calls.Add(1)
			close(entered)
			<-release
			return 42, nil
		})
		require.NoError(t, err)
		results[i], shared[i] = v, sh
	}
	wg.Add(1)
	go do(0)
	<-entered
	for i := 1; i < n; i++ {
		wg.Add(1)
		go do(i)
	}
	// Wait (without a clock) until every other caller is parked on the first call.
	for g.waiting("k") < n-1 {
		runtime.Gosched()
	}
	close(release)
	wg.Wait()

	require.Equal(t, int32(1), calls.Load())
	for i := range n {
		require.Equal(t, 42, results[i], "caller %d", i)
		require.Equal(t, i != 0, shared[i], "caller %d", i)
	}
}

func TestSequentialCallsRunAgainAndErrorsAreShared(t *testing.T) {
	var g Group[int, string]
	boom := errors.New("boom")
	_, err, shared := g.Do(1, func() (string, error) { return "", boom })
	require.ErrorIs(t, err, boom)
	require.False(t, shared)
	v, err, _ := g.Do(1, func() (string, error) { return "again", nil })
	require.NoError(t, err)
	require.Equal(t, "again", v)
}
