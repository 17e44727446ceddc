package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Admin is a small client of ledgerd's admin API (DESIGN §5), for the launcher, the tests and
// the bench verifier.
type Admin struct {
	URL   string
	Token string
	HTTP  *http.Client
}

// NewAdmin returns a client with a 10 s timeout.
func NewAdmin(url, token string) *Admin {
	return &Admin{URL: url, Token: token, HTTP: &http.Client{Timeout: 10 * time.Second}}
}

// Account is the admin view of an account.
type Account struct {
	ID                    string `json:"id"`
	Name                  string `json:"name"`
	Status                string `json:"status"`
	BalanceMicrocredits   int64  `json:"balance_microcredits"`
	AvailableMicrocredits int64  `json:"available_microcredits"`
	ReservedMicrocredits  int64  `json:"reserved_microcredits"`
}

// CreateAccount creates an account and returns its id.
func (a *Admin) CreateAccount(ctx context.Context, name string) (string, error) {
	var out struct {
		ID string `json:"id"`
	}
	err := a.Do(ctx, http.MethodPost, "/admin/v1/accounts", map[string]any{"name": name}, &out)
	return out.ID, err
}

// IssueKey issues an API key and returns (key id, secret).
func (a *Admin) IssueKey(ctx context.Context, accountID, name string) (string, string, error) {
	var out struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	err := a.Do(ctx, http.MethodPost, "/admin/v1/accounts/"+accountID+"/keys", map[string]any{"name": name}, &out)
	return out.ID, out.Key, err
}

// TopUp credits an account with whole credits for amountUSD (a decimal string).
func (a *Admin) TopUp(ctx context.Context, accountID, orderID string, credits int64, amountUSD string) error {
	body := map[string]any{"order_id": orderID, "credits": credits, "amount_usd": amountUSD}
	return a.Do(ctx, http.MethodPost, "/admin/v1/accounts/"+accountID+"/topups", body, nil)
}

// TopUpPlan credits an account by plan id.
func (a *Admin) TopUpPlan(ctx context.Context, accountID, orderID, plan string) error {
	body := map[string]any{"order_id": orderID, "plan": plan}
	return a.Do(ctx, http.MethodPost, "/admin/v1/accounts/"+accountID+"/topups", body, nil)
}

// Account reads an account.
func (a *Admin) Account(ctx context.Context, id string) (Account, error) {
	var out Account
	err := a.Do(ctx, http.MethodGet, "/admin/v1/accounts/"+id, nil, &out)
	return out, err
}

// Do sends one admin call; a non-2xx answer is an error carrying the body.
func (a *Admin) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.URL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	return nil
}
