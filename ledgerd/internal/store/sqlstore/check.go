package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"tollgate/ledgerd/internal/ledger"
)

// audits are queries that must return no rows; each row returned describes one violation.
// They read the whole journal, so Check is for tests, the operator, and a slow periodic job,
// never the request path.
var audits = []struct{ name, query string }{
	{"journal transaction does not sum to zero", `SELECT tx_id, CAST(SUM(amount) AS BIGINT) FROM postings
		GROUP BY tx_id HAVING SUM(amount) <> 0`},
	{"journal does not sum to zero", `SELECT 'all', CAST(SUM(amount) AS BIGINT) FROM postings HAVING SUM(amount) <> 0`},
	{"account balance differs from its postings", `SELECT a.id, a.balance - CAST(COALESCE(p.s, 0) AS BIGINT) FROM accounts a
		LEFT JOIN (SELECT account, SUM(amount) AS s FROM postings GROUP BY account) p ON p.account = 'customer:' || a.id
		WHERE a.balance <> COALESCE(p.s, 0)`},
	{"ledger account balance differs from its postings", `SELECT l.code, l.balance - CAST(COALESCE(p.s, 0) AS BIGINT) FROM ledger_accounts l
		LEFT JOIN (SELECT account, SUM(amount) AS s FROM postings GROUP BY account) p ON p.account = l.code
		WHERE l.balance <> COALESCE(p.s, 0)`},
	{"posting on an unknown ledger account", `SELECT p.account, CAST(SUM(p.amount) AS BIGINT) FROM postings p
		LEFT JOIN ledger_accounts l ON l.code = p.account
		LEFT JOIN accounts a ON p.account = 'customer:' || a.id
		WHERE l.code IS NULL AND a.id IS NULL GROUP BY p.account`},
	{"reserved differs from the account's lease reservations", `SELECT a.id, a.reserved - CAST(COALESCE(l.s, 0) AS BIGINT) FROM accounts a
		LEFT JOIN (SELECT account_id, SUM(reservation) AS s FROM leases GROUP BY account_id) l ON l.account_id = a.id
		WHERE a.reserved <> COALESCE(l.s, 0)`},
	{"unused lot credit differs from max(balance, 0)", `SELECT a.id, CAST(COALESCE(l.s, 0) AS BIGINT) FROM accounts a
		LEFT JOIN (SELECT account_id, SUM(remaining) AS s FROM lots GROUP BY account_id) l ON l.account_id = a.id
		WHERE COALESCE(l.s, 0) <> CASE WHEN a.balance > 0 THEN a.balance ELSE 0 END`},
	{"lot out of range", `SELECT id, remaining FROM lots WHERE remaining < 0 OR remaining > microcredits`},
	{"lot moves differ from lot use", `SELECT l.id, l.microcredits - l.remaining - CAST(COALESCE(m.s, 0) AS BIGINT) FROM lots l
		LEFT JOIN (SELECT lot_id, SUM(microcredits) AS s FROM lot_moves GROUP BY lot_id) m ON m.lot_id = l.id
		WHERE l.microcredits - l.remaining <> COALESCE(m.s, 0)`},
}

// Check runs every audit and reports all violations found.
func (s *Store) Check(ctx context.Context) error {
	var errs []error
	for _, a := range audits {
		rows, err := s.r.QueryContext(ctx, a.query)
		if err != nil {
			return fmt.Errorf("audit %q: %w", a.name, err)
		}
		for rows.Next() {
			var id string
			var v int64
			if err := rows.Scan(&id, &v); err != nil {
				rows.Close()
				return fmt.Errorf("audit %q: %w", a.name, err)
			}
			errs = append(errs, fmt.Errorf("%s: %s (%d)", a.name, id, v))
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("audit %q: %w", a.name, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ledger.ErrInvariant, errors.Join(errs...))
	}
	return nil
}

// LedgerAccounts returns the balances of the non-customer ledger accounts.
func (s *Store) LedgerAccounts(ctx context.Context) (map[string]int64, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT code, balance FROM ledger_accounts`)
	if err != nil {
		return nil, fmt.Errorf("query ledger accounts: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var code string
		var b int64
		if err := rows.Scan(&code, &b); err != nil {
			return nil, fmt.Errorf("scan ledger account: %w", err)
		}
		out[code] = b
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query ledger accounts: %w", err)
	}
	return out, nil
}
