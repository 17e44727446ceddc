// Package store defines what analytics needs from its database: a sink that stores usage
// records once each, and the finance reports read back from it. The ClickHouse implementation
// is in the clickhouse child package; the consumer and the HTTP API depend only on this one.
package store

import (
	"context"
	"time"

	"tollgate/pkg/usage"
)

// Sink stores usage records. Insert is not idempotent: a record inserted twice is stored
// twice (and counted twice by the rollups), so callers insert only what Existing does not
// report. Implementations must make a completed Insert visible to the next Existing.
type Sink interface {
	// Existing returns the request ids among recs that are already stored.
	Existing(ctx context.Context, recs []usage.Record) (map[string]struct{}, error)
	// Insert stores recs, one row each. On error, some of them may have been stored.
	Insert(ctx context.Context, recs []usage.Record) error
	// SaveOffsets records, beside the rows, that every message of group on topic before
	// next[partition] is stored (inserted, found already stored, or dead-lettered). It is
	// called after the batch's Insert, never before, so the saved offsets are never ahead of
	// the rows; they are where the consumer resumes when the database was restored from a
	// backup older than Kafka's committed offsets. Offsets only move forward: saving a lower
	// one than before changes nothing.
	SaveOffsets(ctx context.Context, group, topic string, next map[int]int64) error
}

// Reports answers finance and usage questions. Every total counts each request_id once, even
// when the table holds a duplicate row that has not been merged away yet. Time ranges are
// half-open, [from, to), on the record's ts_end_ms.
type Reports interface {
	// ByModel returns the totals per model, ordered by model.
	ByModel(ctx context.Context, from, to time.Time) ([]ModelTotals, error)
	// AccountDaily returns one account's totals per UTC day and model, ordered by day, model.
	AccountDaily(ctx context.Context, accountID string, from, to time.Time) ([]DayModelTotals, error)
}

// Totals adds up requests. Token counts are as recorded: OutputTokens includes
// ThinkingTokens, as Anthropic reports them.
type Totals struct {
	Requests             int64 `json:"requests"`
	InputTokens          int64 `json:"input_tokens"`
	OutputTokens         int64 `json:"output_tokens"`
	CacheWrite5mTokens   int64 `json:"cache_write_5m_tokens"`
	CacheWrite1hTokens   int64 `json:"cache_write_1h_tokens"`
	CacheReadTokens      int64 `json:"cache_read_tokens"`
	ThinkingTokens       int64 `json:"thinking_tokens"`
	WebSearchRequests    int64 `json:"web_search_requests"`
	CostMicrocredits     int64 `json:"cost_microcredits"`
	UpstreamCostMicroUSD int64 `json:"upstream_cost_microusd"`
}

// Add adds o to t.
func (t *Totals) Add(o Totals) {
	t.Requests += o.Requests
	t.InputTokens += o.InputTokens
	t.OutputTokens += o.OutputTokens
	t.CacheWrite5mTokens += o.CacheWrite5mTokens
	t.CacheWrite1hTokens += o.CacheWrite1hTokens
	t.CacheReadTokens += o.CacheReadTokens
	t.ThinkingTokens += o.ThinkingTokens
	t.WebSearchRequests += o.WebSearchRequests
	t.CostMicrocredits += o.CostMicrocredits
	t.UpstreamCostMicroUSD += o.UpstreamCostMicroUSD
}

// AddRecord adds one record to t.
func (t *Totals) AddRecord(r *usage.Record) {
	u := r.Usage
	t.Add(Totals{
		Requests:             1,
		InputTokens:          u.Input,
		OutputTokens:         u.Output,
		CacheWrite5mTokens:   u.CacheWrite5m,
		CacheWrite1hTokens:   u.CacheWrite1h,
		CacheReadTokens:      u.CacheRead,
		ThinkingTokens:       u.Thinking,
		WebSearchRequests:    u.WebSearchRequests,
		CostMicrocredits:     r.CostMicrocredits,
		UpstreamCostMicroUSD: r.UpstreamCostMicroUSD,
	})
}

// ModelTotals are the totals of one model.
type ModelTotals struct {
	Model string `json:"model"`
	Totals
}

// DayModelTotals are the totals of one model on one UTC day.
type DayModelTotals struct {
	Day   string `json:"day"` // YYYY-MM-DD, UTC
	Model string `json:"model"`
	Totals
}
