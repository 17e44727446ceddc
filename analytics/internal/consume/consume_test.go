package consume_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"tollgate/analytics/internal/consume"
	"tollgate/pkg/bus"
	"tollgate/pkg/usage"
)

func rec(id string, cost int64) usage.Record {
	return usage.Record{V: 1, RequestID: id, AccountID: "acct", Model: "m", CostMicrocredits: cost}
}

func msg(offset int64, r usage.Record) bus.Message {
	return bus.Message{Topic: usage.Topic, Partition: 0, Offset: offset, Key: []byte(r.AccountID), Value: r.AppendJSON(nil)}
}

func TestPlan(t *testing.T) {
	a, b := rec("a", 1), rec("b", 2)
	bad := rec("c", -5) // negative cost fails validation
	cases := []struct {
		name       string
		msgs       []bus.Message
		wantIDs    []string
		wantDups   int
		wantDead   int
		deadReason string
	}{
		{"empty", nil, []string{}, 0, 0, ""},
		{"valid", []bus.Message{msg(0, a), msg(1, b)}, []string{"a", "b"}, 0, 0, ""},
		{"duplicate keeps first", []bus.Message{msg(0, a), msg(1, b), msg(2, a)}, []string{"a", "b"}, 1, 0, ""},
		{"invalid field", []bus.Message{msg(0, a), msg(1, bad)}, []string{"a"}, 0, 1, "cost_microcredits"},
		{"not json", []bus.Message{{Offset: 3, Value: []byte("{nope")}}, []string{}, 0, 1, "not valid JSON"},
		{"empty value", []bus.Message{{Offset: 4}}, []string{}, 0, 1, "invalid usage record"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := consume.Plan(c.msgs)
			ids := []string{}
			for _, r := range got.Records {
				ids = append(ids, r.RequestID)
			}
			require.Equal(t, c.wantIDs, ids)
			require.Equal(t, c.wantDups, got.Duplicates)
			require.Len(t, got.DeadLetters, c.wantDead)
			for _, d := range got.DeadLetters {
				var dl consume.DeadLetter
				require.NoError(t, json.Unmarshal(d.Value, &dl))
				require.Contains(t, dl.Reason, c.deadReason)
				require.Equal(t, "analytics", dl.Consumer)
			}
		})
	}
}

func TestPlanDeadLetterKeepsBytes(t *testing.T) {
	raw := []byte("\xff\xfe not utf8")
	got := consume.Plan([]bus.Message{{Topic: usage.Topic, Partition: 2, Offset: 9, Key: []byte("k"), Value: raw}})
	require.Len(t, got.DeadLetters, 1)
	d := got.DeadLetters[0]
	require.Equal(t, []byte("k"), d.Key)
	var dl consume.DeadLetter
	require.NoError(t, json.Unmarshal(d.Value, &dl))
	require.Equal(t, raw, dl.ValueBase64)
	require.Empty(t, dl.Value)
	require.Equal(t, 2, dl.Partition)
	require.Equal(t, int64(9), dl.Offset)
}

// FuzzPlan: every message is accounted for exactly once, and every dead letter carries the
// original bytes.
func FuzzPlan(f *testing.F) {
	a := rec("a", 1)
	f.Add(a.AppendJSON(nil), []byte(`{"v":1}`))
	f.Add([]byte(`{"v":1,"request_id":"x","account_id":"y","usage":{"input":1.5}}`), []byte("\x00"))
	f.Add(a.AppendJSON(nil), a.AppendJSON(nil))
	f.Fuzz(func(t *testing.T, v1, v2 []byte) {
		msgs := []bus.Message{{Offset: 1, Value: v1}, {Offset: 2, Value: v2}}
		b := consume.Plan(msgs)
		require.Equal(t, len(msgs), len(b.Records)+b.Duplicates+len(b.DeadLetters))
		for _, d := range b.DeadLetters {
			var dl consume.DeadLetter
			require.NoError(t, json.Unmarshal(d.Value, &dl))
			orig := v1
			if dl.Offset == 2 {
				orig = v2
			}
			if dl.Value != "" {
				require.Equal(t, string(orig), dl.Value)
			} else {
				require.Equal(t, string(orig), string(dl.ValueBase64))
			}
		}
		for _, r := range b.Records {
			require.NoError(t, r.Validate())
		}
	})
}

// fakeSource hands out fixed batches and records commits.
type fakeSource struct {
	mu        sync.Mutex
	batches   [][]bus.Message
	committed [][]bus.Message
	done      chan struct{}       // closed when the batches run out
	onCommit  func([]bus.Message) // called before a commit is recorded
}

