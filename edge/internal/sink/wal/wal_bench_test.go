package wal

import (
	"log/slog"
	"testing"
)

var syncModes = []struct {
	name string
	mode SyncMode
}{{"interval", SyncInterval}, {"always", SyncAlways}}

// BenchmarkAppend measures Append from one goroutine: under SyncAlways every op waits for
// its own fsync, so this is the latency a lone request adds at its end; under SyncInterval
// it is one write.
func BenchmarkAppend(b *testing.B) {
	for _, m := range syncModes {
		b.Run(m.name, func(b *testing.B) {
			cfg := internalConfig(b)
			cfg.Sync = m.mode
			w, err := Open(cfg, nopKafka{}, slog.New(slog.DiscardHandler))
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
		})
	}
}

// BenchmarkAppendParallel measures Append under concurrency (64 goroutines per CPU), as
// under load: each fsync is shared among every record written meanwhile.
func BenchmarkAppendParallel(b *testing.B) {
	for _, m := range syncModes {
		b.Run(m.name, func(b *testing.B) {
			cfg := internalConfig(b)
			cfg.Sync = m.mode
			w, err := Open(cfg, nopKafka{}, slog.New(slog.DiscardHandler))
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
		})
	}
}
