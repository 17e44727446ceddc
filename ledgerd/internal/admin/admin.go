// Package admin serves the operator's admin API (DESIGN §5 "Admin API contract"): accounts,
// keys, top-ups, refunds, suspension and statements, behind a bearer admin token. It is not
// on the request hot path, so it is plain net/http.
package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"tollgate/ledgerd/internal/jsonapi"
	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/plan"
	"tollgate/ledgerd/internal/store"
)

// Limits on request fields.
const (
	NameBytesMax     = 200
	IDBytesMax       = 128 // order_id, refund_id
	StatementDefault = 1000
	StatementMax     = 10000
)

// KeyPrefix starts every API key secret.
const KeyPrefix = "sk-tg-"

// Config of the admin API.
type Config struct {
	Store  store.Store
	Plans  *plan.Catalog
	Token  string // bearer admin token; required
	Logger *slog.Logger
	Now    func() time.Time // default time.Now
}

// New returns the admin API handler, serving /admin/v1/….
func New(cfg Config) http.Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &api{Config: cfg}
	mux := http.NewServeMux()
	route := func(method, pattern string, fn func(w http.ResponseWriter, r *http.Request) error) {
		mux.Handle(method+" "+pattern, jsonapi.Handler(cfg.Logger, fn))
	}
	route("POST", "/admin/v1/accounts", a.createAccount)
	route("GET", "/admin/v1/accounts/{id}", a.getAccount)
	route("POST", "/admin/v1/accounts/{id}/keys", a.issueKey)
	route("GET", "/admin/v1/accounts/{id}/keys", a.listKeys)
	route("DELETE", "/admin/v1/keys/{key_id}", a.revokeKey)
	route("POST", "/admin/v1/accounts/{id}/topups", a.topUp)
	route("POST", "/admin/v1/accounts/{id}/refunds", a.refund)
	route("POST", "/admin/v1/accounts/{id}/suspend", a.setStatus(store.StatusSuspended))
	route("POST", "/admin/v1/accounts/{id}/resume", a.setStatus(store.StatusActive))
	route("GET", "/admin/v1/accounts/{id}/statement", a.statement)
	route("GET", "/admin/v1/ledger", a.ledgerAccounts)
	route("GET", "/admin/v1/audit", a.audit)
	for _, p := range []string{"/admin/v1/accounts", "/admin/v1/accounts/{id}", "/admin/v1/accounts/{id}/keys",
		"/admin/v1/keys/{key_id}", "/admin/v1/accounts/{id}/topups", "/admin/v1/accounts/{id}/refunds",
		"/admin/v1/accounts/{id}/suspend", "/admin/v1/accounts/{id}/resume", "/admin/v1/accounts/{id}/statement",
		"/admin/v1/ledger", "/admin/v1/audit"} {
		mux.Handle(p, jsonapi.MethodNotAllowed(cfg.Logger))
	}
	mux.Handle("/", jsonapi.NotFound(cfg.Logger))
	return jsonapi.Bearer(cfg.Token, cfg.Logger, mux)
}

type api struct {
	Config
}

func invalid(format string, args ...any) error {
	return jsonapi.Errorf(http.StatusBadRequest, jsonapi.TypeInvalidRequest, format, args...)
}

// storeError maps the store's expected conditions to API errors; anything else is internal.
func storeError(err error, what string) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return jsonapi.Errorf(http.StatusNotFound, jsonapi.TypeNotFound, "%s not found", what)
	case errors.Is(err, store.ErrConflict):
		return jsonapi.Errorf(http.StatusConflict, jsonapi.TypeConflict, "%s", err)
	}
	return err
}

// checkText validates a free-text or id field.
func checkText(field, v string, required bool, maxBytes int) error {
	if required && v == "" {
		return invalid("%s: required", field)
	}
	if !jsonapi.ValidText(v, maxBytes) {
		return invalid("%s: want at most %d bytes of text without control characters", field, maxBytes)
	}
	return nil
}

