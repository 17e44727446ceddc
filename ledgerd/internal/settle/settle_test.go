package settle_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/settle"
	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/postgres"
	"tollgate/ledgerd/internal/store/sqlite"
	"tollgate/ledgerd/internal/store/storetest"
	"tollgate/pkg/bus"
	"tollgate/pkg/bus/bustest"
	"tollgate/pkg/usage"
)

func ctx() context.Context { return context.Background() }

func openSQLite(t *testing.T) store.Store {
	s, err := sqlite.Open(ctx(), filepath.Join(t.TempDir(), "ledger.db"), nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// stores runs fn on SQLite and, when configured, PostgreSQL.
func stores(t *testing.T, fn func(t *testing.T, s store.Store)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, openSQLite(t)) })
	t.Run("postgres", func(t *testing.T) {
		dsn := storetest.FreshPostgres(t)
		s, err := postgres.Open(ctx(), dsn, nil, nil)
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		fn(t, s)
	})
}

func account(t *testing.T, s store.Store, credits int64) string {
	a, err := s.CreateAccount(ctx(), "acme")
	require.NoError(t, err)
	_, _, err = s.TopUp(ctx(), store.TopUp{AccountID: a.ID, OrderID: "o-" + a.ID, Credits: credits, MicroUSD: credits * 5000, Method: "admin"})
	require.NoError(t, err)
	return a.ID
}

func record(requestID, accountID string, cost int64) []byte {
	r := usage.Record{V: usage.Version, RequestID: requestID, AccountID: accountID, CostMicrocredits: cost,
		Model: "claude-sonnet-4-5", TsEndMs: time.Now().UnixMilli(), Status: 200}
	return r.AppendJSON(nil)
}

func balance(t *testing.T, s store.Store, id string) int64 {
	a, err := s.Account(ctx(), id)
	require.NoError(t, err)
	return a.Balance
}

// processed is how many records the consumer has finished with, whatever the outcome.
func processed(reg *prometheus.Registry) int {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "ledgerd_settle_records_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return int(n)
}

func waitProcessed(t *testing.T, reg *prometheus.Registry, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return processed(reg) >= n }, 30*time.Second, 10*time.Millisecond,
		"consumer did not process %d records", n)
	require.Equal(t, n, processed(reg))
}

// noCommit drops Kafka commits, as if every commit were lost in a crash.
type noCommit struct{ *bus.Consumer }

func (noCommit) Commit(context.Context, ...bus.Message) error { return nil }

// readDLQ reads exactly n dead letters.
func readDLQ(t *testing.T, brokers []string, group string, n int) []map[string]any {
	c := bus.NewConsumer(bus.ConsumerConfig{Brokers: brokers, Topic: usage.TopicDLQ, Group: group})
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx(), 30*time.Second)
	defer cancel()
	var out []map[string]any
	for len(out) < n {
		msgs, err := c.FetchBatch(cctx, n-len(out), 50*time.Millisecond)
		require.NoError(t, err)
		for _, m := range msgs {
			var v map[string]any
			require.NoError(t, json.Unmarshal(m.Value, &v), string(m.Value))
			out = append(out, v)
		}
	}
	return out
}

