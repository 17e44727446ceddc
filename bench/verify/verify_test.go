package verify_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/bench/load"
	"tollgate/bench/verify"
	"tollgate/pkg/pricing"
	"tollgate/pkg/usage"
)

// flatPricer charges 1 µcr per output token plus 1,000 for the model "dear": simple enough
// that every expected number below is obvious.
func flatPricer(model string, tok usage.Tokens) (int64, error) {
	switch model {
	case "cheap":
		return tok.Output, nil
	case "dear":
		return tok.Output + 1000, nil
	}
	return 0, fmt.Errorf("model %q is not priced", model)
}

func entry(id, account, model string, status int, output int64) load.LogEntry {
	return load.LogEntry{RequestID: id, AccountID: account, Model: model, Status: status, Complete: true,
		Tokens: usage.Tokens{Output: output}}
}

func TestExpect(t *testing.T) {
	log := []load.LogEntry{
		entry("r1", "a", "cheap", 200, 10),
		entry("r2", "a", "dear", 200, 5),
		entry("r3", "b", "cheap", 200, 7),
		entry("r4", "b", "cheap", 402, 7), // refused: not billed
		{AccountID: "c", Model: "cheap", Error: "timeout"},
		entry("r1", "a", "cheap", 200, 10), // the target reused an id
	}
	log[2].Complete = false
	e, err := verify.Expect(log, flatPricer)
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"a": 1015, "b": 7, "c": 0}, e.PerAccount)
	require.Equal(t, int64(1022), e.Total)
	require.Equal(t, 6, e.Entries)
	require.Equal(t, 3, e.Billed)
	require.Equal(t, 1, e.Incomplete)
	require.Equal(t, 1, e.NotBilled)
	require.Equal(t, 1, e.Unknown)
	require.Equal(t, []string{"r1"}, e.DuplicateIDs)
	require.Equal(t, verify.Charge{AccountID: "a", Microcredits: 1005}, e.Requests["r2"])
	require.Equal(t, map[string]string{"r4": "b"}, e.Refused)

	_, err = verify.Expect([]load.LogEntry{entry("r1", "a", "unknown-model", 200, 1)}, flatPricer)
	require.ErrorContains(t, err, "not priced")
	_, err = verify.Expect([]load.LogEntry{entry("", "a", "cheap", 200, 1)}, flatPricer)
	require.ErrorContains(t, err, "request-id")
	_, err = verify.Expect([]load.LogEntry{entry("r", "", "cheap", 200, 1)}, flatPricer)
	require.ErrorContains(t, err, "account")
}

func expectation(t *testing.T) verify.Expectation {
	e, err := verify.Expect([]load.LogEntry{
		entry("r1", "a", "cheap", 200, 10),
		entry("r2", "a", "dear", 200, 5),
		entry("r3", "b", "cheap", 200, 7),
		entry("r4", "b", "cheap", 503, 7), // refused by the edge
		entry("r5", "b", "cheap", 402, 7), // refused, and not recorded
	}, flatPricer)
	require.NoError(t, err)
	return e
}

func TestCheckLedger(t *testing.T) {
	e := expectation(t)
	ok := verify.CheckLedger(e, []verify.LedgerAccount{
		{ID: "a", ToppedUp: 10_000, Balance: 10_000 - 1015},
		{ID: "b", ToppedUp: 500, Balance: 493},
		{ID: "idle", ToppedUp: 1, Balance: 1},
	})
	require.True(t, ok.OK)
	require.Equal(t, int64(1022), ok.Debited)
	require.Empty(t, ok.Diffs)

	bad := verify.CheckLedger(e, []verify.LedgerAccount{
		{ID: "a", ToppedUp: 10_000, Balance: 10_000 - 1015 - 10}, // charged twice for r1
		{ID: "idle", ToppedUp: 1, Balance: 0},                    // charged for nothing
	}) // and b is missing from the ledger
	require.False(t, bad.OK)
	require.Equal(t, []verify.AccountDiff{
		{ID: "a", Expected: 1015, Debited: 1025},
		{ID: "b", Expected: 7, Debited: 0},
		{ID: "idle", Expected: 0, Debited: 1},
	}, bad.Diffs)
}

func TestCheckClickHouse(t *testing.T) {
	e := expectation(t)
	good := []verify.CHRow{
		{RequestID: "r1", AccountID: "a", Rows: 1, MinCost: 10, MaxCost: 10},
		{RequestID: "r2", AccountID: "a", Rows: 2, MinCost: 1005, MaxCost: 1005}, // not merged yet
		{RequestID: "r3", AccountID: "b", Rows: 1, MinCost: 7, MaxCost: 7},
		{RequestID: "r4", AccountID: "b", Rows: 1, MinCost: 0, MaxCost: 0}, // recorded at no cost
	}
	c := verify.CheckClickHouse(e, good, 1022)
	require.True(t, c.OK, "%+v", c)
	require.Equal(t, 1, c.Refused)
	require.Equal(t, 1, c.Duplicated)
	require.Equal(t, []string{"r2"}, c.DuplicatedIDs)
	require.Equal(t, int64(5), c.Rows)

	// The FINAL total must match too: a duplicate that finance queries would double count.
	require.False(t, verify.CheckClickHouse(e, good, 2027).OK)

	bad := []verify.CHRow{
		{RequestID: "r1", AccountID: "a", Rows: 1, MinCost: 10, MaxCost: 11}, // two costs for one id
		{RequestID: "r3", AccountID: "a", Rows: 1, MinCost: 7, MaxCost: 7},   // wrong account
		{RequestID: "r9", AccountID: "b", Rows: 1, MinCost: 3, MaxCost: 3},   // never sent
		{RequestID: "r5", AccountID: "b", Rows: 1, MinCost: 7, MaxCost: 7},   // refused, yet charged
	} // r2 missing
	c = verify.CheckClickHouse(e, bad, 1022)
	require.False(t, c.OK)
	require.Equal(t, 1, c.Missing)
	require.Equal(t, []string{"r2"}, c.MissingIDs)
	require.Equal(t, 2, c.Extra)
	require.Equal(t, []string{"r5", "r9"}, c.ExtraIDs)
	require.Equal(t, 2, c.CostMismatch)
	require.Equal(t, []string{"r1", "r3"}, c.MismatchIDs)
}

