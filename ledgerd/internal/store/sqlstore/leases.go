package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/store"
)

const leaseCols = `id, account_id, edge_id, state, granted, settled, reported, reservation, expires_ms`

// scanLease reads leaseCols, then any columns after them into extra.
func scanLease(row interface{ Scan(...any) error }, extra ...any) (store.Lease, error) {
	var l store.Lease
	var state string
	var expires int64
	err := row.Scan(append([]any{&l.ID, &l.AccountID, &l.EdgeID, &state, &l.Granted, &l.Settled, &l.Reported,
		&l.Reservation, &expires}, extra...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Lease{}, store.ErrNotFound
	}
	if err != nil {
		return store.Lease{}, fmt.Errorf("scan lease: %w", err)
	}
	l.State, l.ExpiresAt = ledger.LeaseState(state), msTime(expires)
	return l, nil
}

// scanFunc makes a function a row for the scan helpers, so that one row can be read by two
// of them (lockLeaseAccount).
type scanFunc func(dest ...any) error

func (f scanFunc) Scan(dest ...any) error { return f(dest...) }

// lockLeaseAccount locks the account acct and then its lease id, the order of every
// transaction here. Where write transactions are serialized (no ForUpdate: SQLite) there is
// no order to keep and one statement reads both; acct may then be "" and is not checked.
func (s *Store) lockLeaseAccount(ctx context.Context, tx *sql.Tx, acct, id string) (store.Account, store.Lease, error) {
	if s.d.ForUpdate != "" {
		a, err := s.lockAccount(ctx, tx, acct)
		if err != nil {
			return a, store.Lease{}, err
		}
		l, err := scanLease(tx.QueryRowContext(ctx, `SELECT `+leaseCols+` FROM leases WHERE id = $1`+s.d.ForUpdate, id))
		return a, l, err
	}
	var l store.Lease
	a, err := scanAccount(scanFunc(func(accountDest ...any) error {
		var err error
		l, err = scanLease(tx.QueryRowContext(ctx, `SELECT l.`+strings.ReplaceAll(leaseCols, ", ", ", l.")+
			`, a.`+strings.ReplaceAll(accountCols, ", ", ", a.")+
			` FROM leases l JOIN accounts a ON a.id = l.account_id WHERE l.id = $1`, id), accountDest...)
		return err
	}))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		err = fmt.Errorf("lock lease and account: %w", err)
	}
	return a, l, err
}

// leaseAccount finds the account of a lease without locking: it never changes, and knowing
// it first lets every transaction lock the account before the lease.
func (s *Store) leaseAccount(ctx context.Context, id string) (string, error) {
	var acct string
	err := s.r.QueryRowContext(ctx, `SELECT account_id FROM leases WHERE id = $1`, id).Scan(&acct)
	if errors.Is(err, sql.ErrNoRows) {
		return "", store.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("read lease: %w", err)
	}
	return acct, nil
}

// reserve changes an account's reservation by delta. When the growth is new credit for a node
// to spend (spendable), it is conditional on the available credit covering it, so even a
// caller that skipped the row lock could not over-reserve: the database re-checks the
// condition on the row it updates. Growth that records credit a node has already spent — a
// release reporting more than the lease was granted, after one request cost more than its
// hold — is not conditional: that overdraft happened (DESIGN §3 bounds it by one request),
// refusing to record it would fail the release, and recording it drives available below
// zero so the account answers 402 until settlement or a top-up covers it.
func reserve(ctx context.Context, tx *sql.Tx, accountID string, delta int64, spendable bool) error {
	if delta == 0 {
		return nil
	}
	q := `UPDATE accounts SET reserved = reserved + $1 WHERE id = $2 AND reserved + $1 >= 0`
	if delta > 0 && spendable {
		q += ` AND balance - reserved >= $1`
	}
	if err := execOne(ctx, tx, q, delta, accountID); err != nil {
		return fmt.Errorf("reserve %d on %s: %w", delta, accountID, err)
	}
	return nil
}

