// Package edgeapi serves the edge-facing internal API (pkg/ledgerapi): key lookup by hash
// (one key, or a batch), account balance, and credit leases (extends one at a time, or a
// batch). Every call needs the shared secret as a bearer token.
package edgeapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tollgate/ledgerd/internal/jsonapi"
	"tollgate/ledgerd/internal/store"
	"tollgate/pkg/ledgerapi"
)

// Limits on lease requests.
const (
	// LeaseMicrocreditsMax bounds want/min/spent in one call: 10⁶ credits ($5,000).
	LeaseMicrocreditsMax = 1_000_000_000_000
	EdgeIDBytesMax       = 128
	// LeaseIDBytesMax bounds a lease id in a batch extend; ledgerd's own are 38 bytes.
	LeaseIDBytesMax = 128
)

// Config of the internal API.
type Config struct {
	Store  store.Store
	Secret string // shared secret; required
	// LeaseTTL is how long a lease lives without an extend. Default: 60s.
	LeaseTTL time.Duration
	Logger   *slog.Logger
	// Registerer receives the lease metrics. Default: none registered.
	Registerer prometheus.Registerer
}

type api struct {
	Config
	grants *prometheus.CounterVec
	items  *prometheus.CounterVec // batch extend items by result
}

// New returns the handler for /internal/v1/….
func New(cfg Config) http.Handler {
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 60 * time.Second
	}
	a := &api{Config: cfg, grants: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ledgerd_lease_calls_total",
		Help: "Lease calls from edges by call and result (ok, insufficient, refused).",
	}, []string{"call", "result"}), items: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ledgerd_lease_batch_extends_total",
		Help: "Extends that came in batch extend calls (call=extend_batch), by result (ok, insufficient, refused).",
	}, []string{"result"})}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(a.grants, a.items)
	}
	mux := http.NewServeMux()
	route := func(pattern string, fn func(w http.ResponseWriter, r *http.Request) error) {
		mux.Handle(pattern, jsonapi.Handler(cfg.Logger, fn))
	}
	route("GET /internal/v1/keys/{hash}", a.key)
	// Other methods on /keys/lookup reach the routes of /keys/{hash}: GET is the lookup of a
	// key that cannot exist (404), the rest 405. A ledgerd from before the batch lookup
	// answers its POST with that 405, which is how an edge knows to look keys up one by one.
	route("POST /internal/v1/keys/lookup", a.keys)
	route("GET /internal/v1/accounts/{id}/balance", a.balance)
	route("POST /internal/v1/leases", a.grant)
	// A ledgerd from before the batch extend has no route for /leases/extend and answers 404,
	// which is how an edge knows to extend its leases one by one.
	route("POST /internal/v1/leases/extend", a.extendBatch)
	route("POST /internal/v1/leases/{lease_id}/extend", a.extend)
	route("POST /internal/v1/leases/{lease_id}/release", a.release)
	route("GET /internal/v1/edges/{edge_id}/recalls", a.recalls)
	for _, p := range []string{"/internal/v1/keys/{hash}", "/internal/v1/accounts/{id}/balance", "/internal/v1/leases",
		"/internal/v1/leases/extend", "/internal/v1/leases/{lease_id}/extend", "/internal/v1/leases/{lease_id}/release", "/internal/v1/edges/{edge_id}/recalls"} {
		mux.Handle(p, jsonapi.MethodNotAllowed(cfg.Logger))
	}
	mux.Handle("/", jsonapi.NotFound(cfg.Logger))
	return jsonapi.Bearer(cfg.Secret, cfg.Logger, mux)
}

func invalid(format string, args ...any) error {
	return jsonapi.Errorf(http.StatusBadRequest, jsonapi.TypeInvalidRequest, format, args...)
}

func isLowerHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (a *api) key(w http.ResponseWriter, r *http.Request) error {
	hash := r.PathValue("hash")
	if !isLowerHex64(hash) {
		// Not a SHA-256: it cannot name a key. Same answer as an unknown key.
		return jsonapi.Errorf(http.StatusNotFound, jsonapi.TypeNotFound, "unknown key")
	}
	k, err := a.Store.KeyByHash(r.Context(), hash)
	if errors.Is(err, store.ErrNotFound) {
		return jsonapi.Errorf(http.StatusNotFound, jsonapi.TypeNotFound, "unknown key")
	}
	if err != nil {
		return err
	}
	jsonapi.WriteJSON(w, http.StatusOK, apiKey(k))
	return nil
}

// keys answers a batch lookup (ledgerapi.KeyLookup): the edges refresh the keys in use with
// it, one call per batch. Unlike the single lookup, where a malformed hash is just an unknown
// key, a malformed hash here refuses the whole request: only a broken client sends one.
func (a *api) keys(w http.ResponseWriter, r *http.Request) error {
	var req ledgerapi.KeyLookup
	if err := jsonapi.Decode(w, r, &req); err != nil {
		return err
	}
	if len(req.Hashes) == 0 || len(req.Hashes) > ledgerapi.KeyLookupHashesMax {
		return invalid("hashes: want 1..%d, got %d", ledgerapi.KeyLookupHashesMax, len(req.Hashes))
	}
	for i, h := range req.Hashes {
		if !isLowerHex64(h) {
			return invalid("hashes[%d]: want a SHA-256 as 64 lower-case hex digits", i)
		}
	}
	keys, err := a.Store.KeysByHash(r.Context(), req.Hashes)
	if err != nil {
		return err
	}
	res := ledgerapi.KeyLookupResult{Keys: make(map[string]ledgerapi.Key, len(keys))}
	for h, k := range keys {
		res.Keys[h] = apiKey(k)
	}
	jsonapi.WriteJSON(w, http.StatusOK, res)
	return nil
}

func apiKey(k store.Key) ledgerapi.Key {
	return ledgerapi.Key{KeyID: k.ID, AccountID: k.AccountID, Revoked: !k.RevokedAt.IsZero(),
		AccountStatus: k.AccountStatus, RateLimitRPM: k.RateLimitRPM}
}

func (a *api) balance(w http.ResponseWriter, r *http.Request) error {
	acct, err := a.Store.Account(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return jsonapi.Errorf(http.StatusNotFound, jsonapi.TypeNotFound, "account not found")
	}
	if err != nil {
		return err
	}
	jsonapi.WriteJSON(w, http.StatusOK, ledgerapi.Balance{AccountID: acct.ID, BalanceMicrocredits: acct.Balance,
		AvailableMicrocredits: acct.Available()})
	return nil
}

func checkAmount(field string, v int64) error {
	if v < 0 || v > LeaseMicrocreditsMax {
		return invalid("%s: want 0..%d", field, int64(LeaseMicrocreditsMax))
	}
	return nil
}

// refusal maps the store's refusals of a lease call to the API's error and the metric's
// result; ok is false for any other error, which is not the caller's to see.
func refusal(l store.Lease, err error) (e *jsonapi.Error, result string, ok bool) {
	switch {
	case errors.Is(err, store.ErrInsufficient):
		avail := l.AccountAvailable
		e := jsonapi.Errorf(http.StatusPaymentRequired, jsonapi.TypeBilling, "available credit cannot cover the minimum asked")
		e.Available, e.Recallable = &avail, l.Recallable
		return e, "insufficient", true
	case errors.Is(err, store.ErrNotFound):
		return jsonapi.Errorf(http.StatusNotFound, jsonapi.TypeNotFound, "%s", "account or lease not found"), "refused", true
	case errors.Is(err, store.ErrSuspended):
		return jsonapi.Errorf(http.StatusForbidden, jsonapi.TypePermission, "account suspended"), "refused", true
	case errors.Is(err, store.ErrLeaseClosed):
		return jsonapi.Errorf(http.StatusConflict, jsonapi.TypeConflict, "lease closed: released or reclaimed; ask for a new one"), "refused", true
	}
	return nil, "", false
}

