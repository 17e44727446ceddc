// Package memq is an in-memory Sink: a bounded queue of encoded usage records and a
// background shipper that sends them to Kafka in batches with RequiredAcks=all, retrying
// until they are acknowledged. The edge itself runs sink/wal, which is durable; memq stays
// as the light sink of the request path's tests.
//
// Bound: at most QueueMax records are reserved, queued or in flight to Kafka; beyond that
// Reserve says no and the edge answers 503. Kafka down therefore turns into 503s after
// QueueMax requests, never into unbilled requests.
//
// Not durable: a crash loses what is queued. On a graceful stop Close ships what it can
// within its deadline and writes every record it could not ship to the log, whole, at error
// level ("unshipped_record"), so an operator can replay them. sink/wal removes this gap.
package memq

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"tollgate/edge/internal/sink"
	"tollgate/pkg/bus"
	"tollgate/pkg/usage"
)

// Publisher sends messages and returns once all are acknowledged. *bus.Producer implements it.
type Publisher interface {
	Send(ctx context.Context, msgs ...bus.Message) error
}

// Config of the queue.
type Config struct {
	// QueueMax bounds records reserved, queued and in flight. Required.
	QueueMax int
	// BatchMax bounds records per Send. Required.
	BatchMax int
	// Ensure, when set, runs before the first Send until it succeeds (creates the topic).
	Ensure func(ctx context.Context) error
	// BackoffMin and BackoffMax bound the wait between failed attempts.
	// Default: 50ms and 5s.
	BackoffMin, BackoffMax time.Duration
}

// retainBytesMax is the largest record buffer returned to the pool.
const retainBytesMax = 16 << 10

type item struct {
	buf    []byte // account id, then the record's JSON
	keyLen int
}

// Queue implements sink.Sink. Run ships; Close flushes.
type Queue struct {
	cfg Config
	pub Publisher
	log *slog.Logger

	ch        chan *item // capacity QueueMax: never full while used ≤ QueueMax
	used      atomic.Int64
	appending atomic.Int64 // Appends between their closed check and their send
	closed    atomic.Bool
	pool      sync.Pool

	shipped    atomic.Uint64
	shipErrors atomic.Uint64
	unshipped  atomic.Uint64

	stop     chan struct{}
	done     chan struct{}
	flushCtx context.Context // set by Close before stop is closed
	runOnce  sync.Once
}

var _ sink.Sink = (*Queue)(nil)

// New builds a queue over pub.
func New(cfg Config, pub Publisher, log *slog.Logger) *Queue {
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 50 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 5 * time.Second
	}
	return &Queue{cfg: cfg, pub: pub, log: log,
		ch: make(chan *item, cfg.QueueMax), stop: make(chan struct{}), done: make(chan struct{}),
		pool: sync.Pool{New: func() any { return &item{buf: make([]byte, 0, 1024)} }}}
}

// Reserve implements sink.Sink.
func (q *Queue) Reserve() bool {
	if q.used.Add(1) > int64(q.cfg.QueueMax) {
		q.used.Add(-1)
		return false
	}
	return true
}

// Release implements sink.Sink.
func (q *Queue) Release() { q.used.Add(-1) }

// Append implements sink.Sink.
func (q *Queue) Append(rec *usage.Record) {
	it := q.pool.Get().(*item)
	it.buf = append(it.buf[:0], rec.AccountID...)
	it.keyLen = len(rec.AccountID)
	it.buf = rec.AppendJSON(it.buf)

	q.appending.Add(1)
	if q.closed.Load() {
		q.appending.Add(-1)
		q.used.Add(-1)
		q.logUnshipped(it)
		return
	}
	q.ch <- it // never blocks: the reservation guarantees room
	q.appending.Add(-1)
}

// Len is the number of records reserved, queued or being shipped.
func (q *Queue) Len() int64 { return q.used.Load() }

// Shipped is the number of records Kafka acknowledged.
func (q *Queue) Shipped() uint64 { return q.shipped.Load() }

// Unshipped is the number of records written to the log because Kafka could not take them.
func (q *Queue) Unshipped() uint64 { return q.unshipped.Load() }

// ShipErrors is the number of failed Send attempts.
func (q *Queue) ShipErrors() uint64 { return q.shipErrors.Load() }