type accountJSON struct {
	ID                    string `json:"id"`
	Name                  string `json:"name"`
	Status                string `json:"status"`
	BalanceMicrocredits   int64  `json:"balance_microcredits"`
	AvailableMicrocredits int64  `json:"available_microcredits"`
	ReservedMicrocredits  int64  `json:"reserved_microcredits"`
}

func toAccountJSON(a store.Account) accountJSON {
	return accountJSON{ID: a.ID, Name: a.Name, Status: a.Status, BalanceMicrocredits: a.Balance,
		AvailableMicrocredits: a.Available(), ReservedMicrocredits: a.Reserved}
}

func (a *api) createAccount(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name string `json:"name"`
	}
	if err := jsonapi.Decode(w, r, &req); err != nil {
		return err
	}
	if err := checkText("name", req.Name, true, NameBytesMax); err != nil {
		return err
	}
	acct, err := a.Store.CreateAccount(r.Context(), req.Name)
	if err != nil {
		return err
	}
	a.Logger.Info("account_created", "account_id", acct.ID)
	jsonapi.WriteJSON(w, http.StatusCreated, map[string]string{"id": acct.ID})
	return nil
}

func (a *api) getAccount(w http.ResponseWriter, r *http.Request) error {
	acct, err := a.Store.Account(r.Context(), r.PathValue("id"))
	if err != nil {
		return storeError(err, "account")
	}
	jsonapi.WriteJSON(w, http.StatusOK, toAccountJSON(acct))
	return nil
}

func (a *api) setStatus(status string) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		acct, err := a.Store.SetAccountStatus(r.Context(), r.PathValue("id"), status)
		if err != nil {
			return storeError(err, "account")
		}
		a.Logger.Info("account_status_set", "account_id", acct.ID, "status", status)
		jsonapi.WriteJSON(w, http.StatusOK, toAccountJSON(acct))
		return nil
	}
}

// NewSecret generates an API key secret: KeyPrefix and 32 random bytes in unpadded base64url.
// It returns the secret, the SHA-256 hex that is stored, and the display prefix.
func NewSecret() (secret, hash, prefix string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", "", fmt.Errorf("generate key: %w", err)
	}
	secret = KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(secret))
	return secret, hex.EncodeToString(sum[:]), secret[:len(KeyPrefix)+6], nil
}

func (a *api) issueKey(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name string `json:"name"`
	}
	if err := jsonapi.Decode(w, r, &req); err != nil {
		return err
	}
	if err := checkText("name", req.Name, false, NameBytesMax); err != nil {
		return err
	}
	secret, hash, prefix, err := NewSecret()
	if err != nil {
		return err
	}
	k, err := a.Store.InsertKey(r.Context(), store.NewKey{AccountID: r.PathValue("id"), Name: req.Name, Hash: hash, Prefix: prefix})
	if err != nil {
		return storeError(err, "account")
	}
	// The secret is in this response only; it is never logged or stored.
	a.Logger.Info("key_issued", "account_id", k.AccountID, "key_id", k.ID)
	jsonapi.WriteJSON(w, http.StatusCreated, map[string]string{"id": k.ID, "key": secret})
	return nil
}

type keyJSON struct {
	ID        string  `json:"id"`
	Name      string  `json:"name"`
	Prefix    string  `json:"prefix"`
	CreatedAt string  `json:"created_at"`
	RevokedAt *string `json:"revoked_at"`
}

