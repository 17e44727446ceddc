// Command edge is Tollgate's billing proxy: the Anthropic-compatible API clients call. See
// edge/README.md for what it does and how to configure it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"tollgate/edge/internal/app"
	"tollgate/edge/internal/config"
)

func main() { os.Exit(run()) }

func run() int {
	cmd, err := config.Parse(os.Args[1:], os.LookupEnv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge:", err)
		return 2
	}
	if cmd.ValidateOnly {
		fmt.Println("edge: configuration is valid")
		return 0
	}
	cfg := cmd.Config

	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated by config
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("svc", "edge")

	a, err := app.New(cfg, log)
	if err != nil {
		log.Error("start_failed", "error", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := a.ReloadPrices(); err != nil {
				log.Error("prices_reload_failed", "error", err)
			}
		}
	}()

	if err := a.Run(ctx); err != nil {
		log.Error("stopped_with_error", "error", err)
		return 1
	}
	return 0
}