// leaseError maps the store's refusals and counts them under call.
func (a *api) leaseError(call string, l store.Lease, err error) error {
	e, result, ok := refusal(l, err)
	if !ok {
		return err
	}
	a.grants.WithLabelValues(call, result).Inc()
	return e
}

// apiLease is a lease call's answer. ttl is the lifetime the call gave the lease (0 for a
// release): the store set its expiry to the store's now plus ttl, so a node that counts ttl
// from when it sent the call stops using the lease before ledgerd considers it expired.
func apiLease(l store.Lease, ttl time.Duration) ledgerapi.Lease {
	return ledgerapi.Lease{LeaseID: l.ID, AccountID: l.AccountID, GrantedMicrocredits: l.Granted,
		ExpiresAt: l.ExpiresAt, TTLMillis: ttl.Milliseconds(), AvailableMicrocredits: l.AccountAvailable}
}

// writeLease answers a lease call (see apiLease).
func (a *api) writeLease(w http.ResponseWriter, call string, l store.Lease, ttl time.Duration) {
	a.grants.WithLabelValues(call, "ok").Inc()
	jsonapi.WriteJSON(w, http.StatusOK, apiLease(l, ttl))
}

// recallsMax bounds one recalls answer; a node with more gets the rest on its next poll.
const recallsMax = 1000

func (a *api) recalls(w http.ResponseWriter, r *http.Request) error {
	edge := r.PathValue("edge_id")
	if edge == "" || !jsonapi.ValidText(edge, EdgeIDBytesMax) {
		return invalid("edge_id: want 1..%d bytes of text", EdgeIDBytesMax)
	}
	ids, err := a.Store.RecalledLeases(r.Context(), edge, recallsMax)
	if err != nil {
		return err
	}
	jsonapi.WriteJSON(w, http.StatusOK, ledgerapi.Recalls{LeaseIDs: ids})
	return nil
}

func (a *api) grant(w http.ResponseWriter, r *http.Request) error {
	var req ledgerapi.Grant
	if err := jsonapi.Decode(w, r, &req); err != nil {
		return err
	}
	if req.AccountID == "" || !jsonapi.ValidText(req.AccountID, EdgeIDBytesMax) {
		return invalid("account_id: want 1..%d bytes of text", EdgeIDBytesMax)
	}
	if req.EdgeID == "" || !jsonapi.ValidText(req.EdgeID, EdgeIDBytesMax) {
		return invalid("edge_id: want 1..%d bytes of text", EdgeIDBytesMax)
	}
	if err := errors.Join(checkAmount("want_microcredits", req.WantMicrocredits), checkAmount("min_microcredits", req.MinMicrocredits)); err != nil {
		return invalid("%v", err)
	}
	if req.MinMicrocredits < 1 || req.WantMicrocredits < req.MinMicrocredits {
		return invalid("want 1 ≤ min_microcredits ≤ want_microcredits")
	}
	l, err := a.Store.GrantLease(r.Context(), store.LeaseGrant{AccountID: req.AccountID, EdgeID: req.EdgeID,
		Want: req.WantMicrocredits, Min: req.MinMicrocredits, TTL: a.LeaseTTL})
	if err != nil {
		return a.leaseError("grant", l, err)
	}
	a.writeLease(w, "grant", l, a.LeaseTTL)
	return nil
}

// checkExtend validates an extend's amounts, the single extend's and every batch item's;
// prefix ("" or "extends[i]: ") starts the message.
func checkExtend(prefix string, e ledgerapi.Extend) error {
	var bad []string
	for _, f := range []struct {
		name string
		v    int64
	}{{"want_microcredits", e.WantMicrocredits}, {"min_microcredits", e.MinMicrocredits}, {"spent_microcredits", e.SpentMicrocredits}} {
		if checkAmount(f.name, f.v) != nil {
			bad = append(bad, fmt.Sprintf("%s: want 0..%d", f.name, int64(LeaseMicrocreditsMax)))
		}
	}
	if len(bad) > 0 {
		return invalid("%s%s", prefix, strings.Join(bad, "; "))
	}
	if e.WantMicrocredits < e.MinMicrocredits {
		return invalid("%swant min_microcredits ≤ want_microcredits", prefix)
	}
	return nil
}

