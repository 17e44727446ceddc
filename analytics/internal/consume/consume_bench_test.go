package consume_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"tollgate/analytics/internal/consume"
	"tollgate/analytics/internal/store/storetest"
	"tollgate/pkg/bus"
	"tollgate/pkg/bus/bustest"
	"tollgate/pkg/cputime"
	"tollgate/pkg/usage"
)

// benchRecords returns n records shaped like the edge's under `bench compare` (UUIDv7 request
// ids, a Sonnet request with cache reads, 100 accounts, ends within the last minute), as
// messages, and the sum of their costs.
func benchRecords(n int) ([]bus.Message, int64) {
	now := time.Now().UnixMilli()
	msgs := make([]bus.Message, n)
	var cost int64
	for i := range msgs {
		r := usage.Record{V: usage.Version, RequestID: uuid.Must(uuid.NewV7()).String(), EdgeID: "edge-1",
			Seq: uint64(i + 1), AccountID: fmt.Sprintf("acct_%03d", i%100), KeyID: fmt.Sprintf("key_%03d", i%100),
			LeaseID: fmt.Sprintf("lease_%03d_%d", i%100, i%7), Model: "claude-sonnet-4-5-20250929",
			ModelRequested: "claude-sonnet-4-5", TsStartMs: now - 60_000 + int64(i%60_000) - 250,
			TsEndMs: now - 60_000 + int64(i%60_000), TtfbMs: 180, Status: 200, Stream: i%2 == 0,
			StopReason: "end_turn", Usage: usage.Tokens{Input: 200, Output: 120, CacheRead: 900},
			CostMicrocredits: 2_670_000 + int64(i%1000), UpstreamCostMicroUSD: 2_670 + int64(i%10),
			PriceVersion: "2026-11-01", UpstreamKeyID: "up-1", UpstreamRequestID: fmt.Sprintf("msg_%024x", i)}
		cost += r.CostMicrocredits
		msgs[i] = bus.Message{Topic: usage.Topic, Partition: i % usage.TopicPartitions, Offset: int64(i / usage.TopicPartitions),
			Key: []byte(r.AccountID), Value: r.AppendJSON(nil)}
	}
	return msgs, cost
}

// BenchmarkPlan is step 1 of a batch the size `bench compare` makes (10,000 records/s gathered
// for BatchLinger 1 s): decode, validate, dedupe. Run with -benchmem; ns/record and
// allocs/record divide by the batch.
func BenchmarkPlan(b *testing.B) {
	msgs, _ := benchRecords(10_000)
	b.ReportAllocs()
	for b.Loop() {
		if p := consume.Plan(msgs); len(p.Records) != len(msgs) {
			b.Fatalf("planned %d records of %d", len(p.Records), len(msgs))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(msgs)), "ns/record")
}

// envKafkaHelper makes the test binary a broker process: see TestKafkaHelperProcess.
const envKafkaHelper = "TOLLGATE_BENCH_KAFKA_HELPER"

