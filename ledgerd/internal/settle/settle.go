// Package settle consumes usage records (topic usage.v1, group "ledgerd") and charges them to
// the ledger, exactly once in effect.
//
// One batch is handled as:
//
//  1. drop messages below the offsets stored in the ledger (already applied, redelivered
//     because a Kafka commit was lost);
//  2. decode and check each record; the ones that cannot be settled (invalid, unknown account,
//     cost over the limit, timestamp outside the settlement window) go to usage.dlq.v1 with
//     the reason, before anything is committed, so nothing is dropped silently;
//  3. one database transaction: settle the valid records (each request id at most once) and
//     store the next offsets;
//  4. commit the offsets to Kafka. Losing this commit only causes a redelivery that steps 1
//     and 3 turn into no-ops.
//
// Failures are sorted into three kinds. Transient (database or Kafka unreachable, lock
// timeouts): retried with capped exponential backoff, nothing committed meanwhile. Poison (a
// record that can never settle): dead-lettered and committed. Invariant violation (the
// ledger's arithmetic or data is broken, ledger.ErrInvariant): Run returns the error without
// committing, so the process stops and the batch is replayed once the cause is fixed.
package settle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/store"
	"tollgate/pkg/bus"
	"tollgate/pkg/usage"
)

// MaxCostMicrocredits is the most one request may cost: 10⁶ credits ($5,000). A record above
// it is a broken producer, not a request; it is dead-lettered. The bound also keeps a batch's
// sum far from int64 overflow.
const MaxCostMicrocredits = 1_000_000_000_000

// IDBytesMax bounds request_id, account_id and lease_id.
const IDBytesMax = 128

