// Package auth turns the API key a client sent into the account it belongs to (DESIGN §3
// step 1). Keys are identified by SHA-256 only: the secret is hashed on arrival and never
// stored, logged or sent anywhere.
//
// Key records come from ledgerd and are cached in ristretto:
//   - a known key (active, revoked or suspended) is trusted for TTL (≤ 5s). In steady traffic
//     it is refreshed in the background before then, so requests never wait for ledgerd;
//     past TTL it is reloaded before use. So a revocation takes effect on every edge within
//     TTL plus one ledgerd call.
//   - background refreshes are batched: a hit on a record older than ¾ of TTL queues its
//     key, and one refresher goroutine reloads the queued keys with one ledgerd call per
//     ledgerapi.KeyLookupHashesMax keys (see refresher). So ledgerd's load follows the rounds,
//     not the number of keys in use; a ledgerd without the batch call gets one call per key.
//   - an active key stays warm while it is in use: the refresher reloads it when it comes due
//     even without a hit, until keepWarm has passed since its last hit.
//     So a client that pauses for longer than TTL (between bursts, or while its agent runs a
//     tool) does not make its next request wait for a ledgerd call.
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
	"cmp"
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
	"tollgate/edge/internal/gather"
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

// KeyBatchSource is a KeySource that also looks up to ledgerapi.KeyLookupHashesMax keys up in
// one call, answering the keys it knows by hash and leaving the unknown ones out;
// ledger.ErrUnsupported when the ledgerd behind it has no such call. *ledger.Client
// implements it. The background refresh uses it when the source has it, and one LookupKey
// per key otherwise.
type KeyBatchSource interface {
	KeySource
	LookupKeys(ctx context.Context, hashes []string) (map[string]ledgerapi.Key, error)
}

// Background refresh (refresher).
const (
	// refreshLinger is how long the refresher gathers once a key is due before it calls
	// ledgerd, so that keys coming due together — a burst, or the keys one call refreshed
	// last time, which come due together again — take one call: at most 20 rounds a second
	// however many keys are in use. A TTL under 800 ms shortens it to TTL/16 (a quarter of
	// the time between the refresh age and TTL), so the refresh still lands before TTL.
	refreshLinger = 50 * time.Millisecond
	// refreshQueueMax bounds the keys waiting for the refresher. When the queue is full a hit
	// does not wait: it clears its key's mark and a later hit queues it again; a key that
	// never gets in is reloaded before use once past TTL, as today.
	refreshQueueMax = 4096
	// refreshEachMax bounds the single lookups in flight when the refresh falls back to one
	// call per key.
	refreshEachMax = 16
	// batchRetry: after ledgerd answered that it has no batch lookup (an edge upgraded before
	// ledgerd), keys are refreshed one call each for this long, then the batch is tried again.
	batchRetry = time.Minute
	// refreshFailurePause is how many lingers the refresher waits after a failed round, so
	// that a failing ledgerd is asked, and the failure logged, about twice a second rather
	// than twenty times. Keys that come due meanwhile wait in the queue.
	refreshFailurePause = 10
	// keepWarm is how long after its last hit a key is still refreshed when due without a
	// hit; as long as a known key's record stays cached (retention).
	keepWarm = retention
	// touchEvery: a hit records its time on the record only when the last record is older,
	// so that busy keys' hits do not all write the same cache line.
	touchEvery = int64(time.Second)
)

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
	loaded     int64        // Unix ns when ledgerd answered
	refreshing atomic.Bool  // queued for, or in, a background refresh
	lastHit    atomic.Int64 // Unix ns of a recent hit (within touchEvery of the last one)
}

// touch records a hit at now.
func (e *entry) touch(now int64) {
	if now-e.lastHit.Load() > touchEvery {
		e.lastHit.Store(now)
	}
}

// Authenticator authenticates keys. It is safe for concurrent use.
type Authenticator struct {
	cfg       Config
	src       KeySource
	batch     KeyBatchSource // src, when it has the batch lookup; else nil
	log       *slog.Logger
	cache     *ristretto.Cache[uint64, *entry]
	flight    flight.Group[[sha256.Size]byte, *entry]
	refreshAt int64 // ns of age after which a hit queues a background refresh

	pending  chan *entry   // keys due for a refresh, each marked refreshing; refreshQueueMax
	loaded   chan *entry   // active records a request loaded, for warm; refreshQueueMax
	linger   time.Duration // refreshLinger, or less for a short TTL
	keepWarm time.Duration // keepWarm; shorter in tests
	// batchAfter is when the refresher may try the batch lookup again after ledgerd did not
	// have it. Only the refresher goroutine uses it.
	batchAfter time.Time
	ctx        context.Context // every ledgerd call's parent; cancelled by Close
	stop       context.CancelFunc
	done       chan struct{} // closed when the refresher has returned
	closeOnce  sync.Once
}

