package wal

import (
	"log/slog"
	"testing"
	"time"

	"tollgate/pkg/cputime"
)

// benchAppend runs each sync mode's sub-benchmark on a fresh log and reports fsyncs per
// record and the process's CPU per record (the syncer's writes and fsyncs included, which
// ns/op misses when they run on the other core); run appends b.N records however the caller
// wants.
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
			b.ReportAllocs()
			cpu, err := cputime.Self()
			if err != nil {
				b.Fatal(err)
			}
			run(b, w)
			if err := w.Close(); err != nil { // the last round's write and fsync count too
				b.Fatal(err)
			}
			end, err := cputime.Self()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(end-cpu)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
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
