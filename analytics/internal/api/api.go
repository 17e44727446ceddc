// Package api is analytics' HTTP surface: health, readiness and metrics for the operator, and
// the finance and usage queries for finance, support and the dashboard.
//
//	GET /healthz                                  200 while the process runs
//	GET /readyz                                   200 once ClickHouse answers and the schema is applied
//	GET /metrics                                  Prometheus
//	GET /v1/finance/summary?from=&to=             totals and margin, overall and per model
//	GET /v1/usage?account_id=&from=&to=           one account's totals per UTC day and model
//
// from and to are RFC 3339 times; the range is [from, to) on the request's end time. The /v1
// endpoints require "Authorization: Bearer <admin token>" when a token is configured.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tollgate/analytics/internal/store"
)

// Config configures the handler.
type Config struct {
	// AdminToken guards /v1/*; empty leaves them open (the listener is loopback by default).
	AdminToken string
	// CreditPriceMicroUSD is the price of one credit in micro-USD used to express charged
	// credits as revenue in USD. Default: 5000 ($0.005, the base rate of DESIGN §2).
	CreditPriceMicroUSD int64
	// QueryTimeout bounds one report query. Default: 60s.
	QueryTimeout time.Duration
}

// Handler serves the endpoints above. Safe for concurrent use.
type Handler struct {
	cfg     Config
	reports store.Reports
	ready   func(context.Context) error
	log     *slog.Logger
	mux     *http.ServeMux
}

