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
		if p.Microcredits == 0 && p.MicroUSD == 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO postings (tx_id, account, amount, microusd, ts_ms) VALUES ($1, $2, $3, $4, $5)`,
			j.ID, p.Account, p.Microcredits, p.MicroUSD, ts); err != nil {
			return nil, fmt.Errorf("insert posting: %w", err)
		}
		if id, ok := ledger.CustomerOf(p.Account); ok {
			var b int64
			err := tx.QueryRowContext(ctx, `UPDATE accounts SET balance = balance + $1, deferred_microusd = deferred_microusd + $2
				WHERE id = $3 RETURNING balance`, p.Microcredits, p.MicroUSD, id).Scan(&b)
			if err != nil {
				return nil, fmt.Errorf("update balance of %s: %w", id, err)
			}
			balances[id] = b
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO ledger_accounts (code, balance, microusd) VALUES ($1, $2, $3)
			ON CONFLICT (code) DO UPDATE SET balance = ledger_accounts.balance + excluded.balance,
			microusd = ledger_accounts.microusd + excluded.microusd`,
			p.Account, p.Microcredits, p.MicroUSD); err != nil {
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

// idempotency looks up an idempotency record by key. It returns found=false when the key is
// new, ErrConflict when it was used with another request, and fills dest on a replay.
func idempotency(ctx context.Context, tx *sql.Tx, query, key, fp string, dest ...any) (bool, error) {
	var oldFP string
	err := tx.QueryRowContext(ctx, query, key).Scan(append(dest, &oldFP)...)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read idempotency record: %w", err)
	case oldFP != fp:
		return false, store.ErrConflict
	}
	return true, nil
}

// claim inserts an idempotency record with ON CONFLICT DO NOTHING. A concurrent transaction
// that claimed the same key first makes it return errRetry: the next attempt replays.
func claim(ctx context.Context, tx *sql.Tx, query string, args ...any) error {
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("insert idempotency record: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("insert idempotency record: %w", err)
	} else if n == 0 {
		return errRetry
	}
	return nil
}

const topUpResultQuery = `SELECT id, order_id, credits, microusd, balance_after, fingerprint FROM topups WHERE order_id = $1`