func TestVerdict(t *testing.T) {
	e := expectation(t)
	ledger := verify.LedgerCheck{OK: true}
	require.True(t, verify.Verdict(e, ledger, nil, "analytics off").OK)
	require.False(t, verify.Verdict(e, verify.LedgerCheck{}, nil, "").OK)
	require.False(t, verify.Verdict(e, ledger, &verify.CHCheck{}, "").OK)
	e.Unknown = 2
	r := verify.Verdict(e, ledger, nil, "")
	require.False(t, r.OK, "unanswered requests make exact verification impossible")
	require.Contains(t, r.Notes[0], "2 requests got no answer")
}

func TestReadLog(t *testing.T) {
	in := `{"request_id":"r1","account_id":"a","shape":"s","model":"cheap","stream":true,"status":200,"complete":true,"tokens":{"input":1,"output":2}}

{"request_id":"","status":0,"error":"timeout","tokens":{}}
`
	got, err := verify.ReadLog(strings.NewReader(in))
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, usage.Tokens{Input: 1, Output: 2}, got[0].Tokens)
	require.Equal(t, "timeout", got[1].Error)

	for _, bad := range []string{"{", `{"status":-1}`, `{"tokens":{"output":-5}}`, `[]`} {
		_, err := verify.ReadLog(strings.NewReader(bad))
		require.Error(t, err, bad)
	}
	_, err = verify.ReadLog(strings.NewReader(strings.Repeat("x", 2<<20)))
	require.Error(t, err, "over-long line")
}

func FuzzReadLog(f *testing.F) {
	f.Add([]byte(`{"request_id":"r1","account_id":"a","model":"m","status":200,"tokens":{"output":2}}`))
	f.Add([]byte("\n\n{}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := verify.ReadLog(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		for _, e := range entries {
			require.GreaterOrEqual(t, e.Tokens.Output, int64(0))
		}
		_, _ = verify.Expect(entries, flatPricer)
	})
}

// The bench's own pricer uses the shipped table: a Sonnet 4.5 request with 200 input, 120
// output and 900 cache-read tokens is $0.00267 at list price, 30% off = $0.001869 =
// 0.3738 credits = 373,800 µcr.
func TestTablePricer(t *testing.T) {
	tab, err := pricing.Default()
	require.NoError(t, err)
	p := verify.TablePricer(tab)
	got, err := p("claude-sonnet-4-5", usage.Tokens{Input: 200, Output: 120, CacheRead: 900})
	require.NoError(t, err)
	require.Equal(t, int64(373_800), got)
	_, err = p("gpt-4", usage.Tokens{})
	require.Error(t, err)
}

type fakeLedger map[string]int64

func (l fakeLedger) Balance(_ context.Context, id string) (int64, error) {
	b, ok := l[id]
	if !ok {
		return 0, errors.New("no such account")
	}
	return b, nil
}

// Run without ClickHouse: the ledger alone decides, and a mismatch ends in ErrNotVerified once
// the timeout passes.
func TestRunLedgerOnly(t *testing.T) {
	entries := []load.LogEntry{entry("r1", "a", "cheap", 200, 10), entry("r2", "b", "dear", 200, 1)}
	keys := load.Keyring{Accounts: []load.Account{{ID: "a", Credits: 1}, {ID: "b", Credits: 2}}}
	ledger := fakeLedger{"a": 1_000_000 - 10, "b": 2_000_000 - 1001}
	rep, err := verify.Run(context.Background(), verify.Config{Entries: entries, Keyring: keys, Ledger: ledger, Pricer: flatPricer})
	require.NoError(t, err)
	require.True(t, rep.OK)
	require.Equal(t, int64(1011), rep.Expected)
	require.Equal(t, "no ClickHouse DSN given (analytics off)", rep.ClickHouseSkipped)

	ledger["a"]--
	rep, err = verify.Run(context.Background(), verify.Config{Entries: entries, Keyring: keys, Ledger: ledger,
		Pricer: flatPricer, Timeout: 1})
	require.ErrorIs(t, err, verify.ErrNotVerified)
	require.False(t, rep.OK)

	_, err = verify.Run(context.Background(), verify.Config{Entries: entries, Keyring: load.Keyring{}, Ledger: ledger, Pricer: flatPricer})
	require.ErrorContains(t, err, "key file")
}
