package consume_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"tollgate/analytics/internal/consume"
	"tollgate/analytics/internal/store"
	"tollgate/analytics/internal/store/clickhouse"
	"tollgate/analytics/internal/store/storetest"
	"tollgate/pkg/bus"
	"tollgate/pkg/bus/bustest"
	"tollgate/pkg/usage"
)

// countingSource counts the messages whose offsets were committed, so a test knows when the
// consumer is done with what was produced without guessing at timing.
type countingSource struct {
	*bus.Consumer
	committed atomic.Int64
}

func (s *countingSource) Commit(ctx context.Context, msgs ...bus.Message) error {
	if err := s.Consumer.Commit(ctx, msgs...); err != nil {
		return err
	}
	s.committed.Add(int64(len(msgs)))
	return nil
}

type harness struct {
	t       *testing.T
	brokers []string
	st      *clickhouse.Store
	conn    driver.Conn
	db      string
	prod    *bus.Producer
	dlq     *bus.Producer
}

func newHarness(t *testing.T) *harness {
	st, dsn := storetest.Open(t)
	brokers := bustest.Start(t, 4, usage.Topic, usage.TopicDLQ)
	h := &harness{t: t, brokers: brokers, st: st, conn: storetest.Conn(t, dsn), db: st.Database(),
		prod: bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.Topic}),
		dlq:  bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.TopicDLQ})}
	t.Cleanup(func() { _ = h.prod.Close(); _ = h.dlq.Close() })
	return h
}

func (h *harness) consumer(m *consume.Metrics, src consume.Source) *consume.Consumer {
	return consume.New(consume.Config{BatchRowsMax: 700, BatchLinger: 50 * time.Millisecond,
		BackoffMin: 10 * time.Millisecond}, src, h.st, h.dlq, m, slog.New(slog.DiscardHandler))
}

func (h *harness) groupConsumer() *bus.Consumer {
	return bus.NewConsumer(bus.ConsumerConfig{Brokers: h.brokers, Topic: usage.Topic, Group: "analytics",
		MaxWait: 50 * time.Millisecond})
}

// run consumes until n more messages have been committed, then stops the consumer.
func (h *harness) run(n int64) *consume.Metrics {
	t := h.t
	m, err := consume.NewMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	src := &countingSource{Consumer: h.groupConsumer()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.consumer(m, src).Run(ctx) }()
	deadline := time.Now().Add(60 * time.Second) // a hang guard, not a timing assertion
	for src.committed.Load() < n {
		require.True(t, time.Now().Before(deadline), "only %d of %d messages committed", src.committed.Load(), n)
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, src.Close())
	require.Equal(t, n, src.committed.Load(), "committed more than was produced")
	return m
}

