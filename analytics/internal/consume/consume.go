// Package consume moves usage records from Kafka (topic usage.v1, group "analytics") into the
// store, in batches, so that every valid record is stored exactly once and every invalid one
// reaches the dead-letter topic.
//
// One batch goes through these steps, each retried with backoff until it succeeds or the
// context ends; offsets are committed only after all of them:
//
//  1. Plan (pure): decode each message with usage.Decode; invalid ones become dead letters
//     with the reason; repeated request_ids within the batch are dropped after the first.
//  2. Dead letters are produced to usage.dlq.v1.
//  3. The store is asked which request_ids of the batch it already has, and only the others
//     are inserted. A crash after an insert and before the commit redelivers the batch (or a
//     differently cut one); this check is what keeps it from being stored twice. Check and
//     insert are retried together, so a failed insert that partly landed is checked again.
//  4. The batch's next offset per partition is saved in the store, after the rows (the store
//     has no transactions: an offsets row behind the data only means re-reading, which step 3
//     absorbs). At start the app compares them with Kafka's committed offsets and moves the
//     group back where the store is behind, as it is after a restore from a backup.
//  5. Offsets are committed to Kafka. A failed commit is retried a few times and then left: the records
//     come back and step 3 skips them. Committing late is safe; committing early is not.
//
// Exactly-once in the store assumes one writer per partition at a time. During a consumer
// group rebalance two instances may briefly hold the same records and both find them
// missing; the base table's ReplacingMergeTree and the FINAL reads still count each request
// once, and only the daily rollups could over-count (see analytics/README.md).
package consume

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"tollgate/analytics/internal/store"
	"tollgate/pkg/bus"
	"tollgate/pkg/usage"
)

// Source yields batches of usage.v1 messages and commits their offsets; *bus.Consumer.
type Source interface {
	FetchBatch(ctx context.Context, max int, linger time.Duration) ([]bus.Message, error)
	Commit(ctx context.Context, msgs ...bus.Message) error
}

// DeadLetters takes records that failed validation; a *bus.Producer on usage.dlq.v1.
type DeadLetters interface {
	Send(ctx context.Context, msgs ...bus.Message) error
}

// Config tunes batching and retries. Zero values take the documented defaults.
type Config struct {
	// BatchRowsMax is the most messages in one batch, and so the most rows held in memory and
	// inserted at once. Default: 20000.
	BatchRowsMax int
	// BatchLinger is how long a batch keeps gathering after its first message. Default: 1s.
	BatchLinger time.Duration
	// BackoffMin and BackoffMax bound the wait between retries of a failing step; the wait
	// doubles from min to max. Defaults: 100ms, 10s.
	BackoffMin, BackoffMax time.Duration
	// CommitAttempts is how often a failing offset commit is tried before the batch is left
	// uncommitted (it will be redelivered and skipped). Default: 5.
	CommitAttempts int
	// Group is the Kafka consumer group, the key of the offsets saved in the store.
	// Default: "analytics".
	Group string
}

func (c *Config) setDefaults() {
	if c.BatchRowsMax <= 0 {
		c.BatchRowsMax = 20000
	}
	if c.BatchLinger <= 0 {
		c.BatchLinger = time.Second
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = 100 * time.Millisecond
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = max(10*time.Second, c.BackoffMin)
	}
	if c.CommitAttempts <= 0 {
		c.CommitAttempts = 5
	}
	if c.Group == "" {
		c.Group = "analytics"
	}
}

// Consumer runs the loop. Not safe for concurrent use: one Run at a time.
type Consumer struct {
	cfg  Config
	src  Source
	sink store.Sink
	dlq  DeadLetters
	m    *Metrics
	log  *slog.Logger
}

// New builds a consumer.
func New(cfg Config, src Source, sink store.Sink, dlq DeadLetters, m *Metrics, log *slog.Logger) *Consumer {
	cfg.setDefaults()
	return &Consumer{cfg: cfg, src: src, sink: sink, dlq: dlq, m: m, log: log}
}

