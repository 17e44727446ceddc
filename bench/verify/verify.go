// Package verify checks, after a load run, that the money adds up (DESIGN §8): from the load
// generator's request log, where every request names the usage the mock upstream was told to
// report, it computes what each account should have been charged, and compares that with the
// ledger's debits (admin API balances) and with ClickHouse's rows — per request id, so a
// request missing or counted twice is found, not just a wrong total.
//
// The comparison is pure code over plain inputs (Expect, CheckLedger, CheckClickHouse); Run
// gathers the inputs from the live services and polls until they settle.
package verify

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sort"

	"tollgate/bench/load"
	"tollgate/pkg/usage"
)

// Pricer returns the public price in micro-credits of one request's usage.
type Pricer func(model string, tok usage.Tokens) (int64, error)

// Expectation is what a request log says should have been charged.
type Expectation struct {
	// Cost of each billed request by request id.
	Requests map[string]Charge
	// Refused are requests answered with an error status, by request id: nothing to charge.
	// The edge may record them (status and error type, cost 0) or not.
	Refused map[string]string // request id → account id
	// PerAccount is Σ cost by account id; every account of the log is present, 0 included.
	PerAccount map[string]int64
	Total      int64
	Entries    int // lines in the log
	Billed     int // answered 200 with a request id: charged in full
	// Incomplete are billed requests whose body the client did not see to the end (a timeout
	// mid-stream). The edge drains the upstream and bills them in full all the same.
	Incomplete int
	NotBilled  int // answered with an error status: nothing to charge
	// Unknown requests got no answer (connection error, timeout before headers): the edge may
	// or may not have served them, so exact checks cannot be made while there are any.
	Unknown int
	// DuplicateIDs are request ids the log holds twice: the target gave two requests one id.
	DuplicateIDs []string
}

// Charge is one request's expected cost.
type Charge struct {
	AccountID    string
	Microcredits int64
}

// Expect computes the expectation of a request log.
func Expect(entries []load.LogEntry, price Pricer) (Expectation, error) {
	e := Expectation{Requests: map[string]Charge{}, Refused: map[string]string{}, PerAccount: map[string]int64{},
		Entries: len(entries)}
	for i, le := range entries {
		if le.AccountID != "" {
			e.PerAccount[le.AccountID] += 0
		}
		switch {
		case le.Status == 0:
			e.Unknown++
			continue
		case le.Status != 200:
			e.NotBilled++
			if le.RequestID != "" {
				e.Refused[le.RequestID] = le.AccountID
			}
			continue
		case le.RequestID == "":
			return Expectation{}, fmt.Errorf("log line %d: answered 200 without a request-id header", i+1)
		case le.AccountID == "":
			return Expectation{}, fmt.Errorf("log line %d: no account id (run the load with a key file)", i+1)
		}
		if _, dup := e.Requests[le.RequestID]; dup {
			e.DuplicateIDs = append(e.DuplicateIDs, le.RequestID)
			continue
		}
		cost, err := price(le.Model, le.Tokens)
		if err != nil {
			return Expectation{}, fmt.Errorf("log line %d: %w", i+1, err)
		}
		e.Requests[le.RequestID] = Charge{AccountID: le.AccountID, Microcredits: cost}
		e.PerAccount[le.AccountID] += cost
		e.Total += cost
		e.Billed++
		if !le.Complete {
			e.Incomplete++
		}
	}
	return e, nil
}

// logLineMax bounds one line of the request log.
const logLineMax = 1 << 20

// ReadLog reads a request log written by load.Run (one JSON object a line).
func ReadLog(r io.Reader) ([]load.LogEntry, error) {
	var out []load.LogEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), logLineMax)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		e, err := decodeEntry(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("request log line %d: %w", n, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read request log: %w", err)
	}
	return out, nil
}

// LedgerAccount is one account as the ledger reports it.
type LedgerAccount struct {
	ID string
	// ToppedUp is what the account was credited before the run (the key file's credits).
	ToppedUp int64
	// Balance is the settled balance now (admin API balance_microcredits).
	Balance int64
}

// AccountDiff is an account whose debit is not what the log says.
type AccountDiff struct {
	ID       string `json:"id"`
	Expected int64  `json:"expected_microcredits"`
	Debited  int64  `json:"debited_microcredits"`
}

// LedgerCheck compares expected charges with ledger debits (top-up minus balance).
type LedgerCheck struct {
	OK       bool          `json:"ok"`
	Expected int64         `json:"expected_microcredits"`
	Debited  int64         `json:"debited_microcredits"`
	Accounts int           `json:"accounts"`
	Diffs    []AccountDiff `json:"diffs,omitempty"` // sorted by account id
}

// CheckLedger compares, per account, the expected charge with what the ledger debited.
func CheckLedger(e Expectation, accounts []LedgerAccount) LedgerCheck {
	c := LedgerCheck{Expected: e.Total, Accounts: len(accounts)}
	seen := map[string]bool{}
	for _, a := range accounts {
		seen[a.ID] = true
		debited := a.ToppedUp - a.Balance
		c.Debited += debited
		if want := e.PerAccount[a.ID]; debited != want {
			c.Diffs = append(c.Diffs, AccountDiff{ID: a.ID, Expected: want, Debited: debited})
		}
	}
	for id, want := range e.PerAccount {
		if !seen[id] {
			c.Diffs = append(c.Diffs, AccountDiff{ID: id, Expected: want})
		}
	}
	sort.Slice(c.Diffs, func(i, j int) bool { return c.Diffs[i].ID < c.Diffs[j].ID })
	c.OK = len(c.Diffs) == 0 && c.Debited == c.Expected
	return c
}