func (h *harness) produce(recs []usage.Record, raw ...[]byte) {
	msgs := make([]bus.Message, 0, len(recs)+len(raw))
	for i := range recs {
		msgs = append(msgs, bus.Message{Key: []byte(recs[i].AccountID), Value: recs[i].AppendJSON(nil)})
	}
	for _, v := range raw {
		msgs = append(msgs, bus.Message{Key: []byte("bad"), Value: v})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(h.t, h.prod.Send(ctx, msgs...))
}

type rollupKey struct{ day, account, model string }

// check compares ClickHouse with the records that should be stored, computed independently:
// exactly one raw row per request (no FINAL, so an extra insert would show) and daily rollups
// equal to sums over the records.
func (h *harness) check(want []usage.Record) {
	t := h.t
	ctx := context.Background()
	var rows, ids uint64
	require.NoError(t, h.conn.QueryRow(ctx, "SELECT count(), uniqExact(request_id) FROM "+h.db+".requests").Scan(&rows, &ids))
	require.Equal(t, uint64(len(want)), ids, "distinct requests")
	require.Equal(t, uint64(len(want)), rows, "raw rows: a request was inserted twice")

	wantRollup := map[rollupKey]store.Totals{}
	for i := range want {
		r := &want[i]
		k := rollupKey{time.UnixMilli(r.TsEndMs).UTC().Format("2006-01-02"), r.AccountID, r.Model}
		tot := wantRollup[k]
		tot.AddRecord(r)
		wantRollup[k] = tot
	}
	q := `SELECT toString(day), account_id, model, sum(requests), sum(input_tokens), sum(output_tokens),
		sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(cache_read_tokens),
		sum(thinking_tokens), sum(web_search_requests), sum(cost_microcredits), sum(upstream_cost_microusd)
		FROM ` + h.db + `.usage_daily GROUP BY day, account_id, model`
	res, err := h.conn.Query(ctx, q)
	require.NoError(t, err)
	defer res.Close()
	got := map[rollupKey]store.Totals{}
	for res.Next() {
		var k rollupKey
		var n uint64
		var tot store.Totals
		require.NoError(t, res.Scan(&k.day, &k.account, &k.model, &n, &tot.InputTokens, &tot.OutputTokens,
			&tot.CacheWrite5mTokens, &tot.CacheWrite1hTokens, &tot.CacheReadTokens, &tot.ThinkingTokens,
			&tot.WebSearchRequests, &tot.CostMicrocredits, &tot.UpstreamCostMicroUSD))
		tot.Requests = int64(n)
		got[k] = tot
	}
	require.NoError(t, res.Err())
	require.Equal(t, wantRollup, got, "daily rollups")
}

func outcome(m *consume.Metrics, o string) int {
	return int(testutil.ToFloat64(m.Records.WithLabelValues(o)))
}

// TestConsumeExactlyOnce: records reach ClickHouse once each, through producer duplicates,
// redelivery of the whole topic, and a consumer that stored a batch and died before committing.
func TestConsumeExactlyOnce(t *testing.T) {
	h := newHarness(t)
	base := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	recs := storetest.Records(11, 3000, base)
	invalid := [][]byte{[]byte("not json"), []byte(`{"v":1,"request_id":"","account_id":"a"}`),
		[]byte(`{"v":1,"request_id":"x","account_id":"a","cost_microcredits":-1}`)}

	// 1. Every record once, 200 of them twice more (producer retries), and three invalid ones.
	h.produce(recs, invalid...)
	h.produce(recs[:200])
	h.produce(recs[:200])
	m := h.run(int64(len(recs) + 400 + len(invalid)))
	require.Equal(t, len(recs), outcome(m, "inserted"))
	require.Equal(t, 400, outcome(m, "existing")+outcome(m, "duplicate"))
	require.Equal(t, len(invalid), outcome(m, "dead_letter"))
	h.check(recs)
	h.checkDLQ(invalid)

	// 2. The whole topic again (a replayed WAL): nothing changes.
	h.produce(recs)
	m = h.run(int64(len(recs)))
	require.Equal(t, 0, outcome(m, "inserted"))
	require.Equal(t, len(recs), outcome(m, "existing")+outcome(m, "duplicate"))
	h.check(recs)

	// 3. A consumer stores new records and dies before committing: they are redelivered to the
	// next consumer of the group, which finds them stored and adds nothing.
	more := storetest.Records(12, 1500, base)
	h.produce(more)
	crashM, err := consume.NewMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	dying := h.groupConsumer()
	crashing := h.consumer(crashM, dying)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for fetched := 0; fetched < len(more); {
		msgs, err := dying.FetchBatch(ctx, 400, 50*time.Millisecond)
		require.NoError(t, err)
		fetched += len(msgs)
		_, err = crashing.StoreBatch(ctx, msgs) // stored, never committed
		require.NoError(t, err)
	}
	require.NoError(t, dying.Close())
	require.Equal(t, len(more), outcome(crashM, "inserted"))
	all := append(append([]usage.Record{}, recs...), more...)
	h.check(all)

	m = h.run(int64(len(more)))
	require.Equal(t, 0, outcome(m, "inserted"))
	require.Equal(t, len(more), outcome(m, "existing")+outcome(m, "duplicate"))
	h.check(all)
}

func (h *harness) checkDLQ(want [][]byte) {
	t := h.t
	c := bus.NewConsumer(bus.ConsumerConfig{Brokers: h.brokers, Topic: usage.TopicDLQ, Group: "dlq-reader",
		MaxWait: 50 * time.Millisecond})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := map[string]string{}
	for len(got) < len(want) {
		msgs, err := c.FetchBatch(ctx, 10, 50*time.Millisecond)
		require.NoError(t, err)
		for _, m := range msgs {
			var d consume.DeadLetter
			require.NoError(t, json.Unmarshal(m.Value, &d))
			require.Equal(t, usage.Topic, d.Topic)
			got[d.Value] = d.Reason
		}
	}
	require.Len(t, got, len(want))
	for _, v := range want {
		require.Contains(t, got, string(v))
		require.Contains(t, got[string(v)], "invalid usage record", fmt.Sprintf("reason for %q", v))
	}
}

// deadLetterLog keeps what was dead-lettered.
type deadLetterLog struct {
	mu   sync.Mutex
	msgs []bus.Message
}

func (d *deadLetterLog) Send(_ context.Context, msgs ...bus.Message) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.msgs = append(d.msgs, msgs...)
	return nil
}

