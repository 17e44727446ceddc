// Package cli is `ledgerd admin …`: the operator's command line over the admin API, one
// command per operation. It prints readable tables, or the API's JSON with -json (and CSV
// for statements with -format csv). `verify` exits 1 when the books do not balance.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"tollgate/ledgerd/internal/ledger"
)

// Usage lists the commands.
const Usage = `usage: ledgerd admin [-url URL] [-token TOKEN] [-json] <command> [flags] [args]

commands:
  create-account -name NAME
  account ACCOUNT_ID
  suspend ACCOUNT_ID
  resume ACCOUNT_ID
  issue-key [-name NAME] ACCOUNT_ID         prints the secret once
  keys ACCOUNT_ID
  revoke-key KEY_ID
  topup -order ID (-plan PLAN | -credits N -usd AMOUNT) ACCOUNT_ID
  refund -refund ID (-credits N | -all | -order ORDER_ID) [-reason TEXT] ACCOUNT_ID
                                            -order reverses that (duplicate) top-up whole
  chargeback -id ID [-order ORDER_ID] [-reason TEXT] ACCOUNT_ID
                                            suspends the account and forfeits its balance
  lots ACCOUNT_ID                           what each top-up bought and what became of it
  statement [-from RFC3339] [-to RFC3339] [-limit N] [-format table|json|csv] ACCOUNT_ID
  ledger                                    balances of the ledger accounts
  report [-from RFC3339] [-to RFC3339]      revenue recognized, deferred revenue, cash, refunds
  verify                                    audit the books; exit status 1 if they do not balance

environment: TOLLGATE_ADMIN_URL (default http://127.0.0.1:8091), TOLLGATE_ADMIN_TOKEN
`

// Run executes one admin command and returns the process exit code.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ledgerd admin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, Usage) }
	baseURL := getenv("TOLLGATE_ADMIN_URL")
	if baseURL == "" {
		baseURL = "http://127.0.0.1:8091"
	}
	c := &client{out: stdout, http: &http.Client{Timeout: 30 * time.Second}}
	fs.StringVar(&c.url, "url", baseURL, "admin API base URL (env TOLLGATE_ADMIN_URL)")
	fs.StringVar(&c.token, "token", getenv("TOLLGATE_ADMIN_TOKEN"), "admin token (env TOLLGATE_ADMIN_TOKEN)")
	fs.BoolVar(&c.json, "json", false, "print the API's JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	if err := c.run(ctx, fs.Arg(0), fs.Args()[1:]); err != nil {
		fmt.Fprintf(stderr, "ledgerd admin %s: %v\n", fs.Arg(0), err)
		var u usageError
		if errors.As(err, &u) {
			return 2
		}
		return 1
	}
	return 0
}

type usageError struct{ error }

type client struct {
	url, token string
	json       bool
	out        io.Writer
	http       *http.Client
}

// parse parses a subcommand's flags, accepting the one positional argument before or after
// them, and returns it when want is true.
func parse(fs *flag.FlagSet, args []string, want string) (string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return "", usageError{err}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch {
	case want == "" && len(pos) > 0:
		return "", usageError{fmt.Errorf("unexpected arguments %v", pos)}
	case want != "" && len(pos) != 1:
		return "", usageError{fmt.Errorf("want exactly one %s", want)}
	case want == "":
		return "", nil
	}
	return pos[0], nil
}