func (s *Store) writeLease(ctx context.Context, tx *sql.Tx, l store.Lease) error {
	if err := l.Check(); err != nil {
		return err
	}
	return execOne(ctx, tx, `UPDATE leases SET state = $1, granted = $2, settled = $3, reported = $4, reservation = $5,
		expires_ms = $6 WHERE id = $7`, string(l.State), l.Granted, l.Settled, l.Reported, l.Reservation, l.ExpiresAt.UnixMilli(), l.ID)
}

// GrantLease grants min(want, available) if that is at least min. On ErrInsufficient the
// returned Lease carries only AccountAvailable.
//
// Where the dialect allows (ModifyingCTE), a grant that succeeds is one statement; anything
// else — a refusal, which may recall parked leases, a suspended or unknown account, arguments
// the grant rule rejects — falls through to the transaction, which decides it as before.
func (s *Store) GrantLease(ctx context.Context, g store.LeaseGrant) (store.Lease, error) {
	if s.d.ModifyingCTE {
		if l, ok, err := s.grantLeaseOneStatement(ctx, g); err != nil || ok {
			return l, err
		}
	}
	return s.grantLeaseTx(ctx, g)
}

// The lease statements below repeat ledger.GrantAmount and ledger.Lease.Extend in SQL, so
// that the database can apply them to the row it has just locked. Each one changes nothing
// and returns no row wherever the Go rules would refuse or fail (refused below the minimum,
// account not active, lease not open, an inconsistent lease, overflow, bad arguments); the
// caller then runs the transaction, whose Go code decides and reports it. They lock the
// account before the lease, as every transaction here does, and their conditional updates
// re-check the available credit on the row they change, as reserve does.
//
// grantRuleSQL is ledger.GrantAmount over the column avail, with the placeholders of want,
// min and the divisor (ledger.LeaseShareDivisor): the amount, and the condition under which
// it grants. TestGrantRuleSQL holds it to the Go rule, on SQLite too (it is written for both)
// so that it is checked wherever the tests run.
func grantRuleSQL(want, minimum, div string) (amount, grants string) {
	want, minimum, div = "CAST("+want+" AS BIGINT)", "CAST("+minimum+" AS BIGINT)", "CAST("+div+" AS BIGINT)"
	share := "(CASE WHEN avail > 0 THEN avail / " + div + " ELSE 0 END)"
	g := "(CASE WHEN " + want + " < " + share + " THEN " + want + " ELSE " + share + " END)"
	amount = "(CASE WHEN " + g + " > " + minimum + " THEN " + g + " ELSE " + minimum + " END)"
	grants = minimum + " >= 0 AND " + want + " >= " + minimum + " AND (" + minimum + " = 0 OR avail >= " + minimum + ")"
	return amount, grants
}

// grantLeaseSQL: $1 account, $2 want, $3 min, $4 divisor, $5 the active status, $6 lease id,
// $7 edge id, $8 expires_ms, $9 now_ms. Returns the amount and the available credit before
// it, or no row.
var grantLeaseSQL = func() string {
	amount, grants := grantRuleSQL("$2", "$3", "$4")
	return `WITH a AS (
	SELECT id, status, balance - reserved AS avail FROM accounts WHERE id = $1 FOR UPDATE
), g AS (
	SELECT id, avail, ` + amount + ` AS amount FROM a WHERE status = $5 AND ` + grants + `
), r AS (
	UPDATE accounts SET reserved = accounts.reserved + g.amount FROM g
	WHERE accounts.id = g.id AND accounts.balance - accounts.reserved >= g.amount
	RETURNING accounts.id
), l AS (
	INSERT INTO leases (id, account_id, edge_id, state, granted, settled, reported, reservation, expires_ms, created_ms)
	SELECT $6, g.id, $7, 'open', g.amount, 0, 0, g.amount, $8, $9 FROM g JOIN r ON r.id = g.id
	RETURNING account_id
)
SELECT g.amount, g.avail FROM g JOIN l ON l.account_id = g.id`
}()