func badID(s string) bool {
	if len(s) > IDBytesMax || !utf8.ValidString(s) {
		return true
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

// Source is a consumer-group reader (bus.Consumer).
type Source interface {
	FetchBatch(ctx context.Context, max int, linger time.Duration) ([]bus.Message, error)
	Commit(ctx context.Context, msgs ...bus.Message) error
}

// DeadLetters receives records that cannot be settled (bus.Producer on usage.dlq.v1).
type DeadLetters interface {
	Send(ctx context.Context, msgs ...bus.Message) error
}

// Store is the part of the ledger store settlement uses.
type Store interface {
	ExistingAccounts(ctx context.Context, ids []string) (map[string]bool, error)
	Offsets(ctx context.Context, group, topic string) (map[int]int64, error)
	Settle(ctx context.Context, b store.Batch) (store.SettleResult, error)
	PruneSettled(ctx context.Context, before time.Time) (int64, error)
}

// Config of the consumer. Zero values take the documented defaults.
type Config struct {
	Source Source
	DLQ    DeadLetters
	Store  Store
	Logger *slog.Logger
	// Registerer receives the metrics. Default: none registered.
	Registerer prometheus.Registerer

	// Group is the consumer group, also the key of the offsets stored in the ledger.
	// Default: "ledgerd".
	Group string
	// Topic consumed. Default: usage.Topic.
	Topic string
	// BatchMax is the most records per batch (and per database transaction). Default: 10000.
	BatchMax int
	// Linger is how long a batch keeps gathering after its first record. Default: 200ms.
	Linger time.Duration
	// Retention is how long settled request ids are kept. Records whose ts_end_ms is outside
	// Retention − ClockSkewMax of now are dead-lettered, so a record whose id was pruned can
	// never be settled twice. Default: 7 days.
	Retention time.Duration
	// ClockSkewMax is the most an edge clock may differ from ledgerd's. Default: 1h.
	ClockSkewMax time.Duration
	// PruneEvery is how often Prune deletes ids past retention. Default: 1h.
	PruneEvery time.Duration
	// BackoffMin and BackoffMax bound the retry delay after a transient failure.
	// Default: 100ms and 10s.
	BackoffMin, BackoffMax time.Duration
	// ShutdownGrace bounds finishing the current batch after Run's context ends. Default: 30s.
	ShutdownGrace time.Duration
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Group == "" {
		c.Group = "ledgerd"
	}
	if c.Topic == "" {
		c.Topic = usage.Topic
	}
	if c.BatchMax <= 0 {
		c.BatchMax = 10_000
	}
	if c.Linger <= 0 {
		c.Linger = 200 * time.Millisecond
	}
	if c.Retention <= 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.ClockSkewMax <= 0 {
		c.ClockSkewMax = time.Hour
	}
	if c.PruneEvery <= 0 {
		c.PruneEvery = time.Hour
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = 100 * time.Millisecond
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 10 * time.Second
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Consumer settles usage. Run it once; it is not safe for concurrent Runs.
type Consumer struct {
	cfg Config
	m   metrics
}

type metrics struct {
	batches  prometheus.Counter
	records  *prometheus.CounterVec
	charged  prometheus.Counter
	retries  prometheus.Counter
	duration prometheus.Histogram
	pruned   prometheus.Counter
}

// New builds a consumer.
func New(cfg Config) *Consumer {
	cfg.defaults()
	m := metrics{
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "ledgerd_settle_batches_total",
			Help: "Settlement batches committed."}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ledgerd_settle_records_total",
			Help: "Usage records by outcome: settled, duplicate (already settled), dead_letter, skipped (below the stored offset)."},
			[]string{"result"}),
		charged: prometheus.NewCounter(prometheus.CounterOpts{Name: "ledgerd_settle_microcredits_total",
			Help: "Micro-credits charged by settlement."}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "ledgerd_settle_retries_total",
			Help: "Transient failures retried."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ledgerd_settle_batch_seconds",
			Help: "Time from fetch to commit of a batch.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{Name: "ledgerd_settle_pruned_ids_total",
			Help: "Settled request ids deleted after retention."}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(m.batches, m.records, m.charged, m.retries, m.duration, m.pruned)
	}
	return &Consumer{cfg: cfg, m: m}
}

// Run settles batches until ctx ends, then finishes the batch in hand (within ShutdownGrace)
// and returns nil. It returns an error only for an invariant violation, without committing
// that batch anywhere.
//
// Two stages run side by side, so the CPU work of one batch overlaps the database work of the
// one before: prepare (fetch, skip what the ledger holds, decode, dead-letter) and apply
// (settle in one database transaction, then commit to Kafka). At most one batch waits
// between them, so memory stays bounded by three batches. Batches are applied and
// committed in the order they were fetched; a batch prepared but not applied when Run stops
// is simply not committed, and Kafka delivers it again.
func (c *Consumer) Run(ctx context.Context) error {
	log := c.cfg.Logger
	ready := make(chan *prepared, 1)
	pctx, stopPrepare := context.WithCancel(ctx)
	defer stopPrepare()
	var prepareErr error
	prepareDone := make(chan struct{})
	go func() {
		defer close(prepareDone)
		defer close(ready)
		prepareErr = c.prepareLoop(pctx, ready)
	}()
	var err error
	for b := range ready {
		if err = c.apply(ctx, b); err != nil {
			if errors.Is(err, ledger.ErrInvariant) {
				log.Error("settle_invariant_violated", "error", err, "batch", b.batch.Ref)
				err = fmt.Errorf("settle batch %s: %w", b.batch.Ref, err)
			} else {
				// Shutdown cut the batch short: nothing was committed; it will be redelivered.
				log.Warn("settle_batch_abandoned", "error", err, "batch", b.batch.Ref)
				err = nil
			}
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	stopPrepare()
	for range ready { // prepared, never applied: Kafka redelivers them
	}
	<-prepareDone
	if err != nil {
		return err
	}
	if errors.Is(prepareErr, ledger.ErrInvariant) {
		log.Error("settle_invariant_violated", "error", prepareErr)
		return prepareErr
	}
	return nil
}

// prepared is a batch ready for the database.
type prepared struct {
	msgs  []bus.Message
	batch store.Batch
	start time.Time
}

// prepareLoop fetches and prepares batches until ctx ends or an invariant breaks.
func (c *Consumer) prepareLoop(ctx context.Context, out chan<- *prepared) error {
	backoff := c.cfg.BackoffMin
	for ctx.Err() == nil {
		msgs, err := c.cfg.Source.FetchBatch(ctx, c.cfg.BatchMax, c.cfg.Linger)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.cfg.Logger.Warn("settle_fetch_failed", "error", err)
			c.m.retries.Inc()
			if !sleep(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, c.cfg.BackoffMax)
			continue
		}
		backoff = c.cfg.BackoffMin
		if len(msgs) == 0 {
			continue
		}
		start := time.Now()
		b, err := c.prepare(ctx, msgs)
		if err != nil {
			if errors.Is(err, ledger.ErrInvariant) {
				return err
			}
			return nil // ctx ended while retrying: nothing was committed
		}
		select {
		case out <- &prepared{msgs: msgs, batch: b, start: start}:
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// apply settles one prepared batch and commits it to Kafka, even if ctx ends meanwhile:
// shutdown waits up to ShutdownGrace for the batch to commit.
func (c *Consumer) apply(ctx context.Context, p *prepared) error {
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(c.cfg.ShutdownGrace, cancel)
		context.AfterFunc(actx, func() { t.Stop() })
	})
	defer stop()

	var res store.SettleResult
	if err := c.retry(actx, "settle", func() error {
		var err error
		res, err = c.cfg.Store.Settle(actx, p.batch)
		return err
	}); err != nil {
		return err
	}
	c.m.records.WithLabelValues("settled").Add(float64(res.Settled))
	c.m.records.WithLabelValues("duplicate").Add(float64(res.Duplicates))
	c.m.charged.Add(float64(res.Microcredits))
	if err := c.cfg.Source.Commit(actx, p.msgs...); err != nil {
		// The ledger already holds the offsets: a lost commit means a redelivery, which the
		// stored offsets and request ids turn into no-ops.
		c.cfg.Logger.Warn("settle_kafka_commit_failed", "error", err)
	}
	c.m.batches.Inc()
	c.m.duration.Observe(time.Since(p.start).Seconds())
	return nil
}

// prepare turns fetched messages into a ledger batch: it skips messages below the offsets
// the ledger holds, decodes and checks the rest, and dead-letters what cannot settle.
func (c *Consumer) prepare(ctx context.Context, msgs []bus.Message) (store.Batch, error) {
	var stored map[int]int64
	if err := c.retry(ctx, "read offsets", func() error {
		var err error
		stored, err = c.cfg.Store.Offsets(ctx, c.cfg.Group, c.cfg.Topic)
		return err
	}); err != nil {
		return store.Batch{}, err
	}
	next := map[int]int64{}
	fresh := make([]bus.Message, 0, len(msgs))
	for _, m := range msgs {
		next[m.Partition] = max(next[m.Partition], m.Offset+1)
		if o, ok := stored[m.Partition]; ok && m.Offset < o {
			continue
		}
		fresh = append(fresh, m)
	}
	c.m.records.WithLabelValues("skipped").Add(float64(len(msgs) - len(fresh)))

	now := c.cfg.Now()
	oldest := now.Add(-(c.cfg.Retention - c.cfg.ClockSkewMax)).UnixMilli()
	newest := now.Add(c.cfg.ClockSkewMax).UnixMilli()
	var dead []bus.Message
	deadLetter := func(m bus.Message, reason string) {
		dead = append(dead, dlqMessage(m, reason))
	}
	recs, errs := decodeAll(fresh)
	ok := make([]int, 0, len(fresh)) // indexes of fresh (and recs) that may settle
	for i, m := range fresh {
		rec, err := &recs[i], errs[i]
		switch {
		case err != nil:
			deadLetter(m, err.Error())
		case badID(rec.RequestID) || badID(rec.AccountID) || badID(rec.LeaseID):
			// Caught here because the database would refuse them (PostgreSQL rejects NUL and
			// invalid UTF-8) on every retry: poison that looks transient.
			deadLetter(m, fmt.Sprintf("request_id, account_id or lease_id over %d bytes, not UTF-8, or with control characters", IDBytesMax))
		case rec.CostMicrocredits > MaxCostMicrocredits:
			deadLetter(m, fmt.Sprintf("cost_microcredits %d over the limit %d", rec.CostMicrocredits, int64(MaxCostMicrocredits)))
		case rec.TsEndMs < oldest || rec.TsEndMs > newest:
			deadLetter(m, fmt.Sprintf("ts_end_ms %d outside the settlement window [%d, %d]: its request id may no longer be remembered",
				rec.TsEndMs, oldest, newest))
		default:
			ok = append(ok, i)
		}
	}
	if len(ok) > 0 {
		var ids []string
		seen := map[string]struct{}{}
		for _, i := range ok {
			if _, dup := seen[recs[i].AccountID]; !dup {
				seen[recs[i].AccountID] = struct{}{}
				ids = append(ids, recs[i].AccountID)
			}
		}
		var exist map[string]bool
		if err := c.retry(ctx, "check accounts", func() error {
			var err error
			exist, err = c.cfg.Store.ExistingAccounts(ctx, ids)
			return err
		}); err != nil {
			return store.Batch{}, err
		}
		kept := ok[:0]
		for _, i := range ok {
			if !exist[recs[i].AccountID] {
				deadLetter(fresh[i], fmt.Sprintf("unknown account_id %q", recs[i].AccountID))
				continue
			}
			kept = append(kept, i)
		}
		ok = kept
	}

	// Dead letters first: once the offsets commit, these records are never read again.
	if len(dead) > 0 {
		if err := c.retry(ctx, "send dead letters", func() error { return c.cfg.DLQ.Send(ctx, dead...) }); err != nil {
			return store.Batch{}, err
		}
		c.m.records.WithLabelValues("dead_letter").Add(float64(len(dead)))
		c.cfg.Logger.Warn("settle_dead_lettered", "records", len(dead), "batch", batchRef(c.cfg.Topic, msgs))
	}

	b := store.Batch{Group: c.cfg.Group, Topic: c.cfg.Topic, Offsets: next, Ref: batchRef(c.cfg.Topic, msgs),
		Usage: make([]store.Usage, len(ok))}
	for j, i := range ok {
		r := &recs[i]
		b.Usage[j] = store.Usage{RequestID: r.RequestID, AccountID: r.AccountID, LeaseID: r.LeaseID, Cost: r.CostMicrocredits}
	}
	return b, nil
}

// decodeWorkers bounds the goroutines decoding one batch. Decoding (about 3 µs a record)
// is spread over the cores so that it does not set the pace of a batch while the database
// waits.
var decodeWorkers = min(runtime.GOMAXPROCS(0), 8)

// decodeParallelMin is the batch size from which decoding is spread over workers.
const decodeParallelMin = 1000

// decodeAll decodes msgs, in parallel for large batches; results keep the messages' order.
func decodeAll(msgs []bus.Message) ([]usage.Record, []error) {
	recs, errs := make([]usage.Record, len(msgs)), make([]error, len(msgs))
	workers := decodeWorkers
	if len(msgs) < decodeParallelMin || workers < 2 {
		workers = 1
	}
	per := (len(msgs) + workers - 1) / workers
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		lo, hi := w*per, min((w+1)*per, len(msgs))
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				recs[i], errs[i] = usage.Decode(msgs[i].Value)
			}
		}()
	}
	wg.Wait()
	return recs, errs
}