func (a *api) extend(w http.ResponseWriter, r *http.Request) error {
	var req ledgerapi.Extend
	if err := jsonapi.Decode(w, r, &req); err != nil {
		return err
	}
	if err := checkExtend("", req); err != nil {
		return err
	}
	l, err := a.Store.ExtendLease(r.Context(), r.PathValue("lease_id"), req.WantMicrocredits, req.MinMicrocredits,
		req.SpentMicrocredits, a.LeaseTTL)
	if err != nil {
		return a.leaseError("extend", l, err)
	}
	a.writeLease(w, "extend", l, a.LeaseTTL)
	return nil
}

// extendBatch answers a batch extend (ledgerapi.ExtendBatch): the edges refresh their leases
// in the background with it, one call and one database commit per batch instead of one per
// lease. Every item is checked before any is applied, so a malformed one refuses the whole
// request with a 400 and nothing changes; the store then applies all of them in one
// transaction, and each item's refusal is its own result.
func (a *api) extendBatch(w http.ResponseWriter, r *http.Request) error {
	var req ledgerapi.ExtendBatch
	if err := jsonapi.Decode(w, r, &req); err != nil {
		return err
	}
	if len(req.Extends) == 0 || len(req.Extends) > ledgerapi.ExtendBatchMax {
		return invalid("extends: want 1..%d, got %d", ledgerapi.ExtendBatchMax, len(req.Extends))
	}
	items := make([]store.LeaseExtend, len(req.Extends))
	for i, x := range req.Extends {
		if x.LeaseID == "" || !jsonapi.ValidText(x.LeaseID, LeaseIDBytesMax) {
			return invalid("extends[%d].lease_id: want 1..%d bytes of text", i, LeaseIDBytesMax)
		}
		if err := checkExtend(fmt.Sprintf("extends[%d]: ", i), x.Extend); err != nil {
			return err
		}
		items[i] = store.LeaseExtend{LeaseID: x.LeaseID, Want: x.WantMicrocredits, Min: x.MinMicrocredits, Spent: x.SpentMicrocredits}
	}
	res, err := a.Store.ExtendLeases(r.Context(), items, a.LeaseTTL)
	if err != nil {
		return err
	}
	out := ledgerapi.ExtendBatchResult{Results: make([]ledgerapi.ExtendResult, len(res))}
	for i, x := range res {
		if x.Err == nil {
			l := apiLease(x.Lease, a.LeaseTTL)
			out.Results[i] = ledgerapi.ExtendResult{Status: http.StatusOK, Lease: &l}
			a.items.WithLabelValues("ok").Inc()
			continue
		}
		e, result, ok := refusal(x.Lease, x.Err)
		if !ok {
			return x.Err // the store answers only refusals per item; anything else is a bug
		}
		a.items.WithLabelValues(result).Inc()
		body := &ledgerapi.Error{RecallableMicrocredits: e.Recallable}
		body.Error.Type, body.Error.Message = e.Type, e.Message
		if e.Available != nil {
			body.AvailableMicrocredits = *e.Available
		}
		out.Results[i] = ledgerapi.ExtendResult{Status: e.Status, Error: body}
	}
	a.grants.WithLabelValues("extend_batch", "ok").Inc()
	jsonapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (a *api) release(w http.ResponseWriter, r *http.Request) error {
	var req ledgerapi.Release
	if err := jsonapi.Decode(w, r, &req); err != nil {
		return err
	}
	if err := checkAmount("spent_microcredits", req.SpentMicrocredits); err != nil {
		return err
	}
	l, err := a.Store.ReleaseLease(r.Context(), r.PathValue("lease_id"), req.SpentMicrocredits)
	if err != nil {
		return a.leaseError("release", l, err)
	}
	a.writeLease(w, "release", l, 0)
	return nil
}
