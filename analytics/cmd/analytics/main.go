// Command analytics consumes usage records from Kafka into ClickHouse and serves finance and
// usage queries. See analytics/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"tollgate/analytics/internal/app"
)

func main() { os.Exit(run()) }

func run() int {
	cfg := app.DefaultConfig()
	fs := flag.NewFlagSet("analytics", flag.ContinueOnError)
	// Each flag can also be set by its environment variable; a flag given on the command
	// line wins.
	envOf := map[string]string{}
	str := func(p *string, name, env, usage string) {
		fs.StringVar(p, name, *p, usage+" (env "+env+")")
		envOf[name] = env
	}
	brokers := strings.Join(cfg.KafkaBrokers, ",")
	logLevel := "info"
	str(&cfg.ClickHouseDSN, "clickhouse-dsn", "TOLLGATE_CLICKHOUSE_DSN", "ClickHouse DSN, native protocol")
	str(&brokers, "kafka-brokers", "TOLLGATE_KAFKA_BROKERS", "comma-separated Kafka brokers")
	str(&cfg.KafkaGroup, "kafka-group", "TOLLGATE_ANALYTICS_GROUP", "consumer group on usage.v1")
	str(&cfg.ListenAddr, "addr", "TOLLGATE_ANALYTICS_ADDR", "HTTP listen address")
	str(&cfg.AdminToken, "admin-token", "TOLLGATE_ADMIN_TOKEN", "bearer token for /v1/*; empty leaves them open")
	str(&logLevel, "log-level", "TOLLGATE_LOG_LEVEL", "debug, info, warn or error")
	fs.IntVar(&cfg.KafkaPartitions, "kafka-partitions", cfg.KafkaPartitions, "partitions of topics created when missing (env TOLLGATE_KAFKA_PARTITIONS)")
	envOf["kafka-partitions"] = "TOLLGATE_KAFKA_PARTITIONS"
	fs.IntVar(&cfg.BatchRowsMax, "batch-rows", cfg.BatchRowsMax, "most records per ClickHouse insert (env TOLLGATE_ANALYTICS_BATCH_ROWS)")
	envOf["batch-rows"] = "TOLLGATE_ANALYTICS_BATCH_ROWS"
	fs.DurationVar(&cfg.BatchLinger, "batch-linger", cfg.BatchLinger, "longest a batch gathers records (env TOLLGATE_ANALYTICS_BATCH_LINGER)")
	envOf["batch-linger"] = "TOLLGATE_ANALYTICS_BATCH_LINGER"
	fs.Int64Var(&cfg.CreditPriceMicroUSD, "credit-price-microusd", cfg.CreditPriceMicroUSD, "USD value of one credit in micro-dollars, for margins (env TOLLGATE_CREDIT_PRICE_MICROUSD)")
	envOf["credit-price-microusd"] = "TOLLGATE_CREDIT_PRICE_MICROUSD"
	validate := fs.Bool("validate", false, "check the configuration and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	onCmdLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCmdLine[f.Name] = true })
	for name, key := range envOf {
		if v := os.Getenv(key); v != "" && !onCmdLine[name] {
			if err := fs.Set(name, v); err != nil {
				fmt.Fprintf(os.Stderr, "analytics: %s: %v\n", key, err)
				return 2
			}
		}
	}
	cfg.KafkaBrokers = splitList(brokers)

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "analytics: -log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "analytics: invalid configuration:\n%v\n", err)
		return 2
	}
	if *validate {
		fmt.Println("analytics: configuration is valid")
		return 0
	}
	a, err := app.New(cfg, log)
	if err != nil {
		log.Error("start_failed", "error", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := a.Run(ctx); err != nil {
		log.Error("stopped_with_error", "error", err)
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
