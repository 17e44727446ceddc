// Package storetest gives tests a real ClickHouse database of their own and deterministic
// usage records. The server comes from TOLLGATE_TEST_CLICKHOUSE_ADDR (host:native_port), which
// `make test` sets after starting a private server with deploy/dev/clickhouse.sh; without it
// the test is skipped with a message saying how to run it.
package storetest

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"tollgate/analytics/internal/store/clickhouse"
	"tollgate/pkg/usage"
)

// EnvAddr names the environment variable with the test server's native address.
const EnvAddr = "TOLLGATE_TEST_CLICKHOUSE_ADDR"

// DSN returns a DSN for a fresh, randomly named database on the test server, and drops that
// database when the test ends. Extra is appended as query parameters ("k=v&k2=v2").
func DSN(t testing.TB, extra string) (dsn, db string) {
	t.Helper()
	addr := os.Getenv(EnvAddr)
	if addr == "" {
		t.Skip("SKIP: " + EnvAddr + " is not set, so there is no ClickHouse to test against. " +
			"Run `make test`, or start one with `deploy/dev/clickhouse.sh start /tmp/ch 19500 19501` " +
			"and set " + EnvAddr + "=127.0.0.1:19500")
	}
	var b [6]byte
	_, _ = crand.Read(b[:])
	db = "tollgate_test_" + hex.EncodeToString(b[:])
	dsn = "clickhouse://" + addr + "/" + db
	if extra != "" {
		dsn += "?" + extra
	}
	conn := Conn(t, dsn)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db); err != nil {
			t.Logf("drop test database %s: %v", db, err)
		}
	})
	return dsn, db
}

