package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sort"
	"time"

	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/store"
)

// Settle applies a batch of usage in one transaction whose number of statements does not
// grow with the batch (the round trips to the database are what bound throughput):
//
//  1. insert every request id into settled_requests, skipping ids already there, and learn
//     which ids are new (INSERT … ON CONFLICT DO NOTHING: one statement with arrays and
//     RETURNING on PostgreSQL; multi-row chunks on SQLite, where a chunk that inserted all
//     its rows needs no more and otherwise the new rows are those with this batch's journal
//     transaction ids);
//  2. lock the accounts with new records (in id order), then the leases those records carry,
//     then the accounts' open lots; charge each account the sum of its new records with one
//     usage journal transaction (its id is stored on the settled rows), consuming lots oldest
//     first, and lower the reservations of the leases; write all of it with multi-row
//     statements;
//  3. store the batch's Kafka offsets.
//
// Either all of it commits or none: a batch replayed after a crash settles only what the
// first attempt did not.
func (s *Store) Settle(ctx context.Context, b store.Batch) (store.SettleResult, error) {
	var res store.SettleResult
	// First occurrence of each request id wins; later copies in the batch are duplicates.
	// Each account's usage gets one journal transaction, whose id the settled rows carry.
	seen := make(map[string]struct{}, len(b.Usage))
	uniq := make([]store.Usage, 0, len(b.Usage))
	txIDs := make(map[string]string, 64)
	for _, u := range b.Usage {
		if u.Cost < 0 || u.RequestID == "" || u.AccountID == "" {
			return res, invariant("settle: invalid usage %+v", u)
		}
		if _, dup := seen[u.RequestID]; dup {
			continue
		}
		seen[u.RequestID] = struct{}{}
		uniq = append(uniq, u)
		if _, ok := txIDs[u.AccountID]; !ok {
			txIDs[u.AccountID] = newID("jtx")
		}
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res = store.SettleResult{}
		now := s.now()
		fresh, err := s.insertSettled(ctx, tx, uniq, txIDs, now)
		if err != nil {
			return err
		}
		per := make(map[string]*accountUsage, len(txIDs))
		var last *accountUsage // records of one account often come in runs (Kafka key)
		for i, u := range uniq {
			if !fresh[i] {
				continue
			}
			au := last
			if au == nil || au.id != u.AccountID {
				if au = per[u.AccountID]; au == nil {
					au = &accountUsage{id: u.AccountID, txID: txIDs[u.AccountID], byLease: map[string]int64{}}
					per[u.AccountID] = au
				}
				last = au
			}
			var ok bool
			if au.cost, ok = addChecked(au.cost, u.Cost); !ok {
				return invariant("settle: cost overflow on %s", u.AccountID)
			}
			au.n++
			if u.LeaseID != "" {
				au.byLease[u.LeaseID] += u.Cost // bounded by au.cost, which did not overflow
			}
		}
		if err := s.settleAccounts(ctx, tx, per, b.Ref, now); err != nil {
			return err
		}
		for _, au := range per {
			res.Settled += au.n
			res.Microcredits += au.cost
			res.Accounts++
		}
		res.Duplicates = len(b.Usage) - res.Settled
		parts := make([]int, 0, len(b.Offsets))
		for p := range b.Offsets {
			parts = append(parts, p)
		}
		sort.Ints(parts)
		rows := make([][]any, 0, len(parts))
		for _, p := range parts {
			rows = append(rows, []any{b.Group, b.Topic, p, b.Offsets[p]})
		}
		// Offsets only move forward, so a stale batch cannot rewind them.
		if _, err := s.execRows(ctx, tx, `INSERT INTO kafka_offsets (grp, topic, part, next_offset) VALUES `, nil, rows,
			` ON CONFLICT (grp, topic, part) DO UPDATE SET next_offset = excluded.next_offset
			WHERE kafka_offsets.next_offset < excluded.next_offset`); err != nil {
			return fmt.Errorf("store offsets: %w", err)
		}
		return nil
	})
	if err != nil {
		return store.SettleResult{}, err
	}
	return res, nil
}

