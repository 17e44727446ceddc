// Package ledger is the edge's client of ledgerd's internal API (pkg/ledgerapi): key lookup
// by hash and account balances. It is off the hot path — the auth and admission caches call
// it on a miss — so it uses net/http and encoding/json for clarity.
package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"tollgate/pkg/ledgerapi"
)

// ErrNotFound is returned by LookupKey for a key ledgerd does not know.
var ErrNotFound = errors.New("not found")

// responseBytesMax bounds what the client reads from ledgerd: its answers are a few hundred
// bytes.
const responseBytesMax = 1 << 20

// Config of the client.
type Config struct {
	// URL is ledgerd's internal base URL, e.g. http://127.0.0.1:8090.
	URL string
	// Secret is sent as "Authorization: Bearer <secret>".
	Secret string
	// Timeout bounds one call.
	Timeout time.Duration
}

// Client calls ledgerd. It is safe for concurrent use.
type Client struct {
	base   string
	auth   string
	http   *http.Client
	closer func()
}

// New builds a client; it connects lazily.
func New(cfg Config) *Client {
	tr := &http.Transport{
		Proxy:                 nil, // internal traffic never goes through a proxy
		DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.Timeout,
		DisableCompression:    true,
	}
	return &Client{
		base:   strings.TrimRight(cfg.URL, "/"),
		auth:   "Bearer " + cfg.Secret,
		http:   &http.Client{Transport: tr, Timeout: cfg.Timeout},
		closer: tr.CloseIdleConnections,
	}
}

// LookupKey returns the key whose SHA-256 is hashHex (lower-case hex), or ErrNotFound.
func (c *Client) LookupKey(ctx context.Context, hashHex string) (ledgerapi.Key, error) {
	var k ledgerapi.Key
	if err := c.get(ctx, "/internal/v1/keys/"+url.PathEscape(hashHex), &k); err != nil {
		return ledgerapi.Key{}, fmt.Errorf("look up key: %w", err)
	}
	return k, nil
}

// Balance returns an account's balance and what is available of it.
func (c *Client) Balance(ctx context.Context, accountID string) (ledgerapi.Balance, error) {
	var b ledgerapi.Balance
	if err := c.get(ctx, "/internal/v1/accounts/"+url.PathEscape(accountID)+"/balance", &b); err != nil {
		return ledgerapi.Balance{}, fmt.Errorf("get balance of %s: %w", accountID, err)
	}
	return b, nil
}

// Ping checks that ledgerd answers and accepts the secret: it looks up a key hash that cannot
// exist, for which 404 is the healthy answer.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.LookupKey(ctx, strings.Repeat("0", 64))
	if err == nil || errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// Close drops idle connections.
func (c *Client) Close() { c.closer() }

func (c *Client) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, responseBytesMax))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return ErrNotFound
	case resp.StatusCode != http.StatusOK:
		var e ledgerapi.Error
		_ = json.Unmarshal(body, &e)
		return fmt.Errorf("ledgerd answered %d: %s %s", resp.StatusCode, e.Error.Type, e.Error.Message)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}
