package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Demo is the demo account `make run` creates once and keeps in the data dir.
type Demo struct {
	AccountID string `json:"account_id"`
	KeyID     string `json:"key_id"`
	Key       string `json:"key"`
}

// EnsureDemo returns the demo account saved under dataDir, or creates one with 1,000 credits
// (plan credits_1k) and saves it. The key is kept in the data dir in clear because this is a
// development convenience: production keys are shown once and stored only hashed.
func EnsureDemo(ctx context.Context, s *Stack, dataDir string) (Demo, error) {
	path := filepath.Join(dataDir, "demo.json")
	admin := NewAdmin(s.AdminURL(), s.AdminToken())
	var d Demo
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &d); err != nil {
			return Demo{}, fmt.Errorf("read %s: %w", path, err)
		}
		if _, err := admin.Account(ctx, d.AccountID); err == nil {
			return d, nil
		}
		// The ledger was reset under a kept demo.json: make a new account.
	case !errors.Is(err, fs.ErrNotExist):
		return Demo{}, fmt.Errorf("read %s: %w", path, err)
	}
	if d.AccountID, err = admin.CreateAccount(ctx, "demo"); err != nil {
		return Demo{}, err
	}
	if d.KeyID, d.Key, err = admin.IssueKey(ctx, d.AccountID, "demo key"); err != nil {
		return Demo{}, err
	}
	if err := admin.TopUpPlan(ctx, d.AccountID, "demo-"+d.AccountID, "credits_1k"); err != nil {
		return Demo{}, err
	}
	b, _ = json.MarshalIndent(d, "", "  ")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return Demo{}, fmt.Errorf("save %s: %w", path, err)
	}
	return d, nil
}

// PrintWelcome prints where everything is and a request that works, then "Tollgate is ready".
func PrintWelcome(w io.Writer, s *Stack, d Demo) {
	edge := s.EdgeURL(0)
	fmt.Fprintf(w, "\nTollgate is running (data in %s, logs in %s)\n\n", s.cfg.DataDir, s.LogDir())
	for i := range s.Edges {
		fmt.Fprintf(w, "  edge %d        %s   (metrics %s/metrics)\n", i, s.EdgeURL(i), s.EdgeOpsURL(i))
	}
	fmt.Fprintf(w, "  admin API     %s   token: %s\n", s.AdminURL(), s.AdminToken())
	if s.Analytics != nil {
		fmt.Fprintf(w, "  analytics     %s   ClickHouse: %s\n", s.AnalyticsURL(), s.ClickHouseDSN)
	} else {
		fmt.Fprintf(w, "  analytics     off: %s\n", s.AnalyticsOff)
	}
	if s.Mock != nil {
		fmt.Fprintf(w, "  upstream      mock (set TOLLGATE_UPSTREAM_URL and TOLLGATE_UPSTREAM_KEYS for a real one)\n")
	} else {
		fmt.Fprintf(w, "  upstream      %s\n", s.cfg.UpstreamURL)
	}
	fmt.Fprintf(w, "\n  demo account  %s\n  demo key      %s\n\n", d.AccountID, d.Key)
	fmt.Fprintf(w, "Send a request (the mock upstream bills what the `mock:` line says):\n\n")
	fmt.Fprintf(w, "  curl -s %s/v1/messages \\\n    -H 'x-api-key: %s' \\\n"+
		"    -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' \\\n"+
		"    -d '{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":256,"+
		"\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\\nmock: output=120 cache_read=900\"}]}'\n\n", edge, d.Key)
	fmt.Fprintf(w, "Then the balance:\n\n  curl -s %s/v1/balance -H 'x-api-key: %s'\n\n", edge, d.Key)
	fmt.Fprintf(w, "Press Ctrl-C to stop everything.\nTollgate is ready\n")
}