// TopUp adds a lot and its journal transaction. Idempotent by order id, and by event id when
// one is given.
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
		if t.EventID != "" {
			// A redelivered event replays whatever top-up it made, body aside: the provider's
			// event id is the idempotency key of a webhook.
			var order string
			err := tx.QueryRowContext(ctx, `SELECT order_id FROM webhook_events WHERE event_id = $1`, t.EventID).Scan(&order)
			if err == nil {
				var ignored string
				if err := tx.QueryRowContext(ctx, topUpResultQuery, order).Scan(&res.ID, &res.OrderID, &res.Credits,
					&res.MicroUSD, &res.BalanceAfter, &ignored); err != nil {
					return fmt.Errorf("read top-up of event: %w", err)
				}
				replayed = true
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("read webhook event: %w", err)
			}
		}
		found, err := idempotency(ctx, tx, topUpResultQuery, t.OrderID, fp, &res.ID, &res.OrderID, &res.Credits, &res.MicroUSD, &res.BalanceAfter)
		if err != nil {
			return err
		}
		now := s.now()
		if t.EventID != "" {
			// The event is new but its order was applied (another event for the same payment):
			// remember the event too, so its redelivery is recognized as such.
			if err := claim(ctx, tx, `INSERT INTO webhook_events (event_id, account_id, order_id, received_ms)
				VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING`, t.EventID, a.ID, t.OrderID, now.UnixMilli()); err != nil {
				return err
			}
		}
		if found {
			replayed = true
			return nil
		}
		lots, err := s.openLots(ctx, tx, a.ID)
		if err != nil {
			return err
		}
		micro := t.Credits * ledger.MicrocreditsPerCredit
		lot := ledger.Lot{ID: newID("lot"), Microcredits: micro, MicroUSD: t.MicroUSD, Remaining: micro}
		nb, _, takes, err := ledger.Credit(a.Balance, lots, lot)
		if err != nil {
			return err
		}
		res = store.TopUpResult{ID: newID("top"), OrderID: t.OrderID, Credits: t.Credits, MicroUSD: t.MicroUSD, BalanceAfter: nb}
		txID := newID("jtx")
		// Claim the order id first: a concurrent top-up with the same order id waits here
		// (PostgreSQL) and then inserts nothing, so it retries and replays this result.
		if err := claim(ctx, tx, `INSERT INTO topups (id, order_id, account_id, fingerprint, plan, credits, microusd,
			method, tx_id, lot_id, balance_after, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (order_id) DO NOTHING`,
			res.ID, t.OrderID, a.ID, fp, t.Plan, t.Credits, t.MicroUSD, t.Method, txID, lot.ID, nb, now.UnixMilli()); err != nil {
			return err
		}
		kind := ledger.KindTopUp
		if t.MicroUSD == 0 {
			kind = ledger.KindGrant
		}
		ps, err := ledger.TopUpPostings(a.ID, micro, t.MicroUSD, t.Method, ledger.SumUSD(takes))
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
		if _, err := tx.ExecContext(ctx, `INSERT INTO lots (id, account_id, microcredits, microusd, remaining, method, created_ms)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, lot.ID, a.ID, lot.Microcredits, lot.MicroUSD, lot.Microcredits, t.Method, now.UnixMilli()); err != nil {
			return fmt.Errorf("insert lot: %w", err)
		}
		return s.applyTakes(ctx, tx, txID, takes)
	})
	if err != nil {
		return store.TopUpResult{}, false, err
	}
	return res, replayed, nil
}

const refundResultQuery = `SELECT id, refund_id, kind, order_id, reason, microcredits, microusd, tx_id, balance_after, fingerprint
	FROM refunds WHERE refund_id = $1`

// Refund returns unused credit: a partial refund (newest lots first) or the reversal of one
// top-up. Idempotent by refund id.
func (s *Store) Refund(ctx context.Context, r store.Refund) (store.RefundResult, bool, error) {
	set := 0
	for _, b := range []bool{r.Microcredits != 0, r.AllUnused, r.OrderID != ""} {
		if b {
			set++
		}
	}
	if r.RefundID == "" || set != 1 || r.Microcredits < 0 {
		return store.RefundResult{}, false, fmt.Errorf("refund: invalid request %+v", r)
	}
	fp := fmt.Sprintf("account=%s;microcredits=%d;all_unused=%t;order=%s;reason=%s", r.AccountID, r.Microcredits, r.AllUnused, r.OrderID, r.Reason)
	var res store.RefundResult
	var replayed bool
	err := s.inTxRetry(ctx, func(tx *sql.Tx) error {
		replayed = false
		a, err := s.lockAccount(ctx, tx, r.AccountID)
		if err != nil {
			return err
		}
		var txID string
		found, err := idempotency(ctx, tx, refundResultQuery, r.RefundID, fp, &res.ID, &res.RefundID, &res.Kind, &res.OrderID,
			&res.Reason, &res.Microcredits, &res.MicroUSD, &txID, &res.BalanceAfter)
		if err != nil {
			return err
		}
		if found {
			replayed = true
			res.ByMethod, err = refundByMethod(ctx, tx, txID)
			return err
		}
		lots, err := s.openLots(ctx, tx, a.ID)
		if err != nil {
			return err
		}
		var nb int64
		var takes []ledger.Take
		kind := store.RefundPartial
		if r.OrderID != "" {
			kind = store.RefundReversal
			var lotID, owner string
			err := tx.QueryRowContext(ctx, `SELECT lot_id, account_id FROM topups WHERE order_id = $1`, r.OrderID).Scan(&lotID, &owner)
			if errors.Is(err, sql.ErrNoRows) || (err == nil && owner != a.ID) {
				return fmt.Errorf("top-up %q on account %s: %w", r.OrderID, a.ID, store.ErrNotFound)
			}
			if err != nil {
				return fmt.Errorf("read top-up: %w", err)
			}
			var prior string
			err = tx.QueryRowContext(ctx, `SELECT refund_id FROM refunds WHERE order_id = $1`, r.OrderID).Scan(&prior)
			if err == nil {
				return fmt.Errorf("top-up %q reversed by refund %q: %w", r.OrderID, prior, store.ErrAlreadyReversed)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("read reversal: %w", err)
			}
			var take ledger.Take
			if nb, take, err = ledger.Reverse(a.Balance, a.Reserved, lots, lotID); err != nil {
				return err
			}
			takes = []ledger.Take{take}
		} else {
			amount := r.Microcredits
			if r.AllUnused {
				amount = a.Available()
			}
			if amount <= 0 {
				return store.ErrInsufficient
			}
			if nb, takes, err = ledger.Refund(a.Balance, a.Reserved, lots, amount); err != nil {
				return err
			}
		}
		var amount int64
		for _, t := range takes {
			amount += t.Microcredits
		}
		usd := ledger.SumUSD(takes)
		now := s.now()
		txID = newID("jtx")
		res = store.RefundResult{ID: newID("ref"), RefundID: r.RefundID, Kind: kind, OrderID: r.OrderID, Reason: r.Reason,
			Microcredits: amount, MicroUSD: usd, BalanceAfter: nb}
		if err := claim(ctx, tx, `INSERT INTO refunds (id, refund_id, account_id, fingerprint, kind, order_id, microcredits, microusd,
			reason, tx_id, balance_after, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (refund_id) DO NOTHING`,
			res.ID, r.RefundID, a.ID, fp, kind, r.OrderID, amount, usd, r.Reason, txID, nb, now.UnixMilli()); err != nil {
			return err
		}
		ps, err := ledger.RefundPostings(a.ID, amount, usd)
		if err != nil {
			return err
		}
		jkind := ledger.KindRefund
		if kind == store.RefundReversal {
			jkind = ledger.KindReversal
		}
		balances, err := s.post(ctx, tx, journalTx{ID: txID, Kind: jkind, AccountID: a.ID, Ref: r.RefundID, TS: now, Postings: ps})
		if err != nil {
			return err
		}
		if err := checkBalance(balances, a.ID, nb); err != nil {
			return err
		}
		if err := s.applyTakes(ctx, tx, txID, takes); err != nil {
			return err
		}
		res.ByMethod, err = refundByMethod(ctx, tx, txID)
		return err
	})
	if err != nil {
		return store.RefundResult{}, false, err
	}
	return res, replayed, nil
}

// refundByMethod sums what a refund transaction took from lots by the lots' payment methods:
// the USD owed back through each. Free credit (promotional lots) owes nothing and is left out.
func refundByMethod(ctx context.Context, tx *sql.Tx, txID string) ([]store.MethodAmount, error) {
	rows, err := tx.QueryContext(ctx, `SELECT l.method, CAST(SUM(m.microusd) AS BIGINT) FROM lot_moves m
		JOIN lots l ON l.id = m.lot_id WHERE m.tx_id = $1 GROUP BY l.method HAVING SUM(m.microusd) > 0 ORDER BY l.method`, txID)
	if err != nil {
		return nil, fmt.Errorf("query refund by method: %w", err)
	}
	defer rows.Close()
	var out []store.MethodAmount
	for rows.Next() {
		var m store.MethodAmount
		if err := rows.Scan(&m.Method, &m.MicroUSD); err != nil {
			return nil, fmt.Errorf("scan refund by method: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query refund by method: %w", err)
	}
	return out, nil
}

const chargebackResultQuery = `SELECT id, chargeback_id, order_id, reason, microcredits, microusd, balance_after, fingerprint
	FROM chargebacks WHERE chargeback_id = $1`

// Chargeback suspends the account and forfeits its whole balance. Idempotent by chargeback id.
func (s *Store) Chargeback(ctx context.Context, c store.Chargeback) (store.ChargebackResult, bool, error) {
	if c.ChargebackID == "" {
		return store.ChargebackResult{}, false, fmt.Errorf("chargeback: invalid request %+v", c)
	}
	fp := fmt.Sprintf("account=%s;order=%s;reason=%s", c.AccountID, c.OrderID, c.Reason)
	var res store.ChargebackResult
	var replayed bool
	err := s.inTxRetry(ctx, func(tx *sql.Tx) error {
		replayed = false
		a, err := s.lockAccount(ctx, tx, c.AccountID)
		if err != nil {
			return err
		}
		found, err := idempotency(ctx, tx, chargebackResultQuery, c.ChargebackID, fp, &res.ID, &res.ChargebackID, &res.OrderID,
			&res.Reason, &res.Microcredits, &res.MicroUSD, &res.BalanceAfter)
		if err != nil || found {
			replayed = found
			return err
		}
		if c.OrderID != "" {
			var owner string
			err := tx.QueryRowContext(ctx, `SELECT account_id FROM topups WHERE order_id = $1`, c.OrderID).Scan(&owner)
			if errors.Is(err, sql.ErrNoRows) || (err == nil && owner != a.ID) {
				return fmt.Errorf("top-up %q on account %s: %w", c.OrderID, a.ID, store.ErrNotFound)
			}
			if err != nil {
				return fmt.Errorf("read top-up: %w", err)
			}
		}
		lots, err := s.openLots(ctx, tx, a.ID)
		if err != nil {
			return err
		}
		nb, forfeited, takes, err := ledger.Forfeit(a.Balance, lots)
		if err != nil {
			return err
		}
		usd := ledger.SumUSD(takes)
		now := s.now()
		txID := ""
		if forfeited > 0 {
			txID = newID("jtx")
		}
		res = store.ChargebackResult{ID: newID("cb"), ChargebackID: c.ChargebackID, OrderID: c.OrderID, Reason: c.Reason,
			Microcredits: forfeited, MicroUSD: usd, BalanceAfter: nb}
		if err := claim(ctx, tx, `INSERT INTO chargebacks (id, chargeback_id, account_id, fingerprint, order_id, reason,
			microcredits, microusd, tx_id, balance_after, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			ON CONFLICT (chargeback_id) DO NOTHING`,
			res.ID, c.ChargebackID, a.ID, fp, c.OrderID, c.Reason, forfeited, usd, txID, nb, now.UnixMilli()); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE accounts SET status = $1 WHERE id = $2`, store.StatusSuspended, a.ID); err != nil {
			return fmt.Errorf("suspend account: %w", err)
		}
		if forfeited == 0 {
			return nil
		}
		ps, err := ledger.ForfeitPostings(a.ID, forfeited, usd)
		if err != nil {
			return err
		}
		balances, err := s.post(ctx, tx, journalTx{ID: txID, Kind: ledger.KindChargeback, AccountID: a.ID, Ref: c.ChargebackID, TS: now, Postings: ps})
		if err != nil {
			return err
		}
		if err := checkBalance(balances, a.ID, nb); err != nil {
			return err
		}
		return s.applyTakes(ctx, tx, txID, takes)
	})
	if err != nil {
		return store.ChargebackResult{}, false, err
	}
	return res, replayed, nil
}