// New builds the handler. ready reports whether the service can serve queries and consume.
func New(cfg Config, reports store.Reports, ready func(context.Context) error, gatherer prometheus.Gatherer, log *slog.Logger) *Handler {
	if cfg.CreditPriceMicroUSD <= 0 {
		cfg.CreditPriceMicroUSD = 5000
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 60 * time.Second
	}
	h := &Handler{cfg: cfg, reports: reports, ready: ready, log: log, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	h.mux.HandleFunc("GET /v1/finance/summary", h.auth(h.summary))
	h.mux.HandleFunc("GET /v1/usage", h.auth(h.usage))
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := h.ready(ctx); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

func (h *Handler) auth(next http.HandlerFunc) http.HandlerFunc {
	if h.cfg.AdminToken == "" {
		return next
	}
	// Both sides are hashed before the constant-time compare: ConstantTimeCompare returns at
	// once on a length mismatch, which would leak the token's length by timing.
	want := sha256.Sum256([]byte("Bearer " + h.cfg.AdminToken))
	return func(w http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			writeError(w, http.StatusUnauthorized, "authentication_error", "missing or wrong admin bearer token")
			return
		}
		next(w, r)
	}
}

// Money is totals with the charged credits expressed in USD and set against upstream cost.
type Money struct {
	store.Totals
	// RevenueMicroUSD is CostMicrocredits at CreditPriceMicroUSD per credit, rounded half up.
	// It is the list value of what was charged: the ledger recognizes revenue at each lot's
	// own purchase price, which is lower for bonus tiers.
	RevenueMicroUSD int64 `json:"revenue_microusd"`
	// MarginMicroUSD is RevenueMicroUSD − UpstreamCostMicroUSD.
	MarginMicroUSD int64 `json:"margin_microusd"`
}

// ModelMoney is Money for one model.
type ModelMoney struct {
	Model string `json:"model"`
	Money
}

// Summary is the body of /v1/finance/summary.
type Summary struct {
	From                time.Time    `json:"from"`
	To                  time.Time    `json:"to"`
	CreditPriceMicroUSD int64        `json:"credit_price_microusd"`
	Totals              Money        `json:"totals"`
	ByModel             []ModelMoney `json:"by_model"`
}

// Usage is the body of /v1/usage.
type Usage struct {
	AccountID string                 `json:"account_id"`
	From      time.Time              `json:"from"`
	To        time.Time              `json:"to"`
	Days      []store.DayModelTotals `json:"days"`
}

// Summarize computes the summary of per-model totals. The overall revenue is rounded once
// from the overall cost, so it may differ from the sum of the per-model revenues by less than
// one micro-dollar per model.
func Summarize(rows []store.ModelTotals, creditPriceMicroUSD int64) (Money, []ModelMoney) {
	var all store.Totals
	by := make([]ModelMoney, 0, len(rows))
	for _, r := range rows {
		all.Add(r.Totals)
		by = append(by, ModelMoney{Model: r.Model, Money: money(r.Totals, creditPriceMicroUSD)})
	}
	return money(all, creditPriceMicroUSD), by
}

func money(t store.Totals, price int64) Money {
	rev := RevenueMicroUSD(t.CostMicrocredits, price)
	return Money{Totals: t, RevenueMicroUSD: rev, MarginMicroUSD: rev - t.UpstreamCostMicroUSD}
}

// RevenueMicroUSD converts micro-credits to micro-USD at price micro-USD per credit, rounding
// half up, in integers. Splitting cost at the credit keeps the products small: no overflow
// for any cost and any price below 9e12 µ$ per credit.
func RevenueMicroUSD(costMicrocredits, price int64) int64 {
	const micro = 1_000_000
	q, r := costMicrocredits/micro, costMicrocredits%micro
	if r < 0 { // costs are never negative; keep the floor semantics anyway
		q, r = q-1, r+micro
	}
	return q*price + (r*price+micro/2)/micro
}

func (h *Handler) summary(w http.ResponseWriter, r *http.Request) {
	from, to, ok := timeRange(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.QueryTimeout)
	defer cancel()
	rows, err := h.reports.ByModel(ctx, from, to)
	if err != nil {
		h.queryFailed(w, "finance_summary", err)
		return
	}
	totals, by := Summarize(rows, h.cfg.CreditPriceMicroUSD)
	writeJSON(w, Summary{From: from, To: to, CreditPriceMicroUSD: h.cfg.CreditPriceMicroUSD, Totals: totals, ByModel: by})
}

func (h *Handler) usage(w http.ResponseWriter, r *http.Request) {
	account := r.URL.Query().Get("account_id")
	if account == "" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "account_id is required")
		return
	}
	from, to, ok := timeRange(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.QueryTimeout)
	defer cancel()
	days, err := h.reports.AccountDaily(ctx, account, from, to)
	if err != nil {
		h.queryFailed(w, "account_usage", err)
		return
	}
	if days == nil {
		days = []store.DayModelTotals{}
	}
	writeJSON(w, Usage{AccountID: account, From: from, To: to, Days: days})
}

func (h *Handler) queryFailed(w http.ResponseWriter, query string, err error) {
	h.log.Error("query_failed", "query", query, "error", err)
	if errors.Is(err, context.DeadlineExceeded) {
		writeError(w, http.StatusGatewayTimeout, "timeout_error", "query timed out")
		return
	}
	writeError(w, http.StatusServiceUnavailable, "api_error", "analytics store unavailable")
}

// timeRange parses the required from and to parameters.
func timeRange(w http.ResponseWriter, r *http.Request) (from, to time.Time, ok bool) {
	parse := func(name string) (time.Time, bool) {
		v := r.URL.Query().Get(name)
		if v == "" {
			writeError(w, http.StatusBadRequest, "invalid_request_error", name+" is required (RFC 3339, e.g. 2026-11-01T00:00:00Z)")
			return time.Time{}, false
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request_error", name+": not an RFC 3339 time: "+strings.TrimPrefix(err.Error(), "parsing time "))
			return time.Time{}, false
		}
		return t.UTC(), true
	}
	if from, ok = parse("from"); !ok {
		return
	}
	if to, ok = parse("to"); !ok {
		return
	}
	if !from.Before(to) {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "from must be before to")
		return from, to, false
	}
	return from, to, true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"type": typ, "message": msg}})
}
