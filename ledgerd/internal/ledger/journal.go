package ledger

// Ledger accounts of the double-entry journal. Every posting carries two amounts, each of
// which sums to zero over every transaction (so over the whole journal too):
//
//   - Microcredits: the credit itself. Sign convention "credit held by or delivered to this
//     account": a customer's account is positive while it holds prepaid credit; the source
//     accounts (cash by payment method, bonus) go negative by what they issued; revenue,
//     refunds and forfeits go positive by what was used, returned or forfeited.
//   - MicroUSD: the money those credits stand for, at the price of the lots they came from.
//     A customer's USD balance is its deferred revenue (paid, not yet used); cash:<method>
//     goes negative by what was paid through it; revenue, refunds and forfeits go positive by
//     what was recognized, owed back, or forfeited.
//
// With both amounts in the journal, every report (revenue recognized in a period, deferred
// revenue at an instant, cash by payment method, refunds owed) is a sum of postings, and the
// books balance to the micro-dollar by construction. See docs/decisions/0001-ledger-journal.md.
const (
	AccountRevenue  = "revenue"
	AccountBonus    = "bonus"
	AccountRefunds  = "refunds"
	AccountForfeits = "forfeits"
	customerPrefix  = "customer:"
	cashPrefix      = "cash:"
)

// BaseMicrocreditsPerMicroUSD is what one micro-dollar buys at the base rate: one credit is
// $0.005 (DESIGN §2), so 1 µ$ = 200 µcr exactly. A top-up's cash posting is the credit its
// money buys at this rate; credit beyond it is the plan's tier bonus and comes from the bonus
// account, so the bonus account shows what tier bonuses and promotional grants gave away.
const BaseMicrocreditsPerMicroUSD = 200

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

// CashMethodOf returns the payment method of a cash ledger account code.
func CashMethodOf(code string) (string, bool) {
	if len(code) > len(cashPrefix) && code[:len(cashPrefix)] == cashPrefix {
		return code[len(cashPrefix):], true
	}
	return "", false
}

// Journal transaction kinds, as shown in statements.
const (
	KindTopUp      = "topup"      // paid top-up
	KindGrant      = "grant"      // promotional credit (amount_usd "0")
	KindUsage      = "usage"      // one settlement batch of one account
	KindRefund     = "refund"     // unused credit returned
	KindReversal   = "reversal"   // a duplicate top-up returned whole
	KindChargeback = "chargeback" // the balance forfeited after a payment was disputed
)

// Posting is one line of a journal transaction.
type Posting struct {
	Account      string
	Microcredits int64
	MicroUSD     int64
}

// CheckBalanced verifies that postings sum to exactly zero in both amounts and that no
// account appears twice (one line per account keeps statements and balances simple).
func CheckBalanced(ps []Posting) error {
	var sum, usd int64
	seen := make(map[string]bool, len(ps))
	for _, p := range ps {
		if p.Account == "" {
			return invariant("posting without account")
		}
		if seen[p.Account] {
			return invariant("account %s posted twice in one transaction", p.Account)
		}
		seen[p.Account] = true
		var ok1, ok2 bool
		sum, ok1 = addChecked(sum, p.Microcredits)
		usd, ok2 = addChecked(usd, p.MicroUSD)
		if !ok1 || !ok2 {
			return invariant("postings overflow")
		}
	}
	if sum != 0 || usd != 0 {
		return invariant("postings sum to %d µcr and %d µ$, not 0", sum, usd)
	}
	return nil
}

// balanced drops all-zero lines and checks the rest.
func balanced(ps ...Posting) ([]Posting, error) {
	out := ps[:0]
	for _, p := range ps {
		if p.Microcredits != 0 || p.MicroUSD != 0 {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, CheckBalanced(out)
}

// PaidMicrocredits splits a top-up of microcredits for microUSD into the credit its money buys
// at the base rate and the bonus beyond it. A top-up priced at or above the base rate has no
// bonus (a premium is not a negative bonus: all of its credit is paid for).
func PaidMicrocredits(microcredits, microUSD int64) (paid, bonus int64) {
	// Compared by division first: microUSD × 200 can overflow for large amounts.
	if microUSD >= microcredits/BaseMicrocreditsPerMicroUSD+1 {
		return microcredits, 0
	}
	paid = min(microcredits, microUSD*BaseMicrocreditsPerMicroUSD)
	return paid, microcredits - paid
}

// TopUpPostings credits a customer with a new lot of microcredits bought for microUSD through
// method. The paid part comes from cash:<method>, the tier bonus (or the whole of a free
// grant) from bonus. recognized is the USD the new lot recognized at once by covering an
// overdraft (Credit's takes): it moves from the customer's deferred revenue to revenue.
func TopUpPostings(accountID string, microcredits, microUSD int64, method string, recognized int64) ([]Posting, error) {
	if microcredits <= 0 || microUSD < 0 || recognized < 0 || recognized > microUSD || method == "" {
		return nil, invariant("top-up of %d µcr for %d µ$ via %q, %d µ$ recognized", microcredits, microUSD, method, recognized)
	}
	paid, bonus := PaidMicrocredits(microcredits, microUSD)
	return balanced(
		Posting{AccountCustomer(accountID), microcredits, microUSD - recognized},
		Posting{AccountCash(method), -paid, -microUSD},
		Posting{AccountBonus, -bonus, 0},
		Posting{AccountRevenue, 0, recognized},
	)
}

// UsagePostings charges a customer cost µcr of settled usage, recognizing recognized µ$ of
// revenue from the lots it consumed. A zero cost yields no postings.
func UsagePostings(accountID string, cost, recognized int64) ([]Posting, error) {
	if cost < 0 || recognized < 0 || (cost == 0 && recognized != 0) {
		return nil, invariant("usage of %d µcr recognizing %d µ$", cost, recognized)
	}
	return balanced(
		Posting{AccountCustomer(accountID), -cost, -recognized},
		Posting{AccountRevenue, cost, recognized},
	)
}

// RefundPostings returns unused credit (a partial refund or a reversal) from the customer to
// the refunds account, with the USD owed back at the purchase price of the lots it came from.
func RefundPostings(accountID string, microcredits, microUSD int64) ([]Posting, error) {
	if microcredits <= 0 || microUSD < 0 {
		return nil, invariant("refund of %d µcr for %d µ$", microcredits, microUSD)
	}
	return balanced(
		Posting{AccountCustomer(accountID), -microcredits, -microUSD},
		Posting{AccountRefunds, microcredits, microUSD},
	)
}

// ForfeitPostings moves a charged-back customer's whole remaining credit, and the deferred
// revenue it stood for, to the forfeits account.
func ForfeitPostings(accountID string, microcredits, microUSD int64) ([]Posting, error) {
	if microcredits <= 0 || microUSD < 0 {
		return nil, invariant("forfeit of %d µcr for %d µ$", microcredits, microUSD)
	}
	return balanced(
		Posting{AccountCustomer(accountID), -microcredits, -microUSD},
		Posting{AccountForfeits, microcredits, microUSD},
	)
}