// Lots lists an account's lots, oldest first, with what left each one by cause.
func (s *Store) Lots(ctx context.Context, accountID string) ([]store.Lot, error) {
	if _, err := s.Account(ctx, accountID); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, `SELECT l.id, COALESCE(t.order_id, ''), l.method, l.microcredits, l.microusd, l.remaining, l.created_ms,
		`+sumKinds("m.microcredits", "'usage', 'topup', 'grant'")+`, `+sumKinds("m.microusd", "'usage', 'topup', 'grant'")+`,
		`+sumKinds("m.microcredits", "'refund', 'reversal'")+`, `+sumKinds("m.microusd", "'refund', 'reversal'")+`,
		`+sumKinds("m.microcredits", "'chargeback'")+`, `+sumKinds("m.microusd", "'chargeback'")+`
		FROM lots l
		LEFT JOIN topups t ON t.lot_id = l.id
		LEFT JOIN lot_moves m ON m.lot_id = l.id
		LEFT JOIN journal_txs j ON j.id = m.tx_id
		WHERE l.account_id = $1
		GROUP BY l.id, t.order_id, l.method, l.microcredits, l.microusd, l.remaining, l.created_ms
		ORDER BY l.created_ms, l.id`, accountID)
	if err != nil {
		return nil, fmt.Errorf("query lots: %w", err)
	}
	defer rows.Close()
	var out []store.Lot
	for rows.Next() {
		var l store.Lot
		var created int64
		if err := rows.Scan(&l.ID, &l.OrderID, &l.Method, &l.Microcredits, &l.MicroUSD, &l.Remaining, &created,
			&l.Used, &l.UsedMicroUSD, &l.Refunded, &l.RefundedMicroUSD, &l.Forfeited, &l.ForfeitedMicroUSD); err != nil {
			return nil, fmt.Errorf("scan lot: %w", err)
		}
		l.CreatedAt = msTime(created)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query lots: %w", err)
	}
	return out, nil
}

