// Command devstack runs the whole Tollgate stack on one machine (`make run`), and the
// development Kafka broker it uses (`devstack kafka`).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"tollgate/bench/stack"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "kafka" {
		os.Exit(runKafka(os.Args[2:]))
	}
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "up" {
		args = args[1:]
	}
	os.Exit(runUp(args))
}

func runUp(args []string) int {
	exe, _ := os.Executable()
	fs := flag.NewFlagSet("devstack up", flag.ExitOnError)
	dataDir := fs.String("data-dir", envOr("TOLLGATE_DATA_DIR", ".data"), "state of every service (env TOLLGATE_DATA_DIR)")
	binDir := fs.String("bin-dir", filepath.Dir(exe), "directory of the built binaries")
	repoDir := fs.String("repo", ".", "repository root (for deploy/dev scripts)")
	edges := fs.Int("edges", 1, "number of edge nodes (edge i listens on 8080+i)")
	noAnalytics := fs.Bool("no-analytics", false, "run without ClickHouse and analytics")
	_ = fs.Parse(args)

	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	cfg := stack.Config{
		BinDir: abs(*binDir), RepoDir: abs(*repoDir), DataDir: abs(*dataDir), Edges: *edges,
		UpstreamURL:   os.Getenv("TOLLGATE_UPSTREAM_URL"),
		UpstreamKeys:  os.Getenv("TOLLGATE_UPSTREAM_KEYS"),
		ClickHouseDSN: os.Getenv("TOLLGATE_CLICKHOUSE_DSN"),
		LedgerDB:      os.Getenv("TOLLGATE_LEDGER_DB"),
		AdminToken:    os.Getenv("TOLLGATE_ADMIN_TOKEN"),
		NoAnalytics:   *noAnalytics,
		Logf:          func(f string, a ...any) { fmt.Fprintf(os.Stderr, "devstack: "+f+"\n", a...) },
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := stack.Start(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "devstack: %v\n", err)
		return 1
	}
	defer s.Stop()
	demo, err := stack.EnsureDemo(ctx, s, cfg.DataDir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "devstack: create demo account: %v\n", err)
		return 1
	}
	stack.PrintWelcome(os.Stdout, s, demo)
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "devstack: shutting down")
	return 0
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}
