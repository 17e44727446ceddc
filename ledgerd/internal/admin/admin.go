// Package admin serves the operator's admin API (DESIGN §5 "Admin API contract"): accounts,
// keys, top-ups, refunds and reversals, suspension and chargebacks, lots, statements (JSON or
// CSV), the ledger accounts, the revenue report and the books audit, behind a bearer admin
// token. It is not on the request hot path, so it is plain net/http.
package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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
	route("POST", "/admin/v1/accounts/{id}/chargebacks", a.chargeback)
	route("POST", "/admin/v1/accounts/{id}/suspend", a.setStatus(store.StatusSuspended))
	route("POST", "/admin/v1/accounts/{id}/resume", a.setStatus(store.StatusActive))
	route("GET", "/admin/v1/accounts/{id}/lots", a.lots)
	route("GET", "/admin/v1/accounts/{id}/statement", a.statement)
	route("GET", "/admin/v1/ledger", a.ledgerAccounts)
	route("GET", "/admin/v1/reports/revenue", a.revenueReport)
	route("GET", "/admin/v1/audit", a.audit)
	for _, p := range []string{"/admin/v1/accounts", "/admin/v1/accounts/{id}", "/admin/v1/accounts/{id}/keys",
		"/admin/v1/keys/{key_id}", "/admin/v1/accounts/{id}/topups", "/admin/v1/accounts/{id}/refunds",
		"/admin/v1/accounts/{id}/chargebacks", "/admin/v1/accounts/{id}/suspend", "/admin/v1/accounts/{id}/resume",
		"/admin/v1/accounts/{id}/lots", "/admin/v1/accounts/{id}/statement", "/admin/v1/ledger", "/admin/v1/reports/revenue",
		"/admin/v1/audit"} {
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
	// DeferredUSD is what was paid for the unused credit: deferred revenue.
	DeferredUSD string `json:"deferred_usd"`
}

func toAccountJSON(a store.Account) accountJSON {
	return accountJSON{ID: a.ID, Name: a.Name, Status: a.Status, BalanceMicrocredits: a.Balance,
		AvailableMicrocredits: a.Available(), ReservedMicrocredits: a.Reserved, DeferredUSD: ledger.FormatUSD(a.DeferredMicroUSD)}
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

type methodJSON struct {
	PaymentMethod string `json:"payment_method"`
	AmountUSD     string `json:"amount_usd"`
}

type refundJSON struct {
	ID                   string `json:"id"`
	RefundID             string `json:"refund_id"`
	Kind                 string `json:"kind"`               // "refund" or "reversal"
	OrderID              string `json:"order_id,omitempty"` // the reversed top-up
	Reason               string `json:"reason"`
	RefundedMicrocredits int64  `json:"refunded_microcredits"`
	AmountUSD            string `json:"amount_usd"` // owed back in total
	// ByMethod is the same amount by the payment method each returned lot was paid with:
	// what to send back where.
	ByMethod            []methodJSON `json:"by_payment_method"`
	BalanceMicrocredits int64        `json:"balance_microcredits"`
}

func toRefundJSON(res store.RefundResult) refundJSON {
	out := refundJSON{ID: res.ID, RefundID: res.RefundID, Kind: res.Kind, OrderID: res.OrderID, Reason: res.Reason,
		RefundedMicrocredits: res.Microcredits, AmountUSD: ledger.FormatUSD(res.MicroUSD), ByMethod: []methodJSON{},
		BalanceMicrocredits: res.BalanceAfter}
	for _, m := range res.ByMethod {
		out.ByMethod = append(out.ByMethod, methodJSON{PaymentMethod: m.Method, AmountUSD: ledger.FormatUSD(m.MicroUSD)})
	}
	return out
}

// refund is the operator's refund policy: a partial refund of unused credit ("credits" or
// "all_unused"), priced at the purchase price of the lots it returns, newest first; or the
// reversal of a duplicate top-up by its "order_id". Held (reserved) and used credit is never
// refundable. Idempotent by refund_id.
func (a *api) refund(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		RefundID  string  `json:"refund_id"`
		Credits   *int64  `json:"credits"`
		AllUnused bool    `json:"all_unused"`
		OrderID   *string `json:"order_id"`
		Reason    string  `json:"reason"`
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
	given := 0
	for _, b := range []bool{req.Credits != nil, req.AllUnused, req.OrderID != nil} {
		if b {
			given++
		}
	}
	if given != 1 {
		return invalid("give exactly one of credits, all_unused, or order_id (the top-up to reverse)")
	}
	switch {
	case req.Credits != nil:
		if *req.Credits <= 0 || *req.Credits > plan.MaxCredits {
			return invalid("credits: want a whole number of credits in 1..%d", plan.MaxCredits)
		}
		rf.Microcredits = *req.Credits * ledger.MicrocreditsPerCredit
	case req.OrderID != nil:
		if err := checkText("order_id", *req.OrderID, true, IDBytesMax); err != nil {
			return err
		}
		rf.OrderID = *req.OrderID
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
		case errors.Is(err, store.ErrLotUsed):
			return jsonapi.Errorf(http.StatusConflict, jsonapi.TypeConflict,
				"top-up %q is no longer wholly unused, so it cannot be reversed; refund what is left by credits instead", rf.OrderID)
		case errors.Is(err, store.ErrAlreadyReversed):
			return jsonapi.Errorf(http.StatusConflict, jsonapi.TypeConflict, "%v", err)
		case errors.Is(err, store.ErrConflict):
			return jsonapi.Errorf(http.StatusConflict, jsonapi.TypeConflict, "refund_id %q was already used with a different request", req.RefundID)
		case errors.Is(err, store.ErrNotFound) && rf.OrderID != "":
			return jsonapi.Errorf(http.StatusNotFound, jsonapi.TypeNotFound, "account, or top-up %q on it, not found", rf.OrderID)
		}
		return storeError(err, "account")
	}
	status := http.StatusCreated
	if replayed {
		status = http.StatusOK
	} else {
		a.Logger.Info("refund_applied", "account_id", rf.AccountID, "refund_id", rf.RefundID, "kind", res.Kind,
			"microcredits", res.Microcredits, "microusd", res.MicroUSD)
	}
	jsonapi.WriteJSON(w, status, toRefundJSON(res))
	return nil
}