// sumKinds sums col over the lot moves of journal transactions of the given kinds. Moves made
// by a top-up are usage: the new lot covering an overdraft.
func sumKinds(col, kinds string) string {
	return `CAST(COALESCE(SUM(CASE WHEN j.kind IN (` + kinds + `) THEN ` + col + ` END), 0) AS BIGINT)`
}

// Report sums every ledger account's postings before from and before to, customers together.
func (s *Store) Report(ctx context.Context, from, to time.Time) (store.Report, error) {
	rep := store.Report{From: from, To: to}
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: s.d.SnapshotIsolation})
	if err != nil {
		return rep, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	for _, at := range []struct {
		dst *map[string]store.Totals
		t   time.Time
	}{{&rep.Opening, from}, {&rep.Closing, to}} {
		rows, err := tx.QueryContext(ctx, `SELECT CASE WHEN account LIKE 'customer:%' THEN '`+store.AccountCustomers+`' ELSE account END,
			CAST(SUM(amount) AS BIGINT), CAST(SUM(microusd) AS BIGINT)
			FROM postings WHERE ts_ms < $1 GROUP BY CASE WHEN account LIKE 'customer:%' THEN '`+store.AccountCustomers+`' ELSE account END`,
			at.t.UnixMilli())
		if err != nil {
			return rep, fmt.Errorf("sum postings: %w", err)
		}
		m := map[string]store.Totals{}
		for rows.Next() {
			var code string
			var tot store.Totals
			if err := rows.Scan(&code, &tot.Microcredits, &tot.MicroUSD); err != nil {
				rows.Close()
				return rep, fmt.Errorf("scan totals: %w", err)
			}
			m[code] = tot
		}
		if err := closeRows(rows); err != nil {
			return rep, fmt.Errorf("sum postings: %w", err)
		}
		*at.dst = m
	}
	return rep, nil
}

