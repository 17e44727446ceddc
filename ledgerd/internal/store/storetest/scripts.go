package storetest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"tollgate/ledgerd/internal/datadriven"
	"tollgate/ledgerd/internal/ledger"
	"tollgate/ledgerd/internal/store"
)

// RunScripts runs the ledger rule scripts (storetest/testdata/*.txt) against stores that open
// opens, one fresh store per script. The same scripts, with the same expected output, run on
// every database. Regenerate the expected output with
//
//	go test ./ledgerd/internal/store/sqlite -run Scripts -rewrite
//
// and review the diff. Commands (amounts in credits with up to 6 decimals, USD as decimal
// strings; names stand for the random ids, so output is deterministic):
//
//	account NAME
//	topup NAME order=ID (plan=P | credits=N usd=X) [method=M] [event=E]
//	settle                  input lines "NAME REQUEST_ID CREDITS [lease=L]": one batch
//	refund NAME id=RID (credits=N | all | order=ID) [reason=R]
//	chargeback NAME id=CID [order=ID] [reason=R]
//	lease NAME as=L want=N min=M      grant a lease
//	release L spent=N
//	reap [grace=D]
//	suspend NAME | resume NAME
//	advance DURATION
//	show NAME               balance, reservation, deferred revenue, and every lot
//	statement NAME          journal entries with the running balance
//	ledger                  the ledger accounts
//	report from=+D to=+D    the finance report, times as offsets from the start
//	verify                  the books audit
func RunScripts(t *testing.T, open Factory) {
	_, file, _, _ := runtime.Caller(0)
	paths, err := filepath.Glob(filepath.Join(filepath.Dir(file), "testdata", "*.txt"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no scripts found next to %s: %v", file, err)
	}
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			c := NewClock()
			r := &scriptRunner{s: open(t, c.Now), clock: c, start: c.Now(), accounts: map[string]string{}, leases: map[string]string{}}
			datadriven.RunTest(t, path, r.run)
			if err := r.s.Check(context.Background()); err != nil {
				t.Fatalf("books must balance at the end of %s: %v", path, err)
			}
		})
	}
}

type scriptRunner struct {
	s        store.Store
	clock    *Clock
	start    time.Time
	accounts map[string]string // name → id
	names    []string          // account names, for reverse lookups
	leases   map[string]string // name → id
	batches  int
}

func fcr(micro int64) string { return ledger.FormatCredits(micro) }
func fusd(micro int64) string {
	if micro < 0 {
		return "-$" + ledger.FormatUSD(-micro)
	}
	return "$" + ledger.FormatUSD(micro)
}

// parseCredits reads "12", "12.5" or "0.000001" credits as µcr.
func parseCredits(s string) (int64, error) {
	usd, err := ledger.ParseUSD(strings.TrimPrefix(s, "-")) // the same decimal grammar
	if err != nil {
		return 0, fmt.Errorf("credits %q: %w", s, err)
	}
	if strings.HasPrefix(s, "-") {
		usd = -usd
	}
	return usd, nil
}

// errText names an expected error without ids.
func errText(err error) string {
	for _, e := range []error{store.ErrConflict, store.ErrInsufficient, store.ErrLotUsed, store.ErrAlreadyReversed,
		store.ErrSuspended, store.ErrLeaseClosed, store.ErrNotFound} {
		if errors.Is(err, e) {
			return "error: " + e.Error()
		}
	}
	return "error: " + err.Error()
}

// id is the account id of a name; a name never created stands for an id that does not exist.
func (r *scriptRunner) id(_ *testing.T, _ *datadriven.TestData, name string) string {
	if id, ok := r.accounts[name]; ok {
		return id
	}
	return "acct_missing_" + name
}

func (r *scriptRunner) name(id string) string {
	for _, n := range r.names {
		if r.accounts[n] == id {
			return n
		}
	}
	return id
}

