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