// accountUsage is what one batch charges one account.
type accountUsage struct {
	id      string
	txID    string
	cost    int64
	n       int
	byLease map[string]int64
}

// insertSettled records the request ids and reports, for each of uniq, whether it was not
// settled before.
func (s *Store) insertSettled(ctx context.Context, tx *sql.Tx, uniq []store.Usage, txIDs map[string]string, now time.Time) ([]bool, error) {
	fresh := make([]bool, len(uniq))
	if len(uniq) == 0 {
		return fresh, nil
	}
	if s.d.Arrays {
		ids, accts, txs := make([]string, len(uniq)), make([]string, len(uniq)), make([]string, len(uniq))
		costs := make([]int64, len(uniq))
		for i, u := range uniq {
			ids[i], accts[i], txs[i], costs[i] = u.RequestID, u.AccountID, txIDs[u.AccountID], u.Cost
		}
		rows, err := tx.QueryContext(ctx, `INSERT INTO settled_requests (request_id, account_id, tx_id, cost, settled_ms)
			SELECT r, a, t, c, $5 FROM unnest(CAST($1 AS TEXT[]), CAST($2 AS TEXT[]), CAST($3 AS TEXT[]), CAST($4 AS BIGINT[])) AS u (r, a, t, c)
			ON CONFLICT (request_id) DO NOTHING RETURNING request_id`, ids, accts, txs, costs, now.UnixMilli())
		if err != nil {
			return nil, fmt.Errorf("insert settled requests: %w", err)
		}
		inserted := make(map[string]bool, len(uniq))
		var id string
		if err := eachRow(rows, func() error { inserted[id] = true; return nil }, &id); err != nil {
			return nil, fmt.Errorf("insert settled requests: %w", err)
		}
		for i, u := range uniq {
			fresh[i] = inserted[u.RequestID]
		}
		return fresh, nil
	}
	// Multi-row chunks. A chunk that inserts all its rows (the rule: redeliveries are rare)
	// needs no more; otherwise the ids it inserted are those whose row carries this batch's
	// journal transaction, whose ids are new.
	ms := now.UnixMilli()
	args := make([]any, 0, 5*min(len(uniq), settleChunk))
	for start := 0; start < len(uniq); {
		part := uniq[start : start+s.chunk(len(uniq)-start, settleChunk)]
		args = args[:0]
		for _, u := range part {
			args = append(args, u.RequestID, u.AccountID, txIDs[u.AccountID], u.Cost, ms)
		}
		res, err := s.exec(ctx, tx, `INSERT INTO settled_requests (request_id, account_id, tx_id, cost, settled_ms) VALUES `+
			valuesList(len(part), 5, nil, s.d.Positional)+` ON CONFLICT (request_id) DO NOTHING`, args...)
		if err != nil {
			return nil, fmt.Errorf("insert settled requests: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, fmt.Errorf("insert settled requests: %w", err)
		}
		if n == int64(len(part)) {
			for i := range part {
				fresh[start+i] = true
			}
		} else if err := s.freshSettled(ctx, tx, part, txIDs, fresh[start:start+len(part)]); err != nil {
			return nil, err
		}
		start += len(part)
	}
	return fresh, nil
}

// freshSettled sets fresh[i] when part[i]'s settled row carries its account's journal
// transaction of this batch, that is when this transaction inserted it.
func (s *Store) freshSettled(ctx context.Context, tx *sql.Tx, part []store.Usage, txIDs map[string]string, fresh []bool) error {
	ids := make([]string, len(part))
	for i, u := range part {
		ids[i] = u.RequestID
	}
	q, args := s.inList(ids)
	rows, err := s.query(ctx, tx, `SELECT request_id, tx_id FROM settled_requests WHERE request_id IN (`+q+`)`, args...)
	if err != nil {
		return fmt.Errorf("read settled requests: %w", err)
	}
	txOf := make(map[string]string, len(part))
	var id, txID string
	if err := eachRow(rows, func() error { txOf[id] = txID; return nil }, &id, &txID); err != nil {
		return fmt.Errorf("read settled requests: %w", err)
	}
	for i, u := range part {
		fresh[i] = txOf[u.RequestID] == txIDs[u.AccountID]
	}
	return nil
}

// settleChunk bounds the settled_requests rows of one multi-row INSERT on databases without
// array parameters (5 parameters each, far below SQLite's limit of 32,766).
const settleChunk = 512

// settleAccounts charges each account its usage and lowers the reservations of the leases
// the usage carried, with a fixed number of statements for the whole batch.
func (s *Store) settleAccounts(ctx context.Context, tx *sql.Tx, per map[string]*accountUsage, ref string, now time.Time) error {
	if len(per) == 0 {
		return nil
	}
	ids := make([]string, 0, len(per))
	var charged []string
	for id, au := range per {
		ids = append(ids, id)
		if au.cost > 0 {
			charged = append(charged, id)
		}
	}
	sort.Strings(ids)
	sort.Strings(charged)
	// Lock order, as everywhere: accounts (in id order), then their leases, then their lots.
	accts, err := s.lockAccounts(ctx, tx, ids)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, ok := accts[id]; !ok {
			// Settlement filters unknown accounts out before the transaction; accounts are
			// never deleted, so one missing here is a broken invariant.
			return invariant("settle: account %s not found", id)
		}
	}
	reservedDelta, err := s.settleLeases(ctx, tx, ids, per)
	if err != nil {
		return err
	}
	lots, err := s.lockOpenLots(ctx, tx, charged)
	if err != nil {
		return err
	}
	var (
		journal    [][]any
		postings   [][]any
		acctRows   [][]any
		lotRows    [][]any
		moveRows   [][]any
		ledgerRows = map[string]*store.Totals{}
	)
	ts := now.UnixMilli()
	for _, id := range ids {
		a, au := accts[id], per[id]
		nb, takes := a.Balance, []ledger.Take(nil)
		if au.cost > 0 { // only charged accounts' lots were read
			if nb, takes, err = ledger.Charge(a.Balance, lots[id], au.cost); err != nil {
				return err
			}
		}
		ps, err := ledger.UsagePostings(id, au.cost, ledger.SumUSD(takes))
		if err != nil {
			return err
		}
		journal = append(journal, []any{au.txID, ledger.KindUsage, id, ref, ts})
		balance, deferred := a.Balance, a.DeferredMicroUSD
		for _, p := range ps {
			postings = append(postings, []any{au.txID, p.Account, p.Microcredits, p.MicroUSD, ts})
			if cid, ok := ledger.CustomerOf(p.Account); ok && cid == id {
				balance += p.Microcredits
				deferred += p.MicroUSD
				continue
			}
			t := ledgerRows[p.Account]
			if t == nil {
				t = &store.Totals{}
				ledgerRows[p.Account] = t
			}
			t.Microcredits += p.Microcredits
			t.MicroUSD += p.MicroUSD
		}
		if balance != nb {
			return invariant("account %s: postings make the balance %d, core computed %d", id, balance, nb)
		}
		reserved := a.Reserved + reservedDelta[id]
		if reserved < 0 {
			return invariant("account %s: reservation would be %d", id, reserved)
		}
		acctRows = append(acctRows, []any{id, balance, deferred, reserved})
		for _, t := range takes {
			lotRows = append(lotRows, []any{t.LotID, t.RemainingAfter, t.RemainingAfter + t.Microcredits})
			moveRows = append(moveRows, []any{au.txID, t.LotID, t.Microcredits, t.MicroUSD})
		}
	}
	if _, err := s.execRows(ctx, tx, `INSERT INTO journal_txs (id, kind, account_id, ref, ts_ms) VALUES `, nil, journal, ``); err != nil {
		return fmt.Errorf("insert journal txs: %w", err)
	}
	if _, err := s.execRows(ctx, tx, `INSERT INTO postings (tx_id, account, amount, microusd, ts_ms) VALUES `, nil, postings, ``); err != nil {
		return fmt.Errorf("insert postings: %w", err)
	}
	if err := s.updateRows(ctx, tx, "accounts", []string{"id", "balance", "deferred_microusd", "reserved"},
		[]string{"TEXT", "BIGINT", "BIGINT", "BIGINT"}, acctRows, ""); err != nil {
		return fmt.Errorf("update accounts: %w", err)
	}
	codes := make([]string, 0, len(ledgerRows))
	for c := range ledgerRows {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	var la [][]any
	for _, c := range codes {
		la = append(la, []any{c, ledgerRows[c].Microcredits, ledgerRows[c].MicroUSD})
	}
	if _, err := s.execRows(ctx, tx, `INSERT INTO ledger_accounts (code, balance, microusd) VALUES `, nil, la,
		` ON CONFLICT (code) DO UPDATE SET balance = ledger_accounts.balance + excluded.balance,
		microusd = ledger_accounts.microusd + excluded.microusd`); err != nil {
		return fmt.Errorf("update ledger accounts: %w", err)
	}
	// Conditional on the remaining amount the core saw, so a concurrent change is caught,
	// not overwritten.
	if err := s.updateRows(ctx, tx, "lots", []string{"id", "remaining", "before"}, []string{"TEXT", "BIGINT", "BIGINT"}, lotRows,
		" AND lots.remaining = v.before"); err != nil {
		return fmt.Errorf("update lots: %w", err)
	}
	if _, err := s.execRows(ctx, tx, `INSERT INTO lot_moves (tx_id, lot_id, microcredits, microusd) VALUES `, nil, moveRows, ``); err != nil {
		return fmt.Errorf("insert lot moves: %w", err)
	}
	return nil
}

// lockAccounts reads and locks accounts in id order.
func (s *Store) lockAccounts(ctx context.Context, tx *sql.Tx, ids []string) (map[string]store.Account, error) {
	out := make(map[string]store.Account, len(ids))
	for start := 0; start < len(ids); start += inListMax {
		part := ids[start:min(start+inListMax, len(ids))]
		q, args := s.inList(part)
		rows, err := s.query(ctx, tx, `SELECT `+accountCols+` FROM accounts WHERE id IN (`+q+`) ORDER BY id`+s.d.ForUpdate, args...)
		if err != nil {
			return nil, fmt.Errorf("lock accounts: %w", err)
		}
		for rows.Next() {
			a, err := scanAccount(rows)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("scan account: %w", err)
			}
			out[a.ID] = a
		}
		if err := closeRows(rows); err != nil {
			return nil, fmt.Errorf("lock accounts: %w", err)
		}
	}
	return out, nil
}