func (a *api) listKeys(w http.ResponseWriter, r *http.Request) error {
	keys, err := a.Store.Keys(r.Context(), r.PathValue("id"))
	if err != nil {
		return storeError(err, "account")
	}
	out := struct {
		Keys []keyJSON `json:"keys"`
	}{Keys: make([]keyJSON, 0, len(keys))}
	for _, k := range keys {
		kj := keyJSON{ID: k.ID, Name: k.Name, Prefix: k.Prefix, CreatedAt: formatTime(k.CreatedAt)}
		if !k.RevokedAt.IsZero() {
			s := formatTime(k.RevokedAt)
			kj.RevokedAt = &s
		}
		out.Keys = append(out.Keys, kj)
	}
	jsonapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (a *api) revokeKey(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("key_id")
	if err := a.Store.RevokeKey(r.Context(), id); err != nil {
		return storeError(err, "key")
	}
	a.Logger.Info("key_revoked", "key_id", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type topUpJSON struct {
	ID                  string `json:"id"`
	OrderID             string `json:"order_id"`
	Credits             int64  `json:"credits"`
	AmountUSD           string `json:"amount_usd"`
	BalanceMicrocredits int64  `json:"balance_microcredits"`
}

func (a *api) topUp(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		OrderID   string  `json:"order_id"`
		Plan      *string `json:"plan"`
		Credits   *int64  `json:"credits"`
		AmountUSD *string `json:"amount_usd"`
	}
	if err := jsonapi.Decode(w, r, &req); err != nil {
		return err
	}
	if err := checkText("order_id", req.OrderID, true, IDBytesMax); err != nil {
		return err
	}
	t := store.TopUp{AccountID: r.PathValue("id"), OrderID: req.OrderID, Method: "admin"}
	switch {
	case req.Plan != nil && (req.Credits != nil || req.AmountUSD != nil):
		return invalid("give either plan, or credits and amount_usd, not both")
	case req.Plan != nil:
		p, ok := a.Plans.Lookup(*req.Plan)
		if !ok {
			return invalid("plan: unknown plan %q", *req.Plan)
		}
		t.Plan, t.Credits, t.MicroUSD = p.ID, p.Credits, p.MicroUSD
	case req.Credits != nil && req.AmountUSD != nil:
		if *req.Credits <= 0 || *req.Credits > plan.MaxCredits {
			return invalid("credits: want a whole number of credits in 1..%d", plan.MaxCredits)
		}
		usd, err := ledger.ParseUSD(*req.AmountUSD)
		if err != nil {
			return invalid("amount_usd: %v", err)
		}
		t.Credits, t.MicroUSD = *req.Credits, usd
	default:
		return invalid("give plan, or credits and amount_usd")
	}
	res, replayed, err := a.Store.TopUp(r.Context(), t)
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			return jsonapi.Errorf(http.StatusConflict, jsonapi.TypeConflict, "order_id %q was already used with a different request", req.OrderID)
		}
		return storeError(err, "account")
	}
	status := http.StatusCreated
	if replayed {
		status = http.StatusOK
	} else {
		a.Logger.Info("topup_applied", "account_id", t.AccountID, "order_id", t.OrderID, "credits", t.Credits, "microusd", t.MicroUSD)
	}
	jsonapi.WriteJSON(w, status, topUpJSON{ID: res.ID, OrderID: res.OrderID, Credits: res.Credits,
		AmountUSD: ledger.FormatUSD(res.MicroUSD), BalanceMicrocredits: res.BalanceAfter})
	return nil
}

type refundJSON struct {
	ID                   string `json:"id"`
	RefundID             string `json:"refund_id"`
	RefundedMicrocredits int64  `json:"refunded_microcredits"`
	AmountUSD            string `json:"amount_usd"`
	BalanceMicrocredits  int64  `json:"balance_microcredits"`
}

