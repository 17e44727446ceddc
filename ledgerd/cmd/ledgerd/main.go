// Command ledgerd is Tollgate's ledger of record.
//
//	ledgerd serve [flags]        run the service (see -h)
//	ledgerd admin <cmd> [flags]  operator CLI over the admin API
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

	"tollgate/ledgerd/internal/app"
	"tollgate/ledgerd/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, "usage: ledgerd serve [flags] | ledgerd admin <command> [flags]\n")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		os.Exit(serve(ctx, os.Args[2:]))
	case "admin":
		os.Exit(cli.Run(ctx, os.Args[2:], os.Getenv, os.Stdout, os.Stderr))
	default:
		fmt.Fprintf(os.Stderr, "ledgerd: unknown command %q (want serve or admin)\n", os.Args[1])
		os.Exit(2)
	}
}

func serve(ctx context.Context, args []string) int {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg, validateOnly, err := app.ParseServe(args, os.Getenv, os.Stderr, log)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ledgerd: invalid configuration:\n%v\n", err)
		return 2
	}
	if validateOnly {
		fmt.Fprintln(os.Stderr, "ledgerd: configuration is valid")
		return 0
	}
	if err := cfg.FillSecrets(os.Stderr); err != nil {
		log.Error("ledgerd_failed", "error", err)
		return 1
	}
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		log.Error("ledgerd_failed", "error", err)
		return 1
	}
	if err := a.Run(ctx); err != nil {
		log.Error("ledgerd_failed", "error", err)
		return 1
	}
	return 0
}
