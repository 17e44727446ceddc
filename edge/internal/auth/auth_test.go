package auth_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/auth"
	"tollgate/edge/internal/ledger"
	"tollgate/pkg/ledgerapi"
)

func TestKeyFromHeaders(t *testing.T) {
	for _, tc := range []struct {
		name, xAPIKey, authorization, want string
	}{
		{"x-api-key", "sk-1", "", "sk-1"},
		{"bearer", "", "Bearer sk-2", "sk-2"},
		{"x-api-key wins over bearer", "sk-1", "Bearer sk-2", "sk-1"},
		{"bearer lower case", "", "bearer sk-2", "sk-2"},
		{"bearer mixed case and tabs", "", "\tBeArEr \t sk-2 ", "sk-2"},
		{"blank x-api-key falls back to bearer", "  ", "Bearer sk-2", "sk-2"},
		{"x-api-key trimmed", " sk-1\t", "", "sk-1"},
		{"basic is not a key", "", "Basic dXNlcjpwYXNz", ""},
		{"bearer without token", "", "Bearer", ""},
		{"bearer with only spaces", "", "Bearer   ", ""},
		{"bearerish scheme", "", "Bearerx sk", ""},
		{"nothing", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := auth.KeyFromHeaders([]byte(tc.xAPIKey), []byte(tc.authorization))
			require.Equal(t, tc.want, string(got))
		})
	}
}

func FuzzKeyFromHeaders(f *testing.F) {
	f.Add([]byte("sk"), []byte("Bearer x"))
	f.Add([]byte(""), []byte("bearer\t\t"))
	f.Fuzz(func(t *testing.T, x, a []byte) {
		k := auth.KeyFromHeaders(x, a)
		if len(k) > 0 {
			require.NotContains(t, []byte{' ', '\t'}, k[0])
			require.NotContains(t, []byte{' ', '\t'}, k[len(k)-1])
		}
	})
}

// source is a KeySource over a map, counting calls. Unit tests may fake ledgerd here; the
// edge's integration tests run against the real one.
type source struct {
	mu    sync.Mutex
	keys  map[string]ledgerapi.Key // by hash
	err   error
	calls atomic.Int32
	gate  chan struct{} // when set, every call waits for it
}

func (s *source) LookupKey(_ context.Context, hashHex string) (ledgerapi.Key, error) {
	s.calls.Add(1)
	if s.gate != nil {
		<-s.gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return ledgerapi.Key{}, s.err
	}
	k, ok := s.keys[hashHex]
	if !ok {
		return ledgerapi.Key{}, ledger.ErrNotFound
	}
	return k, nil
}

func (s *source) set(secret string, k ledgerapi.Key) {
	sum := sha256.Sum256([]byte(secret))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil {
		s.keys = map[string]ledgerapi.Key{}
	}
	s.keys[hex.EncodeToString(sum[:])] = k
}

type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func newAuth(t *testing.T, src auth.KeySource, clk *clock) *auth.Authenticator {
	t.Helper()
	cfg := auth.Config{TTL: 4 * time.Second, NegativeTTL: time.Minute, Timeout: time.Second, CacheMax: 1000}
	if clk != nil {
		clk.ns.Store(time.Now().UnixNano())
		cfg.Now = clk.now
	}
	a, err := auth.New(cfg, src, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	t.Cleanup(a.Close)
	return a
}

func active(keyID string) ledgerapi.Key {
	return ledgerapi.Key{KeyID: keyID, AccountID: "acct-" + keyID, AccountStatus: ledgerapi.StatusActive}
}

func TestOutcomes(t *testing.T) {
	src := &source{}
	src.set("good", active("k1"))
	src.set("revoked", ledgerapi.Key{KeyID: "k2", AccountID: "a2", Revoked: true, AccountStatus: ledgerapi.StatusActive})
	src.set("suspended", ledgerapi.Key{KeyID: "k3", AccountID: "a3", AccountStatus: ledgerapi.StatusSuspended})
	a := newAuth(t, src, nil)

	p, err := a.Authenticate([]byte("good"))
	require.NoError(t, err)
	require.Equal(t, "k1", p.KeyID)
	require.Equal(t, "acct-k1", p.AccountID)

	for _, tc := range []struct {
		key  string
		want error
	}{
		{"", auth.ErrMissingKey},
		{"nope", auth.ErrUnknownKey},
		{"revoked", auth.ErrRevoked},
		{"suspended", auth.ErrSuspended},
		{string(make([]byte, 4096)), auth.ErrUnknownKey},
	} {
		_, err := a.Authenticate([]byte(tc.key))
		require.ErrorIs(t, err, tc.want, "key %.10q", tc.key)
	}
}

func TestUnknownKeyFloodCallsLedgerOnce(t *testing.T) {
	src := &source{gate: make(chan struct{})}
	a := newAuth(t, src, nil)

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := a.Authenticate([]byte("sk-flood"))
			errs <- err
		}()
	}
	// Let the first call through once it is in; everyone else either waits on it or, if they
	// arrive later, finds the negative entry.
	for src.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(src.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.ErrorIs(t, err, auth.ErrUnknownKey)
	}
	for range 1000 {
		_, err := a.Authenticate([]byte("sk-flood"))
		require.ErrorIs(t, err, auth.ErrUnknownKey)
	}
	// 1,200 requests, (almost always) one lookup. ristretto may drop a Set under contention
	// (documented), and then the next request asks again: allow that, never one per request.
	require.LessOrEqual(t, src.calls.Load(), int32(3))
}