// lockOpenLots reads and locks the lots with credit left of the accounts, each account's
// oldest first (the consumption order).
func (s *Store) lockOpenLots(ctx context.Context, tx *sql.Tx, accountIDs []string) (map[string][]ledger.Lot, error) {
	out := make(map[string][]ledger.Lot, len(accountIDs))
	for start := 0; start < len(accountIDs); start += inListMax {
		part := accountIDs[start:min(start+inListMax, len(accountIDs))]
		q, args := s.inList(part)
		rows, err := s.query(ctx, tx, `SELECT account_id, id, microcredits, microusd, remaining FROM lots
			WHERE account_id IN (`+q+`) AND remaining > 0 ORDER BY account_id, created_ms, id`+s.d.ForUpdate, args...)
		if err != nil {
			return nil, fmt.Errorf("lock lots: %w", err)
		}
		for rows.Next() {
			var acct string
			var l ledger.Lot
			if err := rows.Scan(&acct, &l.ID, &l.Microcredits, &l.MicroUSD, &l.Remaining); err != nil {
				rows.Close()
				return nil, fmt.Errorf("scan lot: %w", err)
			}
			out[acct] = append(out[acct], l)
		}
		if err := closeRows(rows); err != nil {
			return nil, fmt.Errorf("lock lots: %w", err)
		}
	}
	return out, nil
}

