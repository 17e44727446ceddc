package clickhouse_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	chstore "tollgate/analytics/internal/store/clickhouse"
	"tollgate/analytics/internal/store/storetest"
	"tollgate/pkg/usage"
)

// BenchmarkExistingDay is the existence check of one batch of 10,000 records (what `bench
// compare`'s 10,000 records/s and 1 s linger make) against a day that already holds 500,000
// or 5,000,000 rows of 1,000 accounts, merged into one part by OPTIMIZE ... FINAL (what
// background merges build during the day). It runs the check as the store does (request_ids)
// and as it did before request_ids existed (requests: the store's query for days whose ids are
// not copied yet, from a store that has not read the copy's progress), for three batches:
//
//	fresh        10,000 new records from the day's last 2 s (5,000 requests/s)
//	redelivered  the day's last 10,000 rows again (a crash between insert and commit)
//	stragglers   fresh, 10 of them replaced by records 1 to 10 hours older (edge WAL
//	             replays), 5 of which are stored
//
// rows-read/op is what ClickHouse reports reading for the batch (system.query_log's read_rows,
// summed over the batch's queries); ms/op the wall time of the check. Setting up the 5,000,000
// rows takes a minute or two; it is never part of `make test` (benchmarks run only with
// -bench):
//
//	deploy/dev/clickhouse.sh start /tmp/ch 19500 19501
//	TOLLGATE_TEST_CLICKHOUSE_ADDR=127.0.0.1:19500 go test -run '^$' -bench ExistingDay \
//	    -benchtime 10x ./analytics/internal/store/clickhouse
func BenchmarkExistingDay(b *testing.B) {
	for _, dayRows := range []int{500_000, 5_000_000} {
		b.Run(fmt.Sprintf("rows=%d", dayRows), func(b *testing.B) {
			st, dsn := storetest.Open(b)
			before, err := chstore.Open(chstore.Config{DSN: dsn}, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer before.Close()
			batches := fillDay(b, st, dsn, dayRows)
			for _, shape := range []string{"fresh", "redelivered", "stragglers"} {
				for _, check := range []struct {
					table string
					st    *chstore.Store
				}{{"requests", before}, {"request_ids", st}} {
					b.Run("batch="+shape+"/table="+check.table, func(b *testing.B) {
						benchExisting(b, check.st, batches[shape])
					})
				}
			}
		})
	}
}

func benchExisting(b *testing.B, st *chstore.Store, batch batchWant) {
	ctx, read := storetest.RowsRead(context.Background())
	b.ResetTimer()
	for range b.N {
		found, err := st.Existing(ctx, batch.recs)
		if err != nil {
			b.Fatal(err)
		}
		if len(found) != batch.stored {
			b.Fatalf("found %d stored ids, want %d", len(found), batch.stored)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(read())/float64(b.N), "rows-read/op")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/op")
}

type batchWant struct {
	recs   []usage.Record
	stored int // how many of recs are stored
}

// fillDay stores dayRows records of 2026-12-01, 00:00 to 23:00 UTC, merges each table into
// one part and returns the three batches of BenchmarkExistingDay.
func fillDay(b *testing.B, st *chstore.Store, dsn string, dayRows int) map[string]batchWant {
	const batchRows, chunkRows, accounts = 10_000, 100_000, 1000
	ctx := context.Background()
	dayStart := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	span := 23 * time.Hour
	chunks := (dayRows + chunkRows - 1) / chunkRows
	chunkSpan := span / time.Duration(chunks)
	// Stragglers: 5 stored and 5 never stored, from 1 to 10 hours before the fresh batch.
	oldStored := storetest.DayRecords(97, 5, dayStart.Add(span-10*time.Hour), 9*time.Hour, accounts)
	oldLost := storetest.DayRecords(98, 5, dayStart.Add(span-10*time.Hour), 9*time.Hour, accounts)
	start := time.Now()
	if err := st.Insert(ctx, oldStored); err != nil {
		b.Fatal(err)
	}
	var last []usage.Record
	for i := range chunks {
		recs := storetest.DayRecords(uint64(100+i), dayRows/chunks, dayStart.Add(time.Duration(i)*chunkSpan), chunkSpan, accounts)
		if err := st.Insert(ctx, recs); err != nil {
			b.Fatal(err)
		}
		last = recs[len(recs)-batchRows:]
	}
	storetest.MergeFinal(b, storetest.Conn(b, dsn), st.Database(), "requests", "request_ids")
	b.Logf("%d rows stored and merged in %s", dayRows, time.Since(start).Round(time.Second))

	// The fresh records arrive while the day's last rows are stored (edges and partitions are
	// never exactly in step), so their times overlap those rows, as they do in production.
	fresh := storetest.DayRecords(99, batchRows, dayStart.Add(span-2*time.Second), 2*time.Second, accounts)
	stragglers := append(append(append([]usage.Record{}, oldStored...), oldLost...), fresh[10:]...)
	return map[string]batchWant{
		"fresh":       {fresh, 0},
		"redelivered": {last, batchRows},
		"stragglers":  {stragglers, len(oldStored)},
	}
}
