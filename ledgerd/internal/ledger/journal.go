package ledger

// Ledger accounts of the double-entry journal. Every amount in the journal is in micro-credits;
// the sign convention is "credit held by or delivered to this account": a customer's account
// is positive while it holds prepaid credit; the source accounts (cash by payment method,
// bonus) go negative by what they issued; revenue and refunds go positive by what was used or
// returned. Each transaction's postings sum to zero, so the whole journal does too.
const (
	AccountRevenue = "revenue"
	AccountBonus   = "bonus"
	AccountRefunds = "refunds"
	customerPrefix = "customer:"
	cashPrefix     = "cash:"
)

// AccountCustomer is the ledger account holding a customer account's prepaid credit.
func AccountCustomer(accountID string) string { return customerPrefix + accountID }

// CustomerOf returns the customer account id of a customer ledger account code.
func CustomerOf(code string) (string, bool) {
	if len(code) > len(customerPrefix) && code[:len(customerPrefix)] == customerPrefix {
		return code[len(customerPrefix):], true
	}
	return "", false
}

// AccountCash is the ledger account of a payment method ("admin" for operator top-ups).
func AccountCash(method string) string { return cashPrefix + method }

// Journal transaction kinds, as shown in statements.
const (
	KindTopUp  = "topup"  // paid top-up
	KindGrant  = "grant"  // promotional credit (amount_usd "0")
	KindUsage  = "usage"  // one settlement batch of one account
	KindRefund = "refund" // unused credit returned
)

// Posting is one line of a journal transaction.
type Posting struct {
	Account      string
	Microcredits int64
}

// CheckBalanced verifies that postings sum to exactly zero and that no account appears twice
// (one line per account keeps statements and materialized balances simple).
func CheckBalanced(ps []Posting) error {
	var sum int64
	seen := make(map[string]bool, len(ps))
	for _, p := range ps {
		if p.Account == "" {
			return invariant("posting without account")
		}
		if seen[p.Account] {
			return invariant("account %s posted twice in one transaction", p.Account)
		}
		seen[p.Account] = true
		var ok bool
		if sum, ok = addChecked(sum, p.Microcredits); !ok {
			return invariant("postings overflow")
		}
	}
	if sum != 0 {
		return invariant("postings sum to %d, not 0", sum)
	}
	return nil
}

// TopUpPostings moves credit from its source to the customer: from cash:<method> when paid,
// from bonus when free (a promotional grant).
func TopUpPostings(accountID string, microcredits, microUSD int64, method string) ([]Posting, error) {
	if microcredits <= 0 || microUSD < 0 {
		return nil, invariant("top-up of %d µcr for %d µ$", microcredits, microUSD)
	}
	src := AccountCash(method)
	if microUSD == 0 {
		src = AccountBonus
	}
	ps := []Posting{{AccountCustomer(accountID), microcredits}, {src, -microcredits}}
	return ps, CheckBalanced(ps)
}

// UsagePostings charges a customer for settled usage. A zero cost yields no postings.
func UsagePostings(accountID string, cost int64) ([]Posting, error) {
	if cost < 0 {
		return nil, invariant("negative usage cost %d", cost)
	}
	if cost == 0 {
		return nil, nil
	}
	ps := []Posting{{AccountCustomer(accountID), -cost}, {AccountRevenue, cost}}
	return ps, CheckBalanced(ps)
}

// RefundPostings returns unused credit from the customer to the refunds account.
func RefundPostings(accountID string, microcredits int64) ([]Posting, error) {
	if microcredits <= 0 {
		return nil, invariant("refund of %d µcr", microcredits)
	}
	ps := []Posting{{AccountCustomer(accountID), -microcredits}, {AccountRefunds, microcredits}}
	return ps, CheckBalanced(ps)
}
