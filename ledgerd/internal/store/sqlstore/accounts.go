package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"tollgate/ledgerd/internal/store"
)

const accountCols = `id, name, status, balance, reserved, deferred_microusd, created_ms`

func scanAccount(row interface{ Scan(...any) error }) (store.Account, error) {
	var a store.Account
	var created int64
	if err := row.Scan(&a.ID, &a.Name, &a.Status, &a.Balance, &a.Reserved, &a.DeferredMicroUSD, &created); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return store.Account{}, store.ErrNotFound
		}
		return store.Account{}, err
	}
	a.CreatedAt = msTime(created)
	return a, nil
}

// CreateAccount creates an active account with a zero balance.
func (s *Store) CreateAccount(ctx context.Context, name string) (store.Account, error) {
	a := store.Account{ID: newID("acct"), Name: name, Status: store.StatusActive, CreatedAt: msTime(s.now().UnixMilli())}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO accounts (id, name, status, balance, reserved, created_ms)
			VALUES ($1, $2, $3, 0, 0, $4)`, a.ID, a.Name, a.Status, a.CreatedAt.UnixMilli())
		return err
	})
	if err != nil {
		return store.Account{}, fmt.Errorf("insert account: %w", err)
	}
	return a, nil
}

// Account reads an account.
func (s *Store) Account(ctx context.Context, id string) (store.Account, error) {
	a, err := scanAccount(s.r.QueryRowContext(ctx, `SELECT `+accountCols+` FROM accounts WHERE id = $1`, id))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return a, fmt.Errorf("read account: %w", err)
	}
	return a, err
}

// lockAccount reads an account for update inside tx.
func (s *Store) lockAccount(ctx context.Context, tx *sql.Tx, id string) (store.Account, error) {
	a, err := scanAccount(tx.QueryRowContext(ctx, `SELECT `+accountCols+` FROM accounts WHERE id = $1`+s.d.ForUpdate, id))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return a, fmt.Errorf("lock account: %w", err)
	}
	return a, err
}

// SetAccountStatus suspends or resumes an account. Setting the current status again is a no-op.
func (s *Store) SetAccountStatus(ctx context.Context, id, status string) (store.Account, error) {
	if status != store.StatusActive && status != store.StatusSuspended {
		return store.Account{}, fmt.Errorf("set status: unknown status %q", status)
	}
	var a store.Account
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		if a, err = s.lockAccount(ctx, tx, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET status = $1 WHERE id = $2`, status, id); err != nil {
			return fmt.Errorf("update status: %w", err)
		}
		a.Status = status
		return nil
	})
	return a, err
}

// ExistingAccounts returns which of ids exist.
func (s *Store) ExistingAccounts(ctx context.Context, ids []string) (map[string]bool, error) {
	out := make(map[string]bool, len(ids))
	const chunk = 500
	for start := 0; start < len(ids); start += chunk {
		part := ids[start:min(start+chunk, len(ids))]
		rows, err := s.r.QueryContext(ctx, `SELECT id FROM accounts WHERE id IN (`+placeholders(1, len(part))+`)`, anys(part)...)
		if err != nil {
			return nil, fmt.Errorf("query accounts: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("scan account: %w", err)
			}
			out[id] = true
		}
		if err := closeRows(rows); err != nil {
			return nil, fmt.Errorf("query accounts: %w", err)
		}
	}
	return out, nil
}

const keyCols = `k.id, k.account_id, k.name, k.prefix, k.rate_limit_rpm, k.created_ms, k.revoked_ms`

func scanKey(row interface{ Scan(...any) error }, extra ...any) (store.Key, error) {
	var k store.Key
	var created int64
	var revoked sql.NullInt64
	dest := append([]any{&k.ID, &k.AccountID, &k.Name, &k.Prefix, &k.RateLimitRPM, &created, &revoked}, extra...)
	if err := row.Scan(dest...); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return store.Key{}, store.ErrNotFound
		}
		return store.Key{}, err
	}
	k.CreatedAt = msTime(created)
	if revoked.Valid {
		k.RevokedAt = msTime(revoked.Int64)
	}
	return k, nil
}

