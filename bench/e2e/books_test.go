package e2e_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/bench/stack"
)

const webhookSecret = "whsec_e2e_0123456789abcdef"

// signWebhook computes the Tollgate-Signature header as a payment provider would, written
// here independently of ledgerd's code: HMAC-SHA256 over "<t>.<raw body>".
func signWebhook(t time.Time, body string) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, []byte(webhookSecret))
	m.Write([]byte(ts + "." + body))
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

func postWebhook(t *testing.T, e *env, sig, body string) int {
	req, err := http.NewRequest(http.MethodPost, e.s.AdminURL()+"/webhooks/v1/payments", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Tollgate-Signature", sig)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// waitStatus sends requests until one gets the status and error type wanted (the edge caches
// key lookups for a few seconds), failing after 20 s.
func waitStatus(t *testing.T, e *env, key string, status int, errType string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last response
	for time.Now().Before(deadline) {
		last = e.post(0, key, messageBody("claude-sonnet-4-5", false, "output=5"))
		if last.Status == status && (errType == "" || strings.Contains(string(last.Body), `"type":"`+errType+`"`)) {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("want %d %s, last answer %d %s", status, errType, last.Status, last.Body)
}

// TestBooksThroughTheStack drives the operator's money operations against real processes:
// suspension and chargeback turn a customer's key away with 403 permission_error; a signed
// payment webhook tops an account up once, however often it is delivered, and unsigned,
// tampered and stale ones change nothing; `ledgerd admin verify` finds the books balanced
// and the statement shows every entry, as CSV too.
func TestBooksThroughTheStack(t *testing.T) {
	e := startStack(t, func(c *stack.Config) {
		c.NoAnalytics = true // the ledger is what this test is about
		c.ExtraEnv = append(c.ExtraEnv, "TOLLGATE_WEBHOOK_SECRET="+webhookSecret)
	})
	ctx := context.Background()
	acct, key := e.account(1000)
	waitStatus(t, e, key, http.StatusOK, "")

	require.NoError(t, e.admin.Do(ctx, http.MethodPost, "/admin/v1/accounts/"+acct+"/suspend", nil, nil))
	waitStatus(t, e, key, http.StatusForbidden, "permission_error")
	require.NoError(t, e.admin.Do(ctx, http.MethodPost, "/admin/v1/accounts/"+acct+"/resume", nil, nil))
	waitStatus(t, e, key, http.StatusOK, "")

	var cb struct {
		Forfeited int64  `json:"forfeited_microcredits"`
		Status    string `json:"status"`
	}
	require.NoError(t, e.admin.Do(ctx, http.MethodPost, "/admin/v1/accounts/"+acct+"/chargebacks",
		map[string]any{"chargeback_id": "dp_e2e", "order_id": "order-" + acct, "reason": "fraudulent"}, &cb))
	require.Equal(t, "suspended", cb.Status)
	require.Positive(t, cb.Forfeited)
	waitStatus(t, e, key, http.StatusForbidden, "permission_error")

	// The payment webhook.
	payer, err := e.admin.CreateAccount(ctx, "payer")
	require.NoError(t, err)
	body := `{"id":"evt_e2e_1","type":"payment.succeeded","data":{"account_id":"` + payer +
		`","plan":"credits_10k","order_id":"pay_e2e_1","payment_method":"card","amount_usd":"50.00"}}`
	now := time.Now()
	require.Equal(t, http.StatusUnauthorized, postWebhook(t, e, "", body))
	require.Equal(t, http.StatusUnauthorized, postWebhook(t, e, signWebhook(now, body), strings.Replace(body, "credits_10k", "credits_275k", 1)))
	require.Equal(t, http.StatusUnauthorized, postWebhook(t, e, signWebhook(now.Add(-10*time.Minute), body), body))
	a, err := e.admin.Account(ctx, payer)
	require.NoError(t, err)
	require.Zero(t, a.BalanceMicrocredits, "refused webhooks change nothing")
	require.Equal(t, http.StatusOK, postWebhook(t, e, signWebhook(now, body), body))
	require.Equal(t, http.StatusOK, postWebhook(t, e, signWebhook(now, body), body), "a replay is acknowledged")
	require.Equal(t, http.StatusOK, postWebhook(t, e, signWebhook(time.Now(), body), body), "so is a redelivery")
	e.waitBalance(payer, 10_000_000_000)

	// The operator's CLI, as shipped.
	cli := func(args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(binDir(t), "ledgerd"), append([]string{"admin"}, args...)...)
		cmd.Env = append(cmd.Environ(), "TOLLGATE_ADMIN_URL="+e.s.AdminURL(), "TOLLGATE_ADMIN_TOKEN="+e.s.AdminToken())
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := cli("verify")
	require.NoError(t, err, out)
	require.Contains(t, out, "the books balance")
	out, err = cli("statement", "-format", "csv", acct)
	require.NoError(t, err, out)
	require.Contains(t, out, ",chargeback,")
	require.Contains(t, out, "dp_e2e")
	out, err = cli("report")
	require.NoError(t, err, out)
	require.Contains(t, out, "cash received (card)")
}