// CHRow is what ClickHouse holds for one request id.
type CHRow struct {
	RequestID string
	AccountID string
	Rows      int64 // physical rows (ReplacingMergeTree collapses duplicates only when it merges)
	MinCost   int64
	MaxCost   int64
}

// idsShownMax bounds the request ids a check lists per problem.
const idsShownMax = 20

// CHCheck compares expected charges with ClickHouse, request by request.
type CHCheck struct {
	OK       bool  `json:"ok"`
	Expected int64 `json:"expected_microcredits"`
	// FinalSum is Σ cost_microcredits with FINAL: what a finance query that dedupes sees.
	FinalSum int64 `json:"final_sum_microcredits"`
	Distinct int   `json:"distinct_request_ids"`
	Rows     int64 `json:"rows"`
	// Missing: billed in the log, absent from ClickHouse. Extra: in ClickHouse for these
	// accounts, absent from the log (charged but never sent, or from another run), or a
	// refused request stored with a cost. Refused: refused requests stored at cost 0, as the
	// edge records them; fine.
	Missing      int      `json:"missing"`
	MissingIDs   []string `json:"missing_ids,omitempty"`
	Extra        int      `json:"extra"`
	Refused      int      `json:"refused_rows"`
	ExtraIDs     []string `json:"extra_ids,omitempty"`
	CostMismatch int      `json:"cost_mismatch"`
	MismatchIDs  []string `json:"cost_mismatch_ids,omitempty"`
	// Duplicated counts request ids stored in more than one row. Finance queries collapse them
	// (FINAL or GROUP BY request_id), so they fail the check only if FinalSum is off; they
	// are reported because the analytics consumer is meant to prevent them.
	Duplicated    int      `json:"duplicated"`
	DuplicatedIDs []string `json:"duplicated_ids,omitempty"`
}

// CheckClickHouse compares the expectation with ClickHouse's rows and FINAL total.
func CheckClickHouse(e Expectation, rows []CHRow, finalSum int64) CHCheck {
	c := CHCheck{Expected: e.Total, FinalSum: finalSum, Distinct: len(rows)}
	add := func(list *[]string, n *int, id string) {
		*n++
		if len(*list) < idsShownMax {
			*list = append(*list, id)
		}
	}
	stored := make(map[string]bool, len(rows))
	sorted := append([]CHRow(nil), rows...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].RequestID < sorted[j].RequestID })
	for _, r := range sorted {
		stored[r.RequestID] = true
		c.Rows += r.Rows
		if r.Rows > 1 {
			add(&c.DuplicatedIDs, &c.Duplicated, r.RequestID)
		}
		want, ok := e.Requests[r.RequestID]
		refusedBy, refused := e.Refused[r.RequestID]
		switch {
		case !ok && refused && r.MinCost == 0 && r.MaxCost == 0 && r.AccountID == refusedBy:
			c.Refused++
		case !ok:
			add(&c.ExtraIDs, &c.Extra, r.RequestID)
		case r.MinCost != want.Microcredits || r.MaxCost != want.Microcredits || r.AccountID != want.AccountID:
			add(&c.MismatchIDs, &c.CostMismatch, r.RequestID)
		}
	}
	ids := make([]string, 0, len(e.Requests))
	for id := range e.Requests {
		if !stored[id] {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		add(&c.MissingIDs, &c.Missing, id)
	}
	c.OK = c.Missing == 0 && c.Extra == 0 && c.CostMismatch == 0 && c.FinalSum == c.Expected
	return c
}

// Report is the verifier's verdict.
type Report struct {
	OK          bool         `json:"ok"`
	Entries     int          `json:"entries"`
	Billed      int          `json:"billed"`
	Incomplete  int          `json:"incomplete"`
	NotBilled   int          `json:"not_billed"`
	Unknown     int          `json:"unknown"`
	DuplicateID []string     `json:"duplicate_ids_in_log,omitempty"`
	Expected    int64        `json:"expected_microcredits"`
	Ledger      *LedgerCheck `json:"ledger,omitempty"`
	ClickHouse  *CHCheck     `json:"clickhouse,omitempty"`
	// ClickHouseSkipped says why ClickHouse was not checked.
	ClickHouseSkipped string   `json:"clickhouse_skipped,omitempty"`
	Notes             []string `json:"notes,omitempty"`
}

// Verdict assembles a report from the checks that were made (ch may be nil).
func Verdict(e Expectation, ledger LedgerCheck, ch *CHCheck, chSkipped string) Report {
	r := Report{Entries: e.Entries, Billed: e.Billed, Incomplete: e.Incomplete, NotBilled: e.NotBilled,
		Unknown: e.Unknown, DuplicateID: e.DuplicateIDs, Expected: e.Total, Ledger: &ledger,
		ClickHouse: ch, ClickHouseSkipped: chSkipped}
	r.OK = ledger.OK && (ch == nil || ch.OK) && len(e.DuplicateIDs) == 0 && e.Unknown == 0
	if e.Unknown > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d requests got no answer; whether they were charged is unknown, so the run cannot be verified exactly", e.Unknown))
	}
	if e.Incomplete > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d streams were cut short on the client side; they are expected to be billed in full (DESIGN §3.5)", e.Incomplete))
	}
	if ch != nil && ch.Duplicated > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d request ids are stored in more than one ClickHouse row (collapsed by FINAL)", ch.Duplicated))
	}
	return r
}

// ErrNotVerified is returned by Run when the money does not add up.
var ErrNotVerified = errors.New("money does not add up")