// Run consumes until ctx ends, then returns nil. A batch in progress when ctx ends is left
// uncommitted and is redelivered to whoever consumes next; step 3 makes that harmless.
func (c *Consumer) Run(ctx context.Context) error {
	wait := c.cfg.BackoffMin
	for ctx.Err() == nil {
		msgs, err := c.src.FetchBatch(ctx, c.cfg.BatchRowsMax, c.cfg.BatchLinger)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			c.m.Retries.WithLabelValues("fetch").Inc()
			c.log.Warn("fetch_failed", "error", err, "retry_in", wait)
			if !sleep(ctx, wait) {
				break
			}
			wait = min(2*wait, c.cfg.BackoffMax)
			continue
		}
		wait = c.cfg.BackoffMin
		if _, err := c.StoreBatch(ctx, msgs); err != nil {
			break // ctx ended mid-batch
		}
		c.commit(ctx, msgs)
	}
	return nil
}

// Result counts what happened to a batch's messages.
type Result struct {
	Inserted    int // stored now
	Existing    int // already stored before (redelivery)
	Duplicates  int // repeated request_id within the batch
	DeadLetters int // invalid, sent to the DLQ
}

// StoreBatch performs steps 1–4 for msgs and does not commit. It returns an error only when ctx
// ends before the batch is stored.
func (c *Consumer) StoreBatch(ctx context.Context, msgs []bus.Message) (Result, error) {
	start := time.Now()
	b := Plan(msgs)
	res := Result{Duplicates: b.Duplicates, DeadLetters: len(b.DeadLetters)}
	if len(b.DeadLetters) > 0 {
		err := c.retry(ctx, "dead_letter", func() error { return c.dlq.Send(ctx, b.DeadLetters...) })
		if err != nil {
			return res, err
		}
	}
	err := c.retry(ctx, "store", func() error {
		existing, err := c.sink.Existing(ctx, b.Records)
		if err != nil {
			return err
		}
		fresh := b.Records // the usual case: a batch of new records, not copied
		if len(existing) > 0 {
			fresh = make([]usage.Record, 0, len(b.Records)-len(existing))
			for i := range b.Records {
				if _, ok := existing[b.Records[i].RequestID]; !ok {
					fresh = append(fresh, b.Records[i])
				}
			}
		}
		if len(fresh) > 0 {
			if err := c.sink.Insert(ctx, fresh); err != nil {
				return err
			}
		}
		res.Inserted, res.Existing = len(fresh), len(b.Records)-len(fresh)
		return nil
	})
	if err != nil {
		return res, err
	}
	for topic, next := range nextOffsets(msgs) {
		err := c.retry(ctx, "save_offsets", func() error { return c.sink.SaveOffsets(ctx, c.cfg.Group, topic, next) })
		if err != nil {
			return res, err
		}
	}
	c.m.Batches.Inc()
	c.m.BatchSeconds.Observe(time.Since(start).Seconds())
	c.m.Records.WithLabelValues("inserted").Add(float64(res.Inserted))
	c.m.Records.WithLabelValues("existing").Add(float64(res.Existing))
	c.m.Records.WithLabelValues("duplicate").Add(float64(res.Duplicates))
	c.m.Records.WithLabelValues("dead_letter").Add(float64(res.DeadLetters))
	c.log.Debug("batch_stored", "messages", len(msgs), "inserted", res.Inserted,
		"existing", res.Existing, "duplicates", res.Duplicates, "dead_letters", res.DeadLetters)
	return res, nil
}

func (c *Consumer) commit(ctx context.Context, msgs []bus.Message) {
	wait := c.cfg.BackoffMin
	for attempt := 1; ; attempt++ {
		err := c.src.Commit(ctx, msgs...)
		if err == nil {
			c.m.LastCommit.SetToCurrentTime()
			return
		}
		if ctx.Err() != nil {
			return
		}
		c.m.Retries.WithLabelValues("commit").Inc()
		if attempt >= c.cfg.CommitAttempts {
			c.log.Error("commit_abandoned", "error", err, "attempts", attempt,
				"effect", "batch will be redelivered and skipped as already stored")
			return
		}
		c.log.Warn("commit_failed", "error", err, "retry_in", wait)
		if !sleep(ctx, wait) {
			return
		}
		wait = min(2*wait, c.cfg.BackoffMax)
	}
}

