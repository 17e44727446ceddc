// Package webhook serves the payment provider's webhook, POST /webhooks/v1/payments: a signed
// event saying a customer paid for a plan, which tops the account up with that plan.
//
// Authentication is the signature, not a token: the header
//
//	Tollgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
//
// (several v1 values may be given, so a provider can sign with an old and a new secret while
// the secret rotates). A request is refused, and changes nothing, when the signature does not
// match the raw body, or when t is further than the tolerance (5 minutes) from now — so a
// captured request cannot be replayed later. A replay within the tolerance, and every
// redelivery, carries an event id already applied: it is answered 200 with "duplicate": true
// and changes nothing (providers retry until they get a 2xx, so an error would only make
// them retry forever).
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tollgate/ledgerd/internal/jsonapi"
	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/plan"
	"tollgate/ledgerd/internal/store"
)

// Path is where the webhook is served.
const Path = "/webhooks/v1/payments"

// SignatureHeader carries the timestamp and signature(s).
const SignatureHeader = "Tollgate-Signature"

// EventPaymentSucceeded is the one event type that tops up; others are acknowledged and
// ignored.
const EventPaymentSucceeded = "payment.succeeded"

// Limits.
const (
	DefaultTolerance = 5 * time.Minute
	BodyBytesMax     = 64 << 10
	// SignaturesMax bounds the v1 values one header may carry.
	SignaturesMax = 8
	// HeaderBytesMax bounds the signature header.
	HeaderBytesMax = 1024
	IDBytesMax     = 128
	MethodBytesMax = 32
)

// Signature verification failures. None of them changes anything.
var (
	ErrNoSignature        = errors.New("missing " + SignatureHeader + " header")
	ErrMalformedSignature = errors.New("malformed " + SignatureHeader + " header: want t=<unix seconds>,v1=<hex>")
	ErrStaleTimestamp     = errors.New("signature timestamp outside the tolerance window")
	ErrBadSignature       = errors.New("signature does not match the body")
)

// Sign computes the signature header value for body at t. Providers (and tests) use it.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Signature is a parsed signature header.
type Signature struct {
	Timestamp int64    // Unix seconds, as sent (also the signed text)
	TS        string   // the timestamp exactly as it appeared, which is what was signed
	V1        [][]byte // decoded HMAC-SHA256 values
}

// ParseSignature parses "t=<unix>,v1=<hex>[,v1=<hex>…]". Elements with other schemes are
// ignored (room for a future v2); exactly one t and at least one well-formed v1 are required.
func ParseSignature(h string) (Signature, error) {
	var sig Signature
	if h == "" {
		return sig, ErrNoSignature
	}
	if len(h) > HeaderBytesMax {
		return sig, ErrMalformedSignature
	}
	seenT := false
	for _, part := range strings.Split(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return sig, ErrMalformedSignature
		}
		switch k {
		case "t":
			if seenT || v == "" || len(v) > 12 || v[0] == '0' && len(v) > 1 {
				return sig, ErrMalformedSignature
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 || strings.TrimLeft(v, "0123456789") != "" {
				return sig, ErrMalformedSignature
			}
			sig.Timestamp, sig.TS, seenT = n, v, true
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != sha256.Size || len(sig.V1) == SignaturesMax {
				return sig, ErrMalformedSignature
			}
			sig.V1 = append(sig.V1, b)
		}
	}
	if !seenT || len(sig.V1) == 0 {
		return sig, ErrMalformedSignature
	}
	return sig, nil
}

// Verify checks the header against the raw body, now and the tolerance.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	sig, err := ParseSignature(header)
	if err != nil {
		return err
	}
	if d := now.Sub(time.Unix(sig.Timestamp, 0)); d > tolerance || d < -tolerance {
		return ErrStaleTimestamp
	}
	want := mac(secret, sig.TS, body)
	ok := false
	for _, v := range sig.V1 {
		// Every value is compared, in constant time, whatever matched before.
		if hmac.Equal(v, want) {
			ok = true
		}
	}
	if !ok {
		return ErrBadSignature
	}
	return nil
}

// Config of the webhook handler.
type Config struct {
	Store store.Store
	Plans *plan.Catalog
	// Secret is the shared HMAC key (TOLLGATE_WEBHOOK_SECRET). Empty: every request is
	// refused (404), since none could be verified.
	Secret string
	// Tolerance is how far a signature's timestamp may be from now. Default: 5 minutes.
	Tolerance time.Duration
	Logger    *slog.Logger
	// Registerer receives the metrics. Default: none registered.
	Registerer prometheus.Registerer
	Now        func() time.Time // default time.Now
}

// Event is the webhook body. Unknown fields are accepted: providers add fields over time.
type Event struct {
	ID   string `json:"id"`   // the provider's event id: the idempotency key
	Type string `json:"type"` // EventPaymentSucceeded tops up; others are ignored
	Data struct {
		AccountID string `json:"account_id"`
		Plan      string `json:"plan"`
		// OrderID is the provider's payment (checkout, invoice) id: the top-up's order id,
		// which reversals and chargebacks name.
		OrderID string `json:"order_id"`
		// PaymentMethod names the cash ledger account (cash:<method>). Default: "card".
		PaymentMethod string `json:"payment_method"`
		// AmountUSD, when given, must equal the plan's price: a mismatch means the customer
		// paid another price than the catalog says, which needs a human.
		AmountUSD *string `json:"amount_usd"`
	} `json:"data"`
}

type handler struct {
	cfg    Config
	events *prometheus.CounterVec
}