// retry runs fn until it succeeds, fails with an invariant violation, or ctx ends.
func (c *Consumer) retry(ctx context.Context, what string, fn func() error) error {
	backoff := c.cfg.BackoffMin
	for {
		err := fn()
		if err == nil || errors.Is(err, ledger.ErrInvariant) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		c.m.retries.Inc()
		c.cfg.Logger.Warn("settle_retrying", "step", what, "error", err, "backoff", backoff)
		if !sleep(ctx, backoff) {
			return fmt.Errorf("%s: %w", what, err)
		}
		backoff = min(2*backoff, c.cfg.BackoffMax)
	}
}

// Prune deletes settled request ids past retention every PruneEvery until ctx ends.
func (c *Consumer) Prune(ctx context.Context) error {
	for {
		n, err := c.cfg.Store.PruneSettled(ctx, c.cfg.Now().Add(-c.cfg.Retention))
		if err != nil && ctx.Err() == nil {
			c.cfg.Logger.Warn("settle_prune_failed", "error", err)
		}
		c.m.pruned.Add(float64(n))
		if !sleep(ctx, c.cfg.PruneEvery) {
			return nil
		}
	}
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

// dlqMessage wraps a record that cannot settle: {"reason","topic","partition","offset",
// "record"}. The record is embedded as JSON when it is valid JSON, else as a string, so the
// dead letter itself is always valid JSON.
func dlqMessage(m bus.Message, reason string) bus.Message {
	var rec json.RawMessage
	if json.Valid(m.Value) {
		rec = m.Value
	} else {
		rec, _ = json.Marshal(string(m.Value))
	}
	v, _ := json.Marshal(struct {
		Reason    string          `json:"reason"`
		Topic     string          `json:"topic"`
		Partition int             `json:"partition"`
		Offset    int64           `json:"offset"`
		Record    json.RawMessage `json:"record"`
	}{reason, m.Topic, m.Partition, m.Offset, rec})
	return bus.Message{Key: m.Key, Value: v}
}

// batchRef names a batch's Kafka range, e.g. "usage.v1/0:100-250,2:7-9", for statements and
// logs: with the settled rows' journal id it traces a charge to its records.
func batchRef(topic string, msgs []bus.Message) string {
	lo, hi := map[int]int64{}, map[int]int64{}
	for _, m := range msgs {
		if o, ok := lo[m.Partition]; !ok || m.Offset < o {
			lo[m.Partition] = m.Offset
		}
		hi[m.Partition] = max(hi[m.Partition], m.Offset)
	}
	parts := make([]int, 0, len(lo))
	for p := range lo {
		parts = append(parts, p)
	}
	sort.Ints(parts)
	var b strings.Builder
	b.WriteString(topic)
	b.WriteByte('/')
	for i, p := range parts {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(p) + ":" + strconv.FormatInt(lo[p], 10) + "-" + strconv.FormatInt(hi[p], 10))
	}
	return b.String()
}