// grantLeaseOneStatement grants g in one statement; ok is false when it did not (see above).
func (s *Store) grantLeaseOneStatement(ctx context.Context, g store.LeaseGrant) (l store.Lease, ok bool, err error) {
	now := s.now()
	l = store.Lease{ID: newID("lease"), AccountID: g.AccountID, EdgeID: g.EdgeID,
		ExpiresAt: msTime(now.Add(g.TTL).UnixMilli())}
	var amount, avail int64
	err = s.w.QueryRowContext(ctx, grantLeaseSQL, g.AccountID, g.Want, g.Min, int64(ledger.LeaseShareDivisor),
		store.StatusActive, l.ID, g.EdgeID, l.ExpiresAt.UnixMilli(), now.UnixMilli()).Scan(&amount, &avail)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Lease{}, false, nil
	}
	if err != nil {
		return store.Lease{}, false, fmt.Errorf("grant lease: %w", err)
	}
	l.Lease, l.AccountAvailable = ledger.NewLease(amount), avail-amount
	return l, true, nil
}

// grantLeaseTx is GrantLease as one transaction, in Go: the only path on SQLite, and the one
// that decides whatever the one statement did not grant on PostgreSQL. On SQLite the
// account's read is not folded into the insert (INSERT … SELECT with the grant rule written
// out, then the reserve): tried, it was slower than the three short statements it replaced
// (BenchmarkGrantExtend with synchronous=OFF: 224 → 262 µs per grant and extend), the long
// statement costing more to prepare, which the driver does on every call, than the SELECT
// saved; a write there costs its commit, not its statements.
func (s *Store) grantLeaseTx(ctx context.Context, g store.LeaseGrant) (store.Lease, error) {
	var out store.Lease
	var refused bool
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		out, refused = store.Lease{}, false
		a, err := s.lockAccount(ctx, tx, g.AccountID)
		if err != nil {
			return err
		}
		if a.Status != store.StatusActive {
			return store.ErrSuspended
		}
		amount, err := ledger.GrantAmount(a.Available(), g.Want, g.Min)
		if errors.Is(err, ledger.ErrInsufficient) {
			// Commit the recall marks, if any: the refusal itself changes nothing else.
			refused = true
			out.AccountAvailable = a.Available()
			out.Recallable, err = s.recall(ctx, tx, a, "", g.Min)
			return err
		}
		if err != nil {
			return err
		}
		now := s.now()
		out = store.Lease{ID: newID("lease"), AccountID: a.ID, EdgeID: g.EdgeID, Lease: ledger.NewLease(amount),
			ExpiresAt: msTime(now.Add(g.TTL).UnixMilli()), AccountAvailable: a.Available() - amount}
		if err := reserve(ctx, tx, a.ID, amount, true); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO leases (id, account_id, edge_id, state, granted, settled, reported,
			reservation, expires_ms, created_ms) VALUES ($1, $2, $3, $4, $5, 0, 0, $6, $7, $8)`,
			out.ID, out.AccountID, out.EdgeID, string(out.State), out.Granted, out.Reservation, out.ExpiresAt.UnixMilli(), now.UnixMilli())
		if err != nil {
			return fmt.Errorf("insert lease: %w", err)
		}
		return nil
	})
	if err != nil {
		return store.Lease{}, err
	}
	if refused {
		return out, store.ErrInsufficient
	}
	return out, nil
}

// recall answers a refusal of minimum µcr on account a, asked for by the lease exceptID (an
// extend) or by a new grant (exceptID ""): when the account's other open leases reserve
// enough that, returned, the minimum could be granted, it stamps them recalled (their nodes
// poll for that and release them) and returns what they reserve. Otherwise it returns 0 and
// changes nothing: the refusal is final. The asking node's own other leases count too: one
// it is releasing right now may be what it needs. Part of a reservation is spend not yet
// settled, which stays reserved after a release, so a recall may not free enough; the asking
// node then retries into a final refusal.
func (s *Store) recall(ctx context.Context, tx *sql.Tx, a store.Account, exceptID string, minimum int64) (int64, error) {
	var held int64
	err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(reservation), 0) FROM leases
		WHERE account_id = $1 AND state = 'open' AND id <> $2 AND reservation > 0`, a.ID, exceptID).Scan(&held)
	if err != nil {
		return 0, fmt.Errorf("sum recallable leases: %w", err)
	}
	if held == 0 || a.Available()+held < minimum {
		return 0, nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE leases SET recalled_ms = $1
		WHERE account_id = $2 AND state = 'open' AND id <> $3 AND reservation > 0 AND recalled_ms = 0`,
		s.now().UnixMilli(), a.ID, exceptID); err != nil {
		return 0, fmt.Errorf("recall leases: %w", err)
	}
	return held, nil
}

// RecalledLeases lists open leases of edgeID that were recalled.
func (s *Store) RecalledLeases(ctx context.Context, edgeID string, limit int) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM leases WHERE edge_id = $1 AND state = 'open' AND recalled_ms > 0
		ORDER BY id LIMIT $2`, edgeID, limit)
	if err != nil {
		return nil, fmt.Errorf("query recalled leases: %w", err)
	}
	defer rows.Close()
	ids := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("scan recalled lease: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query recalled leases: %w", err)
	}
	return ids, nil
}

