// Package auth turns the API key a client sent into the account it belongs to (DESIGN §3
// step 1). Keys are identified by SHA-256 only: the secret is hashed on arrival and never
// stored, logged or sent anywhere.
//
// Key records come from ledgerd and are cached in ristretto:
//   - a known key (active, revoked or suspended) is trusted for TTL (≤ 5s). In steady traffic
//     it is refreshed in the background before then, so requests never wait for ledgerd;
//     past TTL it is reloaded before use. So a revocation takes effect on every edge within
//     TTL plus one ledgerd call.
//   - an unknown key is remembered as unknown for NegativeTTL, so a flood of one bad key
//     costs ledgerd one call per NegativeTTL, not one per request.
//   - concurrent misses for the same key share one ledgerd call.
//   - when ledgerd cannot be reached, an active key whose record is past TTL is still
//     accepted until it leaves the cache (retention after its last load), so requests that
//     the edge's credit leases cover go on through a ledger outage (DESIGN §3, "ledger
//     unreachable"). A revocation cannot reach the edge while ledgerd is down anyway, and
//     the leases bound what such requests can spend.
//
// The hit path does one hash, one cache read and no allocation.
package auth

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"

	"tollgate/edge/internal/flight"
	"tollgate/edge/internal/ledger"
	"tollgate/edge/internal/ratelimit"
	"tollgate/pkg/ledgerapi"
)

// Expected outcomes of Authenticate.
var (
	ErrMissingKey  = errors.New("no API key")
	ErrUnknownKey  = errors.New("unknown API key")
	ErrRevoked     = errors.New("API key revoked")
	ErrSuspended   = errors.New("account suspended")
	ErrUnavailable = errors.New("key service unavailable")
)

// keyBytesMax bounds the key the edge will hash; real keys are ~100 bytes. A longer one is
// unknown by definition and not worth a ledgerd call.
const keyBytesMax = 512

// retention is how long a known key's record stays cached after it was last loaded. It is
// longer than TTL on purpose: a record past TTL is never trusted, but keeping it lets the
// reload carry the key's rate limiter over, so the limit holds across reloads.
const retention = 2 * time.Minute

// KeySource looks a key up by the hex SHA-256 of its secret; ledger.ErrNotFound when there is
// no such key. *ledger.Client implements it.
type KeySource interface {
	LookupKey(ctx context.Context, hashHex string) (ledgerapi.Key, error)
}

// Config of the Authenticator. All fields are required.
type Config struct {
	TTL         time.Duration // trust a known key this long
	NegativeTTL time.Duration // remember an unknown key this long
	Timeout     time.Duration // one ledgerd call
	CacheMax    int           // cached keys
	// Now is the clock for TTLs; nil means time.Now. Ristretto's own expiry of unknown keys
	// uses the real clock regardless.
	Now func() time.Time
}

// Principal is who a request acts for. It is shared by every request with the same key and
// must not be modified.
type Principal struct {
	KeyID     string
	AccountID string
	limiter   *ratelimit.Limiter // nil: no rate limit on this key
}

// Allow applies the key's rate limit (if any) at time now (Unix ns).
func (p *Principal) Allow(now int64) (bool, time.Duration) {
	if p.limiter == nil {
		return true, 0
	}
	return p.limiter.Allow(now)
}

type status uint8

const (
	statusActive status = iota
	statusUnknown
	statusRevoked
	statusSuspended
)

var statusErr = [...]error{statusActive: nil, statusUnknown: ErrUnknownKey,
	statusRevoked: ErrRevoked, statusSuspended: ErrSuspended}

// entry is one cached key record. Immutable except refreshing.
type entry struct {
	digest     [sha256.Size]byte // the full hash: the cache is keyed by its first 8 bytes
	principal  Principal
	status     status
	loaded     int64       // Unix ns when ledgerd answered
	refreshing atomic.Bool // a background refresh is running
}

// Authenticator authenticates keys. It is safe for concurrent use.
type Authenticator struct {
	cfg       Config
	src       KeySource
	log       *slog.Logger
	cache     *ristretto.Cache[uint64, *entry]
	flight    flight.Group[[sha256.Size]byte, *entry]
	refreshAt int64      // ns of age after which a hit starts a background refresh
	mu        sync.Mutex // orders wg.Add against Close
	wg        sync.WaitGroup
	closed    bool
}

// New builds an Authenticator over src.
func New(cfg Config, src KeySource, log *slog.Logger) (*Authenticator, error) {
	cache, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{
		NumCounters:        int64(cfg.CacheMax) * 10,
		MaxCost:            int64(cfg.CacheMax),
		BufferItems:        64,
		IgnoreInternalCost: true, // cost is 1 per key: MaxCost counts keys
		KeyToHash:          digestHash,
	})
	if err != nil {
		return nil, fmt.Errorf("build key cache: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Authenticator{cfg: cfg, src: src, log: log, cache: cache,
		refreshAt: int64(cfg.TTL) * 3 / 4}, nil
}