// TestKafkaHelperProcess is not a test: BenchmarkConsumeToClickHouse runs the test binary
// again with only this function and envKafkaHelper set, so the kfake broker (bustest.Start)
// runs in a process of its own and its CPU stays out of the benchmark's getrusage. It prints
// the broker's address and serves until its stdin closes.
func TestKafkaHelperProcess(t *testing.T) {
	if os.Getenv(envKafkaHelper) != "1" {
		t.Skip("runs only as BenchmarkConsumeToClickHouse's broker process")
	}
	brokers := bustest.Start(t, usage.TopicPartitions, usage.Topic, usage.TopicDLQ)
	fmt.Println("brokers=" + strings.Join(brokers, ","))
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// startKafkaProcess runs TestKafkaHelperProcess in a child process and returns its brokers.
func startKafkaProcess(b *testing.B) []string {
	exe, err := os.Executable()
	if err != nil {
		b.Fatalf("find test binary: %v", err)
	}
	cmd := exec.Command(exe, "-test.run=^TestKafkaHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envKafkaHelper+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start broker process: %v", err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if addrs, ok := strings.CutPrefix(sc.Text(), "brokers="); ok {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return strings.Split(addrs, ",")
		}
	}
	b.Fatalf("broker process exited without printing its address: %v", sc.Err())
	return nil
}

// BenchmarkConsumeToClickHouse measures analytics' CPU per record on the real path: b.N
// records are produced into a kfake broker first (outside the measurement), then the consumer
// fetches them in batches of 10,000 (what `bench compare`'s 10,000 records/s and 1 s
// BatchLinger make), plans them, asks ClickHouse which exist, inserts them, saves offsets and
// commits. cpu-µs/record is getrusage of this process over that span divided by b.N: the
// consumer, kafka-go and clickhouse-go. The broker runs in a child process and the ClickHouse
// server is a process of its own, so neither is in the figure. Afterwards the rows are
// counted and their costs summed against the records'.
//
//	deploy/dev/clickhouse.sh start /tmp/ch 19500 19501
//	TOLLGATE_TEST_CLICKHOUSE_ADDR=127.0.0.1:19500 go test -run '^$' \
//	    -bench ConsumeToClickHouse -benchtime 50000x ./analytics/internal/consume
func BenchmarkConsumeToClickHouse(b *testing.B) {
	st, _ := storetest.Open(b)
	brokers := startKafkaProcess(b)
	ctx := context.Background()
	msgs, wantCost := benchRecords(b.N)
	p := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.Topic, BatchSize: 1000}) // kfake refuses produce batches over 1 MiB
	defer p.Close()
	for start := 0; start < len(msgs); start += 20_000 {
		if err := p.Send(ctx, msgs[start:min(start+20_000, len(msgs))]...); err != nil {
			b.Fatal(err)
		}
	}
	dlq := bus.NewProducer(bus.ProducerConfig{Brokers: brokers, Topic: usage.TopicDLQ})
	defer dlq.Close()
	m, err := consume.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	src := &countingSource{Consumer: bus.NewConsumer(bus.ConsumerConfig{Brokers: brokers, Topic: usage.Topic,
		Group: "analytics", MaxWait: 50 * time.Millisecond})}
	defer src.Close()
	c := consume.New(consume.Config{BatchRowsMax: 10_000, BatchLinger: 200 * time.Millisecond}, src, st, dlq, m,
		slog.New(slog.DiscardHandler))

	b.ResetTimer()
	cpu0 := processCPU(b)
	start := time.Now()
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	deadline := start.Add(10 * time.Minute) // a hang guard
	for src.committed.Load() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("committed %d of %d records in 10 minutes", src.committed.Load(), b.N)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cpu := processCPU(b) - cpu0
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/record")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")

	var rows uint64
	var cost int64
	conn := storetest.Conn(b, "clickhouse://"+os.Getenv(storetest.EnvAddr))
	q := "SELECT count(), sum(cost_microcredits) FROM " + st.Database() + ".requests"
	if err := conn.QueryRow(ctx, q).Scan(&rows, &cost); err != nil {
		b.Fatal(err)
	}
	if rows != uint64(b.N) || cost != wantCost {
		b.Fatalf("stored %d rows costing %d µcr, want %d costing %d", rows, cost, b.N, wantCost)
	}
}

// BenchmarkStoreBatch is steps 1–4 of the consumer — plan, the existence check, the insert and
// saving offsets — for batches of 10,000 new records, against a real ClickHouse and without
// Kafka: the part of analytics' CPU that is its own code and clickhouse-go, with less noise
// than BenchmarkConsumeToClickHouse. One op is one batch; cpu-µs/record is getrusage of this
// process over the StoreBatch calls (the ClickHouse server is not in it).
//
//	TOLLGATE_TEST_CLICKHOUSE_ADDR=127.0.0.1:19500 go test -run '^$' \
//	    -bench StoreBatch -benchtime 20x -benchmem ./analytics/internal/consume
func BenchmarkStoreBatch(b *testing.B) {
	const batch = 10_000
	st, _ := storetest.Open(b)
	m, err := consume.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	c := consume.New(consume.Config{}, nil, st, nil, m, slog.New(slog.DiscardHandler))
	batches := make([][]bus.Message, b.N)
	var wantCost int64
	for i := range batches {
		var cost int64
		batches[i], cost = benchRecords(batch)
		wantCost += cost
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU(b)
	for _, msgs := range batches {
		res, err := c.StoreBatch(ctx, msgs)
		if err != nil || res.Inserted != batch {
			b.Fatalf("stored %+v, %v; want %d inserted", res, err, batch)
		}
	}
	cpu := processCPU(b) - cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N*batch), "cpu-µs/record")

	var cost int64
	q := "SELECT sum(cost_microcredits) FROM " + st.Database() + ".requests"
	if err := storetest.Conn(b, "clickhouse://"+os.Getenv(storetest.EnvAddr)).QueryRow(ctx, q).Scan(&cost); err != nil {
		b.Fatal(err)
	}
	if cost != wantCost {
		b.Fatalf("stored rows cost %d µcr, want %d", cost, wantCost)
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