func (r *scriptRunner) first(t *testing.T, d *datadriven.TestData) string {
	pos := d.Positional()
	if len(pos) == 0 {
		d.Fatalf(t, "want an account name")
	}
	return r.id(t, d, pos[0])
}

func (r *scriptRunner) run(t *testing.T, d *datadriven.TestData) string {
	ctx := context.Background()
	switch d.Cmd {
	case "account":
		name := d.Positional()[0]
		a, err := r.s.CreateAccount(ctx, name)
		if err != nil {
			d.Fatalf(t, "%v", err)
		}
		r.accounts[name] = a.ID
		r.names = append(r.names, name)
		return name + " created"

	case "topup":
		tu := store.TopUp{AccountID: r.first(t, d), OrderID: d.Val("order"), Method: "admin", EventID: d.Val("event")}
		if m := d.Val("method"); m != "" {
			tu.Method = m
		}
		if p := d.Val("plan"); p != "" {
			pl, ok := scriptPlans[p]
			if !ok {
				d.Fatalf(t, "unknown plan %q", p)
			}
			tu.Plan, tu.Credits, tu.MicroUSD = p, pl[0], pl[1]
		} else {
			n, err := strconv.ParseInt(d.Val("credits"), 10, 64)
			if err != nil {
				d.Fatalf(t, "credits: %v", err)
			}
			u, err := ledger.ParseUSD(d.Val("usd"))
			if err != nil {
				d.Fatalf(t, "usd: %v", err)
			}
			tu.Credits, tu.MicroUSD = n, u
		}
		res, replayed, err := r.s.TopUp(ctx, tu)
		if err != nil {
			return errText(err)
		}
		paid, bonus := ledger.PaidMicrocredits(res.Credits*ledger.MicrocreditsPerCredit, res.MicroUSD)
		verb := "topup"
		if replayed {
			verb = "replayed"
		}
		return fmt.Sprintf("%s %s: +%s credits (%s paid, %s bonus) for %s via %s; balance %s",
			verb, res.OrderID, fcr(res.Credits*ledger.MicrocreditsPerCredit), fcr(paid), fcr(bonus), fusd(res.MicroUSD), tu.Method, fcr(res.BalanceAfter))

	case "settle":
		r.batches++
		b := store.Batch{Group: "ledgerd", Topic: "usage.v1", Ref: fmt.Sprintf("batch-%d", r.batches),
			Offsets: map[int]int64{0: int64(r.batches)}}
		for _, line := range strings.Split(d.Input, "\n") {
			f := strings.Fields(line)
			if len(f) < 3 {
				d.Fatalf(t, "settle line %q: want NAME REQUEST_ID CREDITS [lease=L]", line)
			}
			cost, err := parseCredits(f[2])
			if err != nil {
				d.Fatalf(t, "%v", err)
			}
			u := store.Usage{RequestID: f[1], AccountID: r.id(t, d, f[0]), Cost: cost}
			if len(f) > 3 {
				u.LeaseID = r.leases[strings.TrimPrefix(f[3], "lease=")]
			}
			b.Usage = append(b.Usage, u)
		}
		res, err := r.s.Settle(ctx, b)
		if err != nil {
			return errText(err)
		}
		return fmt.Sprintf("settled %d, duplicates %d, charged %s credits to %d accounts", res.Settled, res.Duplicates, fcr(res.Microcredits), res.Accounts)

	case "refund":
		rf := store.Refund{AccountID: r.first(t, d), RefundID: d.Val("id"), Reason: d.Val("reason"), AllUnused: d.Has("all"), OrderID: d.Val("order")}
		if c := d.Val("credits"); c != "" {
			n, err := strconv.ParseInt(c, 10, 64)
			if err != nil {
				d.Fatalf(t, "credits: %v", err)
			}
			rf.Microcredits = n * ledger.MicrocreditsPerCredit
		}
		res, replayed, err := r.s.Refund(ctx, rf)
		if err != nil {
			return errText(err)
		}
		verb := "refund"
		if replayed {
			verb = "replayed"
		}
		var by []string
		for _, m := range res.ByMethod {
			by = append(by, m.Method+" "+fusd(m.MicroUSD))
		}
		return fmt.Sprintf("%s %s (%s): -%s credits, %s owed (%s); balance %s", verb, res.RefundID, res.Kind, fcr(res.Microcredits),
			fusd(res.MicroUSD), strings.Join(by, ", "), fcr(res.BalanceAfter))

	case "chargeback":
		res, replayed, err := r.s.Chargeback(ctx, store.Chargeback{AccountID: r.first(t, d), ChargebackID: d.Val("id"),
			OrderID: d.Val("order"), Reason: d.Val("reason")})
		if err != nil {
			return errText(err)
		}
		verb := "chargeback"
		if replayed {
			verb = "replayed"
		}
		return fmt.Sprintf("%s %s: forfeited %s credits (%s deferred); balance %s; account suspended", verb, res.ChargebackID,
			fcr(res.Microcredits), fusd(res.MicroUSD), fcr(res.BalanceAfter))

	case "lease":
		want, err1 := parseCredits(d.Val("want"))
		minimum, err2 := parseCredits(d.Val("min"))
		if err := errors.Join(err1, err2); err != nil {
			d.Fatalf(t, "%v", err)
		}
		l, err := r.s.GrantLease(ctx, store.LeaseGrant{AccountID: r.first(t, d), EdgeID: "edge-1", Want: want, Min: minimum, TTL: time.Minute})
		if err != nil {
			return errText(err)
		}
		r.leases[d.Val("as")] = l.ID
		return fmt.Sprintf("lease %s: granted %s; available %s", d.Val("as"), fcr(l.Granted), fcr(l.AccountAvailable))

	case "release":
		spent, err := parseCredits(d.Val("spent"))
		if err != nil {
			d.Fatalf(t, "%v", err)
		}
		name := d.Positional()[0]
		l, err := r.s.ReleaseLease(ctx, r.leases[name], spent)
		if err != nil {
			return errText(err)
		}
		return fmt.Sprintf("lease %s released: still reserved %s", name, fcr(l.Reservation))

	case "reap":
		grace := 30 * time.Second
		if g := d.Val("grace"); g != "" {
			var err error
			if grace, err = time.ParseDuration(g); err != nil {
				d.Fatalf(t, "%v", err)
			}
		}
		n, err := r.s.ReapLeases(ctx, grace, 1000)
		if err != nil {
			return errText(err)
		}
		return fmt.Sprintf("reaped %d", n)

	case "suspend", "resume":
		status := store.StatusSuspended
		if d.Cmd == "resume" {
			status = store.StatusActive
		}
		a, err := r.s.SetAccountStatus(ctx, r.first(t, d), status)
		if err != nil {
			return errText(err)
		}
		return r.name(a.ID) + " " + a.Status

	case "advance":
		dur, err := time.ParseDuration(d.Positional()[0])
		if err != nil {
			d.Fatalf(t, "%v", err)
		}
		r.clock.Advance(dur)
		return "now +" + r.clock.Now().Sub(r.start).String()

	case "show":
		id := r.first(t, d)
		a, err := r.s.Account(ctx, id)
		if err != nil {
			return errText(err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%s: %s; balance %s, reserved %s, available %s; deferred %s\n", r.name(id), a.Status, fcr(a.Balance),
			fcr(a.Reserved), fcr(a.Available()), fusd(a.DeferredMicroUSD))
		lots, err := r.s.Lots(ctx, id)
		if err != nil {
			return errText(err)
		}
		for _, l := range lots {
			fmt.Fprintf(&b, "  lot %s (%s): %s for %s; used %s (%s), refunded %s (%s), forfeited %s (%s); unused %s\n",
				l.OrderID, l.Method, fcr(l.Microcredits), fusd(l.MicroUSD), fcr(l.Used), fusd(l.UsedMicroUSD), fcr(l.Refunded),
				fusd(l.RefundedMicroUSD), fcr(l.Forfeited), fusd(l.ForfeitedMicroUSD), fcr(l.Remaining))
		}
		return b.String()

	case "statement":
		st, err := r.s.Statement(ctx, r.first(t, d), r.start, r.clock.Now().Add(time.Millisecond), 1000)
		if err != nil {
			return errText(err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "opening %s\n", fcr(st.Opening))
		for _, e := range st.Entries {
			fmt.Fprintf(&b, "+%-6s %-10s %18s %14s  balance %s  ref %s\n", e.Time.Sub(r.start), e.Kind, fcr(e.Amount), fusd(e.MicroUSD), fcr(e.Balance), e.Ref)
		}
		return b.String()

	case "ledger":
		la, err := r.s.LedgerAccounts(ctx)
		if err != nil {
			return errText(err)
		}
		codes := make([]string, 0, len(la))
		for c := range la {
			codes = append(codes, c)
		}
		sort.Strings(codes)
		var b strings.Builder
		for _, c := range codes {
			fmt.Fprintf(&b, "%-12s %20s credits %16s\n", c, fcr(la[c].Microcredits), fusd(la[c].MicroUSD))
		}
		return b.String()

	case "report":
		from, err1 := time.ParseDuration(strings.TrimPrefix(d.Val("from"), "+"))
		to, err2 := time.ParseDuration(strings.TrimPrefix(d.Val("to"), "+"))
		if err := errors.Join(err1, err2); err != nil {
			d.Fatalf(t, "%v", err)
		}
		rep, err := r.s.Report(ctx, r.start.Add(from), r.start.Add(to))
		if err != nil {
			return errText(err)
		}
		delta := func(code string) store.Totals {
			o, c := rep.Opening[code], rep.Closing[code]
			return store.Totals{Microcredits: c.Microcredits - o.Microcredits, MicroUSD: c.MicroUSD - o.MicroUSD}
		}
		var cash int64
		for code := range rep.Closing {
			if _, ok := ledger.CashMethodOf(code); ok {
				cash -= delta(code).MicroUSD
			}
		}
		var b strings.Builder
		fmt.Fprintf(&b, "deferred revenue at start  %s\n", fusd(rep.Opening[store.AccountCustomers].MicroUSD))
		fmt.Fprintf(&b, "+ cash received            %s\n", fusd(cash))
		fmt.Fprintf(&b, "- revenue recognized       %s (%s credits used)\n", fusd(delta(ledger.AccountRevenue).MicroUSD), fcr(delta(ledger.AccountRevenue).Microcredits))
		fmt.Fprintf(&b, "- refunds owed             %s (%s credits)\n", fusd(delta(ledger.AccountRefunds).MicroUSD), fcr(delta(ledger.AccountRefunds).Microcredits))
		fmt.Fprintf(&b, "- forfeited                %s (%s credits)\n", fusd(delta(ledger.AccountForfeits).MicroUSD), fcr(delta(ledger.AccountForfeits).Microcredits))
		fmt.Fprintf(&b, "deferred revenue at end    %s\n", fusd(rep.Closing[store.AccountCustomers].MicroUSD))
		fmt.Fprintf(&b, "bonus credits issued       %s\n", fcr(-delta(ledger.AccountBonus).Microcredits))
		return b.String()

	case "verify":
		if err := r.s.Check(ctx); err != nil {
			return err.Error()
		}
		return "ok"
	}
	d.Fatalf(t, "unknown command")
	return ""
}

// scriptPlans is the embedded plan catalog (deploy/plans.yaml), as credits and µ$. The
// scripts name plans as the admin API does; the catalog itself is tested in package plan.
var scriptPlans = map[string][2]int64{
	"credits_1k":   {1000, 5_000_000},
	"credits_10k":  {10_000, 50_000_000},
	"credits_105k": {105_000, 500_000_000},
	"credits_275k": {275_000, 1_250_000_000},
}
