package wal

import (
	"log/slog"
	"testing"
)

// benchAppend runs each sync mode's sub-benchmark on a fresh log and reports fsyncs per
// record; run appends b.N records however the caller wants.
func benchAppend(b *testing.B, run func(b *testing.B, w *WAL)) {
	for _, m := range []struct {
		name string
		mode SyncMode
	}{{"interval", SyncInterval}, {"always", SyncAlways}} {
		b.Run(m.name, func(b *testing.B) {
			cfg := internalConfig(b)
			cfg.Sync = m.mode
			w, err := Open(cfg, nopKafka{}, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			b.ReportAllocs()
			run(b, w)
			b.ReportMetric(float64(w.Syncs())/float64(b.N), "fsyncs/op")
		})
	}
}

// BenchmarkAppend measures Append from one goroutine: under SyncAlways every op waits for
// its own fsync, so this is the latency a lone request adds at its end; under SyncInterval
// it is one write.
func BenchmarkAppend(b *testing.B) {
	benchAppend(b, func(b *testing.B, w *WAL) {
		rec := testRecord(1)
		for b.Loop() {
			w.Reserve()
			w.Append(rec)
		}
	})
}

// BenchmarkAppendParallel measures Append under concurrency (64 goroutines per CPU), as
// under load: each fsync is shared among every record written meanwhile.
func BenchmarkAppendParallel(b *testing.B) {
	benchAppend(b, func(b *testing.B, w *WAL) {
		b.SetParallelism(64)
		b.RunParallel(func(pb *testing.PB) {
			rec := testRecord(1)
			for pb.Next() {
				w.Reserve()
				w.Append(rec)
			}
		})
	})
}