// settleLeases applies the batch's usage to the leases it carried (ledger.Lease.Settle) and
// returns, per account, how much its reservation changes. Leases are locked in id order after
// their accounts. A lease id this ledger never granted (or another account's) is skipped: the
// cost still settles against the balance; there is just no reservation to lower.
func (s *Store) settleLeases(ctx context.Context, tx *sql.Tx, accountIDs []string, per map[string]*accountUsage) (map[string]int64, error) {
	var leaseIDs []string
	for _, id := range accountIDs {
		for lid := range per[id].byLease {
			leaseIDs = append(leaseIDs, lid)
		}
	}
	sort.Strings(leaseIDs)
	leaseIDs = slices.Compact(leaseIDs)
	delta := map[string]int64{}
	var rows [][]any
	for start := 0; start < len(leaseIDs); start += inListMax {
		part := leaseIDs[start:min(start+inListMax, len(leaseIDs))]
		in, args := s.inList(part)
		q, err := s.query(ctx, tx, `SELECT `+leaseCols+` FROM leases WHERE id IN (`+in+`) ORDER BY id`+s.d.ForUpdate, args...)
		if err != nil {
			return nil, fmt.Errorf("lock leases: %w", err)
		}
		var locked []store.Lease
		for q.Next() {
			l, err := scanLease(q)
			if err != nil {
				q.Close()
				return nil, err
			}
			locked = append(locked, l)
		}
		if err := closeRows(q); err != nil {
			return nil, fmt.Errorf("lock leases: %w", err)
		}
		found := map[string]bool{}
		for _, l := range locked {
			au := per[l.AccountID]
			if au == nil || !hasLease(au, l.ID) {
				continue // another account's lease, named by this account's records
			}
			found[l.ID] = true
			nl, err := l.Settle(au.byLease[l.ID])
			if err != nil {
				return nil, err
			}
			if nl.State != l.State || nl.Granted != l.Granted || nl.Reported != l.Reported {
				return nil, invariant("lease %s: settling changed more than settled and the reservation", l.ID)
			}
			delta[l.AccountID] += nl.Reservation - l.Reservation
			l.Lease = nl
			if err := l.Check(); err != nil {
				return nil, err
			}
			// Settling moves only settled and the reservation; leaving the other columns out
			// of the update spares their indexes (leases_reap, leases_recalled).
			rows = append(rows, []any{l.ID, l.Settled, l.Reservation})
		}
		for _, lid := range part {
			if !found[lid] {
				s.log.Warn("settle_unknown_lease", "lease_id", lid)
			}
		}
	}
	if err := s.updateRows(ctx, tx, "leases", []string{"id", "settled", "reservation"},
		[]string{"TEXT", "BIGINT", "BIGINT"}, rows, ""); err != nil {
		return nil, fmt.Errorf("update leases: %w", err)
	}
	return delta, nil
}