// InsertKey stores a new key for an existing account.
func (s *Store) InsertKey(ctx context.Context, nk store.NewKey) (store.Key, error) {
	k := store.Key{ID: newID("key"), AccountID: nk.AccountID, Name: nk.Name, Prefix: nk.Prefix,
		CreatedAt: msTime(s.now().UnixMilli())}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		a, err := s.lockAccount(ctx, tx, nk.AccountID)
		if err != nil {
			return err
		}
		k.AccountStatus = a.Status
		_, err = tx.ExecContext(ctx, `INSERT INTO api_keys (id, account_id, name, hash, prefix, rate_limit_rpm, created_ms)
			VALUES ($1, $2, $3, $4, $5, 0, $6)`, k.ID, k.AccountID, k.Name, nk.Hash, k.Prefix, k.CreatedAt.UnixMilli())
		if err != nil {
			return fmt.Errorf("insert key: %w", err)
		}
		return nil
	})
	return k, err
}

// Keys lists an account's keys, oldest first.
func (s *Store) Keys(ctx context.Context, accountID string) ([]store.Key, error) {
	if _, err := s.Account(ctx, accountID); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+keyCols+` FROM api_keys k WHERE k.account_id = $1 ORDER BY k.created_ms, k.id`, accountID)
	if err != nil {
		return nil, fmt.Errorf("query keys: %w", err)
	}
	defer rows.Close()
	var out []store.Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("scan key: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query keys: %w", err)
	}
	return out, nil
}

// RevokeKey revokes a key; revoking a revoked key is a no-op.
func (s *Store) RevokeKey(ctx context.Context, keyID string) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE api_keys SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL`,
			s.now().UnixMilli(), keyID)
		if err != nil {
			return fmt.Errorf("revoke key: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_keys WHERE id = $1`, keyID).Scan(&n); err != nil {
			return fmt.Errorf("read key: %w", err)
		}
		if n == 0 {
			return store.ErrNotFound
		}
		return nil
	})
}

// KeyByHash finds a key by the SHA-256 of its secret, with its account's status.
func (s *Store) KeyByHash(ctx context.Context, hash string) (store.Key, error) {
	var status string
	k, err := scanKey(s.r.QueryRowContext(ctx, `SELECT `+keyCols+`, a.status FROM api_keys k
		JOIN accounts a ON a.id = k.account_id WHERE k.hash = $1`, hash), &status)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return k, err
		}
		return k, fmt.Errorf("read key: %w", err)
	}
	k.AccountStatus = status
	return k, nil
}

// KeysByHash finds the keys of hashes, with their accounts' status, by hash: one query per
// inListMax hashes, so one for any batch the internal API accepts. A hash no key has is
// absent from the answer; duplicates are answered once.
func (s *Store) KeysByHash(ctx context.Context, hashes []string) (map[string]store.Key, error) {
	out := make(map[string]store.Key, len(hashes))
	for start := 0; start < len(hashes); start += inListMax {
		in, args := s.inList(hashes[start:min(start+inListMax, len(hashes))])
		rows, err := s.r.QueryContext(ctx, `SELECT `+keyCols+`, a.status, k.hash FROM api_keys k
			JOIN accounts a ON a.id = k.account_id WHERE k.hash IN (`+in+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("read keys: %w", err)
		}
		var status, hash string
		for rows.Next() {
			k, err := scanKey(rows, &status, &hash)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("scan key: %w", err)
			}
			k.AccountStatus = status
			out[hash] = k
		}
		// Err, not only Close: an error that ended the iteration is reported by Err alone.
		if err := closeRows(rows); err != nil {
			return nil, fmt.Errorf("read keys: %w", err)
		}
	}
	return out, nil
}
