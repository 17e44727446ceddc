-- Tollgate ledger schema, version 2: the USD side of the journal, tier bonuses, reversals of
-- duplicate top-ups, chargebacks and payment-provider webhooks. Same DDL on PostgreSQL and
-- SQLite. The backfill at the end makes a version-1 ledger satisfy every version-2 audit.

-- Every posting also carries the USD its credit stands for (µ$). Like the credit amount, it
-- sums to zero over every journal transaction. A customer's USD balance is its deferred
-- revenue; cash:<method> goes negative by what was paid through it; revenue, refunds and
-- forfeits go positive by what was recognized, owed back or forfeited.
ALTER TABLE postings ADD COLUMN microusd BIGINT NOT NULL DEFAULT 0;
-- Materialized USD balances, projections of postings.microusd like the credit balances.
ALTER TABLE accounts ADD COLUMN deferred_microusd BIGINT NOT NULL DEFAULT 0;
ALTER TABLE ledger_accounts ADD COLUMN microusd BIGINT NOT NULL DEFAULT 0;

-- The lot a top-up created (reversals return it whole), and each lot's payment method
-- (refunds are owed back to it).
ALTER TABLE topups ADD COLUMN lot_id TEXT NOT NULL DEFAULT '';
ALTER TABLE lots ADD COLUMN method TEXT NOT NULL DEFAULT '';

-- A refund is a partial refund of unused credit (kind 'refund') or the reversal of one
-- duplicate top-up (kind 'reversal', order_id names it; a top-up is reversed at most once).
ALTER TABLE refunds ADD COLUMN kind TEXT NOT NULL DEFAULT 'refund';
ALTER TABLE refunds ADD COLUMN order_id TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX refunds_reversed_order ON refunds (order_id) WHERE order_id <> '';

-- Chargebacks, idempotent by chargeback_id: the account is suspended and its whole balance
-- forfeited by one journal transaction (tx_id; '' when nothing was left to forfeit).
CREATE TABLE chargebacks (
    id             TEXT PRIMARY KEY,
    chargeback_id  TEXT NOT NULL UNIQUE,
    account_id     TEXT NOT NULL REFERENCES accounts (id),
    fingerprint    TEXT NOT NULL,
    order_id       TEXT NOT NULL,     -- the disputed top-up, '' when not named
    reason         TEXT NOT NULL,
    microcredits   BIGINT NOT NULL,   -- forfeited
    microusd       BIGINT NOT NULL,   -- deferred revenue forfeited
    tx_id          TEXT NOT NULL,
    balance_after  BIGINT NOT NULL,
    created_ms     BIGINT NOT NULL
);

-- Payment-provider webhook events applied, by the provider's event id: a redelivered event
-- changes nothing. order_id is the top-up it made.
CREATE TABLE webhook_events (
    event_id     TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    received_ms  BIGINT NOT NULL
);

-- Backfill of a version-1 ledger. Version 1 wrote no lot link on top-ups; a lot was created in
-- the same transaction with the same account, time and amounts.
UPDATE topups SET lot_id = COALESCE((SELECT l.id FROM lots l WHERE l.account_id = topups.account_id
    AND l.created_ms = topups.created_ms AND l.microcredits = topups.credits * 1000000
    AND l.microusd = topups.microusd ORDER BY l.id LIMIT 1), '');
UPDATE lots SET method = COALESCE((SELECT t.method FROM topups t WHERE t.lot_id = lots.id ORDER BY t.id LIMIT 1), '');

-- USD of version-1 postings, from the top-ups, refunds and lot moves they came with. Credit
-- amounts stay as they were written (version 1 posted a plan's tier bonus from cash).
UPDATE postings SET microusd = (SELECT t.microusd FROM topups t WHERE t.tx_id = postings.tx_id)
    - COALESCE((SELECT SUM(m.microusd) FROM lot_moves m WHERE m.tx_id = postings.tx_id), 0)
    WHERE account LIKE 'customer:%' AND tx_id IN (SELECT tx_id FROM topups);
UPDATE postings SET microusd = -(SELECT t.microusd FROM topups t WHERE t.tx_id = postings.tx_id)
    WHERE account LIKE 'cash:%' AND tx_id IN (SELECT tx_id FROM topups);
-- A version-1 top-up that covered an overdraft recognized revenue without a posting for it.
INSERT INTO postings (tx_id, account, amount, ts_ms, microusd)
    SELECT m.tx_id, 'revenue', 0, j.ts_ms, SUM(m.microusd) FROM lot_moves m JOIN journal_txs j ON j.id = m.tx_id
    WHERE j.kind IN ('topup', 'grant') GROUP BY m.tx_id, j.ts_ms HAVING SUM(m.microusd) <> 0;
UPDATE postings SET microusd = -COALESCE((SELECT SUM(m.microusd) FROM lot_moves m WHERE m.tx_id = postings.tx_id), 0)
    WHERE account LIKE 'customer:%' AND tx_id IN (SELECT id FROM journal_txs WHERE kind IN ('usage', 'refund'));
UPDATE postings SET microusd = COALESCE((SELECT SUM(m.microusd) FROM lot_moves m WHERE m.tx_id = postings.tx_id), 0)
    WHERE account IN ('revenue', 'refunds') AND tx_id IN (SELECT id FROM journal_txs WHERE kind IN ('usage', 'refund'));

INSERT INTO ledger_accounts (code, balance) SELECT DISTINCT account, 0 FROM postings
    WHERE account NOT LIKE 'customer:%' ON CONFLICT (code) DO NOTHING;
UPDATE accounts SET deferred_microusd = COALESCE((SELECT SUM(p.microusd) FROM postings p
    WHERE p.account = 'customer:' || accounts.id), 0);
UPDATE ledger_accounts SET microusd = COALESCE((SELECT SUM(p.microusd) FROM postings p
    WHERE p.account = ledger_accounts.code), 0);
