package auth_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
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
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil {
		s.keys = map[string]ledgerapi.Key{}
	}
	s.keys[hashOf(secret)] = k
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
	require.Eventually(t, func() bool { return src.calls.Load() == 2 }, 5*time.Second, time.Millisecond,
		"refreshed in the background")
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

// Background refresh.

// batchSource is a source with the batch lookup, recording each batch it was asked.
type batchSource struct {
	*source
	bmu      sync.Mutex
	batches  [][]string
	at       []time.Time // when each batch was asked
	batchErr error       // when set, every batch call fails with it
	block    bool        // every batch call waits for its context to end
}

func (b *batchSource) LookupKeys(ctx context.Context, hashes []string) (map[string]ledgerapi.Key, error) {
	b.bmu.Lock()
	b.batches = append(b.batches, slices.Clone(hashes))
	b.at = append(b.at, time.Now())
	err := b.batchErr
	b.bmu.Unlock()
	if b.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	b.source.mu.Lock()
	defer b.source.mu.Unlock()
	out := map[string]ledgerapi.Key{}
	for _, h := range hashes {
		if k, ok := b.source.keys[h]; ok {
			out[h] = k
		}
	}
	return out, nil
}

func (b *batchSource) batchCalls() int {
	b.bmu.Lock()
	defer b.bmu.Unlock()
	return len(b.batches)
}

func (s *source) del(secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, hashOf(secret))
}

// logCounter counts log records by message.
type logCounter struct {
	mu   sync.Mutex
	msgs map[string]int
	last map[string]slog.Record
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logCounter) WithGroup(string) slog.Handler            { return l }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs[r.Message]++
	l.last[r.Message] = r.Clone()
	return nil
}

func (l *logCounter) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.msgs[msg]
}

// attr returns the value of key in the last record logged as msg.
func (l *logCounter) attr(msg, key string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var v string
	l.last[msg].Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
		}
		return true
	})
	return v
}

func newLogCounter() *logCounter {
	return &logCounter{msgs: map[string]int{}, last: map[string]slog.Record{}}
}

// longLinger lets a test queue every key it means to before the refresher's round starts, so
// that which keys share a round is certain.
const longLinger = 500 * time.Millisecond

// newRefreshAuth is newAuth with room for many keys and the refresher gathering for linger.
func newRefreshAuth(t *testing.T, src auth.KeySource, clk *clock, linger time.Duration, log *slog.Logger) *auth.Authenticator {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	clk.ns.Store(time.Now().UnixNano())
	cfg := auth.Config{TTL: 4 * time.Second, NegativeTTL: time.Minute, Timeout: time.Second, CacheMax: 10_000, Now: clk.now}
	a, err := auth.NewWithLinger(cfg, src, log, linger)
	require.NoError(t, err)
	t.Cleanup(a.Close)
	return a
}