// The cache is keyed by the first 8 bytes of the SHA-256 digest: it is already uniformly
// random, so hashing it again would only cost time, and a uint64 key keeps the lookup free of
// allocations. Entries hold the whole digest, and a hit whose digest differs is a miss, so a
// 64-bit collision can only evict, never authenticate.
func cacheKey(sum *[sha256.Size]byte) uint64 { return binary.LittleEndian.Uint64(sum[:8]) }

func digestHash(k uint64) (uint64, uint64) { return k, 0 }

// Authenticate returns the principal for key, or one of the errors above.
func (a *Authenticator) Authenticate(key []byte) (*Principal, error) {
	if len(key) == 0 {
		return nil, ErrMissingKey
	}
	if len(key) > keyBytesMax {
		return nil, ErrUnknownKey
	}
	sum := sha256.Sum256(key)
	now := a.cfg.Now().UnixNano()
	e, ok := a.cache.Get(cacheKey(&sum))
	if ok && e.digest == sum {
		age := now - e.loaded
		if e.status == statusUnknown || age < int64(a.cfg.TTL) {
			if age > a.refreshAt && e.status != statusUnknown && e.refreshing.CompareAndSwap(false, true) {
				a.refreshInBackground(sum, e)
			}
			return e.result()
		}
	} else {
		e = nil
	}
	stale := e
	e, err := a.load(sum, e)
	if err != nil {
		if stale != nil && stale.status == statusActive && errors.Is(err, ErrUnavailable) {
			return &stale.principal, nil
		}
		return nil, err
	}
	return e.result()
}

func (e *entry) result() (*Principal, error) {
	if err := statusErr[e.status]; err != nil {
		return nil, err
	}
	return &e.principal, nil
}

// refreshInBackground reloads e's key before its TTL runs out, so no request waits for it.
// At most one refresh per key runs at a time (e.refreshing), and only in steady traffic, so
// these goroutines are few.
func (a *Authenticator) refreshInBackground(sum [sha256.Size]byte, e *entry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		e.refreshing.Store(false)
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if _, err := a.load(sum, e); err != nil {
			// The old record stays valid until its TTL; the next hit tries again.
			e.refreshing.Store(false)
			a.log.Warn("key_refresh_failed", "error", err)
		}
	}()
}

// load asks ledgerd for the key, shared with concurrent callers for the same key, and caches
// the answer. prev (may be nil) is the record being replaced; its rate limiter carries over.
func (a *Authenticator) load(sum [sha256.Size]byte, prev *entry) (*entry, error) {
	e, err, _ := a.flight.Do(sum, func() (*entry, error) {
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Timeout)
		defer cancel()
		k, err := a.src.LookupKey(ctx, hex.EncodeToString(sum[:]))
		key := cacheKey(&sum)
		if errors.Is(err, ledger.ErrNotFound) {
			e := &entry{digest: sum, status: statusUnknown, loaded: a.cfg.Now().UnixNano()}
			a.cache.SetWithTTL(key, e, 1, a.cfg.NegativeTTL)
			a.cache.Wait() // visible before the shared call ends, so no second miss follows it
			return e, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		e := newEntry(k, prev, a.cfg.Now().UnixNano())
		e.digest = sum
		a.cache.SetWithTTL(key, e, 1, retention)
		a.cache.Wait()
		return e, nil
	})
	return e, err
}

func newEntry(k ledgerapi.Key, prev *entry, now int64) *entry {
	e := &entry{
		principal: Principal{KeyID: k.KeyID, AccountID: k.AccountID},
		loaded:    now,
	}
	switch {
	case k.Revoked:
		e.status = statusRevoked
	case k.AccountStatus != ledgerapi.StatusActive:
		// Fail closed: only an account ledgerd calls active may spend.
		e.status = statusSuspended
	}
	if k.RateLimitRPM > 0 {
		if prev != nil && prev.principal.limiter != nil && prev.principal.limiter.PerMinute() == k.RateLimitRPM {
			e.principal.limiter = prev.principal.limiter
		} else {
			e.principal.limiter = ratelimit.New(k.RateLimitRPM)
		}
	}
	return e
}

// Close waits for background refreshes and frees the cache. Idempotent.
func (a *Authenticator) Close() {
	a.mu.Lock()
	was := a.closed
	a.closed = true
	a.mu.Unlock()
	if was {
		return
	}
	a.wg.Wait()
	a.cache.Close()
}