type running struct {
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, c *settle.Consumer) *running {
	cctx, cancel := context.WithCancel(ctx())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(cctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) {
	if r.cancel == nil {
		return
	}
	r.cancel()
	require.NoError(t, <-r.done)
	r.cancel = nil
}

// TestKafkaExactlyOnce runs settlement against the in-process Kafka broker: every record
// settles once; producing the same records again, and restarting the consumer after its
// Kafka commits were lost, change nothing; records that cannot settle reach the DLQ.
func TestKafkaExactlyOnce(t *testing.T) {
	stores(t, func(t *testing.T, s store.Store) {
		brokers := bustest.Start(t, 3, usage.Topic, usage.TopicDLQ)
		accts := []string{account(t, s, 100), account(t, s, 100), account(t, s, 1)}
		want := map[string]int64{}
		for _, a := range accts {
			want[a] = balance(t, s, a)
		}
		var good []bus.Message
		for i := range 300 {
			a := accts[i%len(accts)]
			cost := int64(10_000 + i*7)
			want[a] -= cost
			good = append(good, bus.Message{Key: []byte(a), Value: record(fmt.Sprintf("req-%03d", i), a, cost)})
		}
		// The third account overdraws: 100 records of ≥ 10,000 µcr against 1 credit may go
		// negative (estimate errors), and is still charged exactly.
		bad := []bus.Message{
			{Key: []byte("x"), Value: []byte(`{not json`)},
			{Key: []byte(accts[0]), Value: []byte(`{"v":1,"request_id":"neg","account_id":"` + accts[0] + `","cost_microcredits":-5}`)},
			{Key: []byte("acct_ghost"), Value: record("ghost", "acct_ghost", 10)},
		}
		p := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.Topic})
		defer p.Close()
		require.NoError(t, p.Send(ctx(), append(append([]bus.Message{}, good...), bad...)...))
		dlq := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.TopicDLQ})
		defer dlq.Close()

		// First run: Kafka commits are lost.
		cons := bus.NewConsumer(bus.ConsumerConfig{Brokers: brokers, Topic: usage.Topic, Group: "ledgerd"})
		reg := prometheus.NewRegistry()
		r := start(t, settle.New(settle.Config{Source: noCommit{cons}, DLQ: dlq, Store: s, Registerer: reg, BatchMax: 64, Linger: 20 * time.Millisecond}))
		waitProcessed(t, reg, len(good)+len(bad))
		r.stop(t)
		require.NoError(t, cons.Close())
		check := func() {
			t.Helper()
			for _, a := range accts {
				require.Equal(t, want[a], balance(t, s, a), "account %s", a)
			}
			require.NoError(t, s.Check(ctx()))
		}
		check()
		require.Less(t, balance(t, s, accts[2]), int64(0))
		letters := readDLQ(t, brokers, "dlq-reader", len(bad))
		reasons := map[string]bool{}
		for _, l := range letters {
			reasons[fmt.Sprint(l["reason"])] = true
			require.Contains(t, l, "record")
			require.Equal(t, usage.Topic, l["topic"])
		}
		require.Contains(t, reasons, `unknown account_id "acct_ghost"`)
		require.Len(t, reasons, 3)

		// Restart: Kafka redelivers everything; the offsets stored in the ledger skip it all.
		cons = bus.NewConsumer(bus.ConsumerConfig{Brokers: brokers, Topic: usage.Topic, Group: "ledgerd"})
		defer cons.Close()
		reg = prometheus.NewRegistry()
		r = start(t, settle.New(settle.Config{Source: cons, DLQ: dlq, Store: s, Registerer: reg, BatchMax: 64, Linger: 20 * time.Millisecond}))
		waitProcessed(t, reg, len(good)+len(bad))
		check()

		// Producer retries / WAL replay: the same records again, at new offsets. Request ids
		// make them no-ops.
		require.NoError(t, p.Send(ctx(), good...))
		waitProcessed(t, reg, 2*len(good)+len(bad))
		check()
		mfs, err := reg.Gather()
		require.NoError(t, err)
		byResult := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() == "ledgerd_settle_records_total" {
				for _, m := range mf.GetMetric() {
					byResult[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
		require.Equal(t, float64(len(good)+len(bad)), byResult["skipped"])
		require.Equal(t, float64(len(good)), byResult["duplicate"])
		require.Zero(t, byResult["settled"])
		require.Zero(t, byResult["dead_letter"], "skipped records are not dead-lettered twice")
	})
}

// fakeSource hands out prepared batches, then blocks; it records commits.
type fakeSource struct {
	mu        sync.Mutex
	batches   [][]bus.Message
	committed []bus.Message
}

func (f *fakeSource) FetchBatch(ctx context.Context, _ int, _ time.Duration) ([]bus.Message, error) {
	f.mu.Lock()
	if len(f.batches) > 0 {
		b := f.batches[0]
		f.batches = f.batches[1:]
		f.mu.Unlock()
		return b, nil
	}
	f.mu.Unlock()
	<-ctx.Done()
	return nil, ctx.Err()
}

func (f *fakeSource) Commit(_ context.Context, msgs ...bus.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.committed = append(f.committed, msgs...)
	return nil
}

func (f *fakeSource) commits() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.committed)
}

type fakeDLQ struct {
	mu    sync.Mutex
	fails int
	got   []bus.Message
}

func (f *fakeDLQ) Send(_ context.Context, msgs ...bus.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fails > 0 {
		f.fails--
		return errors.New("broker unreachable")
	}
	f.got = append(f.got, msgs...)
	return nil
}

// flakyStore fails Settle with a transient error a number of times, or with an invariant.
type flakyStore struct {
	store.Store
	mu        sync.Mutex
	fails     int
	invariant bool
}

func (f *flakyStore) Settle(ctx context.Context, b store.Batch) (store.SettleResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.invariant {
		return store.SettleResult{}, fmt.Errorf("settle: %w: lots disagree", ledger.ErrInvariant)
	}
	if f.fails > 0 {
		f.fails--
		return store.SettleResult{}, errors.New("connection refused")
	}
	return f.Store.Settle(ctx, b)
}

func msg(partition int, offset int64, value []byte) bus.Message {
	return bus.Message{Topic: usage.Topic, Partition: partition, Offset: offset, Key: []byte("k"), Value: value}
}

