package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/store"
)

// journalTx is a journal transaction to write.
type journalTx struct {
	ID        string
	Kind      string
	AccountID string
	Ref       string
	TS        time.Time
	Postings  []ledger.Posting
}

// post writes a journal transaction and applies its postings to the materialized balances in
// the same database transaction. It returns the customer balances after the postings, so the
// caller can check them against what the ledger core computed.
func (s *Store) post(ctx context.Context, tx *sql.Tx, j journalTx) (map[string]int64, error) {
	if err := ledger.CheckBalanced(j.Postings); err != nil {
		return nil, err
	}
	ts := j.TS.UnixMilli()
	if _, err := tx.ExecContext(ctx, `INSERT INTO journal_txs (id, kind, account_id, ref, ts_ms) VALUES ($1, $2, $3, $4, $5)`,
		j.ID, j.Kind, j.AccountID, j.Ref, ts); err != nil {
		return nil, fmt.Errorf("insert journal tx: %w", err)
	}
	balances := map[string]int64{}
	for _, p := range j.Postings {
		if p.Microcredits == 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO postings (tx_id, account, amount, ts_ms) VALUES ($1, $2, $3, $4)`,
			j.ID, p.Account, p.Microcredits, ts); err != nil {
			return nil, fmt.Errorf("insert posting: %w", err)
		}
		if id, ok := ledger.CustomerOf(p.Account); ok {
			var b int64
			err := tx.QueryRowContext(ctx, `UPDATE accounts SET balance = balance + $1 WHERE id = $2 RETURNING balance`,
				p.Microcredits, id).Scan(&b)
			if err != nil {
				return nil, fmt.Errorf("update balance of %s: %w", id, err)
			}
			balances[id] = b
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO ledger_accounts (code, balance) VALUES ($1, $2)
			ON CONFLICT (code) DO UPDATE SET balance = ledger_accounts.balance + excluded.balance`,
			p.Account, p.Microcredits); err != nil {
			return nil, fmt.Errorf("update ledger account %s: %w", p.Account, err)
		}
	}
	return balances, nil
}

// openLots reads an account's lots with credit left, oldest first (the consumption order).
func (s *Store) openLots(ctx context.Context, tx *sql.Tx, accountID string) ([]ledger.Lot, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, microcredits, microusd, remaining FROM lots
		WHERE account_id = $1 AND remaining > 0 ORDER BY created_ms, id`+s.d.ForUpdate, accountID)
	if err != nil {
		return nil, fmt.Errorf("query lots: %w", err)
	}
	defer rows.Close()
	var lots []ledger.Lot
	for rows.Next() {
		var l ledger.Lot
		if err := rows.Scan(&l.ID, &l.Microcredits, &l.MicroUSD, &l.Remaining); err != nil {
			return nil, fmt.Errorf("scan lot: %w", err)
		}
		lots = append(lots, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query lots: %w", err)
	}
	return lots, nil
}

// applyTakes writes what a journal transaction took from lots. The update is conditional on
// the remaining amount the core saw, so a concurrent change is caught, not overwritten.
func (s *Store) applyTakes(ctx context.Context, tx *sql.Tx, txID string, takes []ledger.Take) error {
	for _, t := range takes {
		if err := execOne(ctx, tx, `UPDATE lots SET remaining = $1 WHERE id = $2 AND remaining = $3`,
			t.RemainingAfter, t.LotID, t.RemainingAfter+t.Microcredits); err != nil {
			return fmt.Errorf("update lot %s: %w", t.LotID, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO lot_moves (tx_id, lot_id, microcredits, microusd) VALUES ($1, $2, $3, $4)`,
			txID, t.LotID, t.Microcredits, t.MicroUSD); err != nil {
			return fmt.Errorf("insert lot move: %w", err)
		}
	}
	return nil
}

func checkBalance(balances map[string]int64, accountID string, want int64) error {
	if got, ok := balances[accountID]; ok && got != want {
		return invariant("account %s: stored balance %d, core computed %d", accountID, got, want)
	}
	return nil
}

// MaxCredits bounds one top-up (whole credits), keeping every sum far from int64 limits.
const MaxCredits = 1_000_000_000