// TestRedeliveryOnAFullDay: a batch lands on a day that already holds 100,000 rows, merged into
// one part as background merges leave a day: 2,000 new records from the day's last seconds,
// 5 records hours older that were never stored and 5 that were (edge WAL replays), and two
// invalid messages. Delivered again (a crash before the commit), nothing is inserted, the
// invalid ones reach the dead letters again with their bytes, and the base table (raw rows)
// and the daily rollups equal the records, compared as exact integers.
func TestRedeliveryOnAFullDay(t *testing.T) {
	st, dsn := storetest.Open(t)
	h := &harness{t: t, st: st, conn: storetest.Conn(t, dsn), db: st.Database()}
	ctx := context.Background()
	dayStart := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	day := storetest.DayRecords(61, 100_000, dayStart, 23*time.Hour, 500)
	require.NoError(t, st.Insert(ctx, day))
	storetest.MergeFinal(t, h.conn, h.db, "requests", "request_ids")

	fresh := storetest.DayRecords(62, 2000, dayStart.Add(23*time.Hour-2*time.Second), 2*time.Second, 500)
	replayedNew := storetest.DayRecords(63, 5, dayStart.Add(13*time.Hour), 9*time.Hour, 500)
	replayedStored := day[40_000:40_005]
	batch := append(append(append([]usage.Record{}, fresh...), replayedNew...), replayedStored...)
	invalid := [][]byte{[]byte(`{"v":1,"request_id":"","account_id":"a"}`), []byte("not json")}
	msgs := make([]bus.Message, 0, len(batch)+len(invalid))
	for i := range batch {
		msgs = append(msgs, bus.Message{Topic: usage.Topic, Partition: i % 4, Offset: int64(i / 4),
			Key: []byte(batch[i].AccountID), Value: batch[i].AppendJSON(nil)})
	}
	for i, v := range invalid {
		msgs = append(msgs, bus.Message{Topic: usage.Topic, Partition: 0, Offset: int64(len(batch) + i), Value: v})
	}

	m, err := consume.NewMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	dlq := &deadLetterLog{}
	c := consume.New(consume.Config{BackoffMin: 10 * time.Millisecond}, nil, st, dlq, m, slog.New(slog.DiscardHandler))
	res, err := c.StoreBatch(ctx, msgs)
	require.NoError(t, err)
	require.Equal(t, consume.Result{Inserted: len(fresh) + len(replayedNew), Existing: len(replayedStored),
		DeadLetters: len(invalid)}, res)
	res, err = c.StoreBatch(ctx, msgs)
	require.NoError(t, err)
	require.Equal(t, consume.Result{Existing: len(batch), DeadLetters: len(invalid)}, res, "redelivered")

	h.check(append(append(append([]usage.Record{}, day...), fresh...), replayedNew...))
	require.Len(t, dlq.msgs, 2*len(invalid))
	for i, d := range dlq.msgs {
		var dl consume.DeadLetter
		require.NoError(t, json.Unmarshal(d.Value, &dl))
		require.Equal(t, string(invalid[i%len(invalid)]), dl.Value)
		require.Contains(t, dl.Reason, "invalid usage record")
	}
}