type chargebackJSON struct {
	ID                    string `json:"id"`
	ChargebackID          string `json:"chargeback_id"`
	OrderID               string `json:"order_id,omitempty"`
	Reason                string `json:"reason"`
	ForfeitedMicrocredits int64  `json:"forfeited_microcredits"`
	ForfeitedUSD          string `json:"forfeited_usd"` // deferred revenue forfeited
	BalanceMicrocredits   int64  `json:"balance_microcredits"`
	Status                string `json:"status"`
}

// chargeback records a disputed payment: the account is suspended (its keys get 403) and its
// whole balance forfeited with its own journal transaction. Idempotent by chargeback_id.
func (a *api) chargeback(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ChargebackID string `json:"chargeback_id"`
		OrderID      string `json:"order_id"`
		Reason       string `json:"reason"`
	}
	if err := jsonapi.Decode(w, r, &req); err != nil {
		return err
	}
	if err := checkText("chargeback_id", req.ChargebackID, true, IDBytesMax); err != nil {
		return err
	}
	if err := checkText("order_id", req.OrderID, false, IDBytesMax); err != nil {
		return err
	}
	if err := checkText("reason", req.Reason, false, NameBytesMax); err != nil {
		return err
	}
	c := store.Chargeback{AccountID: r.PathValue("id"), ChargebackID: req.ChargebackID, OrderID: req.OrderID, Reason: req.Reason}
	res, replayed, err := a.Store.Chargeback(r.Context(), c)
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			return jsonapi.Errorf(http.StatusConflict, jsonapi.TypeConflict, "chargeback_id %q was already used with a different request", req.ChargebackID)
		}
		if errors.Is(err, store.ErrNotFound) && c.OrderID != "" {
			return jsonapi.Errorf(http.StatusNotFound, jsonapi.TypeNotFound, "account, or top-up %q on it, not found", c.OrderID)
		}
		return storeError(err, "account")
	}
	status := http.StatusCreated
	if replayed {
		status = http.StatusOK
	} else {
		a.Logger.Warn("chargeback_applied", "account_id", c.AccountID, "chargeback_id", c.ChargebackID,
			"forfeited_microcredits", res.Microcredits, "forfeited_microusd", res.MicroUSD)
	}
	jsonapi.WriteJSON(w, status, chargebackJSON{ID: res.ID, ChargebackID: res.ChargebackID, OrderID: res.OrderID, Reason: res.Reason,
		ForfeitedMicrocredits: res.Microcredits, ForfeitedUSD: ledger.FormatUSD(res.MicroUSD), BalanceMicrocredits: res.BalanceAfter,
		Status: store.StatusSuspended})
	return nil
}

