package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/store"
)

// settleChunk is how many settled_requests rows one INSERT carries (5 parameters each, far
// below both databases' parameter limits).
const settleChunk = 500

// Settle applies a batch of usage in one transaction:
//
//  1. insert every request id into settled_requests, skipping ids already there, and learn
//     which ids are new (INSERT … ON CONFLICT DO NOTHING RETURNING);
//  2. per account with new records (in id order): lock it, charge the sum of their costs with
//     one usage journal transaction (its id is stored on the settled rows), consume lots
//     oldest first, and lower the reservations of the leases the records carried;
//  3. store the batch's Kafka offsets.
//
// Either all of it commits or none: a batch replayed after a crash settles only what the
// first attempt did not.
func (s *Store) Settle(ctx context.Context, b store.Batch) (store.SettleResult, error) {
	var res store.SettleResult
	// First occurrence of each request id wins; later copies in the batch are duplicates.
	seen := make(map[string]bool, len(b.Usage))
	uniq := make([]store.Usage, 0, len(b.Usage))
	for _, u := range b.Usage {
		if u.Cost < 0 || u.RequestID == "" || u.AccountID == "" {
			return res, invariant("settle: invalid usage %+v", u)
		}
		if seen[u.RequestID] {
			continue
		}
		seen[u.RequestID] = true
		uniq = append(uniq, u)
	}
	txIDs := map[string]string{}
	for _, u := range uniq {
		if txIDs[u.AccountID] == "" {
			txIDs[u.AccountID] = newID("jtx")
		}
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res = store.SettleResult{}
		now := s.now()
		fresh := map[string]bool{}
		for start := 0; start < len(uniq); start += settleChunk {
			part := uniq[start:min(start+settleChunk, len(uniq))]
			args := make([]any, 0, 5*len(part))
			var q strings.Builder
			q.WriteString(`INSERT INTO settled_requests (request_id, account_id, tx_id, cost, settled_ms) VALUES `)
			for i, u := range part {
				if i > 0 {
					q.WriteString(", ")
				}
				q.WriteString("(" + placeholders(5*i+1, 5) + ")")
				args = append(args, u.RequestID, u.AccountID, txIDs[u.AccountID], u.Cost, now.UnixMilli())
			}
			q.WriteString(` ON CONFLICT (request_id) DO NOTHING RETURNING request_id`)
			rows, err := tx.QueryContext(ctx, q.String(), args...)
			if err != nil {
				return fmt.Errorf("insert settled requests: %w", err)
			}
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					rows.Close()
					return fmt.Errorf("scan settled request: %w", err)
				}
				fresh[id] = true
			}
			if err := rows.Close(); err != nil {
				return fmt.Errorf("insert settled requests: %w", err)
			}
		}
		type acctUsage struct {
			cost    int64
			n       int
			byLease map[string]int64
		}
		per := map[string]*acctUsage{}
		for _, u := range uniq {
			if !fresh[u.RequestID] {
				continue
			}
			au := per[u.AccountID]
			if au == nil {
				au = &acctUsage{byLease: map[string]int64{}}
				per[u.AccountID] = au
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
		accts := make([]string, 0, len(per))
		for id := range per {
			accts = append(accts, id)
		}
		sort.Strings(accts)
		for _, id := range accts {
			au := per[id]
			if err := s.settleAccount(ctx, tx, id, txIDs[id], b.Ref, au.cost, au.byLease); err != nil {
				return err
			}
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
		for _, p := range parts {
			// Offsets only move forward, so a stale batch cannot rewind them.
			if _, err := tx.ExecContext(ctx, `INSERT INTO kafka_offsets (grp, topic, part, next_offset) VALUES ($1, $2, $3, $4)
				ON CONFLICT (grp, topic, part) DO UPDATE SET next_offset = excluded.next_offset
				WHERE kafka_offsets.next_offset < excluded.next_offset`, b.Group, b.Topic, p, b.Offsets[p]); err != nil {
				return fmt.Errorf("store offset: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return store.SettleResult{}, err
	}
	return res, nil
}

func (s *Store) settleAccount(ctx context.Context, tx *sql.Tx, accountID, txID, ref string, cost int64, byLease map[string]int64) error {
	a, err := s.lockAccount(ctx, tx, accountID)
	if err != nil {
		// Settlement filters unknown accounts out before the transaction; accounts are
		// never deleted, so one missing here is a broken invariant.
		return invariant("settle: account %s: %v", accountID, err)
	}
	leaseIDs := make([]string, 0, len(byLease))
	for id := range byLease {
		leaseIDs = append(leaseIDs, id)
	}
	sort.Strings(leaseIDs)
	var delta int64
	for _, lid := range leaseIDs {
		l, err := s.lockLease(ctx, tx, lid)
		if errors.Is(err, store.ErrNotFound) || (err == nil && l.AccountID != accountID) {
			// A lease id this ledger never granted (or another account's): the cost still
			// settles against the balance; there is just no reservation to lower.
			s.log.Warn("settle_unknown_lease", "lease_id", lid, "account_id", accountID)
			continue
		}
		if err != nil {
			return err
		}
		nl, err := l.Settle(byLease[lid])
		if err != nil {
			return err
		}
		delta += nl.Reservation - l.Reservation
		l.Lease = nl
		if err := s.writeLease(ctx, tx, l); err != nil {
			return err
		}
	}
	if err := reserve(ctx, tx, accountID, delta); err != nil {
		return err
	}
	var takes []ledger.Take
	nb := a.Balance
	if cost > 0 {
		lots, err := s.openLots(ctx, tx, accountID)
		if err != nil {
			return err
		}
		if nb, takes, err = ledger.Charge(a.Balance, lots, cost); err != nil {
			return err
		}
	}
	ps, err := ledger.UsagePostings(accountID, cost, ledger.SumUSD(takes))
	if err != nil {
		return err
	}
	balances, err := s.post(ctx, tx, journalTx{ID: txID, Kind: ledger.KindUsage, AccountID: accountID, Ref: ref, TS: s.now(), Postings: ps})
	if err != nil {
		return err
	}
	if err := checkBalance(balances, accountID, nb); err != nil {
		return err
	}
	return s.applyTakes(ctx, tx, txID, takes)
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
