package settle_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"tollgate/ledgerd/internal/settle"
	"tollgate/ledgerd/internal/store"
	"tollgate/ledgerd/internal/store/postgres"
	"tollgate/ledgerd/internal/store/sqlite"
	"tollgate/ledgerd/internal/store/storetest"
	"tollgate/pkg/bus"
	"tollgate/pkg/bus/bustest"
	"tollgate/pkg/cputime"
	"tollgate/pkg/usage"
)

var (
	benchBatches    = flag.String("settle.batches", "500,2000,5000,10000", "batch sizes (BatchMax) for BenchmarkSettleThroughput")
	benchAccounts   = flag.Int("settle.accounts", 200, "accounts the benchmark's usage records are spread over")
	benchPartitions = flag.Int("settle.partitions", 3, "partitions of usage.v1 in the benchmark")
	benchDBs        = flag.String("settle.dbs", "sqlite,postgres", "databases for BenchmarkSettleThroughput")
)

// timedSource notes when the first batch arrived, so the rate excludes joining the consumer
// group (seconds of protocol round trips that say nothing about settlement).
type timedSource struct {
	settle.Source
	once    sync.Once
	first   time.Time
	fetch   time.Duration // time spent fetching, after the first batch
	batches int
}

func (s *timedSource) FetchBatch(ctx context.Context, max int, linger time.Duration) ([]bus.Message, error) {
	start := time.Now()
	msgs, err := s.Source.FetchBatch(ctx, max, linger)
	if !s.first.IsZero() && len(msgs) > 0 {
		s.fetch += time.Since(start)
		s.batches++
	}
	if len(msgs) > 0 {
		s.once.Do(func() { s.first = time.Now() })
	}
	return msgs, err
}

// timedStore adds up the time settlement spends in the database.
type timedStore struct {
	store.Store
	settle, other time.Duration
}

func (s *timedStore) Settle(ctx context.Context, b store.Batch) (store.SettleResult, error) {
	start := time.Now()
	defer func() { s.settle += time.Since(start) }()
	return s.Store.Settle(ctx, b)
}

func (s *timedStore) ExistingAccounts(ctx context.Context, ids []string) (map[string]bool, error) {
	start := time.Now()
	defer func() { s.other += time.Since(start) }()
	return s.Store.ExistingAccounts(ctx, ids)
}

func (s *timedStore) Offsets(ctx context.Context, group, topic string) (map[int]int64, error) {
	start := time.Now()
	defer func() { s.other += time.Since(start) }()
	return s.Store.Offsets(ctx, group, topic)
}

// BenchmarkSettleThroughput measures settlement from Kafka into the ledger: b.N realistic usage
// records (plus 1% duplicates at new offsets, as producer retries and WAL replays make) are
// produced into the in-process broker first; then the consumer drains them into the store,
// and records/s is the unique records settled over the time from the first fetch to the last
// commit. Afterwards every balance is checked against the sum of its records' costs and the
// books audit runs: the exactly-once effect must hold at full speed.
//
//	go test -run '^$' -bench SettleThroughput -benchtime 200000x ./ledgerd/internal/settle \
//	    -settle.batches 2000,10000 -settle.dbs postgres
func BenchmarkSettleThroughput(b *testing.B) {
	for _, db := range strings.Split(*benchDBs, ",") {
		for _, bs := range strings.Split(*benchBatches, ",") {
			batch, err := strconv.Atoi(bs)
			if err != nil {
				b.Fatalf("-settle.batches: %v", err)
			}
			b.Run(fmt.Sprintf("db=%s/batch=%d", db, batch), func(b *testing.B) {
				benchSettle(b, db, batch)
			})
		}
	}
}