// Statement lists the account's journal entries in [from, to) with a running balance that
// starts from the sum of everything before from.
func (s *Store) Statement(ctx context.Context, accountID string, from, to time.Time, limit int) (store.Statement, error) {
	var st store.Statement
	if _, err := s.Account(ctx, accountID); err != nil {
		return st, err
	}
	code := ledger.AccountCustomer(accountID)
	// One snapshot, so the opening balance and the entries agree.
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: s.d.SnapshotIsolation})
	if err != nil {
		return st, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	if err := tx.QueryRowContext(ctx, `SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM postings WHERE account = $1 AND ts_ms < $2`,
		code, from.UnixMilli()).Scan(&st.Opening); err != nil {
		return st, fmt.Errorf("sum opening balance: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT p.tx_id, p.ts_ms, j.kind, p.amount, p.microusd, j.ref FROM postings p
		JOIN journal_txs j ON j.id = p.tx_id
		WHERE p.account = $1 AND p.ts_ms >= $2 AND p.ts_ms < $3 ORDER BY p.ts_ms, p.tx_id LIMIT $4`,
		code, from.UnixMilli(), to.UnixMilli(), limit+1)
	if err != nil {
		return st, fmt.Errorf("query statement: %w", err)
	}
	defer rows.Close()
	bal := st.Opening
	for rows.Next() {
		var e store.Entry
		var ts int64
		if err := rows.Scan(&e.ID, &ts, &e.Kind, &e.Amount, &e.MicroUSD, &e.Ref); err != nil {
			return st, fmt.Errorf("scan entry: %w", err)
		}
		bal += e.Amount
		e.Time, e.Balance = msTime(ts), bal
		st.Entries = append(st.Entries, e)
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("query statement: %w", err)
	}
	if len(st.Entries) > limit {
		st.Entries, st.More = st.Entries[:limit], true
	}
	return st, nil
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