// changeLease runs fn on a locked lease and its locked account in a transaction of its own
// (changeLeaseTx).
func (s *Store) changeLease(ctx context.Context, leaseID string, fn func(tx *sql.Tx, a store.Account, l store.Lease) (store.Lease, error)) (store.Lease, error) {
	var acct string
	if s.d.ForUpdate != "" {
		var err error
		if acct, err = s.leaseAccount(ctx, leaseID); err != nil {
			return store.Lease{}, err
		}
	}
	var out store.Lease
	var refused bool
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, refused, err = s.changeLeaseTx(ctx, tx, acct, leaseID, fn)
		return err
	})
	if err != nil {
		return store.Lease{}, err
	}
	if refused {
		return out, store.ErrInsufficient
	}
	return out, nil
}

// changeLeaseTx runs fn on a locked lease and its locked account (acct: see
// lockLeaseAccount), writes the lease it returns and moves the account's reservation by the
// difference, all in tx.
//
// fn may refuse with ErrInsufficient after writing recall marks through tx: that refusal is
// reported as refused with a nil error, so that the caller commits the marks (nothing else
// changed), and out is the lease as fn returned it. Any other error of fn comes back as is;
// fn's refusals (ErrLeaseClosed, ErrSuspended) and ErrNotFound change nothing, so tx may go
// on with other work.
func (s *Store) changeLeaseTx(ctx context.Context, tx *sql.Tx, acct, leaseID string,
	fn func(tx *sql.Tx, a store.Account, l store.Lease) (store.Lease, error)) (out store.Lease, refused bool, err error) {
	a, l, err := s.lockLeaseAccount(ctx, tx, acct, leaseID)
	if err != nil {
		return store.Lease{}, false, err
	}
	out = l
	out.AccountAvailable = a.Available()
	nl, err := fn(tx, a, l)
	if errors.Is(err, store.ErrInsufficient) {
		out.Recallable = nl.Recallable
		return out, true, nil
	}
	if err != nil {
		return store.Lease{}, false, err
	}
	if nl == l {
		return out, false, nil
	}
	delta := nl.Reservation - l.Reservation
	// An open lease's reservation only grows by a grant; a released one's only by spend
	// already made (see reserve).
	if err := reserve(ctx, tx, a.ID, delta, nl.State == ledger.LeaseOpen); err != nil {
		return store.Lease{}, false, err
	}
	if err := s.writeLease(ctx, tx, nl); err != nil {
		return store.Lease{}, false, err
	}
	out = nl
	out.AccountAvailable = a.Available() - delta
	return out, false, nil
}