func benchStore(b *testing.B, db string) store.Store {
	var s store.Store
	var err error
	switch db {
	case "sqlite":
		s, err = sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "ledger.db"), nil, nil)
	case "postgres":
		dsn := os.Getenv(storetest.PostgresEnv)
		if dsn == "" {
			b.Skip("SKIPPED: " + storetest.PostgresEnv + " is not set")
		}
		s, err = postgres.Open(context.Background(), storetest.FreshPostgres(b), nil, nil)
	default:
		b.Fatalf("unknown database %q", db)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func benchSettle(b *testing.B, db string, batch int) {
	ctx := context.Background()
	s := benchStore(b, db)
	brokers := bustest.Start(b, int32(*benchPartitions), usage.Topic, usage.TopicDLQ)

	// Accounts with plenty of credit and two leases each (two edge nodes), as in production,
	// so settlement also lowers lease reservations.
	type acct struct {
		id     string
		leases []string
	}
	accts := make([]acct, *benchAccounts)
	for i := range accts {
		a, err := s.CreateAccount(ctx, fmt.Sprintf("bench-%d", i))
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := s.TopUp(ctx, store.TopUp{AccountID: a.ID, OrderID: "seed-" + a.ID, Credits: 275_000, MicroUSD: 1_250_000_000, Method: "admin"}); err != nil {
			b.Fatal(err)
		}
		accts[i].id = a.ID
		for e := range 2 {
			l, err := s.GrantLease(ctx, store.LeaseGrant{AccountID: a.ID, EdgeID: fmt.Sprintf("edge-%d", e), Want: 1_000_000_000,
				Min: 1, TTL: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			accts[i].leases = append(accts[i].leases, l.ID)
		}
	}
	before := map[string]int64{}
	for _, a := range accts {
		acc, err := s.Account(ctx, a.id)
		if err != nil {
			b.Fatal(err)
		}
		before[a.id] = acc.Balance
	}

	// b.N unique records, skewed over accounts (a few heavy clients), and 1% sent twice.
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[string]int64{}
	var msgs []bus.Message
	now := time.Now().UnixMilli()
	for i := 0; i < b.N; i++ {
		a := accts[min(int(rng.ExpFloat64()*float64(len(accts))/4), len(accts)-1)]
		cost := 1 + rng.Int64N(50_000)
		rec := usage.Record{V: usage.Version, RequestID: uuid.Must(uuid.NewV7()).String(), EdgeID: "edge-0", Seq: uint64(i),
			AccountID: a.id, KeyID: "key_bench", LeaseID: a.leases[i%2], Model: "claude-sonnet-4-5-20250929",
			ModelRequested: "claude-sonnet-4-5", TsStartMs: now - 900, TsEndMs: now, TtfbMs: 300, Status: 200, Stream: true,
			StopReason: "end_turn", Usage: usage.Tokens{Input: 1200, Output: 350, CacheRead: 4000},
			CostMicrocredits: cost, UpstreamCostMicroUSD: cost / 300, PriceVersion: "2026-11-01", UpstreamKeyID: "up-1",
			UpstreamRequestID: "req_0123456789abcdef"}
		want[a.id] += cost
		m := bus.Message{Key: []byte(a.id), Value: rec.AppendJSON(nil)}
		msgs = append(msgs, m)
		if rng.IntN(100) == 0 {
			msgs = append(msgs, m)
		}
	}
	p := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.Topic, BatchSize: 1000}) // kfake refuses produce batches over 1 MiB
	defer p.Close()
	for start := 0; start < len(msgs); start += 20_000 {
		if err := p.Send(ctx, msgs[start:min(start+20_000, len(msgs))]...); err != nil {
			b.Fatal(err)
		}
	}
	// Only the count is needed from here on; dropping the records (and collecting now) keeps
	// the collector's work on them out of the CPU measured below.
	sent := len(msgs)
	msgs = nil
	runtime.GC()
	dlq := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.TopicDLQ})
	defer dlq.Close()

	cons := bus.NewConsumer(bus.ConsumerConfig{Brokers: brokers, Topic: usage.Topic, Group: "ledgerd", MaxWait: 50 * time.Millisecond})
	defer cons.Close()
	src := &timedSource{Source: cons}
	reg := prometheus.NewRegistry()
	ts := &timedStore{Store: s}
	c := settle.New(settle.Config{Source: src, DLQ: dlq, Store: ts, Registerer: reg, BatchMax: batch, Linger: 50 * time.Millisecond})
	b.ResetTimer()
	cpu0 := processCPU(b)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	deadline := time.Now().Add(10 * time.Minute)
	for processed(reg) < sent {
		if time.Now().After(deadline) {
			b.Fatalf("drained %d of %d records in 10 minutes", processed(reg), sent)
		}
		time.Sleep(2 * time.Millisecond)
	}
	end := time.Now()
	cpu := processCPU(b) - cpu0
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	elapsed := end.Sub(src.first)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(sent-b.N), "duplicates")
	// CPU, not wall time: what settlement takes from whatever shares its cores. It is the
	// whole process's, so it includes the in-process broker serving the fetches.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/record")

	b.Logf("%d batches in %v: fetching %v, settling in the database %v, other reads %v", src.batches, elapsed.Round(time.Millisecond),
		src.fetch.Round(time.Millisecond), ts.settle.Round(time.Millisecond), ts.other.Round(time.Millisecond))

	// Exactly once: each balance dropped by exactly its records' costs; the books balance.
	for _, a := range accts {
		acc, err := s.Account(ctx, a.id)
		if err != nil {
			b.Fatal(err)
		}
		if got := before[a.id] - acc.Balance; got != want[a.id] {
			b.Fatalf("account %s charged %d µcr, want %d", a.id, got, want[a.id])
		}
	}
	if err := s.Check(ctx); err != nil {
		b.Fatal(err)
	}
}

// processCPU is the user plus system CPU time the process has used so far.
func processCPU(b *testing.B) time.Duration {
	d, err := cputime.Self()
	if err != nil {
		b.Fatal(err)
	}
	return d
}