func (s *fakeSource) FetchBatch(ctx context.Context, _ int, _ time.Duration) ([]bus.Message, error) {
	s.mu.Lock()
	if len(s.batches) > 0 {
		b := s.batches[0]
		s.batches = s.batches[1:]
		s.mu.Unlock()
		return b, nil
	}
	s.mu.Unlock()
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (s *fakeSource) Commit(_ context.Context, msgs ...bus.Message) error {
	s.onCommit(msgs)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.committed = append(s.committed, msgs)
	return nil
}

// flakySink fails its first failures inserts, optionally after storing (as an insert whose
// answer was lost), and counts the rows it stores per request id.
type flakySink struct {
	mu         sync.Mutex
	failures   int
	landAnyway bool
	rows       map[string]int
	saved      map[int]int64 // next offset by partition, as SaveOffsets was told
}

func (s *flakySink) SaveOffsets(_ context.Context, group, topic string, next map[int]int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if group != "analytics" || topic != usage.Topic {
		return fmt.Errorf("offsets saved for group %q topic %q", group, topic)
	}
	if s.saved == nil {
		s.saved = map[int]int64{}
	}
	for p, o := range next {
		s.saved[p] = max(s.saved[p], o)
	}
	return nil
}

func (s *flakySink) savedOffset(p int) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saved[p]
}

func (s *flakySink) stored(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rows[id] > 0
}

func (s *flakySink) Existing(_ context.Context, recs []usage.Record) (map[string]struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]struct{}{}
	for _, r := range recs {
		if s.rows[r.RequestID] > 0 {
			out[r.RequestID] = struct{}{}
		}
	}
	return out, nil
}

func (s *flakySink) Insert(_ context.Context, recs []usage.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failures > 0 {
		s.failures--
		if s.landAnyway {
			for _, r := range recs {
				s.rows[r.RequestID]++
			}
		}
		return errors.New("clickhouse: connection reset")
	}
	for _, r := range recs {
		s.rows[r.RequestID]++
	}
	return nil
}

type nopDLQ struct{}

func (nopDLQ) Send(context.Context, ...bus.Message) error { return nil }

// TestRetryNeverCommitsEarly: while the store fails, nothing is committed; an insert that
// failed after landing is not repeated; every record ends up stored once.
func TestRetryNeverCommitsEarly(t *testing.T) {
	for _, land := range []bool{false, true} {
		src := &fakeSource{done: make(chan struct{}), batches: [][]bus.Message{
			{msg(0, rec("a", 1)), msg(1, rec("b", 2))},
			{msg(2, rec("b", 2)), msg(3, rec("c", 3))},
		}}
		sink := &flakySink{failures: 3, landAnyway: land, rows: map[string]int{}}
		var early []string
		var unsaved []int64
		src.onCommit = func(msgs []bus.Message) {
			for _, r := range consume.Plan(msgs).Records {
				if !sink.stored(r.RequestID) {
					early = append(early, r.RequestID) // committed before stored
				}
			}
			for _, m := range msgs {
				if sink.savedOffset(m.Partition) <= m.Offset {
					unsaved = append(unsaved, m.Offset) // committed before its offset was saved
				}
			}
		}
		m, err := consume.NewMetrics(prometheus.NewRegistry())
		require.NoError(t, err)
		c := consume.New(consume.Config{BackoffMin: time.Millisecond, BackoffMax: 2 * time.Millisecond},
			src, sink, nopDLQ{}, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
		ctx, cancel := context.WithCancel(context.Background())
		runErr := make(chan error, 1)
		go func() { runErr <- c.Run(ctx) }()
		<-src.done
		cancel()
		require.NoError(t, <-runErr)

		require.Equal(t, map[string]int{"a": 1, "b": 1, "c": 1}, sink.rows, "landAnyway=%v", land)
		require.Len(t, src.committed, 2)
		require.Empty(t, early, "offsets committed before their records were stored")
		require.Empty(t, unsaved, "offsets committed to Kafka before they were saved in the store")
		require.Equal(t, map[int]int64{0: 4}, sink.saved, "next offset after the last message")
		// Without landing, the three failures are three retries. With landing, each failed
		// insert's rows are found by the retry's existence check, so nothing is inserted
		// again and one failure is never used.
		wantRetries := map[bool]float64{false: 3, true: 2}[land]
		require.Equal(t, wantRetries, testutil.ToFloat64(m.Retries.WithLabelValues("store")))
	}
}