// extendLeaseSQL: $1 lease, $2 want, $3 min, $4 spent, $5 divisor, $6 the active status,
// $7 expires_ms. Returns leaseCols of the extended lease and the account's available credit
// after it, or no row. The account is locked first: a's subquery runs before l's scan. An
// open lease's reservation only grows by an extend (delta ≥ 0), conditional on the credit
// available, as reserve does for spendable growth.
var extendLeaseSQL = func() string {
	amount, grants := grantRuleSQL("$2", "$3", "$5")
	return `WITH a AS (
	SELECT id, status, balance - reserved AS avail FROM accounts
	WHERE id = (SELECT account_id FROM leases WHERE id = $1) FOR UPDATE
), l AS (
	SELECT id, granted, settled, reported, reservation FROM leases
	WHERE id = $1 AND account_id = (SELECT id FROM a) AND state = 'open' FOR UPDATE
), g AS (
	SELECT l.id, a.avail, l.granted, l.settled, l.reported, l.reservation, ` + amount + ` AS amount
	FROM a, l
	WHERE a.status = $6 AND ` + grants + ` AND CAST($4 AS BIGINT) >= 0
		AND l.granted >= 0 AND l.settled >= 0 AND l.reported >= 0
		AND l.reservation = GREATEST(l.granted - l.settled, 0)
), n AS (
	SELECT id, avail, granted + amount AS granted, GREATEST(reported, CAST($4 AS BIGINT)) AS reported,
		GREATEST(granted + amount - settled, 0) AS reservation,
		GREATEST(granted + amount - settled, 0) - reservation AS delta
	FROM g WHERE granted <= 9223372036854775807 - amount
), r AS (
	UPDATE accounts SET reserved = accounts.reserved + n.delta FROM n
	WHERE accounts.id = (SELECT id FROM a) AND n.delta > 0 AND accounts.balance - accounts.reserved >= n.delta
	RETURNING accounts.id
), u AS (
	UPDATE leases SET granted = n.granted, reported = n.reported, reservation = n.reservation, expires_ms = $7
	FROM n WHERE leases.id = n.id AND (n.delta = 0 OR EXISTS (SELECT 1 FROM r))
	RETURNING leases.id, leases.account_id, leases.edge_id, leases.state, leases.granted, leases.settled,
		leases.reported, leases.reservation, leases.expires_ms
)
SELECT u.*, n.avail - n.delta FROM u, n`
}()

// ExtendLease adds min(want, available) (at least min) to an open lease, records the node's
// spend so far and refreshes the expiry. want = min = 0 only refreshes.
//
// As with GrantLease, an extend that succeeds is one statement where the dialect allows;
// anything else is decided by the transaction.
func (s *Store) ExtendLease(ctx context.Context, leaseID string, want, minimum, spent int64, ttl time.Duration) (store.Lease, error) {
	e := store.LeaseExtend{LeaseID: leaseID, Want: want, Min: minimum, Spent: spent}
	if s.d.ModifyingCTE {
		if l, ok, err := s.extendLeaseOneStatement(ctx, s.w, e, ttl); err != nil || ok {
			return l, err
		}
	}
	return s.changeLease(ctx, leaseID, s.extendRule(ctx, e, ttl))
}