func hashOf(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// keyring is n keys, "sk-0" … "sk-<n-1>", each with its own account.
type keyring []string

func newKeyring(n int) keyring {
	k := make(keyring, n)
	for i := range k {
		k[i] = fmt.Sprint("sk-", i)
	}
	return k
}

// publish gives every key a record whose key id names version, so a test can tell which
// load it sees.
func (k keyring) publish(src *source, version int) {
	for i, secret := range k {
		src.set(secret, active(fmt.Sprintf("k%d-v%d", i, version)))
	}
}

// hitAll authenticates every key once and requires success.
func (k keyring) hitAll(t *testing.T, a *auth.Authenticator) {
	t.Helper()
	for _, secret := range k {
		_, err := a.Authenticate([]byte(secret))
		require.NoError(t, err, secret)
	}
}

// waitVersion waits until every key's cached record is of version. The hits it makes change
// nothing: a record not yet replaced is marked as refreshing and within its TTL.
func (k keyring) waitVersion(t *testing.T, a *auth.Authenticator, version int) {
	t.Helper()
	require.Eventually(t, func() bool {
		for i, secret := range k {
			p, err := a.Authenticate([]byte(secret))
			if err != nil || p.KeyID != fmt.Sprintf("k%d-v%d", i, version) {
				return false
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond)
}

// The tentpole: N keys past the refresh age cost ⌈N/512⌉ ledgerd calls per refresh, not N,
// cycle after cycle, and no single lookups.
func TestRefreshBatchesKeys(t *testing.T) {
	const n, cycles = 1100, 3
	chunk := ledgerapi.KeyLookupHashesMax
	src := &batchSource{source: &source{}}
	keys := newKeyring(n)
	keys.publish(src.source, 0)
	clk := &clock{}
	a := newRefreshAuth(t, src, clk, longLinger, nil)
	keys.hitAll(t, a) // first loads: one synchronous lookup each
	require.Equal(t, int32(n), src.calls.Load())

	want := (n + chunk - 1) / chunk
	for c := 1; c <= cycles; c++ {
		keys.publish(src.source, c)
		clk.advance(3500 * time.Millisecond) // past ¾ of the 4 s TTL, before its end
		keys.hitAll(t, a)                    // served from the cache; each key queued once
		keys.waitVersion(t, a, c)
		require.Equal(t, c*want, src.batchCalls(), "cycle %d", c)
	}
	require.Equal(t, int32(n), src.calls.Load(), "no single lookups after the first loads")

	src.bmu.Lock()
	defer src.bmu.Unlock()
	var asked []string
	for i, b := range src.batches[:want] {
		require.LessOrEqual(t, len(b), chunk, "batch %d", i)
		asked = append(asked, b...)
	}
	want1 := make([]string, n)
	for i, secret := range keys {
		want1[i] = hashOf(secret)
	}
	require.ElementsMatch(t, want1, asked, "each key asked once per cycle")
	t.Logf("%d keys, %d refresh cycles: %d ledgerd calls (one call per key: %d)", n, cycles, len(src.batches), n*cycles)
}

// A revocation, a deleted key and a suspended account take effect at the next refresh, before
// the TTL, and a key's rate limiter carries over the batch reload.
func TestRefreshAppliesChanges(t *testing.T) {
	src := &batchSource{source: &source{}}
	limited := active("k4")
	limited.RateLimitRPM = 1
	src.set("revoked", active("k1"))
	src.set("deleted", active("k2"))
	src.set("suspended", active("k3"))
	src.set("limited", limited)
	clk := &clock{}
	a := newRefreshAuth(t, src, clk, refreshTestLinger, nil)
	for _, k := range []string{"revoked", "deleted", "suspended", "limited"} {
		_, err := a.Authenticate([]byte(k))
		require.NoError(t, err)
	}
	p, err := a.Authenticate([]byte("limited"))
	require.NoError(t, err)
	require.True(t, first(p.Allow(clk.now().UnixNano())))
	require.False(t, first(p.Allow(clk.now().UnixNano())), "one a minute")

	src.set("revoked", ledgerapi.Key{KeyID: "k1", AccountID: "acct-k1", Revoked: true, AccountStatus: ledgerapi.StatusActive})
	src.del("deleted")
	src.set("suspended", ledgerapi.Key{KeyID: "k3", AccountID: "acct-k3", AccountStatus: ledgerapi.StatusSuspended})
	clk.advance(3500 * time.Millisecond)
	for _, k := range []string{"revoked", "deleted", "suspended", "limited"} {
		_, err := a.Authenticate([]byte(k))
		require.NoError(t, err, "%s: the cached record serves until the refresh", k)
	}
	require.Eventually(t, func() bool {
		_, err := a.Authenticate([]byte("suspended"))
		return errors.Is(err, auth.ErrSuspended)
	}, 5*time.Second, time.Millisecond)
	_, err = a.Authenticate([]byte("revoked"))
	require.ErrorIs(t, err, auth.ErrRevoked)
	_, err = a.Authenticate([]byte("deleted"))
	require.ErrorIs(t, err, auth.ErrUnknownKey)
	p, err = a.Authenticate([]byte("limited"))
	require.NoError(t, err)
	require.False(t, first(p.Allow(clk.now().UnixNano())), "the limiter carried over the refresh")
	require.Equal(t, 1, src.batchCalls(), "four keys, one call")
	require.Equal(t, int32(4), src.calls.Load(), "the first loads only")
}

// refreshTestLinger is the default linger, for tests that need not control rounds.
const refreshTestLinger = 50 * time.Millisecond

// A failed refresh clears the marks and logs once for the round, and the next round waits a
// little; the old records serve until their TTL (a revocation waits for ledgerd as before),
// after which the key is reloaded before use.
func TestRefreshFailureKeepsRecordsUntilTTL(t *testing.T) {
	src := &batchSource{source: &source{}, batchErr: errors.New("connection refused")}
	keys := newKeyring(20)
	keys.publish(src.source, 0)
	logs := newLogCounter()
	clk := &clock{}
	a := newRefreshAuth(t, src, clk, refreshTestLinger, slog.New(logs))
	keys.hitAll(t, a)
	src.set(keys[0], ledgerapi.Key{KeyID: "k0-v0", AccountID: "acct-k0", Revoked: true, AccountStatus: ledgerapi.StatusActive})

	clk.advance(3500 * time.Millisecond)
	keys.hitAll(t, a)
	require.Eventually(t, func() bool { return logs.count("key_refresh_failed") == 1 }, 5*time.Second, time.Millisecond)
	require.Equal(t, 1, src.batchCalls())
	require.Equal(t, "20", logs.attr("key_refresh_failed", "keys_failed"), "one line for the round, not one per key")

	// The marks are cleared: the next hits queue the keys again, and the records still serve.
	keys.hitAll(t, a)
	require.Eventually(t, func() bool { return logs.count("key_refresh_failed") == 2 }, 5*time.Second, time.Millisecond)
	require.Equal(t, 2, src.batchCalls())
	src.bmu.Lock()
	gap := src.at[1].Sub(src.at[0])
	src.bmu.Unlock()
	require.GreaterOrEqual(t, gap, 10*refreshTestLinger, "a failed round pauses the refresher")
	p, err := a.Authenticate([]byte(keys[0]))
	require.NoError(t, err, "the revocation has not reached this edge: its record lives out its TTL")
	require.Equal(t, "k0-v0", p.KeyID)

	// Past the TTL the key is reloaded before use (one single lookup), as on a miss.
	clk.advance(time.Second)
	_, err = a.Authenticate([]byte(keys[0]))
	require.ErrorIs(t, err, auth.ErrRevoked)
	require.Equal(t, int32(21), src.calls.Load())
}

// A ledgerd without the batch lookup: the refresh falls back to one lookup per key, and tries
// the batch again only after a while.
func TestRefreshFallsBackToSingleLookups(t *testing.T) {
	const n = 30
	for _, tc := range []struct {
		name    string
		src     func() (auth.KeySource, *source, func() int)
		batches int // batch calls over two refresh cycles
	}{
		{"source without the batch call", func() (auth.KeySource, *source, func() int) {
			s := &source{}
			return s, s, func() int { return 0 }
		}, 0},
		{"ledgerd answers unsupported", func() (auth.KeySource, *source, func() int) {
			s := &batchSource{source: &source{}, batchErr: fmt.Errorf("look up keys: %w", ledger.ErrUnsupported)}
			return s, s.source, s.batchCalls
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, singles, batchCalls := tc.src()
			keys := newKeyring(n)
			keys.publish(singles, 0)
			clk := &clock{}
			a := newRefreshAuth(t, src, clk, refreshTestLinger, nil)
			keys.hitAll(t, a)
			for c := 1; c <= 2; c++ {
				keys.publish(singles, c)
				clk.advance(3500 * time.Millisecond)
				keys.hitAll(t, a)
				keys.waitVersion(t, a, c)
				require.Equal(t, int32(n*(c+1)), singles.calls.Load(), "cycle %d: one lookup per key", c)
			}
			require.Equal(t, tc.batches, batchCalls())
		})
	}
}

// An edge upgraded before ledgerd: the real client against a ledgerd that has only the single
// lookup (405 or 404 to the batch route) refreshes every key with it.
func TestRefreshAgainstLedgerdWithoutBatchLookup(t *testing.T) {
	for _, status := range []int{http.StatusMethodNotAllowed, http.StatusNotFound} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			keys := newKeyring(5)
			var version, singles, batches atomic.Int32
			mux := http.NewServeMux()
			mux.HandleFunc("GET /internal/v1/keys/{hash}", func(w http.ResponseWriter, r *http.Request) {
				singles.Add(1)
				for i, secret := range keys {
					if hashOf(secret) == r.PathValue("hash") {
						fmt.Fprintf(w, `{"key_id":"k%d-v%d","account_id":"a%d","account_status":"active"}`, i, version.Load(), i)
						return
					}
				}
				w.WriteHeader(http.StatusNotFound)
			})
			mux.HandleFunc("/internal/v1/keys/{hash}", func(w http.ResponseWriter, r *http.Request) {
				batches.Add(1)
				w.WriteHeader(status)
				w.Write([]byte(`{"error":{"type":"method_not_allowed","message":"method POST not allowed"}}`))
			})
			srv := httptest.NewServer(mux)
			defer srv.Close()
			c := ledger.New(ledger.Config{URL: srv.URL, Secret: "s", Timeout: time.Second})
			defer c.Close()

			clk := &clock{}
			a := newRefreshAuth(t, c, clk, refreshTestLinger, nil)
			keys.hitAll(t, a)
			version.Store(1)
			clk.advance(3500 * time.Millisecond)
			keys.hitAll(t, a)
			keys.waitVersion(t, a, 1)
			require.Equal(t, int32(10), singles.Load())
			require.Equal(t, int32(1), batches.Load())
		})
	}
}

// Close stops the refresher: a round in flight is cancelled, a queued one never calls.
func TestCloseStopsRefresher(t *testing.T) {
	t.Run("call in flight", func(t *testing.T) {
		src := &batchSource{source: &source{}, block: true}
		src.set("sk", active("k1"))
		clk := &clock{}
		a := newRefreshAuth(t, src, clk, refreshTestLinger, nil)
		_, err := a.Authenticate([]byte("sk"))
		require.NoError(t, err)
		clk.advance(3500 * time.Millisecond)
		_, err = a.Authenticate([]byte("sk"))
		require.NoError(t, err)
		require.Eventually(t, func() bool { return src.batchCalls() == 1 }, 5*time.Second, time.Millisecond)
		closed := make(chan struct{})
		go func() { a.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(500 * time.Millisecond): // the call's own timeout is 1 s
			t.Fatal("Close did not cancel the refresh in flight")
		}
	})
	t.Run("round still gathering", func(t *testing.T) {
		src := &batchSource{source: &source{}}
		src.set("sk", active("k1"))
		clk := &clock{}
		a := newRefreshAuth(t, src, clk, time.Hour, nil)
		_, err := a.Authenticate([]byte("sk"))
		require.NoError(t, err)
		clk.advance(3500 * time.Millisecond)
		_, err = a.Authenticate([]byte("sk"))
		require.NoError(t, err)
		a.Close()
		a.Close() // idempotent
		require.Zero(t, src.batchCalls())
	})
}

// Queueing a refresh is part of the hit path and allocates nothing either: each run below
// hits another key past the refresh age, whose hit marks it and queues it. The refresher
// sleeps through the measurement (its round gathers for a long time), so the count is the
// hits' alone.
func TestQueueingHitAllocatesNothing(t *testing.T) {
	const n = 200
	src := &batchSource{source: &source{}}
	keys := newKeyring(n + 1)
	keys.publish(src.source, 0)
	clk := &clock{}
	a := newRefreshAuth(t, src, clk, time.Hour, nil)
	keys.hitAll(t, a)
	clk.advance(3500 * time.Millisecond)
	secrets := make([][]byte, len(keys))
	for i, k := range keys {
		secrets[i] = []byte(k)
	}
	i := 0
	allocs := testing.AllocsPerRun(n, func() { // n runs plus one warm-up: n+1 keys
		if _, err := a.Authenticate(secrets[i]); err != nil {
			panic(err)
		}
		i++
	})
	require.Zero(t, allocs)
	require.Equal(t, n+1, i)
	require.Zero(t, src.batchCalls(), "the round is still gathering")
}

// A key in use stays fresh through a pause longer than its TTL: the refresher reloads it when
// it comes due, without a hit, so the first request after the pause needs no ledgerd call.
// Once the key has not been hit for keepWarm, it is no longer refreshed.
func TestWarmKeysStayFreshThroughAPause(t *testing.T) {
	for _, refreshedFirst := range []bool{false, true} {
		t.Run(fmt.Sprint("refreshed first: ", refreshedFirst), func(t *testing.T) {
			testWarmKeys(t, refreshedFirst)
		})
	}
}

// testWarmKeys: keys loaded by a request (one hit each, as a short burst makes), or also
// refreshed once by hits past ¾ of the TTL, then a pause.
func testWarmKeys(t *testing.T, refreshedFirst bool) {
	src := &batchSource{source: &source{}}
	keys := newKeyring(3)
	keys.publish(src.source, 1)
	clk := &clock{}
	clk.ns.Store(time.Now().UnixNano())
	const ttl, warm = 4 * time.Second, 20 * time.Second
	cfg := auth.Config{TTL: ttl, NegativeTTL: time.Minute, Timeout: time.Second, CacheMax: 100, Now: clk.now}
	a, err := auth.NewWithTimings(cfg, src, slog.New(slog.DiscardHandler), 10*time.Millisecond, warm)
	require.NoError(t, err)
	t.Cleanup(a.Close)

	keys.hitAll(t, a) // first loads: one synchronous lookup each
	if refreshedFirst {
		clk.advance(3500 * time.Millisecond)
		keys.publish(src.source, 2)
		keys.hitAll(t, a) // past ¾ of the TTL: queued and reloaded by the refresher
		keys.waitVersion(t, a, 2)
	}
	singles := src.calls.Load()

	peekAll := func(version int) bool {
		for i, secret := range keys {
			if id, ok := a.Peek(secret); !ok || id != fmt.Sprintf("k%d-v%d", i, version) {
				return false
			}
		}
		return true
	}
	// A pause of 10.5 s, 2.6 TTLs, without a hit.
	for v := 3; v <= 5; v++ {
		keys.publish(src.source, v)
		clk.advance(3500 * time.Millisecond)
		require.Eventually(t, func() bool { return peekAll(v) }, 5*time.Second, 5*time.Millisecond,
			"version %d loaded without a hit", v)
	}
	clk.advance(time.Second)
	for i, secret := range keys {
		p, err := a.Authenticate([]byte(secret))
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("k%d-v5", i), p.KeyID)
	}
	require.Equal(t, singles, src.calls.Load(), "the first requests after the pause asked ledgerd nothing")

	// keepWarm after the last hit, the keys are left to expire.
	clk.advance(warm + time.Second)
	calls := src.batchCalls()
	time.Sleep(3 * ttl / 8) // three checks of the warm keys
	require.Equal(t, calls, src.batchCalls(), "keys idle for keepWarm are not refreshed")
	keys.hitAll(t, a)
	require.Equal(t, singles+int32(len(keys)), src.calls.Load(), "past the TTL, an idle key is reloaded before use")
}
