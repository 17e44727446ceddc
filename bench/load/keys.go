package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// Admin is what provisioning needs from ledgerd's admin API (bench/stack.Admin has it).
type Admin interface {
	CreateAccount(ctx context.Context, name string) (string, error)
	IssueKey(ctx context.Context, accountID, name string) (keyID, secret string, err error)
	TopUp(ctx context.Context, accountID, orderID string, credits int64, amountUSD string) error
}

// Account is a provisioned account: what it was topped up with and its keys.
type Account struct {
	ID      string   `json:"id"`
	Credits int64    `json:"credits"` // whole credits topped up at provisioning
	Keys    []string `json:"keys"`    // API key secrets
}

// Keyring is the accounts a run uses. Saved as a key file it lets a later run (or the
// verifier) use the same accounts. It holds secrets: the file is written 0600.
type Keyring struct {
	Accounts []Account `json:"accounts"`
}

// Key is one API key with the account it belongs to.
type Key struct {
	Secret    string
	AccountID string
}

// Keys lists every key, accounts interleaved (account 0 key 0, account 1 key 0, …), so
// round-robin use spreads load over accounts first.
func (k Keyring) Keys() []Key {
	var out []Key
	for j := 0; ; j++ {
		added := false
		for _, a := range k.Accounts {
			if j < len(a.Keys) {
				out = append(out, Key{Secret: a.Keys[j], AccountID: a.ID})
				added = true
			}
		}
		if !added {
			return out
		}
	}
}

// provisionMax bounds how many accounts and keys one call creates.
const provisionMax = 100_000

// Provision creates accounts, each with keysPer keys and topped up with credits whole
// credits (paid at the base rate, $0.005 a credit). runID makes order ids unique.
func Provision(ctx context.Context, admin Admin, runID string, accounts, keysPer int, credits int64) (Keyring, error) {
	if accounts < 1 || keysPer < 1 || accounts*keysPer > provisionMax {
		return Keyring{}, fmt.Errorf("provision: want 1..%d keys in all, got %d accounts × %d", provisionMax, accounts, keysPer)
	}
	if credits < 1 {
		return Keyring{}, errors.New("provision: credits must be at least 1")
	}
	var k Keyring
	for i := range accounts {
		id, err := admin.CreateAccount(ctx, fmt.Sprintf("bench-%s-%d", runID, i))
		if err != nil {
			return Keyring{}, fmt.Errorf("provision account %d: %w", i, err)
		}
		a := Account{ID: id, Credits: credits}
		for j := range keysPer {
			_, secret, err := admin.IssueKey(ctx, id, fmt.Sprintf("bench key %d", j))
			if err != nil {
				return Keyring{}, fmt.Errorf("provision key of %s: %w", id, err)
			}
			a.Keys = append(a.Keys, secret)
		}
		if err := admin.TopUp(ctx, id, "bench-"+runID+"-"+id, credits, CreditsUSD(credits)); err != nil {
			return Keyring{}, fmt.Errorf("provision top-up of %s: %w", id, err)
		}
		k.Accounts = append(k.Accounts, a)
	}
	return k, nil
}

// CreditsUSD is the price of whole credits at the base rate ($0.005 each) as a decimal
// string with three decimals, exact for any count.
func CreditsUSD(credits int64) string {
	mills := credits * 5 // $0.005 = 5 mills
	return fmt.Sprintf("%d.%03d", mills/1000, mills%1000)
}

// SaveKeyring writes k to path, readable only by its owner.
func SaveKeyring(path string, k Keyring) error {
	b, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return fmt.Errorf("encode keyring: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write keyring: %w", err)
	}
	return nil
}

// LoadKeyring reads a key file written by SaveKeyring.
func LoadKeyring(path string) (Keyring, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Keyring{}, fmt.Errorf("read keyring: %w", err)
	}
	var k Keyring
	if err := json.Unmarshal(b, &k); err != nil {
		return Keyring{}, fmt.Errorf("decode keyring %s: %w", path, err)
	}
	if len(k.Keys()) == 0 {
		return Keyring{}, fmt.Errorf("keyring %s: no keys", path)
	}
	return k, nil
}
