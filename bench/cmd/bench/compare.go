package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"strings"

	"tollgate/bench/compare"
)

func init() {
	register("compare", "measure the edge against the upstream direct and a bare forwarder, then verify the money", runCompare)
}

func runCompare(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench compare", flag.ContinueOnError)
	var cfg compare.Config
	fs.StringVar(&cfg.RepoDir, "repo", ".", "repository root")
	fs.StringVar(&cfg.BinDir, "bin-dir", "bin", "built binaries (make build)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "stack state and logs; default a temporary dir, removed after a good run")
	fs.StringVar(&cfg.ResultsDir, "results-dir", "", "where result files go (default <repo>/bench/results)")
	scenarios := fs.String("scenarios", strings.Join(compare.DefaultScenarios, ","), "comma-separated: nonstream, stream20, mixed, slow, soak, settle")
	fs.IntVar(&cfg.Rounds, "rounds", 3, "rounds per throughput scenario")
	fs.DurationVar(&cfg.Phase, "phase", 0, "length of each closed- and open-loop run (default 3s)")
	fs.Float64Var(&cfg.Rate, "rate", compare.DefaultRate, "open-loop rate, req/s (half the lowest closed-loop throughput when that is lower)")
	fs.IntVar(&cfg.SlowStreams, "slow-streams", 10_000, "concurrent slow streams")
	fs.DurationVar(&cfg.Soak, "soak", 0, "soak length (default 10m)")
	fs.Float64Var(&cfg.SoakRate, "soak-rate", 0, "soak rate, req/s (default 300)")
	fs.Float64Var(&cfg.SettleRate, "settle-rate", 0, "settle scenario's open-loop rate, req/s (default 5000)")
	fs.DurationVar(&cfg.SettleDuration, "settle-duration", 0, "settle scenario's load length (default 20s)")
	fs.IntVar(&cfg.Accounts, "accounts", 100, "accounts for the edge's traffic")
	fs.IntVar(&cfg.KeysPerAccount, "keys-per-account", 1, "keys per account")
	fs.Int64Var(&cfg.Credits, "credits", 100_000, "whole credits per account")
	fs.BoolVar(&cfg.NoAnalytics, "no-analytics", false, "run without ClickHouse (the verifier checks the ledger only)")
	fs.BoolVar(&cfg.NoVerify, "no-verify", false, "skip the money check")
	fs.IntVar(&cfg.BackgroundNice, "background-nice", 19, "nice value of Kafka, ledgerd, analytics and ClickHouse during the run (they run on other machines in production; the settle and slow scenarios run them at 0); 0 leaves them alone")
	fs.BoolVar(&cfg.BackgroundIdle, "background-idle", true, "run Kafka, analytics and ClickHouse (nothing on the request path waits for them) under SCHED_IDLE instead of -background-nice; ledgerd keeps -background-nice")
	fs.StringVar(&cfg.Commit, "commit", "", "name of the measured code in result file names (default: git HEAD of -repo, +\"-dirty\")")
	if err := parseFlags(fs, "TOLLGATE_BENCH_COMPARE_", args); err != nil {
		return err
	}
	var err error
	if cfg.Scenarios, err = compare.ParseScenarios(*scenarios); err != nil {
		return err
	}
	cfg.Command = strings.Join(os.Args, " ")
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return compare.Run(ctx, cfg)
}
