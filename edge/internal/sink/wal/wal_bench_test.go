package wal

import (
	"log/slog"
	"testing"
)

// BenchmarkAppend measures Append from one goroutine: every op waits for its own fsync, so
// this is the latency a lone request adds at its end.
func BenchmarkAppend(b *testing.B) {
	w, err := Open(internalConfig(b), nopKafka{}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	rec := testRecord(1)
	b.ReportAllocs()
	for b.Loop() {
		w.Reserve()
		w.Append(rec)
	}
	b.ReportMetric(float64(w.Syncs())/float64(b.N), "fsyncs/op")
}

// BenchmarkAppendParallel measures Append under concurrency (64 goroutines per CPU), as
// under load: group commit shares each fsync among every record appended meanwhile.
func BenchmarkAppendParallel(b *testing.B) {
	w, err := Open(internalConfig(b), nopKafka{}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	b.ReportAllocs()
	b.SetParallelism(64)
	b.RunParallel(func(pb *testing.PB) {
		rec := testRecord(1)
		for pb.Next() {
			w.Reserve()
			w.Append(rec)
		}
	})
	b.ReportMetric(float64(w.Syncs())/float64(b.N), "fsyncs/op")
}