// Conn opens a plain clickhouse-go connection to the server of dsn, for a test's own queries.
// It connects without a database (the DSN's may not exist yet), so queries name it.
func Conn(t testing.TB, dsn string) driver.Conn {
	t.Helper()
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("parse dsn: %v", err)
	}
	opts.Auth.Database = ""
	conn, err := ch.Open(opts)
	if err != nil {
		t.Fatalf("open clickhouse: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Open returns a store on a fresh database with the schema applied, and its DSN.
func Open(t testing.TB) (*clickhouse.Store, string) {
	t.Helper()
	dsn, _ := DSN(t, "")
	s, err := clickhouse.Open(clickhouse.Config{DSN: dsn}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("open clickhouse: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.ApplySchema(ctx); err != nil {
		t.Fatalf("apply schema: %v", err)
	}
	return s, dsn
}

var models = []string{"claude-opus-4-5-20251101", "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"}

// Records returns n valid records with every field set, drawn from seed: a few accounts and
// models, times spread over the days before base (so they cross a month boundary when base
// is early in a month), and request ids unique per seed.
func Records(seed uint64, n int, base time.Time) []usage.Record {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]usage.Record, n)
	for i := range out {
		end := base.Add(-time.Duration(rng.Int64N(int64(40 * 24 * time.Hour)))).UnixMilli()
		out[i] = usage.Record{
			V:              usage.Version,
			RequestID:      fmt.Sprintf("req-%d-%06d-%08x", seed, i, rng.Uint32()),
			EdgeID:         fmt.Sprintf("edge-%d", rng.IntN(3)),
			Seq:            uint64(i + 1),
			AccountID:      fmt.Sprintf("acct-%d", rng.IntN(4)),
			KeyID:          fmt.Sprintf("key-%d", rng.IntN(8)),
			LeaseID:        fmt.Sprintf("lease-%d", rng.IntN(100)),
			Model:          models[rng.IntN(len(models))],
			ModelRequested: "alias-" + fmt.Sprint(rng.IntN(3)),
			TsStartMs:      end - 500 - rng.Int64N(60000),
			TsEndMs:        end,
			TtfbMs:         rng.Int64N(2000),
			Status:         []int{200, 200, 200, 429, 529}[rng.IntN(5)],
			Stream:         rng.IntN(2) == 1,
			StopReason:     "end_turn",
			ErrorType:      "",
			Usage: usage.Tokens{
				Input:             rng.Int64N(200000),
				Output:            rng.Int64N(8000),
				CacheWrite5m:      rng.Int64N(5000),
				CacheWrite1h:      rng.Int64N(5000),
				CacheRead:         rng.Int64N(100000),
				Thinking:          rng.Int64N(2000),
				WebSearchRequests: rng.Int64N(3),
			},
			Estimated:            rng.IntN(10) == 0,
			CostMicrocredits:     rng.Int64N(50_000_000),
			UpstreamCostMicroUSD: rng.Int64N(200_000),
			PriceVersion:         "2026-11-01",
			UpstreamKeyID:        fmt.Sprintf("up-%d", rng.IntN(2)),
			UpstreamRequestID:    fmt.Sprintf("req_%016x", rng.Uint64()),
		}
	}
	return out
}

// DayRecords returns n valid records in time order, their ends spread evenly over
// [start, start+span), with request ids made as the edge makes them (UUIDv7 of ts_end_ms),
// over the given number of accounts and the three models. Token counts and costs are drawn
// from seed.
func DayRecords(seed uint64, n int, start time.Time, span time.Duration, accounts int) []usage.Record {
	rng := rand.New(rand.NewPCG(seed, seed^0x2545f4914f6cdd1d))
	out := make([]usage.Record, n)
	t0 := start.UnixMilli()
	for i := range out {
		end := t0 + int64(i)*span.Milliseconds()/int64(max(n, 1))
		acct := rng.IntN(accounts)
		out[i] = usage.Record{
			V: usage.Version, RequestID: UUIDv7(end, rng), EdgeID: "edge-1", Seq: uint64(i + 1),
			AccountID: fmt.Sprintf("acct_%04d", acct), KeyID: fmt.Sprintf("key_%04d", acct), LeaseID: "lease-1",
			Model: models[rng.IntN(len(models))], ModelRequested: "alias", TsStartMs: end - 250, TsEndMs: end,
			TtfbMs: 180, Status: 200, StopReason: "end_turn",
			Usage:            usage.Tokens{Input: rng.Int64N(5000), Output: rng.Int64N(800), CacheRead: rng.Int64N(9000)},
			CostMicrocredits: rng.Int64N(5_000_000), UpstreamCostMicroUSD: rng.Int64N(20_000),
			PriceVersion: "2026-11-01", UpstreamKeyID: "up-1", UpstreamRequestID: fmt.Sprintf("msg_%016x", rng.Uint64()),
		}
	}
	return out
}

// UUIDv7 formats a UUIDv7 (RFC 9562) for Unix millisecond ms with random bits from rng, in the
// edge's canonical lowercase form: ids of later milliseconds sort after earlier ones.
func UUIDv7(ms int64, rng *rand.Rand) string {
	var u [16]byte
	for i := range 6 {
		u[i] = byte(uint64(ms) >> (40 - 8*i))
	}
	r := rng.Uint64()
	for i := 6; i < 14; i++ {
		u[i] = byte(r >> (8 * (i - 6)))
	}
	r = rng.Uint64()
	u[14], u[15] = byte(r), byte(r>>8)
	u[6] = 0x70 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	const hexDigits = "0123456789abcdef"
	b := make([]byte, 0, 36)
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return string(b)
}

// RowsRead returns ctx with a progress callback: every query run with the returned context
// adds the rows ClickHouse reports reading (the read_rows of system.query_log) to the counter
// that read returns.
func RowsRead(ctx context.Context) (_ context.Context, read func() uint64) {
	var n atomic.Uint64
	ctx = ch.Context(ctx, ch.WithProgress(func(p *ch.Progress) { n.Add(p.Rows) }))
	return ctx, n.Load
}

// MergeFinal merges each of tables of db into one part per partition, as background merges do
// in time. OPTIMIZE ... FINAL does nothing when a merge of those parts is running already, so
// it is asked to fail instead, and tried again.
func MergeFinal(t testing.TB, conn driver.Conn, db string, tables ...string) {
	t.Helper()
	ctx := ch.Context(context.Background(), ch.WithSettings(ch.Settings{"optimize_throw_if_noop": 1}))
	for _, table := range tables {
		deadline := time.Now().Add(60 * time.Second)
		for {
			err := conn.Exec(ctx, "OPTIMIZE TABLE "+db+"."+table+" FINAL")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("optimize %s: %v", table, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