func hasLease(au *accountUsage, id string) bool {
	_, ok := au.byLease[id]
	return ok
}

// Offsets returns the stored next offsets of a group on a topic.
func (s *Store) Offsets(ctx context.Context, group, topic string) (map[int]int64, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT part, next_offset FROM kafka_offsets WHERE grp = $1 AND topic = $2`, group, topic)
	if err != nil {
		return nil, fmt.Errorf("query offsets: %w", err)
	}
	defer rows.Close()
	out := map[int]int64{}
	for rows.Next() {
		var p int
		var o int64
		if err := rows.Scan(&p, &o); err != nil {
			return nil, fmt.Errorf("scan offset: %w", err)
		}
		out[p] = o
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query offsets: %w", err)
	}
	return out, nil
}

// PruneSettled deletes settled request ids older than before, in chunks so a large backlog
// never holds the (SQLite: only) writer for long. A chunk ends on a whole millisecond of
// settled_ms, so it never splits the rows of one batch (which share their settled_ms): the
// audit that a charge equals the costs of its settled requests holds between chunks too.
func (s *Store) PruneSettled(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.inTx(ctx, func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, `DELETE FROM settled_requests WHERE settled_ms < $1 AND settled_ms <=
				COALESCE((SELECT settled_ms FROM settled_requests WHERE settled_ms < $1 ORDER BY settled_ms LIMIT 1 OFFSET 4999), $1)`,
				before.UnixMilli())
			if err != nil {
				return fmt.Errorf("prune settled requests: %w", err)
			}
			n, err = res.RowsAffected()
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < 5000 {
			return total, nil
		}
	}
}

func addChecked(a, b int64) (int64, bool) {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) {
		return 0, false
	}
	return s, true
}