// extendLeaseOneStatement extends e in one statement (extendLeaseSQL) through q, a
// transaction or the pool; ok is false when it did not, having changed nothing.
func (s *Store) extendLeaseOneStatement(ctx context.Context, q queryer, e store.LeaseExtend, ttl time.Duration) (l store.Lease, ok bool, err error) {
	var avail int64
	l, err = scanLease(q.QueryRowContext(ctx, extendLeaseSQL, e.LeaseID, e.Want, e.Min, e.Spent,
		int64(ledger.LeaseShareDivisor), store.StatusActive, s.now().Add(ttl).UnixMilli()), &avail)
	if errors.Is(err, store.ErrNotFound) {
		return store.Lease{}, false, nil
	}
	if err != nil {
		return store.Lease{}, false, fmt.Errorf("extend lease: %w", err)
	}
	l.AccountAvailable = avail
	return l, true, nil
}

// extendRule is an extend's rule for changeLease and changeLeaseTx: the one place that
// decides an extend, for ExtendLease and every item of ExtendLeases alike.
func (s *Store) extendRule(ctx context.Context, e store.LeaseExtend, ttl time.Duration) func(tx *sql.Tx, a store.Account, l store.Lease) (store.Lease, error) {
	return func(tx *sql.Tx, a store.Account, l store.Lease) (store.Lease, error) {
		if l.State != ledger.LeaseOpen {
			return l, store.ErrLeaseClosed
		}
		if a.Status != store.StatusActive {
			return l, store.ErrSuspended
		}
		amount, err := ledger.GrantAmount(a.Available(), e.Want, e.Min)
		if errors.Is(err, ledger.ErrInsufficient) {
			var rerr error
			if l.Recallable, rerr = s.recall(ctx, tx, a, l.ID, e.Min); rerr != nil {
				return l, rerr
			}
			return l, err
		}
		if err != nil {
			return l, err
		}
		nl, err := l.Extend(amount, e.Spent)
		if err != nil {
			return l, err
		}
		l.Lease, l.ExpiresAt = nl, msTime(s.now().Add(ttl).UnixMilli())
		return l, nil
	}
}