type lotJSON struct {
	ID                    string `json:"id"`
	OrderID               string `json:"order_id"`
	PaymentMethod         string `json:"payment_method"`
	CreatedAt             string `json:"created_at"`
	Microcredits          int64  `json:"microcredits"`
	PaidUSD               string `json:"paid_usd"`
	RemainingMicrocredits int64  `json:"remaining_microcredits"`
	UsedMicrocredits      int64  `json:"used_microcredits"`
	RecognizedUSD         string `json:"recognized_usd"`
	RefundedMicrocredits  int64  `json:"refunded_microcredits"`
	RefundedUSD           string `json:"refunded_usd"`
	ForfeitedMicrocredits int64  `json:"forfeited_microcredits"`
	ForfeitedUSD          string `json:"forfeited_usd"`
	DeferredUSD           string `json:"deferred_usd"`
}

func (a *api) lots(w http.ResponseWriter, r *http.Request) error {
	lots, err := a.Store.Lots(r.Context(), r.PathValue("id"))
	if err != nil {
		return storeError(err, "account")
	}
	out := struct {
		Lots []lotJSON `json:"lots"`
	}{Lots: make([]lotJSON, 0, len(lots))}
	for _, l := range lots {
		out.Lots = append(out.Lots, lotJSON{ID: l.ID, OrderID: l.OrderID, PaymentMethod: l.Method, CreatedAt: formatTime(l.CreatedAt),
			Microcredits: l.Microcredits, PaidUSD: ledger.FormatUSD(l.MicroUSD), RemainingMicrocredits: l.Remaining,
			UsedMicrocredits: l.Used, RecognizedUSD: ledger.FormatUSD(l.UsedMicroUSD),
			RefundedMicrocredits: l.Refunded, RefundedUSD: ledger.FormatUSD(l.RefundedMicroUSD),
			ForfeitedMicrocredits: l.Forfeited, ForfeitedUSD: ledger.FormatUSD(l.ForfeitedMicroUSD),
			DeferredUSD: ledger.FormatUSD(l.MicroUSD - l.UsedMicroUSD - l.RefundedMicroUSD - l.ForfeitedMicroUSD)})
	}
	jsonapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

type entryJSON struct {
	ID                  string `json:"id"`
	TS                  string `json:"ts"`
	Kind                string `json:"kind"`
	AmountMicrocredits  int64  `json:"amount_microcredits"`
	AmountUSD           string `json:"amount_usd"` // the change in deferred revenue (USD side of the posting)
	BalanceMicrocredits int64  `json:"balance_microcredits"`
	Ref                 string `json:"ref"`
}

// period reads from and to (RFC 3339) with defaults.
func period(q url.Values, from, to time.Time) (time.Time, time.Time, error) {
	var err error
	if v := q.Get("from"); v != "" {
		if from, err = time.Parse(time.RFC3339, v); err != nil {
			return from, to, invalid("from: want RFC 3339, e.g. 2026-11-01T00:00:00Z")
		}
	}
	if v := q.Get("to"); v != "" {
		if to, err = time.Parse(time.RFC3339, v); err != nil {
			return from, to, invalid("to: want RFC 3339, e.g. 2026-12-01T00:00:00Z")
		}
	}
	if !from.Before(to) {
		return from, to, invalid("from must be before to")
	}
	return from, to, nil
}

// statement serves an account's journal entries for a period with a running balance, as
// JSON, or as CSV with format=csv (or Accept: text/csv) for spreadsheets.
func (a *api) statement(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	from, to, err := period(q, time.Unix(0, 0).UTC(), a.Now().Add(time.Second))
	if err != nil {
		return err
	}
	limit := StatementDefault
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > StatementMax {
			return invalid("limit: want 1..%d", StatementMax)
		}
	}
	format := q.Get("format")
	if format == "" && strings.Contains(r.Header.Get("Accept"), "text/csv") {
		format = "csv"
	}
	if format != "" && format != "json" && format != "csv" {
		return invalid("format: want json or csv")
	}
	st, err := a.Store.Statement(r.Context(), r.PathValue("id"), from, to, limit)
	if err != nil {
		return storeError(err, "account")
	}
	closing := st.Opening
	if n := len(st.Entries); n > 0 {
		closing = st.Entries[n-1].Balance
	}
	if format == "csv" {
		return writeStatementCSV(w, st)
	}
	out := struct {
		AccountID string      `json:"account_id"`
		From      string      `json:"from"`
		To        string      `json:"to"`
		Opening   int64       `json:"opening_balance_microcredits"`
		Closing   int64       `json:"closing_balance_microcredits"`
		Entries   []entryJSON `json:"entries"`
		Truncated bool        `json:"truncated,omitempty"`
	}{AccountID: r.PathValue("id"), From: formatTime(from), To: formatTime(to), Opening: st.Opening, Closing: closing,
		Entries: make([]entryJSON, 0, len(st.Entries)), Truncated: st.More}
	for _, e := range st.Entries {
		out.Entries = append(out.Entries, entryJSON{ID: e.ID, TS: formatTime(e.Time), Kind: e.Kind,
			AmountMicrocredits: e.Amount, AmountUSD: ledger.FormatUSD(e.MicroUSD), BalanceMicrocredits: e.Balance, Ref: e.Ref})
	}
	jsonapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

// StatementCSVHeader is the first line of a CSV statement.
var StatementCSVHeader = []string{"id", "ts", "kind", "amount_microcredits", "amount_credits", "amount_usd",
	"balance_microcredits", "balance_credits", "ref"}

// writeStatementCSV writes the statement as CSV: one row per entry, an opening-balance row
// first. A truncated statement ends with a row saying so, so a spreadsheet cannot pass for
// the whole period.
func writeStatementCSV(w http.ResponseWriter, st store.Statement) error {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	cw := csv.NewWriter(w)
	cw.Write(StatementCSVHeader)
	cw.Write([]string{"", "", "opening", "", "", "", strconv.FormatInt(st.Opening, 10), ledger.FormatCredits(st.Opening), ""})
	for _, e := range st.Entries {
		cw.Write([]string{e.ID, formatTime(e.Time), e.Kind, strconv.FormatInt(e.Amount, 10), ledger.FormatCredits(e.Amount),
			ledger.FormatUSD(e.MicroUSD), strconv.FormatInt(e.Balance, 10), ledger.FormatCredits(e.Balance), csvText(e.Ref)})
	}
	if st.More {
		cw.Write([]string{"", "", "truncated", "", "", "", "", "", "more entries: narrow the period or raise limit"})
	}
	cw.Flush()
	return nil // the status is sent; a write error means the client went away
}

// csvText defuses text a spreadsheet would run as a formula (an order id like "=HYPERLINK(…)"
// typed by a customer): such a cell is prefixed with a quote, as OWASP advises.
func csvText(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
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

type totalsJSON struct {
	OpeningMicrocredits int64  `json:"opening_microcredits"`
	ClosingMicrocredits int64  `json:"closing_microcredits"`
	OpeningUSD          string `json:"opening_usd"`
	ClosingUSD          string `json:"closing_usd"`
}

type creditsJSON struct {
	IssuedPaidMicrocredits  int64 `json:"issued_paid_microcredits"`  // bought at the base rate
	IssuedBonusMicrocredits int64 `json:"issued_bonus_microcredits"` // tier bonuses and grants
	UsedMicrocredits        int64 `json:"used_microcredits"`
	RefundedMicrocredits    int64 `json:"refunded_microcredits"`
	ForfeitedMicrocredits   int64 `json:"forfeited_microcredits"`
	OutstandingOpening      int64 `json:"outstanding_opening_microcredits"`
	OutstandingClosing      int64 `json:"outstanding_closing_microcredits"`
}

// RevenueReportJSON is the finance report for a period. Every figure is a sum of journal
// postings, so they tie out by construction:
//
//	deferred_closing = deferred_opening + cash_received_total − revenue_recognized
//	                   − refunds_owed − forfeited
type RevenueReportJSON struct {
	From                 string                `json:"from"`
	To                   string                `json:"to"`
	RevenueRecognizedUSD string                `json:"revenue_recognized_usd"`
	DeferredOpeningUSD   string                `json:"deferred_revenue_opening_usd"`
	DeferredClosingUSD   string                `json:"deferred_revenue_closing_usd"`
	CashReceivedUSD      map[string]string     `json:"cash_received_usd"` // by payment method, net of nothing
	CashReceivedTotalUSD string                `json:"cash_received_total_usd"`
	RefundsOwedUSD       string                `json:"refunds_owed_usd"`
	ForfeitedUSD         string                `json:"forfeited_usd"`
	Credits              creditsJSON           `json:"credits"`
	LedgerAccounts       map[string]totalsJSON `json:"ledger_accounts"`
}

// Summarize turns a store report into the finance figures.
func Summarize(rep store.Report) RevenueReportJSON {
	delta := func(code string) store.Totals {
		o, c := rep.Opening[code], rep.Closing[code]
		return store.Totals{Microcredits: c.Microcredits - o.Microcredits, MicroUSD: c.MicroUSD - o.MicroUSD}
	}
	out := RevenueReportJSON{From: formatTime(rep.From), To: formatTime(rep.To), CashReceivedUSD: map[string]string{},
		LedgerAccounts: map[string]totalsJSON{}}
	codes := map[string]bool{}
	for c := range rep.Opening {
		codes[c] = true
	}
	for c := range rep.Closing {
		codes[c] = true
	}
	var cashUSD int64
	for code := range codes {
		o, c := rep.Opening[code], rep.Closing[code]
		out.LedgerAccounts[code] = totalsJSON{OpeningMicrocredits: o.Microcredits, ClosingMicrocredits: c.Microcredits,
			OpeningUSD: ledger.FormatUSD(o.MicroUSD), ClosingUSD: ledger.FormatUSD(c.MicroUSD)}
		if m, ok := ledger.CashMethodOf(code); ok {
			d := delta(code)
			out.CashReceivedUSD[m] = ledger.FormatUSD(-d.MicroUSD)
			cashUSD -= d.MicroUSD
			out.Credits.IssuedPaidMicrocredits -= d.Microcredits
		}
	}
	out.CashReceivedTotalUSD = ledger.FormatUSD(cashUSD)
	out.RevenueRecognizedUSD = ledger.FormatUSD(delta(ledger.AccountRevenue).MicroUSD)
	out.RefundsOwedUSD = ledger.FormatUSD(delta(ledger.AccountRefunds).MicroUSD)
	out.ForfeitedUSD = ledger.FormatUSD(delta(ledger.AccountForfeits).MicroUSD)
	out.DeferredOpeningUSD = ledger.FormatUSD(rep.Opening[store.AccountCustomers].MicroUSD)
	out.DeferredClosingUSD = ledger.FormatUSD(rep.Closing[store.AccountCustomers].MicroUSD)
	out.Credits.IssuedBonusMicrocredits = -delta(ledger.AccountBonus).Microcredits
	out.Credits.UsedMicrocredits = delta(ledger.AccountRevenue).Microcredits
	out.Credits.RefundedMicrocredits = delta(ledger.AccountRefunds).Microcredits
	out.Credits.ForfeitedMicrocredits = delta(ledger.AccountForfeits).Microcredits
	out.Credits.OutstandingOpening = rep.Opening[store.AccountCustomers].Microcredits
	out.Credits.OutstandingClosing = rep.Closing[store.AccountCustomers].Microcredits
	return out
}

// revenueReport serves the finance report for [from, to); the default period is the current
// calendar month (UTC) up to now.
func (a *api) revenueReport(w http.ResponseWriter, r *http.Request) error {
	now := a.Now().UTC()
	from, to, err := period(r.URL.Query(), time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC), now.Add(time.Second))
	if err != nil {
		return err
	}
	rep, err := a.Store.Report(r.Context(), from, to)
	if err != nil {
		return err
	}
	jsonapi.WriteJSON(w, http.StatusOK, Summarize(rep))
	return nil
}
