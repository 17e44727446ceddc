package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"

	"tollgate/bench/forwarder"
)

func init() {
	register("forwarder", "run a bare fasthttp forwarder (no auth, no billing): the edge's floor", runForwarder)
}

func runForwarder(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench forwarder", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8060", "listen address")
	var cfg forwarder.Config
	fs.StringVar(&cfg.Upstream, "upstream", "http://127.0.0.1:8070", "upstream base URL")
	fs.StringVar(&cfg.UpstreamKey, "upstream-key", "", "replace the client's x-api-key with this one; empty passes it through")
	fs.IntVar(&cfg.UpstreamConnsMax, "upstream-conns-max", 20_000, "connections to the upstream")
	fs.DurationVar(&cfg.Timeout, "timeout", 0, "bound on each upstream exchange, streams included (default 10m)")
	fs.IntVar(&cfg.ConnsMax, "conns-max", 1<<16, "concurrent client connections")
	if err := parseFlags(fs, "TOLLGATE_FORWARDER_", args); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	f, err := forwarder.New(cfg, logger)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	logger.Info("forwarder_listening", "addr", ln.Addr().String(), "upstream", cfg.Upstream)
	return f.Run(ctx, ln)
}