// retry runs f until it succeeds or ctx ends. Nothing is ever dropped: a store that stays
// down stalls the consumer (visible in tollgate_analytics_retries_total and consumer lag)
// instead of losing records.
func (c *Consumer) retry(ctx context.Context, step string, f func() error) error {
	wait := c.cfg.BackoffMin
	for {
		err := f()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.m.Retries.WithLabelValues(step).Inc()
		c.log.Warn("step_failed", "step", step, "error", err, "retry_in", wait)
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
		wait = min(2*wait, c.cfg.BackoffMax)
	}
}

// nextOffsets returns, by topic and partition, the offset after the last of msgs: where a
// consumer that has stored them resumes.
func nextOffsets(msgs []bus.Message) map[string]map[int]int64 {
	out := map[string]map[int]int64{}
	for _, m := range msgs {
		byPart := out[m.Topic]
		if byPart == nil {
			byPart = map[int]int64{}
			out[m.Topic] = byPart
		}
		byPart[m.Partition] = max(byPart[m.Partition], m.Offset+1)
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Batch is a fetched batch sorted out by Plan.
type Batch struct {
	// Records are the valid records, the first of each request_id, in message order.
	Records []usage.Record
	// DeadLetters are the messages to produce to usage.dlq.v1, one per invalid record.
	DeadLetters []bus.Message
	// Duplicates counts valid records dropped because their request_id came earlier in the
	// batch.
	Duplicates int
}

// Plan decodes and sorts out msgs. It has no side effects.
func Plan(msgs []bus.Message) Batch {
	b := Batch{Records: make([]usage.Record, 0, len(msgs))}
	seen := make(map[string]struct{}, len(msgs))
	for _, m := range msgs {
		r, err := usage.Decode(m.Value)
		if err != nil {
			b.DeadLetters = append(b.DeadLetters, deadLetter(m, err))
			continue
		}
		if _, dup := seen[r.RequestID]; dup {
			b.Duplicates++
			continue
		}
		seen[r.RequestID] = struct{}{}
		b.Records = append(b.Records, r)
	}
	return b
}

// DeadLetter is the JSON value of a message on usage.dlq.v1 written by analytics. Its key is
// the original message's key. ledgerd sees the same invalid records and dead-letters them
// too; Consumer tells the copies apart.
type DeadLetter struct {
	Reason    string `json:"reason"`
	Consumer  string `json:"consumer"` // "analytics"
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	// Value is the original message value when it is valid UTF-8; otherwise ValueBase64
	// carries it, so the original bytes are never lost.
	Value       string `json:"value,omitempty"`
	ValueBase64 []byte `json:"value_base64,omitempty"`
}

func deadLetter(m bus.Message, reason error) bus.Message {
	d := DeadLetter{Reason: reason.Error(), Consumer: "analytics", Topic: m.Topic,
		Partition: m.Partition, Offset: m.Offset}
	if utf8.Valid(m.Value) {
		d.Value = string(m.Value)
	} else {
		d.ValueBase64 = m.Value
	}
	v, err := json.Marshal(d)
	if err != nil {
		// Marshal of strings, ints and bytes cannot fail; reaching here is a programming error.
		panic(fmt.Sprintf("marshal dead letter: %v", err))
	}
	return bus.Message{Key: m.Key, Value: v}
}

// Metrics are the consumer's Prometheus metrics.
type Metrics struct {
	Batches      prometheus.Counter
	BatchSeconds prometheus.Histogram
	Records      *prometheus.CounterVec // outcome: inserted, existing, duplicate, dead_letter
	Retries      *prometheus.CounterVec // step: fetch, dead_letter, store, save_offsets, commit
	LastCommit   prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_analytics_batches_total", Help: "Batches stored in ClickHouse."}),
		BatchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tollgate_analytics_batch_seconds", Help: "Time to store one batch, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		Records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_analytics_records_total", Help: "Usage records consumed, by outcome."},
			[]string{"outcome"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_analytics_retries_total", Help: "Failed attempts that were retried, by step."},
			[]string{"step"}),
		LastCommit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_analytics_last_commit_timestamp_seconds", Help: "When offsets were last committed."}),
	}
	for _, c := range []prometheus.Collector{m.Batches, m.BatchSeconds, m.Records, m.Retries, m.LastCommit} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