func (c *client) run(ctx context.Context, cmd string, args []string) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.BoolVar(&c.json, "json", c.json, "print the API's JSON")
	switch cmd {
	case "create-account":
		name := fs.String("name", "", "account name")
		if _, err := parse(fs, args, ""); err != nil {
			return err
		}
		var out struct{ ID string }
		return c.call(ctx, "POST", "/admin/v1/accounts", map[string]any{"name": *name}, &out, func() {
			fmt.Fprintf(c.out, "account %s created\n", out.ID)
		})
	case "account", "suspend", "resume":
		id, err := parse(fs, args, "ACCOUNT_ID")
		if err != nil {
			return err
		}
		method, path := "GET", "/admin/v1/accounts/"+url.PathEscape(id)
		if cmd != "account" {
			method, path = "POST", path+"/"+cmd
		}
		var a account
		return c.call(ctx, method, path, nil, &a, func() { c.printAccount(a) })
	case "issue-key":
		name := fs.String("name", "", "key name")
		id, err := parse(fs, args, "ACCOUNT_ID")
		if err != nil {
			return err
		}
		var out struct{ ID, Key string }
		return c.call(ctx, "POST", "/admin/v1/accounts/"+url.PathEscape(id)+"/keys", map[string]any{"name": *name}, &out, func() {
			fmt.Fprintf(c.out, "key id  %s\nsecret  %s\n\nThe secret is shown only now; store it safely.\n", out.ID, out.Key)
		})
	case "keys":
		id, err := parse(fs, args, "ACCOUNT_ID")
		if err != nil {
			return err
		}
		var out struct {
			Keys []struct {
				ID, Name, Prefix string
				CreatedAt        string  `json:"created_at"`
				RevokedAt        *string `json:"revoked_at"`
			}
		}
		return c.call(ctx, "GET", "/admin/v1/accounts/"+url.PathEscape(id)+"/keys", nil, &out, func() {
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY ID\tNAME\tPREFIX\tCREATED\tREVOKED")
			for _, k := range out.Keys {
				rev := "-"
				if k.RevokedAt != nil {
					rev = *k.RevokedAt
				}
				fmt.Fprintf(tw, "%s\t%s\t%s…\t%s\t%s\n", k.ID, k.Name, k.Prefix, k.CreatedAt, rev)
			}
			tw.Flush()
		})
	case "revoke-key":
		id, err := parse(fs, args, "KEY_ID")
		if err != nil {
			return err
		}
		return c.call(ctx, "DELETE", "/admin/v1/keys/"+url.PathEscape(id), nil, nil, func() {
			fmt.Fprintf(c.out, "key %s revoked\n", id)
		})
	case "topup":
		order := fs.String("order", "", "order id (idempotency key)")
		planID := fs.String("plan", "", "plan id, e.g. credits_10k")
		credits := fs.Int64("credits", 0, "whole credits (with -usd)")
		usd := fs.String("usd", "", "amount paid in USD, e.g. 5.00 (\"0\" for a promotional grant)")
		id, err := parse(fs, args, "ACCOUNT_ID")
		if err != nil {
			return err
		}
		body := map[string]any{"order_id": *order}
		if *planID != "" {
			body["plan"] = *planID
		}
		if *credits != 0 || *usd != "" {
			body["credits"], body["amount_usd"] = *credits, *usd
		}
		var out struct {
			ID                  string `json:"id"`
			OrderID             string `json:"order_id"`
			Credits             int64  `json:"credits"`
			AmountUSD           string `json:"amount_usd"`
			BalanceMicrocredits int64  `json:"balance_microcredits"`
		}
		return c.call(ctx, "POST", "/admin/v1/accounts/"+url.PathEscape(id)+"/topups", body, &out, func() {
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "top-up\t%s\norder\t%s\ncredits\t%d\npaid\t$%s\nbalance\t%s credits\n",
				out.ID, out.OrderID, out.Credits, out.AmountUSD, ledger.FormatCredits(out.BalanceMicrocredits))
			tw.Flush()
		})
	case "refund":
		refundID := fs.String("refund", "", "refund id (idempotency key)")
		credits := fs.Int64("credits", 0, "whole credits to refund")
		all := fs.Bool("all", false, "refund all unused available credit")
		order := fs.String("order", "", "order id of a duplicate top-up to reverse whole")
		reason := fs.String("reason", "", "reason, kept with the refund")
		id, err := parse(fs, args, "ACCOUNT_ID")
		if err != nil {
			return err
		}
		body := map[string]any{"refund_id": *refundID, "reason": *reason}
		if *all {
			body["all_unused"] = true
		}
		if *credits != 0 {
			body["credits"] = *credits
		}
		if *order != "" {
			body["order_id"] = *order
		}
		var out struct {
			ID                   string `json:"id"`
			RefundID             string `json:"refund_id"`
			Kind                 string `json:"kind"`
			OrderID              string `json:"order_id"`
			Reason               string `json:"reason"`
			RefundedMicrocredits int64  `json:"refunded_microcredits"`
			AmountUSD            string `json:"amount_usd"`
			ByMethod             []struct {
				PaymentMethod string `json:"payment_method"`
				AmountUSD     string `json:"amount_usd"`
			} `json:"by_payment_method"`
			BalanceMicrocredits int64 `json:"balance_microcredits"`
		}
		return c.call(ctx, "POST", "/admin/v1/accounts/"+url.PathEscape(id)+"/refunds", body, &out, func() {
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "refund\t%s\nrefund id\t%s\nkind\t%s\n", out.ID, out.RefundID, out.Kind)
			if out.OrderID != "" {
				fmt.Fprintf(tw, "reversed order\t%s\n", out.OrderID)
			}
			fmt.Fprintf(tw, "reason\t%s\ncredits\t%s\nowed\t$%s\n", out.Reason, ledger.FormatCredits(out.RefundedMicrocredits), out.AmountUSD)
			for _, m := range out.ByMethod {
				fmt.Fprintf(tw, "  to %s\t$%s\n", m.PaymentMethod, m.AmountUSD)
			}
			fmt.Fprintf(tw, "balance\t%s credits\n", ledger.FormatCredits(out.BalanceMicrocredits))
			tw.Flush()
		})
	case "chargeback":
		cbID := fs.String("id", "", "chargeback id (idempotency key), e.g. the provider's dispute id")
		order := fs.String("order", "", "order id of the disputed top-up")
		reason := fs.String("reason", "", "reason, kept with the chargeback")
		id, err := parse(fs, args, "ACCOUNT_ID")
		if err != nil {
			return err
		}
		body := map[string]any{"chargeback_id": *cbID, "order_id": *order, "reason": *reason}
		var out struct {
			ID                    string `json:"id"`
			ChargebackID          string `json:"chargeback_id"`
			ForfeitedMicrocredits int64  `json:"forfeited_microcredits"`
			ForfeitedUSD          string `json:"forfeited_usd"`
			BalanceMicrocredits   int64  `json:"balance_microcredits"`
			Status                string `json:"status"`
		}
		return c.call(ctx, "POST", "/admin/v1/accounts/"+url.PathEscape(id)+"/chargebacks", body, &out, func() {
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "chargeback\t%s\nchargeback id\t%s\nforfeited\t%s credits ($%s deferred revenue)\nbalance\t%s credits\naccount\t%s\n",
				out.ID, out.ChargebackID, ledger.FormatCredits(out.ForfeitedMicrocredits), out.ForfeitedUSD,
				ledger.FormatCredits(out.BalanceMicrocredits), out.Status)
			tw.Flush()
		})
	case "lots":
		id, err := parse(fs, args, "ACCOUNT_ID")
		if err != nil {
			return err
		}
		var out struct {
			Lots []struct {
				OrderID               string `json:"order_id"`
				PaymentMethod         string `json:"payment_method"`
				CreatedAt             string `json:"created_at"`
				Microcredits          int64  `json:"microcredits"`
				PaidUSD               string `json:"paid_usd"`
				RemainingMicrocredits int64  `json:"remaining_microcredits"`
				UsedMicrocredits      int64  `json:"used_microcredits"`
				RecognizedUSD         string `json:"recognized_usd"`
				RefundedMicrocredits  int64  `json:"refunded_microcredits"`
				RefundedUSD           string `json:"refunded_usd"`
				ForfeitedMicrocredits int64  `json:"forfeited_microcredits"`
				DeferredUSD           string `json:"deferred_usd"`
			} `json:"lots"`
		}
		return c.call(ctx, "GET", "/admin/v1/accounts/"+url.PathEscape(id)+"/lots", nil, &out, func() {
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "CREATED\tORDER\tMETHOD\tCREDITS\tPAID\tUSED\tRECOGNIZED\tREFUNDED\tFORFEITED\tUNUSED\tDEFERRED\t")
			for _, l := range out.Lots {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t$%s\t%s\t$%s\t%s\t%s\t%s\t$%s\t\n", l.CreatedAt, l.OrderID, l.PaymentMethod,
					ledger.FormatCredits(l.Microcredits), l.PaidUSD, ledger.FormatCredits(l.UsedMicrocredits), l.RecognizedUSD,
					ledger.FormatCredits(l.RefundedMicrocredits), ledger.FormatCredits(l.ForfeitedMicrocredits),
					ledger.FormatCredits(l.RemainingMicrocredits), l.DeferredUSD)
			}
			tw.Flush()
		})
	case "statement":
		from := fs.String("from", "", "start, RFC 3339 (inclusive)")
		to := fs.String("to", "", "end, RFC 3339 (exclusive)")
		limit := fs.Int("limit", 0, "most entries (server default 1000)")
		format := fs.String("format", "table", "table, json or csv")
		id, err := parse(fs, args, "ACCOUNT_ID")
		if err != nil {
			return err
		}
		switch *format {
		case "table":
		case "json":
			c.json = true
		case "csv":
		default:
			return usageError{fmt.Errorf("-format %q: want table, json or csv", *format)}
		}
		q := url.Values{}
		if *format == "csv" {
			q.Set("format", "csv")
		}
		if *from != "" {
			q.Set("from", *from)
		}
		if *to != "" {
			q.Set("to", *to)
		}
		if *limit != 0 {
			q.Set("limit", fmt.Sprint(*limit))
		}
		path := "/admin/v1/accounts/" + url.PathEscape(id) + "/statement"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		if *format == "csv" {
			return c.raw(ctx, path)
		}
		var out struct {
			Opening int64 `json:"opening_balance_microcredits"`
			Closing int64 `json:"closing_balance_microcredits"`
			Entries []struct {
				ID                  string `json:"id"`
				TS                  string `json:"ts"`
				Kind                string `json:"kind"`
				AmountMicrocredits  int64  `json:"amount_microcredits"`
				AmountUSD           string `json:"amount_usd"`
				BalanceMicrocredits int64  `json:"balance_microcredits"`
				Ref                 string `json:"ref"`
			} `json:"entries"`
			Truncated bool `json:"truncated"`
		}
		return c.call(ctx, "GET", path, nil, &out, func() {
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "TIME\tKIND\tCREDITS\tUSD\tBALANCE\tREF\t")
			fmt.Fprintf(tw, "\topening\t\t\t%s\t\t\n", ledger.FormatCredits(out.Opening))
			for _, e := range out.Entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", e.TS, e.Kind, ledger.FormatCredits(e.AmountMicrocredits),
					e.AmountUSD, ledger.FormatCredits(e.BalanceMicrocredits), e.Ref)
			}
			fmt.Fprintf(tw, "\tclosing\t\t\t%s\t\t\n", ledger.FormatCredits(out.Closing))
			tw.Flush()
			if out.Truncated {
				fmt.Fprintln(c.out, "(more entries: narrow the period or raise -limit)")
			}
		})
	case "ledger":
		if _, err := parse(fs, args, ""); err != nil {
			return err
		}
		var out struct {
			Credits map[string]int64  `json:"accounts_microcredits"`
			USD     map[string]string `json:"accounts_usd"`
		}
		return c.call(ctx, "GET", "/admin/v1/ledger", nil, &out, func() {
			codes := make([]string, 0, len(out.Credits))
			for code := range out.Credits {
				codes = append(codes, code)
			}
			sort.Strings(codes)
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "ACCOUNT\tCREDITS\tUSD\t")
			for _, code := range codes {
				fmt.Fprintf(tw, "%s\t%s\t%s\t\n", code, ledger.FormatCredits(out.Credits[code]), out.USD[code])
			}
			tw.Flush()
		})
	case "report":
		from := fs.String("from", "", "start, RFC 3339 (inclusive; default: start of this month, UTC)")
		to := fs.String("to", "", "end, RFC 3339 (exclusive; default: now)")
		if _, err := parse(fs, args, ""); err != nil {
			return err
		}
		q := url.Values{}
		if *from != "" {
			q.Set("from", *from)
		}
		if *to != "" {
			q.Set("to", *to)
		}
		path := "/admin/v1/reports/revenue"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		var out struct {
			From, To             string
			RevenueRecognizedUSD string            `json:"revenue_recognized_usd"`
			DeferredOpeningUSD   string            `json:"deferred_revenue_opening_usd"`
			DeferredClosingUSD   string            `json:"deferred_revenue_closing_usd"`
			CashReceivedUSD      map[string]string `json:"cash_received_usd"`
			CashReceivedTotalUSD string            `json:"cash_received_total_usd"`
			RefundsOwedUSD       string            `json:"refunds_owed_usd"`
			ForfeitedUSD         string            `json:"forfeited_usd"`
			Credits              struct {
				IssuedPaid  int64 `json:"issued_paid_microcredits"`
				IssuedBonus int64 `json:"issued_bonus_microcredits"`
				Used        int64 `json:"used_microcredits"`
				Refunded    int64 `json:"refunded_microcredits"`
				Forfeited   int64 `json:"forfeited_microcredits"`
				Opening     int64 `json:"outstanding_opening_microcredits"`
				Closing     int64 `json:"outstanding_closing_microcredits"`
			} `json:"credits"`
		}
		return c.call(ctx, "GET", path, nil, &out, func() {
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintf(tw, "period\t%s … %s\t\n\n", out.From, out.To)
			fmt.Fprintf(tw, "deferred revenue, opening\t$%s\t\n", out.DeferredOpeningUSD)
			methods := make([]string, 0, len(out.CashReceivedUSD))
			for m := range out.CashReceivedUSD {
				methods = append(methods, m)
			}
			sort.Strings(methods)
			for _, m := range methods {
				fmt.Fprintf(tw, "+ cash received (%s)\t$%s\t\n", m, out.CashReceivedUSD[m])
			}
			fmt.Fprintf(tw, "− revenue recognized\t$%s\t\n− refunds owed\t$%s\t\n− forfeited (chargebacks)\t$%s\t\n",
				out.RevenueRecognizedUSD, out.RefundsOwedUSD, out.ForfeitedUSD)
			fmt.Fprintf(tw, "deferred revenue, closing\t$%s\t\n\n", out.DeferredClosingUSD)
			fmt.Fprintf(tw, "credits outstanding, opening\t%s\t\n+ issued, paid\t%s\t\n+ issued, bonus and grants\t%s\t\n",
				ledger.FormatCredits(out.Credits.Opening), ledger.FormatCredits(out.Credits.IssuedPaid), ledger.FormatCredits(out.Credits.IssuedBonus))
			fmt.Fprintf(tw, "− used\t%s\t\n− refunded\t%s\t\n− forfeited\t%s\t\ncredits outstanding, closing\t%s\t\n",
				ledger.FormatCredits(out.Credits.Used), ledger.FormatCredits(out.Credits.Refunded), ledger.FormatCredits(out.Credits.Forfeited),
				ledger.FormatCredits(out.Credits.Closing))
			tw.Flush()
		})
	case "verify":
		if _, err := parse(fs, args, ""); err != nil {
			return err
		}
		err := c.call(ctx, "GET", "/admin/v1/audit", nil, nil, func() {
			fmt.Fprintln(c.out, "ok: the books balance (journal sums to zero in credits and USD, every balance equals its postings, lots reconcile)")
		})
		var ae apiError
		if errors.As(err, &ae) && ae.Type == "invariant_error" {
			return fmt.Errorf("the books do NOT balance:\n%s", ae.Message)
		}
		return err
	}
	return usageError{fmt.Errorf("unknown command %q\n\n%s", cmd, Usage)}
}