// New builds an Authenticator over src and starts its refresher; Close stops it.
func New(cfg Config, src KeySource, log *slog.Logger) (*Authenticator, error) {
	return newAuthenticator(cfg, src, log, min(refreshLinger, cfg.TTL/16), keepWarm)
}

func newAuthenticator(cfg Config, src KeySource, log *slog.Logger, linger, warm time.Duration) (*Authenticator, error) {
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
	a := &Authenticator{cfg: cfg, src: src, log: log, cache: cache, refreshAt: int64(cfg.TTL) * 3 / 4,
		pending: make(chan *entry, refreshQueueMax), loaded: make(chan *entry, refreshQueueMax),
		linger: linger, keepWarm: warm, done: make(chan struct{})}
	a.batch, _ = src.(KeyBatchSource)
	a.ctx, a.stop = context.WithCancel(context.Background())
	go a.refresher()
	return a, nil
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
				a.queueRefresh(e)
			}
			e.touch(now)
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
	e.touch(now)
	return e.result()
}

func (e *entry) result() (*Principal, error) {
	if err := statusErr[e.status]; err != nil {
		return nil, err
	}
	return &e.principal, nil
}

// queueRefresh hands e, just marked refreshing, to the refresher without waiting: when the
// queue is full it clears the mark instead, so a later hit tries again.
func (a *Authenticator) queueRefresh(e *entry) {
	select {
	case a.pending <- e:
	default:
		e.refreshing.Store(false)
	}
}

// refresher is the one goroutine that refreshes keys in the background. It sleeps until a
// key is queued, or a warm key comes due (checked every TTL/8), gathers for a.linger so the
// keys coming due together make one round, and reloads the round (refresh). Rounds run one at
// a time, so ledgerd sees at most one refresh call of this node at a time — a round of the
// fallback excepted (refreshEach).
//
// warm holds the active records loaded from ledgerd (on a request's miss, or by a refresh), by
// key, until they have not been hit for a.keepWarm; only this goroutine uses it. It is bounded
// by the cache's size. A record a refresh replaced is swapped for the current one when warm
// is next checked (dueWarm).
func (a *Authenticator) refresher() {
	defer close(a.done)
	round := make([]*entry, 0, refreshQueueMax)
	warm := make(map[[sha256.Size]byte]*entry)
	tick := time.NewTicker(max(a.cfg.TTL/8, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case e := <-a.pending:
			round = append(round, e)
		case e := <-a.loaded:
			if _, in := warm[e.digest]; in || len(warm) < a.cfg.CacheMax {
				warm[e.digest] = e
			}
			continue
		case <-tick.C:
			if round = a.dueWarm(warm, round); len(round) == 0 {
				continue
			}
		}
		var ok bool
		if round, ok = gather.Round(a.ctx, a.pending, round, a.linger, refreshQueueMax); !ok {
			return
		}
		ok = a.refresh(round)
		clear(round) // no references to replaced records
		round = round[:0]
		if !ok {
			select {
			case <-a.ctx.Done():
				return
			case <-time.After(refreshFailurePause * a.linger):
			}
		}
	}
}

// current returns the cached record of e's key, if the cache still has one.
func (a *Authenticator) current(e *entry) (*entry, bool) {
	cur, ok := a.cache.Get(cacheKey(&e.digest))
	return cur, ok && cur.digest == e.digest
}

// dueWarm appends to round the warm keys whose current record is past the refresh age, each
// marked refreshing, and drops from warm the keys not hit within a.keepWarm, no longer
// active, or no longer cached.
func (a *Authenticator) dueWarm(warm map[[sha256.Size]byte]*entry, round []*entry) []*entry {
	now := a.cfg.Now().UnixNano()
	for d, e := range warm {
		if len(round) == refreshQueueMax {
			break
		}
		if now-e.loaded <= a.refreshAt && now-e.lastHit.Load() <= int64(a.keepWarm) {
			continue // not due, and in use
		}
		cur, ok := a.current(e) // a request may have reloaded it since, and hit the new record
		if !ok || cur.status != statusActive || now-cur.lastHit.Load() > int64(a.keepWarm) {
			delete(warm, d)
			continue
		}
		warm[d] = cur
		if now-cur.loaded > a.refreshAt && cur.refreshing.CompareAndSwap(false, true) {
			round = append(round, cur)
		}
	}
	return round
}