func TestRevocationTakesEffectAfterTTL(t *testing.T) {
	src := &source{}
	src.set("sk", active("k1"))
	clk := &clock{}
	a := newAuth(t, src, clk)

	_, err := a.Authenticate([]byte("sk"))
	require.NoError(t, err)
	src.set("sk", ledgerapi.Key{KeyID: "k1", AccountID: "acct-k1", Revoked: true, AccountStatus: ledgerapi.StatusActive})

	// Within the first part of the TTL the cached record is used as is.
	clk.advance(time.Second)
	_, err = a.Authenticate([]byte("sk"))
	require.NoError(t, err)
	require.Equal(t, int32(1), src.calls.Load())

	// Past the TTL it is reloaded before use: the revocation shows.
	clk.advance(4 * time.Second)
	_, err = a.Authenticate([]byte("sk"))
	require.ErrorIs(t, err, auth.ErrRevoked)
}

func TestRefreshAheadServesFromCache(t *testing.T) {
	src := &source{}
	src.set("sk", active("k1"))
	clk := &clock{}
	a := newAuth(t, src, clk)

	_, err := a.Authenticate([]byte("sk"))
	require.NoError(t, err)
	clk.advance(3500 * time.Millisecond) // past 3/4 of the TTL, before its end
	p, err := a.Authenticate([]byte("sk"))
	require.NoError(t, err, "still served from the cache")
	require.Equal(t, "k1", p.KeyID)
	a.Close() // waits for the background refresh
	require.Equal(t, int32(2), src.calls.Load())
}

func TestLedgerDownIsUnavailableAndNotCached(t *testing.T) {
	src := &source{err: errors.New("connection refused")}
	a := newAuth(t, src, nil)
	_, err := a.Authenticate([]byte("sk"))
	require.ErrorIs(t, err, auth.ErrUnavailable)

	src.mu.Lock()
	src.err = nil
	src.mu.Unlock()
	src.set("sk", active("k1"))
	_, err = a.Authenticate([]byte("sk"))
	require.NoError(t, err)
}

func TestRateLimitCarriesOverReload(t *testing.T) {
	src := &source{}
	k := active("k1")
	k.RateLimitRPM = 2
	src.set("sk", k)
	clk := &clock{}
	a := newAuth(t, src, clk)

	p, err := a.Authenticate([]byte("sk"))
	require.NoError(t, err)
	now := clk.now().UnixNano()
	require.True(t, first(p.Allow(now)))
	require.True(t, first(p.Allow(now)))
	require.False(t, first(p.Allow(now)))

	clk.advance(5 * time.Second) // past the TTL: reloaded, the same limiter continues
	p, err = a.Authenticate([]byte("sk"))
	require.NoError(t, err)
	ok, retry := p.Allow(clk.now().UnixNano())
	require.False(t, ok)
	require.Equal(t, 25*time.Second, retry)
}

func TestHitAllocatesNothing(t *testing.T) {
	src := &source{}
	src.set("sk", active("k1"))
	a := newAuth(t, src, nil)
	key := []byte("sk")
	_, err := a.Authenticate(key)
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := a.Authenticate(key); err != nil {
			panic(err)
		}
	})
	require.Zero(t, allocs)
}

func first(ok bool, _ time.Duration) bool { return ok }

func TestLedgerDownKeepsKnownActiveKeys(t *testing.T) {
	src := &source{}
	src.set("sk", active("k1"))
	src.set("gone", ledgerapi.Key{KeyID: "k2", AccountID: "a2", Revoked: true, AccountStatus: ledgerapi.StatusActive})
	clk := &clock{}
	a := newAuth(t, src, clk)
	_, err := a.Authenticate([]byte("sk"))
	require.NoError(t, err)
	_, err = a.Authenticate([]byte("gone"))
	require.ErrorIs(t, err, auth.ErrRevoked)

	src.mu.Lock()
	src.err = errors.New("connection refused")
	src.mu.Unlock()
	clk.advance(10 * time.Second) // past the TTL: a reload is due and fails

	p, err := a.Authenticate([]byte("sk"))
	require.NoError(t, err, "a known active key outlives a ledger outage; leases bound its spending")
	require.Equal(t, "acct-k1", p.AccountID)
	_, err = a.Authenticate([]byte("gone"))
	require.ErrorIs(t, err, auth.ErrUnavailable, "a revoked key is never revived by an outage")
	_, err = a.Authenticate([]byte("never-seen"))
	require.ErrorIs(t, err, auth.ErrUnavailable)
}