// apiError is an error answer of the admin API.
type apiError struct {
	Status        int
	Type, Message string
}

func (e apiError) Error() string { return fmt.Sprintf("%s (%d): %s", e.Type, e.Status, e.Message) }

// raw prints a non-JSON answer (CSV) as it came.
func (c *client) raw(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(c.url, "/")+path, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("call admin API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return responseError(resp.StatusCode, raw)
	}
	if _, err := io.Copy(c.out, io.LimitReader(resp.Body, 256<<20)); err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	return nil
}

func responseError(status int, raw []byte) error {
	var e struct {
		Error struct{ Type, Message string }
	}
	if json.Unmarshal(raw, &e) == nil && e.Error.Type != "" {
		return apiError{Status: status, Type: e.Error.Type, Message: e.Error.Message}
	}
	return fmt.Errorf("HTTP %d: %s", status, bytes.TrimSpace(raw))
}

type account struct {
	ID                    string `json:"id"`
	Name                  string `json:"name"`
	Status                string `json:"status"`
	BalanceMicrocredits   int64  `json:"balance_microcredits"`
	AvailableMicrocredits int64  `json:"available_microcredits"`
	ReservedMicrocredits  int64  `json:"reserved_microcredits"`
	DeferredUSD           string `json:"deferred_usd"`
}

func (c *client) printAccount(a account) {
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "account\t%s\nname\t%s\nstatus\t%s\nbalance\t%s credits\navailable\t%s credits\nreserved\t%s credits\ndeferred\t$%s\n",
		a.ID, a.Name, a.Status, ledger.FormatCredits(a.BalanceMicrocredits), ledger.FormatCredits(a.AvailableMicrocredits),
		ledger.FormatCredits(a.ReservedMicrocredits), a.DeferredUSD)
	tw.Flush()
}

// call sends one request. On success it prints the JSON (with -json) or calls show after
// decoding into out. On an API error it returns the API's type and message.
func (c *client) call(ctx context.Context, method, path string, in, out any, show func()) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.url, "/")+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("call admin API: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return responseError(resp.StatusCode, raw)
	}
	if c.json {
		if len(raw) > 0 {
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				return fmt.Errorf("decode response: %w", err)
			}
			// Re-encoded indented; encoding/json sorts map keys, so output is stable for scripts.
			enc := json.NewEncoder(c.out)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		return nil
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("decode response: %w", err)
		}
	}
	show()
	return nil
}