func (a *api) refund(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		RefundID  string `json:"refund_id"`
		Credits   *int64 `json:"credits"`
		AllUnused bool   `json:"all_unused"`
		Reason    string `json:"reason"`
	}
	if err := jsonapi.Decode(w, r, &req); err != nil {
		return err
	}
	if err := checkText("refund_id", req.RefundID, true, IDBytesMax); err != nil {
		return err
	}
	if err := checkText("reason", req.Reason, false, NameBytesMax); err != nil {
		return err
	}
	rf := store.Refund{AccountID: r.PathValue("id"), RefundID: req.RefundID, Reason: req.Reason, AllUnused: req.AllUnused}
	switch {
	case req.Credits != nil && req.AllUnused:
		return invalid("give either credits or all_unused, not both")
	case req.Credits != nil:
		if *req.Credits <= 0 || *req.Credits > plan.MaxCredits {
			return invalid("credits: want a whole number of credits in 1..%d", plan.MaxCredits)
		}
		rf.Microcredits = *req.Credits * ledger.MicrocreditsPerCredit
	case !req.AllUnused:
		return invalid("give credits or all_unused")
	}
	res, replayed, err := a.Store.Refund(r.Context(), rf)
	if err != nil {
		switch {
		case errors.Is(err, store.ErrInsufficient):
			acct, aerr := a.Store.Account(r.Context(), rf.AccountID)
			if aerr != nil {
				return storeError(aerr, "account")
			}
			return jsonapi.Errorf(http.StatusConflict, jsonapi.TypeConflict,
				"refund exceeds the unused credit available (%s credits; used and reserved credit is not refundable)",
				ledger.FormatCredits(max(acct.Available(), 0)))
		case errors.Is(err, store.ErrConflict):
			return jsonapi.Errorf(http.StatusConflict, jsonapi.TypeConflict, "refund_id %q was already used with a different request", req.RefundID)
		}
		return storeError(err, "account")
	}
	status := http.StatusCreated
	if replayed {
		status = http.StatusOK
	} else {
		a.Logger.Info("refund_applied", "account_id", rf.AccountID, "refund_id", rf.RefundID, "microcredits", res.Microcredits, "microusd", res.MicroUSD)
	}
	jsonapi.WriteJSON(w, status, refundJSON{ID: res.ID, RefundID: res.RefundID, RefundedMicrocredits: res.Microcredits,
		AmountUSD: ledger.FormatUSD(res.MicroUSD), BalanceMicrocredits: res.BalanceAfter})
	return nil
}

type entryJSON struct {
	ID                  string `json:"id"`
	TS                  string `json:"ts"`
	Kind                string `json:"kind"`
	AmountMicrocredits  int64  `json:"amount_microcredits"`
	BalanceMicrocredits int64  `json:"balance_microcredits"`
	Ref                 string `json:"ref"`
}

func (a *api) statement(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	from, to := time.Unix(0, 0).UTC(), a.Now().Add(time.Second)
	var err error
	if v := q.Get("from"); v != "" {
		if from, err = time.Parse(time.RFC3339, v); err != nil {
			return invalid("from: want RFC 3339, e.g. 2026-11-01T00:00:00Z")
		}
	}
	if v := q.Get("to"); v != "" {
		if to, err = time.Parse(time.RFC3339, v); err != nil {
			return invalid("to: want RFC 3339, e.g. 2026-12-01T00:00:00Z")
		}
	}
	if !from.Before(to) {
		return invalid("from must be before to")
	}
	limit := StatementDefault
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > StatementMax {
			return invalid("limit: want 1..%d", StatementMax)
		}
	}
	entries, more, err := a.Store.Statement(r.Context(), r.PathValue("id"), from, to, limit)
	if err != nil {
		return storeError(err, "account")
	}
	out := struct {
		Entries   []entryJSON `json:"entries"`
		Truncated bool        `json:"truncated,omitempty"`
	}{Entries: make([]entryJSON, 0, len(entries)), Truncated: more}
	for _, e := range entries {
		out.Entries = append(out.Entries, entryJSON{ID: e.ID, TS: formatTime(e.Time), Kind: e.Kind,
			AmountMicrocredits: e.Amount, BalanceMicrocredits: e.Balance, Ref: e.Ref})
	}
	jsonapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (a *api) ledgerAccounts(w http.ResponseWriter, r *http.Request) error {
	la, err := a.Store.LedgerAccounts(r.Context())
	if err != nil {
		return err
	}
	cr, usd := map[string]int64{}, map[string]string{}
	for code, t := range la {
		cr[code], usd[code] = t.Microcredits, ledger.FormatUSD(t.MicroUSD)
	}
	jsonapi.WriteJSON(w, http.StatusOK, map[string]any{"accounts_microcredits": cr, "accounts_usd": usd})
	return nil
}

func (a *api) audit(w http.ResponseWriter, r *http.Request) error {
	if err := a.Store.Check(r.Context()); err != nil {
		if errors.Is(err, ledger.ErrInvariant) {
			a.Logger.Error("audit_failed", "error", err)
			return jsonapi.Errorf(http.StatusInternalServerError, "invariant_error", "%v", err)
		}
		return err
	}
	jsonapi.WriteJSON(w, http.StatusOK, map[string]bool{"ok": true})
	return nil
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
