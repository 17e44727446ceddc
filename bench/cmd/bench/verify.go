package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"tollgate/bench/load"
	"tollgate/bench/stack"
	"tollgate/bench/verify"
	"tollgate/pkg/pricing"
)

func init() {
	register("verify", "check a load run's money: request log vs ledger debits vs ClickHouse rows", runVerify)
}

func runVerify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench verify", flag.ContinueOnError)
	logPath := fs.String("log", "", "request log written by bench load -log (required)")
	keysPath := fs.String("keys", "", "key file of the run's accounts, as bench load -keys-out writes (required)")
	adminURL := fs.String("admin", "http://127.0.0.1:8091", "ledgerd admin API")
	adminToken := fs.String("admin-token", os.Getenv("TOLLGATE_ADMIN_TOKEN"), "admin bearer token (default $TOLLGATE_ADMIN_TOKEN)")
	chDSN := fs.String("clickhouse", "", "ClickHouse DSN, e.g. clickhouse://127.0.0.1:19000/tollgate; empty skips the ClickHouse check")
	timeout := fs.Duration("timeout", 60*time.Second, "how long to wait for settlement")
	jsonOut := fs.String("json", "", "write the report as JSON here")
	if err := parseFlags(fs, "TOLLGATE_BENCH_VERIFY_", args); err != nil {
		return err
	}
	if *logPath == "" || *keysPath == "" {
		return errors.New("-log and -keys are required")
	}
	f, err := os.Open(*logPath)
	if err != nil {
		return fmt.Errorf("open request log: %w", err)
	}
	entries, err := verify.ReadLog(f)
	f.Close()
	if err != nil {
		return err
	}
	keys, err := load.LoadKeyring(*keysPath)
	if err != nil {
		return err
	}
	table, err := pricing.Default()
	if err != nil {
		return fmt.Errorf("load price table: %w", err)
	}
	rep, verr := verify.Run(ctx, verify.Config{Entries: entries, Keyring: keys,
		Ledger: verify.AdminLedger{Admin: stack.NewAdmin(*adminURL, *adminToken)},
		Pricer: verify.TablePricer(table), ClickHouseDSN: *chDSN, Timeout: *timeout,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	doc, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if *jsonOut != "" {
		if err := os.WriteFile(*jsonOut, doc, 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	} else {
		fmt.Println(string(doc))
	}
	return verr
}