// Run ships records until ctx ends (a hard stop: what is left is logged) or Close asks it to
// flush and stop. It must be running for Close to return. It returns nil.
func (q *Queue) Run(ctx context.Context) error {
	defer close(q.done)
	// Once Close asked for a flush, its deadline bounds everything Run still does, including a
	// Send retrying against a Kafka that is down.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-q.stop:
			select {
			case <-q.flushCtx.Done():
				cancel()
			case <-ctx.Done():
			}
		case <-ctx.Done():
		}
	}()
	if q.cfg.Ensure != nil {
		for attempt := 0; ; attempt++ {
			err := q.cfg.Ensure(ctx)
			if err == nil {
				break
			}
			q.log.Warn("ensure_topic_failed", "error", err, "attempt", attempt)
			if !q.sleep(ctx, attempt) {
				q.drainToLog(nil)
				return nil
			}
		}
	}
	batch := make([]*item, 0, q.cfg.BatchMax)
	msgs := make([]bus.Message, 0, q.cfg.BatchMax)
	for {
		select {
		case it := <-q.ch:
			batch = append(batch[:0], it)
		case <-q.stop:
			q.flush(ctx, batch[:0], msgs)
			return nil
		case <-ctx.Done():
			q.drainToLog(nil)
			return nil
		}
	fill:
		for len(batch) < q.cfg.BatchMax {
			select {
			case it := <-q.ch:
				batch = append(batch, it)
			default:
				break fill
			}
		}
		if !q.ship(ctx, batch, msgs) {
			q.drainToLog(batch)
			return nil
		}
	}
}

// ship sends batch until Kafka acknowledges it or ctx ends; false means it gave up.
func (q *Queue) ship(ctx context.Context, batch []*item, msgs []bus.Message) bool {
	msgs = msgs[:0]
	for _, it := range batch {
		msgs = append(msgs, bus.Message{Key: it.buf[:it.keyLen], Value: it.buf[it.keyLen:]})
	}
	for attempt := 0; ; attempt++ {
		err := q.pub.Send(ctx, msgs...)
		if err == nil {
			break
		}
		q.shipErrors.Add(1)
		q.log.Warn("ship_records_failed", "error", err, "records", len(batch), "attempt", attempt)
		if !q.sleep(ctx, attempt) {
			return false
		}
	}
	q.shipped.Add(uint64(len(batch)))
	q.used.Add(-int64(len(batch)))
	for _, it := range batch {
		q.put(it)
	}
	return true
}

// flush ships everything queued, including what Appends still racing with Close send, then
// logs what could not be shipped before ctx ended.
func (q *Queue) flush(ctx context.Context, batch []*item, msgs []bus.Message) {
	for {
		batch = batch[:0]
	fill:
		for len(batch) < q.cfg.BatchMax {
			select {
			case it := <-q.ch:
				batch = append(batch, it)
			default:
				break fill
			}
		}
		if len(batch) == 0 {
			return
		}
		if !q.ship(ctx, batch, msgs) {
			q.drainToLog(batch)
			return
		}
	}
}

// Close stops taking records (later Appends are logged instead), ships what is queued
// within ctx, and logs the rest. It waits for Run to return; call it after the server has
// stopped serving. Idempotent. It returns an error when records had to be logged.
func (q *Queue) Close(ctx context.Context) error {
	if q.closed.Swap(true) {
		return nil
	}
	// Appends that passed their closed check before the Swap finish their send now.
	for q.appending.Load() > 0 {
		runtime.Gosched()
	}
	q.flushCtx = ctx
	close(q.stop)
	<-q.done
	if n := q.unshipped.Load(); n > 0 {
		return fmt.Errorf("%d usage records left unshipped (logged as unshipped_record)", n)
	}
	return nil
}

// drainToLog logs batch and everything still queued: the last resort when Kafka cannot be
// reached before the process goes away.
func (q *Queue) drainToLog(batch []*item) {
	for _, it := range batch {
		q.logUnshipped(it)
		q.used.Add(-1)
	}
	for {
		select {
		case it := <-q.ch:
			q.logUnshipped(it)
			q.used.Add(-1)
		default:
			return
		}
	}
}

func (q *Queue) logUnshipped(it *item) {
	q.unshipped.Add(1)
	q.log.Error("unshipped_record", "record", string(it.buf[it.keyLen:]))
}

func (q *Queue) put(it *item) {
	if cap(it.buf) > retainBytesMax {
		return
	}
	q.pool.Put(it)
}

// sleep waits for the backoff of attempt; false when ctx ended first.
func (q *Queue) sleep(ctx context.Context, attempt int) bool {
	d := q.cfg.BackoffMin << min(attempt, 16)
	d = min(d, q.cfg.BackoffMax)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
