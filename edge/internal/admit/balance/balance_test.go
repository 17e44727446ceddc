package balance_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/admit"
	"tollgate/edge/internal/admit/balance"
	"tollgate/pkg/ledgerapi"
)

// source fakes ledgerd's balance call (unit test; the edge's integration tests use the real
// ledgerd).
type source struct {
	mu    sync.Mutex
	avail map[string]int64
	err   error
	calls atomic.Int32
}

func (s *source) Balance(_ context.Context, id string) (ledgerapi.Balance, error) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return ledgerapi.Balance{}, s.err
	}
	return ledgerapi.Balance{AccountID: id, BalanceMicrocredits: s.avail[id], AvailableMicrocredits: s.avail[id]}, nil
}

func (s *source) set(id string, v int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.avail[id] = v
}

type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func newAdmitter(t *testing.T, src balance.Source) (*balance.Admitter, *clock) {
	t.Helper()
	clk := &clock{}
	clk.ns.Store(time.Now().UnixNano())
	a, err := balance.New(balance.Config{TTL: time.Second, Timeout: time.Second, CacheMax: 100, Now: clk.now},
		src, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	t.Cleanup(a.Close)
	return a, clk
}

func TestAdmitAgainstAvailable(t *testing.T) {
	src := &source{avail: map[string]int64{"a": 1000, "empty": 0, "negative": -5}}
	a, _ := newAdmitter(t, src)

	tk, err := a.Admit("a", 600)
	require.NoError(t, err)
	require.Equal(t, int64(600), tk.Hold)
	require.Empty(t, tk.LeaseID)

	// 400 left while the first request runs.
	_, err = a.Admit("a", 401)
	var ins *admit.InsufficientError
	require.ErrorAs(t, err, &ins)
	require.Equal(t, admit.InsufficientError{Hold: 401, Available: 400}, *ins)

	// The first request cost 100: its hold is released, 900 left.
	a.Finish(tk, 100)
	tk2, err := a.Admit("a", 900)
	require.NoError(t, err)
	a.Finish(tk2, 900)
	_, err = a.Admit("a", 1)
	require.ErrorAs(t, err, &ins)
	require.Equal(t, int64(0), ins.Available)

	for _, id := range []string{"empty", "negative"} {
		_, err = a.Admit(id, 0)
		require.ErrorAs(t, err, &ins, id)
	}
	require.Equal(t, int32(3), src.calls.Load(), "one ledgerd call per account within the TTL")
}

func TestReloadAfterTTL(t *testing.T) {
	src := &source{avail: map[string]int64{"a": 0}}
	a, clk := newAdmitter(t, src)
	_, err := a.Admit("a", 1)
	require.Error(t, err)

	src.set("a", 5000) // topped up
	clk.advance(time.Second)
	tk, err := a.Admit("a", 5000)
	require.NoError(t, err)
	a.Finish(tk, 0)
}

func TestLedgerDown(t *testing.T) {
	src := &source{avail: map[string]int64{}, err: errors.New("connection refused")}
	a, _ := newAdmitter(t, src)
	_, err := a.Admit("a", 1)
	require.ErrorIs(t, err, admit.ErrUnavailable)
}

func TestConcurrentAdmissionsNeverOverCommit(t *testing.T) {
	src := &source{avail: map[string]int64{"a": 100}}
	a, _ := newAdmitter(t, src)
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := a.Admit("a", 7); err == nil {
				admitted.Add(1)
			}
		}()
	}
	wg.Wait()
	require.Equal(t, int64(100/7), admitted.Load())
}