// New returns the webhook handler for Path.
func New(cfg Config) http.Handler {
	if cfg.Tolerance <= 0 {
		cfg.Tolerance = DefaultTolerance
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &handler{cfg: cfg, events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ledgerd_webhook_events_total",
		Help: "Payment webhook requests by result: applied, duplicate, ignored, unauthenticated, invalid, rejected."},
		[]string{"result"})}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(h.events)
	}
	return jsonapi.Handler(cfg.Logger, h.serve)
}

func invalid(format string, args ...any) error {
	return jsonapi.Errorf(http.StatusBadRequest, jsonapi.TypeInvalidRequest, format, args...)
}

func validMethod(s string) bool {
	if s == "" || len(s) > MethodBytesMax {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request) error {
	result := "invalid"
	defer func() { h.events.WithLabelValues(result).Inc() }()
	if r.Method != http.MethodPost {
		return jsonapi.Errorf(http.StatusMethodNotAllowed, jsonapi.TypeNotAllowed, "method %s not allowed on %s", r.Method, Path)
	}
	if h.cfg.Secret == "" {
		result = "rejected"
		return jsonapi.Errorf(http.StatusNotFound, jsonapi.TypeNotFound, "payment webhook not configured (TOLLGATE_WEBHOOK_SECRET)")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, BodyBytesMax))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return jsonapi.Errorf(http.StatusRequestEntityTooLarge, jsonapi.TypeTooLarge, "body over %d bytes", BodyBytesMax)
		}
		return invalid("read body: %v", err)
	}
	// The signature is checked on the raw bytes, before anything is parsed.
	if err := Verify([]byte(h.cfg.Secret), r.Header.Get(SignatureHeader), body, h.cfg.Now(), h.cfg.Tolerance); err != nil {
		result = "unauthenticated"
		h.cfg.Logger.Warn("webhook_refused", "error", err)
		return jsonapi.Errorf(http.StatusUnauthorized, jsonapi.TypeAuthentication, "%v", err)
	}
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil {
		return invalid("malformed JSON: %v", err)
	}
	if ev.ID == "" || !jsonapi.ValidText(ev.ID, IDBytesMax) {
		return invalid("id: want the provider's event id, at most %d bytes of text", IDBytesMax)
	}
	if ev.Type != EventPaymentSucceeded {
		result = "ignored"
		h.cfg.Logger.Info("webhook_ignored", "event_id", ev.ID, "type", ev.Type)
		jsonapi.WriteJSON(w, http.StatusOK, map[string]any{"received": true, "ignored": true})
		return nil
	}
	d := ev.Data
	for field, v := range map[string]string{"data.account_id": d.AccountID, "data.order_id": d.OrderID, "data.plan": d.Plan} {
		if v == "" || !jsonapi.ValidText(v, IDBytesMax) {
			return invalid("%s: required, at most %d bytes of text", field, IDBytesMax)
		}
	}
	if d.PaymentMethod == "" {
		d.PaymentMethod = "card"
	}
	if !validMethod(d.PaymentMethod) {
		return invalid("data.payment_method: want 1..%d of [a-z0-9_-]", MethodBytesMax)
	}
	p, ok := h.cfg.Plans.Lookup(d.Plan)
	if !ok {
		return invalid("data.plan: unknown plan %q", d.Plan)
	}
	if d.AmountUSD != nil {
		usd, err := ledger.ParseUSD(*d.AmountUSD)
		if err != nil {
			return invalid("data.amount_usd: %v", err)
		}
		if usd != p.MicroUSD {
			result = "rejected"
			h.cfg.Logger.Error("webhook_amount_mismatch", "event_id", ev.ID, "plan", p.ID, "paid_microusd", usd, "price_microusd", p.MicroUSD)
			return jsonapi.Errorf(http.StatusUnprocessableEntity, jsonapi.TypeInvalidRequest,
				"data.amount_usd %s differs from the price of plan %s (%s); nothing was credited", *d.AmountUSD, p.ID, ledger.FormatUSD(p.MicroUSD))
		}
	}
	res, replayed, err := h.cfg.Store.TopUp(r.Context(), store.TopUp{AccountID: d.AccountID, OrderID: d.OrderID, Plan: p.ID,
		Credits: p.Credits, MicroUSD: p.MicroUSD, Method: d.PaymentMethod, EventID: ev.ID})
	switch {
	case errors.Is(err, store.ErrNotFound):
		result = "rejected"
		return jsonapi.Errorf(http.StatusNotFound, jsonapi.TypeNotFound, "account %q not found", d.AccountID)
	case errors.Is(err, store.ErrConflict):
		result = "rejected"
		h.cfg.Logger.Error("webhook_order_conflict", "event_id", ev.ID, "order_id", d.OrderID)
		return jsonapi.Errorf(http.StatusConflict, jsonapi.TypeConflict, "order_id %q was already applied with a different plan, account or method", d.OrderID)
	case err != nil:
		result = "error"
		return fmt.Errorf("webhook top-up: %w", err)
	}
	result = "applied"
	if replayed {
		result = "duplicate"
	} else {
		h.cfg.Logger.Info("webhook_topup_applied", "event_id", ev.ID, "account_id", d.AccountID, "order_id", d.OrderID,
			"plan", p.ID, "method", d.PaymentMethod)
	}
	jsonapi.WriteJSON(w, http.StatusOK, map[string]any{"received": true, "duplicate": replayed, "topup": map[string]any{
		"id": res.ID, "order_id": res.OrderID, "credits": res.Credits, "amount_usd": ledger.FormatUSD(res.MicroUSD),
		"balance_microcredits": res.BalanceAfter}})
	return nil
}