// refresh reloads the keys of round: in calls of ledgerapi.KeyLookupHashesMax keys through
// the batch lookup, else one call per key. A key ledgerd no longer knows becomes unknown.
// When a call fails, the keys it did not reload keep their records, which are trusted until
// their TTL as before, and the round logs once. Every mark is cleared at the end: a reloaded
// key's record has been replaced (or the cache dropped the new one, and a later hit should
// try again), and any other key is queued again by its next hit. It reports whether every
// key was reloaded.
func (a *Authenticator) refresh(round []*entry) bool {
	// Two records of one key may be due (a reload replaced the first while it waited): the
	// key is asked for once, and its last record hands over the rate limiter.
	prev := make(map[string]*entry, len(round))
	hashes := make([]string, 0, len(round))
	for _, e := range round {
		h := hex.EncodeToString(e.digest[:])
		if prev[h] == nil {
			hashes = append(hashes, h)
		}
		prev[h] = e
	}
	done, err := 0, error(nil)
	if a.batch != nil && !time.Now().Before(a.batchAfter) {
		done, err = a.refreshBatches(hashes, prev)
		if errors.Is(err, ledger.ErrUnsupported) {
			a.batchAfter = time.Now().Add(batchRetry)
			a.log.Info("key_batch_lookup_unsupported", "retry_in", batchRetry)
			err = nil
		}
	}
	failed := len(hashes) - done
	if err == nil && done < len(hashes) {
		failed, err = a.refreshEach(hashes[done:], prev)
	}
	if err != nil && a.ctx.Err() == nil {
		a.log.Warn("key_refresh_failed", "keys_failed", failed, "keys_due", len(hashes), "error", err)
	}
	for _, e := range round {
		e.refreshing.Store(false)
	}
	return err == nil
}

// refreshBatches reloads hashes with the batch lookup and returns how many it reloaded before
// the first failure.
func (a *Authenticator) refreshBatches(hashes []string, prev map[string]*entry) (int, error) {
	for start := 0; start < len(hashes); start += ledgerapi.KeyLookupHashesMax {
		part := hashes[start:min(start+ledgerapi.KeyLookupHashesMax, len(hashes))]
		ctx, cancel := context.WithTimeout(a.ctx, a.cfg.Timeout)
		keys, err := a.batch.LookupKeys(ctx, part)
		cancel()
		if err != nil {
			return start, err
		}
		for _, h := range part {
			k, ok := keys[h]
			a.put(prev[h].digest, k, ok, prev[h])
		}
		a.cache.Wait()
	}
	return len(hashes), nil
}

// refreshEach reloads hashes one LookupKey each, refreshEachMax at a time: the refresh of a
// ledgerd without the batch lookup. It returns how many failed and the first error.
func (a *Authenticator) refreshEach(hashes []string, prev map[string]*entry) (int, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed int
	var first error
	slots := make(chan struct{}, refreshEachMax)
	for _, h := range hashes {
		if a.ctx.Err() != nil {
			break
		}
		slots <- struct{}{}
		e := prev[h]
		wg.Go(func() {
			defer func() { <-slots }()
			if _, err := a.load(e.digest, e); err != nil {
				mu.Lock()
				failed++
				first = cmp.Or(first, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return failed, first
}

// load asks ledgerd for the key, shared with concurrent callers for the same key, and caches
// the answer. prev (may be nil) is the record being replaced; its rate limiter carries over.
func (a *Authenticator) load(sum [sha256.Size]byte, prev *entry) (*entry, error) {
	e, err, _ := a.flight.Do(sum, func() (*entry, error) {
		ctx, cancel := context.WithTimeout(a.ctx, a.cfg.Timeout)
		defer cancel()
		k, err := a.src.LookupKey(ctx, hex.EncodeToString(sum[:]))
		found := err == nil
		if err != nil && !errors.Is(err, ledger.ErrNotFound) {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		e := a.put(sum, k, found, prev)
		a.cache.Wait() // visible before the shared call ends, so no second miss follows it
		if e.status == statusActive {
			select { // warm from its first load, never waiting: a full queue skips it
			case a.loaded <- e:
			default:
			}
		}
		return e, nil
	})
	return e, err
}

// put caches ledgerd's answer for sum: k when found, else an unknown key (for NegativeTTL).
// prev (may be nil) is the record being replaced; its rate limiter carries over. The record
// is visible to Get after a.cache.Wait.
func (a *Authenticator) put(sum [sha256.Size]byte, k ledgerapi.Key, found bool, prev *entry) *entry {
	now := a.cfg.Now().UnixNano()
	if !found {
		e := &entry{digest: sum, status: statusUnknown, loaded: now}
		a.cache.SetWithTTL(cacheKey(&sum), e, 1, a.cfg.NegativeTTL)
		return e
	}
	e := newEntry(k, prev, now)
	e.digest = sum
	if prev != nil {
		e.lastHit.Store(prev.lastHit.Load()) // in use as long as the record it replaces
	} else {
		e.lastHit.Store(now) // a request is using it
	}
	a.cache.SetWithTTL(cacheKey(&sum), e, 1, retention)
	return e
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

// Close stops the refresher — a refresh in flight is cancelled, queued keys are dropped —
// waits for it to return, and frees the cache. Idempotent.
func (a *Authenticator) Close() {
	a.closeOnce.Do(func() {
		a.stop()
		<-a.done
		a.cache.Close()
	})
}
