package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/bits"

	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/store"
)

// audits are queries that must return no rows; each row returned describes one violation as
// (what, amount). They read the whole journal, so Check is for tests, the operator
// (`ledgerd admin verify`) and a slow periodic job, never the request path.
var audits = []struct{ name, query string }{
	// The journal: double entry in both amounts.
	{"journal transaction does not sum to zero (µcr)", `SELECT tx_id, CAST(SUM(amount) AS BIGINT) FROM postings
		GROUP BY tx_id HAVING SUM(amount) <> 0`},
	{"journal transaction does not sum to zero (µ$)", `SELECT tx_id, CAST(SUM(microusd) AS BIGINT) FROM postings
		GROUP BY tx_id HAVING SUM(microusd) <> 0`},
	{"journal does not sum to zero (µcr)", `SELECT 'all', CAST(SUM(amount) AS BIGINT) FROM postings HAVING SUM(amount) <> 0`},
	{"journal does not sum to zero (µ$)", `SELECT 'all', CAST(SUM(microusd) AS BIGINT) FROM postings HAVING SUM(microusd) <> 0`},
	{"posting without its journal transaction", `SELECT p.tx_id, p.amount FROM postings p
		LEFT JOIN journal_txs j ON j.id = p.tx_id WHERE j.id IS NULL`},

	// Materialized balances are projections of postings.
	{"account balance differs from its postings (µcr)", `SELECT a.id, a.balance - CAST(COALESCE(p.s, 0) AS BIGINT) FROM accounts a
		LEFT JOIN (SELECT account, SUM(amount) AS s FROM postings GROUP BY account) p ON p.account = 'customer:' || a.id
		WHERE a.balance <> COALESCE(p.s, 0)`},
	{"account deferred revenue differs from its postings (µ$)", `SELECT a.id, a.deferred_microusd - CAST(COALESCE(p.s, 0) AS BIGINT) FROM accounts a
		LEFT JOIN (SELECT account, SUM(microusd) AS s FROM postings GROUP BY account) p ON p.account = 'customer:' || a.id
		WHERE a.deferred_microusd <> COALESCE(p.s, 0)`},
	{"ledger account balance differs from its postings (µcr)", `SELECT l.code, l.balance - CAST(COALESCE(p.s, 0) AS BIGINT) FROM ledger_accounts l
		LEFT JOIN (SELECT account, SUM(amount) AS s FROM postings GROUP BY account) p ON p.account = l.code
		WHERE l.balance <> COALESCE(p.s, 0)`},
	{"ledger account balance differs from its postings (µ$)", `SELECT l.code, l.microusd - CAST(COALESCE(p.s, 0) AS BIGINT) FROM ledger_accounts l
		LEFT JOIN (SELECT account, SUM(microusd) AS s FROM postings GROUP BY account) p ON p.account = l.code
		WHERE l.microusd <> COALESCE(p.s, 0)`},
	{"posting on an unknown ledger account", `SELECT p.account, CAST(SUM(p.amount) AS BIGINT) FROM postings p
		LEFT JOIN ledger_accounts l ON l.code = p.account
		LEFT JOIN accounts a ON p.account = 'customer:' || a.id
		WHERE l.code IS NULL AND a.id IS NULL GROUP BY p.account`},
	{"reserved differs from the account's lease reservations", `SELECT a.id, a.reserved - CAST(COALESCE(l.s, 0) AS BIGINT) FROM accounts a
		LEFT JOIN (SELECT account_id, SUM(reservation) AS s FROM leases GROUP BY account_id) l ON l.account_id = a.id
		WHERE a.reserved <> COALESCE(l.s, 0)`},

	// Lots reconcile with balances, with their moves, and with the journal.
	{"unused lot credit differs from max(balance, 0)", `SELECT a.id, CAST(COALESCE(l.s, 0) AS BIGINT) FROM accounts a
		LEFT JOIN (SELECT account_id, SUM(remaining) AS s FROM lots GROUP BY account_id) l ON l.account_id = a.id
		WHERE COALESCE(l.s, 0) <> CASE WHEN a.balance > 0 THEN a.balance ELSE 0 END`},
	{"lot out of range", `SELECT id, remaining FROM lots WHERE remaining < 0 OR remaining > microcredits OR microusd < 0`},
	{"lot moves differ from lot use (µcr)", `SELECT l.id, l.microcredits - l.remaining - CAST(COALESCE(m.s, 0) AS BIGINT) FROM lots l
		LEFT JOIN (SELECT lot_id, SUM(microcredits) AS s FROM lot_moves GROUP BY lot_id) m ON m.lot_id = l.id
		WHERE l.microcredits - l.remaining <> COALESCE(m.s, 0)`},
	{"deferred revenue differs from the unrecognized USD of the account's lots", `SELECT a.id, a.deferred_microusd - CAST(COALESCE(l.s, 0) AS BIGINT)
		FROM accounts a LEFT JOIN (SELECT l.account_id, SUM(l.microusd - COALESCE(m.s, 0)) AS s FROM lots l
			LEFT JOIN (SELECT lot_id, SUM(microusd) AS s FROM lot_moves GROUP BY lot_id) m ON m.lot_id = l.id
			GROUP BY l.account_id) l ON l.account_id = a.id
		WHERE a.deferred_microusd <> COALESCE(l.s, 0)`},
	// Per transaction, the customer's USD posting plus the USD it took from lots is what the
	// lot it created was paid (0 when it created none): usage and refunds move exactly what
	// they took from lots, a top-up adds its price less what it recognized at once.
	{"customer USD posting differs from the transaction's lot moves", `SELECT j.id,
			CAST(COALESCE(p.microusd, 0) + COALESCE(m.s, 0) - COALESCE(n.microusd, 0) AS BIGINT)
		FROM journal_txs j
		LEFT JOIN postings p ON p.tx_id = j.id AND p.account = 'customer:' || j.account_id
		LEFT JOIN (SELECT tx_id, SUM(microusd) AS s FROM lot_moves GROUP BY tx_id) m ON m.tx_id = j.id
		LEFT JOIN (SELECT t.tx_id, l.microusd FROM topups t JOIN lots l ON l.id = t.lot_id) n ON n.tx_id = j.id
		WHERE COALESCE(p.microusd, 0) + COALESCE(m.s, 0) <> COALESCE(n.microusd, 0)`},
	{"lot move without its journal transaction", `SELECT m.lot_id, m.microcredits FROM lot_moves m
		LEFT JOIN journal_txs j ON j.id = m.tx_id WHERE j.id IS NULL`},

	// Every idempotency record agrees with the journal transaction it wrote.
	{"top-up differs from its journal transaction", `SELECT t.order_id, t.credits * 1000000 - COALESCE(p.amount, 0) FROM topups t
		LEFT JOIN postings p ON p.tx_id = t.tx_id AND p.account = 'customer:' || t.account_id
		WHERE p.amount IS NULL OR p.amount <> t.credits * 1000000`},
	{"top-up differs from its lot", `SELECT t.order_id, t.microusd FROM topups t LEFT JOIN lots l ON l.id = t.lot_id
		WHERE t.lot_id <> '' AND (l.id IS NULL OR l.microusd <> t.microusd OR l.microcredits <> t.credits * 1000000
			OR l.account_id <> t.account_id OR l.method <> t.method)`},
	{"refund differs from its journal transaction", `SELECT r.refund_id, r.microcredits + COALESCE(p.amount, 0) FROM refunds r
		LEFT JOIN postings p ON p.tx_id = r.tx_id AND p.account = 'customer:' || r.account_id
		WHERE p.amount IS NULL OR p.amount <> -r.microcredits OR p.microusd <> -r.microusd`},
	{"chargeback differs from its journal transaction", `SELECT c.chargeback_id, c.microcredits + COALESCE(p.amount, 0) FROM chargebacks c
		LEFT JOIN postings p ON p.tx_id = c.tx_id AND p.account = 'customer:' || c.account_id
		WHERE (c.tx_id = '' AND c.microcredits <> 0)
			OR (c.tx_id <> '' AND (p.amount IS NULL OR p.amount <> -c.microcredits OR p.microusd <> -c.microusd))`},
	// Settled request ids of one batch and account share a settled_ms, so pruning removes all of
	// them or none: while they are kept, their costs add up to the charge exactly.
	{"settled requests differ from their usage charge", `SELECT s.tx_id, CAST(s.c + COALESCE(p.amount, 0) AS BIGINT)
		FROM (SELECT tx_id, account_id, SUM(cost) AS c FROM settled_requests GROUP BY tx_id, account_id) s
		LEFT JOIN journal_txs j ON j.id = s.tx_id
		LEFT JOIN postings p ON p.tx_id = s.tx_id AND p.account = 'customer:' || s.account_id
		WHERE j.id IS NULL OR s.c + COALESCE(p.amount, 0) <> 0`},
}