// TopUp adds a lot and its journal transaction. Idempotent by order id.
func (s *Store) TopUp(ctx context.Context, t store.TopUp) (store.TopUpResult, bool, error) {
	if t.Credits <= 0 || t.Credits > MaxCredits || t.MicroUSD < 0 || t.OrderID == "" || t.Method == "" {
		return store.TopUpResult{}, false, fmt.Errorf("top-up: invalid request %+v", t)
	}
	fp := fmt.Sprintf("account=%s;plan=%s;credits=%d;microusd=%d;method=%s", t.AccountID, t.Plan, t.Credits, t.MicroUSD, t.Method)
	var res store.TopUpResult
	var replayed bool
	err := s.inTxRetry(ctx, func(tx *sql.Tx) error {
		replayed = false
		a, err := s.lockAccount(ctx, tx, t.AccountID)
		if err != nil {
			return err
		}
		var oldFP string
		err = tx.QueryRowContext(ctx, `SELECT id, order_id, credits, microusd, balance_after, fingerprint FROM topups WHERE order_id = $1`,
			t.OrderID).Scan(&res.ID, &res.OrderID, &res.Credits, &res.MicroUSD, &res.BalanceAfter, &oldFP)
		switch {
		case err == nil && oldFP == fp:
			replayed = true
			return nil
		case err == nil:
			return store.ErrConflict
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("read top-up: %w", err)
		}
		lots, err := s.openLots(ctx, tx, a.ID)
		if err != nil {
			return err
		}
		now := s.now()
		micro := t.Credits * ledger.MicrocreditsPerCredit
		lot := ledger.Lot{ID: newID("lot"), Microcredits: micro, MicroUSD: t.MicroUSD, Remaining: micro}
		nb, lot, takes, err := ledger.Credit(a.Balance, lots, lot)
		if err != nil {
			return err
		}
		res = store.TopUpResult{ID: newID("top"), OrderID: t.OrderID, Credits: t.Credits, MicroUSD: t.MicroUSD, BalanceAfter: nb}
		txID := newID("jtx")
		// Claim the order id first: a concurrent top-up with the same order id waits here
		// (PostgreSQL) and then inserts nothing, so it retries and replays this result.
		ins, err := tx.ExecContext(ctx, `INSERT INTO topups (id, order_id, account_id, fingerprint, plan, credits, microusd,
			method, tx_id, balance_after, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			ON CONFLICT (order_id) DO NOTHING`,
			res.ID, t.OrderID, a.ID, fp, t.Plan, t.Credits, t.MicroUSD, t.Method, txID, nb, now.UnixMilli())
		if err != nil {
			return fmt.Errorf("insert top-up: %w", err)
		}
		if n, err := ins.RowsAffected(); err != nil {
			return fmt.Errorf("insert idempotency record: %w", err)
		} else if n == 0 {
			return errRetry
		}
		kind := ledger.KindTopUp
		if t.MicroUSD == 0 {
			kind = ledger.KindGrant
		}
		ps, err := ledger.TopUpPostings(a.ID, micro, t.MicroUSD, t.Method)
		if err != nil {
			return err
		}
		balances, err := s.post(ctx, tx, journalTx{ID: txID, Kind: kind, AccountID: a.ID, Ref: t.OrderID, TS: now, Postings: ps})
		if err != nil {
			return err
		}
		if err := checkBalance(balances, a.ID, nb); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO lots (id, account_id, microcredits, microusd, remaining, created_ms)
			VALUES ($1, $2, $3, $4, $5, $6)`, lot.ID, a.ID, lot.Microcredits, lot.MicroUSD, lot.Microcredits, now.UnixMilli()); err != nil {
			return fmt.Errorf("insert lot: %w", err)
		}
		return s.applyTakes(ctx, tx, txID, takes)
	})
	if err != nil {
		return store.TopUpResult{}, false, err
	}
	return res, replayed, nil
}

// Refund returns unused credit. Idempotent by refund id.
func (s *Store) Refund(ctx context.Context, r store.Refund) (store.RefundResult, bool, error) {
	if r.RefundID == "" || (!r.AllUnused && r.Microcredits <= 0) || (r.AllUnused && r.Microcredits != 0) {
		return store.RefundResult{}, false, fmt.Errorf("refund: invalid request %+v", r)
	}
	fp := fmt.Sprintf("account=%s;microcredits=%d;all_unused=%t;reason=%s", r.AccountID, r.Microcredits, r.AllUnused, r.Reason)
	var res store.RefundResult
	var replayed bool
	err := s.inTxRetry(ctx, func(tx *sql.Tx) error {
		replayed = false
		a, err := s.lockAccount(ctx, tx, r.AccountID)
		if err != nil {
			return err
		}
		var oldFP string
		err = tx.QueryRowContext(ctx, `SELECT id, refund_id, microcredits, microusd, balance_after, fingerprint FROM refunds WHERE refund_id = $1`,
			r.RefundID).Scan(&res.ID, &res.RefundID, &res.Microcredits, &res.MicroUSD, &res.BalanceAfter, &oldFP)
		switch {
		case err == nil && oldFP == fp:
			replayed = true
			return nil
		case err == nil:
			return store.ErrConflict
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("read refund: %w", err)
		}
		amount := r.Microcredits
		if r.AllUnused {
			amount = a.Available()
		}
		if amount <= 0 {
			return store.ErrInsufficient
		}
		lots, err := s.openLots(ctx, tx, a.ID)
		if err != nil {
			return err
		}
		nb, takes, err := ledger.Refund(a.Balance, a.Reserved, lots, amount)
		if err != nil {
			return err
		}
		var usd int64
		for _, t := range takes {
			usd += t.MicroUSD
		}
		now := s.now()
		txID := newID("jtx")
		res = store.RefundResult{ID: newID("ref"), RefundID: r.RefundID, Microcredits: amount, MicroUSD: usd, BalanceAfter: nb}
		ins, err := tx.ExecContext(ctx, `INSERT INTO refunds (id, refund_id, account_id, fingerprint, microcredits, microusd,
			reason, tx_id, balance_after, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
			ON CONFLICT (refund_id) DO NOTHING`,
			res.ID, r.RefundID, a.ID, fp, amount, usd, r.Reason, txID, nb, now.UnixMilli())
		if err != nil {
			return fmt.Errorf("insert refund: %w", err)
		}
		if n, err := ins.RowsAffected(); err != nil {
			return fmt.Errorf("insert idempotency record: %w", err)
		} else if n == 0 {
			return errRetry
		}
		ps, err := ledger.RefundPostings(a.ID, amount)
		if err != nil {
			return err
		}
		balances, err := s.post(ctx, tx, journalTx{ID: txID, Kind: ledger.KindRefund, AccountID: a.ID, Ref: r.RefundID, TS: now, Postings: ps})
		if err != nil {
			return err
		}
		if err := checkBalance(balances, a.ID, nb); err != nil {
			return err
		}
		return s.applyTakes(ctx, tx, txID, takes)
	})
	if err != nil {
		return store.RefundResult{}, false, err
	}
	return res, replayed, nil
}

// Statement lists the account's journal entries in [from, to) with a running balance that
// starts from the sum of everything before from.
func (s *Store) Statement(ctx context.Context, accountID string, from, to time.Time, limit int) ([]store.Entry, bool, error) {
	if _, err := s.Account(ctx, accountID); err != nil {
		return nil, false, err
	}
	code := ledger.AccountCustomer(accountID)
	// One read transaction, so the opening balance and the entries are from one snapshot.
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, false, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	var bal int64
	if err := tx.QueryRowContext(ctx, `SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM postings WHERE account = $1 AND ts_ms < $2`,
		code, from.UnixMilli()).Scan(&bal); err != nil {
		return nil, false, fmt.Errorf("sum opening balance: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT p.tx_id, p.ts_ms, j.kind, p.amount, j.ref FROM postings p
		JOIN journal_txs j ON j.id = p.tx_id
		WHERE p.account = $1 AND p.ts_ms >= $2 AND p.ts_ms < $3 ORDER BY p.ts_ms, p.tx_id LIMIT $4`,
		code, from.UnixMilli(), to.UnixMilli(), limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("query statement: %w", err)
	}
	defer rows.Close()
	var out []store.Entry
	for rows.Next() {
		var e store.Entry
		var ts int64
		if err := rows.Scan(&e.ID, &ts, &e.Kind, &e.Amount, &e.Ref); err != nil {
			return nil, false, fmt.Errorf("scan entry: %w", err)
		}
		bal += e.Amount
		e.Time, e.Balance = msTime(ts), bal
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("query statement: %w", err)
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// placeholders renders "$first, $first+1, …" for n arguments.
func placeholders(first, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(first + i))
	}
	return b.String()
}

func anys[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}
