// Package ledger is the edge's client of ledgerd's internal API (pkg/ledgerapi): key lookup
// by hash (one key, or a batch), account balances and credit leases (extends one at a time,
// or a batch). It is off the hot path
// — the auth cache and the lease admitter call it on a miss or in the background — so it
// uses net/http and encoding/json for clarity.
package ledger

import (
	"bytes"
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

// Refusals ledgerd answers with. Any other error means ledgerd could not be asked (or failed):
// the caller cannot tell what the account has.
var (
	// ErrNotFound: an unknown key (LookupKey), account or lease.
	ErrNotFound = errors.New("not found")
	// ErrLeaseClosed: the lease was released or reclaimed; ask for a new one.
	ErrLeaseClosed = errors.New("lease closed")
	// ErrSuspended: the account is suspended and gets no credit.
	ErrSuspended = errors.New("account suspended")
	// ErrUnsupported: ledgerd does not serve the call (a version from before it, during a
	// rolling upgrade); LookupKeys' callers fall back to LookupKey, ExtendMany's to Extend.
	ErrUnsupported = errors.New("call not supported by this ledgerd")
)

// InsufficientError is ledgerd's 402 to a grant or extend: the account's available credit
// cannot cover the minimum asked.
type InsufficientError struct {
	Available int64 // µcr available to the account after the refusal
	// Recallable is what other nodes' open leases of the account reserve and were just
	// recalled; when positive, the same call may succeed shortly.
	Recallable int64
}

func (e *InsufficientError) Error() string {
	return fmt.Sprintf("ledgerd refused credit: %d µcr available, %d µcr recalled", e.Available, e.Recallable)
}

// responseBytesMax bounds what the client reads from ledgerd: its answers are a few hundred
// bytes, a full batch key lookup about 100 KB, a full batch extend about 65 KB.
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

// LookupKeys returns the keys among hashes (lower-case hex, at most
// ledgerapi.KeyLookupHashesMax) that ledgerd knows, by hash, in one call; a hash ledgerd does
// not know is absent. ErrUnsupported when ledgerd predates the batch lookup (it answers 405,
// or 404 for a route it does not have).
func (c *Client) LookupKeys(ctx context.Context, hashes []string) (map[string]ledgerapi.Key, error) {
	var res ledgerapi.KeyLookupResult
	err := c.do(ctx, http.MethodPost, "/internal/v1/keys/lookup", ledgerapi.KeyLookup{Hashes: hashes}, &res)
	if errors.Is(err, ErrNotFound) {
		err = ErrUnsupported // the batch route answers no 404 of its own
	}
	if err != nil {
		return nil, fmt.Errorf("look up %d keys: %w", len(hashes), err)
	}
	return res.Keys, nil
}

// Balance returns an account's balance and what is available of it.
func (c *Client) Balance(ctx context.Context, accountID string) (ledgerapi.Balance, error) {
	var b ledgerapi.Balance
	if err := c.get(ctx, "/internal/v1/accounts/"+url.PathEscape(accountID)+"/balance", &b); err != nil {
		return ledgerapi.Balance{}, fmt.Errorf("get balance of %s: %w", accountID, err)
	}
	return b, nil
}

// Grant asks for a new lease.
func (c *Client) Grant(ctx context.Context, g ledgerapi.Grant) (ledgerapi.Lease, error) {
	var l ledgerapi.Lease
	if err := c.do(ctx, http.MethodPost, "/internal/v1/leases", g, &l); err != nil {
		return ledgerapi.Lease{}, fmt.Errorf("grant lease on %s: %w", g.AccountID, err)
	}
	return l, nil
}

// Extend adds to an open lease, reports the node's spend and refreshes the expiry.
func (c *Client) Extend(ctx context.Context, leaseID string, e ledgerapi.Extend) (ledgerapi.Lease, error) {
	var l ledgerapi.Lease
	if err := c.do(ctx, http.MethodPost, "/internal/v1/leases/"+url.PathEscape(leaseID)+"/extend", e, &l); err != nil {
		return ledgerapi.Lease{}, fmt.Errorf("extend lease %s: %w", leaseID, err)
	}
	return l, nil
}

// ExtendResult is one extend of ExtendMany: the lease's new terms, or the refusal the single
// Extend would have returned for it (ErrNotFound, ErrLeaseClosed, ErrSuspended,
// *InsufficientError).
type ExtendResult struct {
	Lease ledgerapi.Lease
	Err   error
}

// ExtendMany extends up to ledgerapi.ExtendBatchMax leases in one call and one ledgerd
// transaction, each with the single Extend's rules: results[i] answers extends[i]. An error
// means no extend was made (ledgerd could not answer, or refused the request as a whole);
// ErrUnsupported when ledgerd predates the batch extend (it answers 404 for a route it does
// not have, or 405).
func (c *Client) ExtendMany(ctx context.Context, extends []ledgerapi.ExtendItem) ([]ExtendResult, error) {
	var res ledgerapi.ExtendBatchResult
	err := c.do(ctx, http.MethodPost, "/internal/v1/leases/extend", ledgerapi.ExtendBatch{Extends: extends}, &res)
	if errors.Is(err, ErrNotFound) {
		err = ErrUnsupported // the batch route answers no 404 of its own: an item's is in its result
	}
	if err == nil && len(res.Results) != len(extends) {
		err = fmt.Errorf("ledgerd answered %d results", len(res.Results))
	}
	if err != nil {
		return nil, fmt.Errorf("extend %d leases: %w", len(extends), err)
	}
	out := make([]ExtendResult, len(extends))
	for i, r := range res.Results {
		switch {
		case r.Status == http.StatusOK && r.Lease != nil:
			out[i].Lease = *r.Lease
		default:
			var e ledgerapi.Error
			if r.Error != nil {
				e = *r.Error
			}
			out[i].Err = fmt.Errorf("extend lease %s: %w", extends[i].LeaseID, statusError(r.Status, e))
		}
	}
	return out, nil
}

// Release closes a lease with the node's total spend from it. Releasing a closed lease is
// answered like a release, so it is safe to retry.
func (c *Client) Release(ctx context.Context, leaseID string, r ledgerapi.Release) (ledgerapi.Lease, error) {
	var l ledgerapi.Lease
	if err := c.do(ctx, http.MethodPost, "/internal/v1/leases/"+url.PathEscape(leaseID)+"/release", r, &l); err != nil {
		return ledgerapi.Lease{}, fmt.Errorf("release lease %s: %w", leaseID, err)
	}
	return l, nil
}

// Recalls lists the open leases of edgeID that ledgerd asks to be returned.
func (c *Client) Recalls(ctx context.Context, edgeID string) ([]string, error) {
	var r ledgerapi.Recalls
	if err := c.do(ctx, http.MethodGet, "/internal/v1/edges/"+url.PathEscape(edgeID)+"/recalls", nil, &r); err != nil {
		return nil, fmt.Errorf("list recalled leases: %w", err)
	}
	return r.LeaseIDs, nil
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
	return c.do(ctx, http.MethodGet, path, nil, out)
}

// do sends one call (in, when not nil, as the JSON body) and decodes a 200 into out. ledgerd's
// refusals become ErrNotFound, ErrLeaseClosed, ErrSuspended or *InsufficientError, and a 405
// (a ledgerd without the call) ErrUnsupported; anything else is an error that says ledgerd
// could not answer.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, responseBytesMax))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ledgerapi.Error
		_ = json.Unmarshal(raw, &e)
		return statusError(resp.StatusCode, e)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

// statusError is the error for ledgerd's answer status with error body e, a whole call's or a
// batch item's: its refusals become ErrNotFound, ErrLeaseClosed, ErrSuspended or
// *InsufficientError, and a 405 (a ledgerd without the call) ErrUnsupported; anything else is
// an error that says ledgerd could not answer.
func statusError(status int, e ledgerapi.Error) error {
	switch status {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusPaymentRequired:
		return &InsufficientError{Available: e.AvailableMicrocredits, Recallable: e.RecallableMicrocredits}
	case http.StatusConflict:
		return ErrLeaseClosed
	case http.StatusForbidden:
		return ErrSuspended
	case http.StatusMethodNotAllowed:
		return ErrUnsupported
	}
	return fmt.Errorf("ledgerd answered %d: %s %s", status, e.Error.Type, e.Error.Message)
}