func TestTransientFailuresRetry(t *testing.T) {
	s := openSQLite(t)
	a := account(t, s, 10)
	src := &fakeSource{batches: [][]bus.Message{{msg(0, 0, record("r1", a, 100)), msg(0, 1, []byte("junk")), msg(1, 5, record("r2", a, 50))}}}
	dlq := &fakeDLQ{fails: 2}
	fs := &flakyStore{Store: s, fails: 3}
	reg := prometheus.NewRegistry()
	r := start(t, settle.New(settle.Config{Source: src, DLQ: dlq, Store: fs, Registerer: reg, BackoffMin: time.Millisecond, BackoffMax: 2 * time.Millisecond}))
	require.Eventually(t, func() bool { return src.commits() == 3 }, 10*time.Second, time.Millisecond)
	r.stop(t)
	require.Equal(t, int64(10_000_000-150), balance(t, s, a))
	require.Len(t, dlq.got, 1)
	off, err := s.Offsets(ctx(), "ledgerd", usage.Topic)
	require.NoError(t, err)
	require.Equal(t, map[int]int64{0: 2, 1: 6}, off)
}

func TestInvariantStopsWithoutCommit(t *testing.T) {
	s := openSQLite(t)
	a := account(t, s, 10)
	src := &fakeSource{batches: [][]bus.Message{{msg(0, 0, record("r1", a, 100))}}}
	c := settle.New(settle.Config{Source: src, DLQ: &fakeDLQ{}, Store: &flakyStore{Store: s, invariant: true}})
	err := c.Run(ctx())
	require.ErrorIs(t, err, ledger.ErrInvariant)
	require.Zero(t, src.commits())
	require.Equal(t, int64(10_000_000), balance(t, s, a))
}

func TestPoisonRecords(t *testing.T) {
	s := openSQLite(t)
	a := account(t, s, 10)
	now := time.Now()
	rec := func(id string, mutate func(r *usage.Record)) []byte {
		r := usage.Record{V: 1, RequestID: id, AccountID: a, CostMicrocredits: 1, TsEndMs: now.UnixMilli()}
		mutate(&r)
		return r.AppendJSON(nil)
	}
	src := &fakeSource{batches: [][]bus.Message{{
		msg(0, 0, rec("old", func(r *usage.Record) { r.TsEndMs = now.Add(-7 * 24 * time.Hour).UnixMilli() })),
		msg(0, 1, rec("future", func(r *usage.Record) { r.TsEndMs = now.Add(2 * time.Hour).UnixMilli() })),
		msg(0, 2, rec("huge", func(r *usage.Record) { r.CostMicrocredits = settle.MaxCostMicrocredits + 1 })),
		msg(0, 3, rec("nul\x00id", func(*usage.Record) {})),
		msg(0, 4, rec("ok", func(*usage.Record) {})),
		msg(0, 5, []byte{0xff, 0xfe}),
	}}}
	dlq := &fakeDLQ{}
	r := start(t, settle.New(settle.Config{Source: src, DLQ: dlq, Store: s, Now: func() time.Time { return now }}))
	require.Eventually(t, func() bool { return src.commits() == 6 }, 10*time.Second, time.Millisecond)
	r.stop(t)
	require.Equal(t, int64(10_000_000-1), balance(t, s, a))
	require.Len(t, dlq.got, 5)
	for _, m := range dlq.got {
		var v struct {
			Reason string          `json:"reason"`
			Offset int64           `json:"offset"`
			Record json.RawMessage `json:"record"`
		}
		require.NoError(t, json.Unmarshal(m.Value, &v), "dead letters are valid JSON even for binary records")
		require.NotEmpty(t, v.Reason)
		require.NotEmpty(t, v.Record)
	}
}

// Shutdown finishes the batch in hand: a batch fetched just before ctx ends still settles and
// commits.
func TestShutdownFinishesBatch(t *testing.T) {
	s := openSQLite(t)
	a := account(t, s, 10)
	gate := make(chan struct{})
	src := &fakeSource{batches: [][]bus.Message{{msg(0, 0, record("r1", a, 100))}}}
	fs := &blockingStore{Store: s, entered: make(chan struct{}), release: gate}
	cctx, cancel := context.WithCancel(ctx())
	done := make(chan error, 1)
	go func() { done <- settle.New(settle.Config{Source: src, DLQ: &fakeDLQ{}, Store: fs}).Run(cctx) }()
	<-fs.entered // the batch is inside Settle
	cancel()
	close(gate)
	require.NoError(t, <-done)
	require.Equal(t, 1, src.commits())
	require.Equal(t, int64(10_000_000-100), balance(t, s, a))
}

type blockingStore struct {
	store.Store
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (b *blockingStore) Settle(ctx context.Context, batch store.Batch) (store.SettleResult, error) {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	return b.Store.Settle(ctx, batch)
}
