package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"tollgate/bench/load"
	"tollgate/bench/load/report"
	"tollgate/bench/stack"
)

func init() {
	register("load", "send load to one target: open loop at a rate or closed loop over N connections", runLoad)
}

func runLoad(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench load", flag.ContinueOnError)
	var cfg load.Config
	fs.StringVar(&cfg.URL, "url", "http://127.0.0.1:8080", "target base URL (loopback only)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop at this many requests/s; 0 runs a closed loop")
	fs.IntVar(&cfg.Conns, "conns", 0, "closed loop: connections; open loop: most requests in flight (default 64 / 1024)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "send for this long (at most 2h)")
	fs.Int64Var(&cfg.Requests, "requests", 0, "send at most this many requests; 0: as many as -duration allows")
	fs.DurationVar(&cfg.Ramp, "ramp", 0, "closed loop: spread the connections' start over this long")
	fs.DurationVar(&cfg.Timeout, "timeout", 60*time.Second, "per request, reading a stream to its end included")
	model := fs.String("model", "claude-sonnet-4-5", "requested model")
	usageArgs := fs.String("usage", "input=200 output=120 cache_read=900", "mock directive: the usage every request reports, plus any other keys")
	streamRatio := fs.Float64("stream-ratio", 0, "share of streaming requests, 0..1")
	streamExtra := fs.String("stream-extra", "events=20", "directive keys added to streaming requests")
	key := fs.String("key", "", "one API key for every request")
	keysFile := fs.String("keys", "", "key file (JSON, as -keys-out writes) of accounts and keys to use round robin")
	adminURL := fs.String("admin", "", "ledgerd admin API: create -accounts accounts with keys before the run")
	adminToken := fs.String("admin-token", os.Getenv("TOLLGATE_ADMIN_TOKEN"), "admin bearer token (default $TOLLGATE_ADMIN_TOKEN)")
	accounts := fs.Int("accounts", 10, "with -admin: accounts to create")
	keysPer := fs.Int("keys-per-account", 1, "with -admin: keys per account")
	credits := fs.Int64("credits", 100_000, "with -admin: whole credits each account is topped up with")
	keysOut := fs.String("keys-out", "", "with -admin: save the created accounts and keys here (for bench verify)")
	pids := fs.String("pids", "", "processes under test, name=pid,… (CPU and RSS are reported)")
	fs.BoolVar(&cfg.ResetPeak, "reset-peak", false, "reset each process's VmHWM at the start (needs the right to)")
	logPath := fs.String("log", "", "write one JSON line per request here (for bench verify)")
	jsonOut := fs.String("json", "", "write the result as JSON here")
	resultsDir := fs.String("results", "", "write <date>-<commit>-<scenario>.{json,md,svg} here")
	scenario := fs.String("scenario", "load", "scenario name for -results")
	repo := fs.String("repo", ".", "repository root, for the commit in -results names")
	if err := parseFlags(fs, "TOLLGATE_BENCH_LOAD_", args); err != nil {
		return err
	}

	tokens, extra, err := load.ParseDirective(*usageArgs)
	if err != nil {
		return err
	}
	if *streamRatio < 0 || *streamRatio > 1 {
		return errors.New("stream-ratio: want 0..1")
	}
	pct := int(*streamRatio*100 + 0.5)
	base := load.Shape{Model: *model, Tokens: tokens, Extra: extra}
	if pct < 100 {
		s := base
		s.Name, s.Weight = "json", 100-pct
		cfg.Shapes = append(cfg.Shapes, s)
	}
	if pct > 0 {
		s := base
		s.Name, s.Stream, s.Weight = "sse", true, pct
		s.Extra = strings.TrimSpace(extra + " " + *streamExtra)
		cfg.Shapes = append(cfg.Shapes, s)
	}

	switch {
	case *key != "":
		cfg.Keys = []load.Key{{Secret: *key}}
	case *keysFile != "":
		k, err := load.LoadKeyring(*keysFile)
		if err != nil {
			return err
		}
		cfg.Keys = k.Keys()
	case *adminURL != "":
		admin := stack.NewAdmin(*adminURL, *adminToken)
		k, err := load.Provision(ctx, admin, strconv.FormatInt(time.Now().UnixNano(), 36), *accounts, *keysPer, *credits)
		if err != nil {
			return err
		}
		if *keysOut != "" {
			if err := load.SaveKeyring(*keysOut, k); err != nil {
				return err
			}
		}
		cfg.Keys = k.Keys()
	default:
		return errors.New("no keys: give -key, -keys FILE, or -admin URL to create accounts")
	}

	if cfg.Watch, err = parsePids(*pids); err != nil {
		return err
	}
	if *logPath != "" {
		f, err := os.Create(*logPath)
		if err != nil {
			return fmt.Errorf("create request log: %w", err)
		}
		defer f.Close()
		cfg.Log = f
	}

	res, err := load.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Print(report.LoadMarkdown(res))
	doc, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	if *jsonOut != "" {
		if err := os.WriteFile(*jsonOut, doc, 0o644); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
	}
	if *resultsDir != "" {
		meta := report.Meta{Scenario: *scenario, Date: time.Now().UTC(), Commit: report.ShortCommit(ctx, *repo),
			Command: strings.Join(os.Args, " "), Machine: report.ReadMachine()}
		full, err := json.MarshalIndent(struct {
			Meta   report.Meta  `json:"meta"`
			Shapes []load.Shape `json:"shapes"`
			Result *load.Result `json:"result"`
		}{meta, cfg.Shapes, res}, "", "  ")
		if err != nil {
			return fmt.Errorf("encode result: %w", err)
		}
		panels := []report.Panel{{Title: "latency", Series: []report.Series{{Name: res.URL, Points: load.Spectrum(res.LatencyHist)}}}}
		if res.TTFT.Count > 0 {
			panels = append(panels, report.Panel{Title: "time to first token",
				Series: []report.Series{{Name: res.URL, Points: load.Spectrum(res.TTFTHist)}}})
		}
		md := meta.MarkdownHeader("bench load: "+*scenario) + report.LoadMarkdown(res)
		base, err := report.WriteFiles(meta.Base(*resultsDir), full, []byte(md), report.LatencyChart(*scenario+" — "+meta.Commit, panels))
		if err != nil {
			return err
		}
		fmt.Printf("\nwrote %s.{json,md,svg}\n", base)
	}
	return nil
}

// parsePids parses "edge=123,mock=456".
func parsePids(s string) ([]load.Proc, error) {
	var out []load.Proc
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, v, ok := strings.Cut(part, "=")
		pid, err := strconv.Atoi(v)
		if !ok || name == "" || err != nil || pid <= 0 {
			return nil, fmt.Errorf("pids: want name=pid, got %q", part)
		}
		out = append(out, load.Proc{Name: name, Pid: pid})
	}
	return out, nil
}
