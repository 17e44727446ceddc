package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"tollgate/bench/mock"
)

func init() {
	register("upstream", "run the mock Anthropic upstream (bench/mock/README.md)", runUpstream)
}

func runUpstream(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench upstream", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8070", "listen address")
	latency := fs.Duration("latency", 0, "default delay before response headers")
	ttft := fs.Duration("ttft", 0, "default delay before the first content delta")
	tps := fs.Float64("tps", 0, "default output tokens per second; 0 is unpaced")
	keys := fs.String("keys", "", "comma-separated accepted x-api-key values; empty accepts any")
	requireVersion := fs.Bool("require-version", false, "answer 400 without an anthropic-version header")
	record := fs.Int("record", 16, "recent requests kept for inspection; -1 keeps none")
	bodyMax := fs.Int("body-bytes-max", 32<<20, "request body limit in bytes")
	cacheMax := fs.Int64("cache-bytes-max", 64<<20, "memory bound of cached rendered responses, bytes")
	connsMax := fs.Int("conns-max", 1<<16, "concurrent connection limit")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	validate := fs.Bool("validate", false, "check the configuration and exit")
	if err := parseFlags(fs, "TOLLGATE_MOCK_", args); err != nil {
		return err
	}

	cfg := mock.Config{
		Latency:        *latency,
		TTFT:           *ttft,
		TPS:            *tps,
		RequireVersion: *requireVersion,
		RecordMax:      *record,
		BodyBytesMax:   *bodyMax,
		CacheBytesMax:  *cacheMax,
		ConnsMax:       *connsMax,
	}
	if *keys != "" {
		cfg.Keys = strings.Split(*keys, ",")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("log-level: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid config: %w", err)
	}
	if *validate {
		return nil
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := mock.New(cfg, logger)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("mock_upstream_listening", "addr", ln.Addr().String())

	select {
	case err := <-served:
		return errors.Join(err, srv.Close())
	case <-ctx.Done():
	}
	logger.Info("mock_upstream_stopping")
	closeErr := srv.Close()
	return errors.Join(closeErr, <-served)
}