// ExtendLeases applies extends in one transaction, each exactly as ExtendLease would: on
// PostgreSQL first as its one statement, inside the transaction, then — when that did not
// extend — by the transaction's Go rules (extendRule), as ExtendLease falls back. A refusal
// (ErrNotFound, ErrLeaseClosed, ErrSuspended, ErrInsufficient with its recall marks) is the
// item's result and changes nothing the other items did; any other error rolls the whole
// transaction back.
//
// Lock order: where rows are locked (PostgreSQL), the items run by account id — the
// accounts of their leases, read first without a lock, as changeLease does — and in their
// own order within an account. Every item locks its account before its lease, so the
// accounts are locked in id order as in every other transaction here (settlement locks
// several the same way) and two batches from different edges cannot deadlock; ordering the
// leases too is not needed, since a lease is only locked by whoever holds its account. An
// account's extends in their own order, and accounts sharing nothing, make the results those
// of the same extends one by one in request order. On SQLite the transaction is serialized
// and the items run in request order.
//
// The commit is what batching buys: on SQLite with synchronous=FULL a write transaction
// costs its fsync, which is most of a single extend's cost.
func (s *Store) ExtendLeases(ctx context.Context, extends []store.LeaseExtend, ttl time.Duration) ([]store.LeaseExtendResult, error) {
	order := make([]int, len(extends))
	for i := range order {
		order[i] = i
	}
	accts := make([]string, len(extends))
	if s.d.ForUpdate != "" {
		ids := make([]string, len(extends))
		for i, e := range extends {
			ids[i] = e.LeaseID
		}
		byLease, err := s.leaseAccounts(ctx, ids)
		if err != nil {
			return nil, err
		}
		for i, e := range extends {
			accts[i] = byLease[e.LeaseID]
		}
		slices.SortStableFunc(order, func(i, j int) int { return strings.Compare(accts[i], accts[j]) })
	}
	out := make([]store.LeaseExtendResult, len(extends))
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		clear(out)
		for _, i := range order {
			e := extends[i]
			if s.d.ForUpdate != "" && accts[i] == "" {
				out[i].Err = store.ErrNotFound // as leaseAccount answers ExtendLease
				continue
			}
			if s.d.ModifyingCTE {
				l, ok, err := s.extendLeaseOneStatement(ctx, tx, e, ttl)
				if err != nil {
					return err
				}
				if ok {
					out[i].Lease = l
					continue
				}
			}
			l, refused, err := s.changeLeaseTx(ctx, tx, accts[i], e.LeaseID, s.extendRule(ctx, e, ttl))
			switch {
			case refused:
				out[i] = store.LeaseExtendResult{Lease: l, Err: store.ErrInsufficient}
			case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrLeaseClosed), errors.Is(err, store.ErrSuspended):
				out[i].Err = err
			case err != nil:
				return fmt.Errorf("extend lease %s: %w", e.LeaseID, err)
			default:
				out[i].Lease = l
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// leaseAccounts finds the accounts of leases without locking (see leaseAccount): one query
// per inListMax ids. An id no lease has is absent.
func (s *Store) leaseAccounts(ctx context.Context, ids []string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	for start := 0; start < len(ids); start += inListMax {
		in, args := s.inList(ids[start:min(start+inListMax, len(ids))])
		rows, err := s.r.QueryContext(ctx, `SELECT id, account_id FROM leases WHERE id IN (`+in+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("read leases: %w", err)
		}
		var id, acct string
		if err := eachRow(rows, func() error { out[id] = acct; return nil }, &id, &acct); err != nil {
			return nil, fmt.Errorf("read leases: %w", err)
		}
	}
	return out, nil
}

// ReleaseLease closes a lease with the node's total spend. Releasing a closed lease changes
// nothing and returns it as it is, so an edge may retry a release safely.
func (s *Store) ReleaseLease(ctx context.Context, leaseID string, spent int64) (store.Lease, error) {
	return s.changeLease(ctx, leaseID, func(_ *sql.Tx, _ store.Account, l store.Lease) (store.Lease, error) {
		if l.State != ledger.LeaseOpen {
			return l, nil
		}
		nl, err := l.Release(spent)
		if err != nil {
			return l, err
		}
		// The reaper's grace runs from the release: what has not settled by then is reclaimed.
		l.Lease, l.ExpiresAt = nl, msTime(s.now().UnixMilli())
		return l, nil
	})
}

// ReapLeases reclaims open leases, and released ones still holding a reservation, whose
// expiry is more than grace ago. A released lease whose spend has fully settled is finished
// and stays as it is.
func (s *Store) ReapLeases(ctx context.Context, grace time.Duration, limit int) (int, error) {
	cutoff := s.now().Add(-grace).UnixMilli()
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM leases
		WHERE (state = 'open' OR (state = 'released' AND reservation > 0)) AND expires_ms < $1
		ORDER BY expires_ms LIMIT $2`, cutoff, limit)
	if err != nil {
		return 0, fmt.Errorf("query expired leases: %w", err)
	}
	var ids []string
	var id string
	if err := eachRow(rows, func() error { ids = append(ids, id); return nil }, &id); err != nil {
		return 0, fmt.Errorf("query expired leases: %w", err)
	}
	n := 0
	for _, id := range ids {
		reaped := false
		_, err := s.changeLease(ctx, id, func(_ *sql.Tx, _ store.Account, l store.Lease) (store.Lease, error) {
			// Re-check under the lock: an extend may have refreshed it meanwhile.
			if l.State == ledger.LeaseExpired || l.Reservation == 0 && l.State == ledger.LeaseReleased ||
				l.ExpiresAt.UnixMilli() >= cutoff {
				return l, nil
			}
			nl, err := l.Reap()
			if err != nil {
				return l, err
			}
			reaped, l.Lease = true, nl
			return l, nil
		})
		if err != nil {
			return n, fmt.Errorf("reap lease %s: %w", id, err)
		}
		if reaped {
			n++
		}
	}
	return n, nil
}