// Check runs every audit in one snapshot and reports all violations found.
func (s *Store) Check(ctx context.Context) error {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: s.d.SnapshotIsolation})
	if err != nil {
		return fmt.Errorf("begin audit: %w", err)
	}
	defer tx.Rollback()
	var errs []error
	for _, a := range audits {
		rows, err := tx.QueryContext(ctx, a.query)
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
		if err := closeRows(rows); err != nil {
			return fmt.Errorf("audit %q: %w", a.name, err)
		}
	}
	lotErrs, err := checkLotUSD(ctx, tx)
	if err != nil {
		return err
	}
	errs = append(errs, lotErrs...)
	if len(errs) > 0 {
		return fmt.Errorf("%w: %d violations:\n%w", ledger.ErrInvariant, len(errs), errors.Join(errs...))
	}
	return nil
}

// checkLotUSD checks, per lot, that the USD its moves carry is exactly the cumulative floor
// of its price over the credit that left it: floor(used × microusd / microcredits). The
// product needs 128 bits, which SQL does not portably have, so this audit runs in Go.
func checkLotUSD(ctx context.Context, tx *sql.Tx) ([]error, error) {
	rows, err := tx.QueryContext(ctx, `SELECT l.id, l.microcredits, l.microusd, l.remaining, CAST(COALESCE(m.s, 0) AS BIGINT)
		FROM lots l LEFT JOIN (SELECT lot_id, SUM(microusd) AS s FROM lot_moves GROUP BY lot_id) m ON m.lot_id = l.id`)
	if err != nil {
		return nil, fmt.Errorf("audit lot USD: %w", err)
	}
	defer rows.Close()
	var errs []error
	for rows.Next() {
		var id string
		var n, p, rem, moved int64
		if err := rows.Scan(&id, &n, &p, &rem, &moved); err != nil {
			return nil, fmt.Errorf("audit lot USD: %w", err)
		}
		if n <= 0 || p < 0 || rem < 0 || rem > n {
			continue // reported by "lot out of range"
		}
		hi, lo := bits.Mul64(uint64(n-rem), uint64(p))
		want, _ := bits.Div64(hi, lo, uint64(n))
		if int64(want) != moved {
			errs = append(errs, fmt.Errorf("lot USD moved differs from its price times its use: %s (%d)", id, moved-int64(want)))
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit lot USD: %w", err)
	}
	return errs, nil
}

// LedgerAccounts returns the balances of the non-customer ledger accounts.
func (s *Store) LedgerAccounts(ctx context.Context) (map[string]store.Totals, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT code, balance, microusd FROM ledger_accounts`)
	if err != nil {
		return nil, fmt.Errorf("query ledger accounts: %w", err)
	}
	defer rows.Close()
	out := map[string]store.Totals{}
	for rows.Next() {
		var code string
		var t store.Totals
		if err := rows.Scan(&code, &t.Microcredits, &t.MicroUSD); err != nil {
			return nil, fmt.Errorf("scan ledger account: %w", err)
		}
		out[code] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query ledger accounts: %w", err)
	}
	return out, nil
}
