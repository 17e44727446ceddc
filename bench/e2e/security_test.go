package e2e_test

// Security of the whole stack (DESIGN §9.7): API keys stored hashed and never logged; the
// operator's upstream keys, admin token and internal secret never logged and never sent to a
// client; the admin token and the edges' internal secret required and compared in constant
// time; operator listeners on loopback by default; a key sees only its own account.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/bench/stack"
)

func randomSecret(t *testing.T, prefix string) string {
	b := make([]byte, 16)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return prefix + hex.EncodeToString(b)
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// call sends one request and returns status, headers and body.
func call(t *testing.T, method, url string, body string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

// TestSecretsNeverLoggedOrLeaked runs every kind of request with known keys — served,
// streamed, cut, refused by the upstream, refused by the edge, with wrong, revoked and
// misplaced keys — through a stack logging at debug level, then stops it and searches every
// file under its data directory (logs, ledger database, broker log, edge WAL) for the key
// secrets, the upstream keys, the admin token and the internal secret. It also checks that no
// response carried an upstream key and that the ledger holds the keys' SHA-256, not them.
func TestSecretsNeverLoggedOrLeaked(t *testing.T) {
	upstreamKeys := []string{randomSecret(t, "sk-ant-up-"), randomSecret(t, "sk-ant-up-")}
	internalSecret := randomSecret(t, "tg-internal-")
	var dataDir string
	e := startStack(t, func(c *stack.Config) {
		c.UpstreamKeys = strings.Join(upstreamKeys, ",")
		c.InternalSecret = internalSecret
		c.ExtraEnv = append(c.ExtraEnv, "TOLLGATE_LOG_LEVEL=debug")
		dataDir = c.DataDir
	})
	ctx := context.Background()
	acctA, keyA := e.account(1000)
	_, keyB := e.account(1)
	revokedID, keyR, err := e.admin.IssueKey(ctx, acctA, "to revoke")
	require.NoError(t, err)
	require.NoError(t, e.admin.Do(ctx, http.MethodDelete, "/admin/v1/keys/"+revokedID, nil, nil))

	edge := e.s.EdgeURL(0)
	type answer struct {
		what   string
		status int
		header http.Header
		body   []byte
	}
	var answers []answer
	send := func(what, method, path, body string, hdr ...string) int {
		hdr = append(hdr, "content-type", "application/json", "anthropic-version", "2023-06-01")
		status, h, b := call(t, method, edge+path, body, hdr...)
		answers = append(answers, answer{what, status, h, b})
		return status
	}
	forwarded := 0 // /v1/messages requests that reached the upstream, hence have a record
	for _, stream := range []bool{false, true} {
		for _, d := range []string{"input=100 output=20", "output=20 mode=error", "output=20 mode=truncate", "status=429", "status=529"} {
			body := messageBody("claude-3-haiku", stream, d)
			st := send(d, "POST", "/v1/messages", body, "x-api-key", keyA)
			require.Contains(t, []int{200, 429, 529}, st, d)
			forwarded++
			st = send(d+" (bearer)", "POST", "/v1/messages", body, "authorization", "Bearer "+keyA)
			require.Contains(t, []int{200, 429, 529}, st, d)
			forwarded++
		}
	}
	good := messageBody("claude-3-haiku", false, "input=100 output=20")
	send("count_tokens", "POST", "/v1/messages/count_tokens", `{"model":"claude-3-haiku","messages":[{"role":"user","content":"hi"}]}`, "x-api-key", keyA)
	send("models", "GET", "/v1/models", "", "x-api-key", keyA)
	send("balance", "GET", "/v1/balance", "", "x-api-key", keyA)
	send("402", "POST", "/v1/messages", messageBody("claude-opus-4-5", false, "output=20"), "x-api-key", keyB)
	for _, bad := range [][]string{
		{"x-api-key", keyA + "x"},
		{"x-api-key", keyA[:len(keyA)-1]},
		{"x-api-key", strings.ToUpper(keyA)},
		{"authorization", "Basic " + keyA},
		{"authorization", "Bearer " + keyR},
		{"x-api-key", keyR},
		{"api-key", keyA},
	} {
		st := send("bad key", "POST", "/v1/messages", good, bad...)
		require.Contains(t, []int{400, 401}, st, "%q", bad)
	}
	send("key in query", "POST", "/v1/messages?x-api-key="+keyA+"&key="+keyA, good)
	send("malformed with key", "POST", "/v1/messages", `{"model":"`+keyA+`"`, "x-api-key", keyA)
	send("unknown model named like a key", "POST", "/v1/messages", messageBody(keyA, false, "output=5"), "x-api-key", keyA)

	// Admin listings never show a secret.
	status, _, b := call(t, "GET", e.s.AdminURL()+"/admin/v1/accounts/"+acctA+"/keys", "", "authorization", "Bearer "+e.s.AdminToken())
	require.Equal(t, 200, status, "%s", b)
	require.NotContains(t, string(b), keyA)
	require.NotContains(t, string(b), keyR)

	for _, a := range answers {
		for _, secret := range append([]string{e.s.AdminToken(), internalSecret}, upstreamKeys...) {
			for name, values := range a.header {
				for _, v := range values {
					require.NotContains(t, v, secret, "%s: secret in response header %s", a.what, name)
				}
			}
			require.NotContains(t, string(a.body), secret, "%s: secret in response body", a.what)
		}
	}

	// Let settlement and analytics process every record (so their logging runs too), then
	// stop everything gracefully so every log is flushed.
	waitMetricAbove(t, e.s.AdminURL()+"/metrics", "ledgerd_settle_records_total", float64(forwarded-1))
	if e.chAddr != "" {
		e.waitClickHouse(acctA, forwarded)
	}
	e.s.Stop()

	secrets := map[string]string{"key A": keyA, "key B": keyB, "revoked key": keyR,
		"admin token": e.s.AdminToken(), "internal secret": internalSecret,
		"upstream key 1": upstreamKeys[0], "upstream key 2": upstreamKeys[1]}
	hashSeen := false
	files := 0
	require.NoError(t, filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for name, s := range secrets {
			require.NotContains(t, string(data), s, "%s found in %s", name, path)
		}
		hashSeen = hashSeen || strings.Contains(string(data), sha256Hex(keyA))
		return nil
	}))
	t.Logf("searched %d files under %s", files, dataDir)
	logs, _ := filepath.Glob(filepath.Join(dataDir, "logs", "*.log"))
	require.GreaterOrEqual(t, len(logs), 4, "service logs searched")
	require.True(t, hashSeen, "the ledger stores the key's SHA-256")
}

// TestAuthBoundaries: the admin API and analytics' queries need the admin token, the
// internal API needs the edges' secret, neither accepts the other's credential or a customer
// key, and a key sees only its own account.
func TestAuthBoundaries(t *testing.T) {
	internalSecret := randomSecret(t, "tg-internal-")
	var ports stack.Ports
	e := startStack(t, func(c *stack.Config) {
		c.InternalSecret = internalSecret
		ports = c.Ports
	})
	acctA, keyA := e.account(1000)
	acctB, keyB := e.account(7)
	token := e.s.AdminToken()

	wrong := map[string][]string{
		"no credentials":     nil,
		"wrong token":        {"authorization", "Bearer " + randomSecret(t, "tg-admin-")},
		"token prefix":       {"authorization", "Bearer " + token[:len(token)-1]},
		"token plus a byte":  {"authorization", "Bearer " + token + "x"},
		"token, no scheme":   {"authorization", token},
		"token, basic":       {"authorization", "Basic " + token},
		"token as x-api-key": {"x-api-key", token},
		"customer key":       {"authorization", "Bearer " + keyA},
	}
	refused := func(t *testing.T, what, url string, hdr []string) {
		t.Helper()
		status, _, b := call(t, "GET", url, "", hdr...)
		require.Equal(t, 401, status, "%s: %s", what, b)
		require.Contains(t, string(b), `"authentication_error"`, what)
		require.NotContains(t, string(b), "balance", what)
	}

	t.Run("admin API needs the admin token", func(t *testing.T) {
		url := e.s.AdminURL() + "/admin/v1/accounts/" + acctA
		for what, hdr := range wrong {
			refused(t, what, url, hdr)
		}
		refused(t, "internal secret", url, []string{"authorization", "Bearer " + internalSecret})
		status, _, b := call(t, "GET", url, "", "authorization", "Bearer "+token)
		require.Equal(t, 200, status, "%s", b)
	})

	t.Run("internal API needs the edges' secret", func(t *testing.T) {
		base := fmt.Sprintf("http://127.0.0.1:%d/internal/v1", ports.LedgerInternal)
		for _, path := range []string{"/keys/" + sha256Hex(keyA), "/accounts/" + acctA + "/balance"} {
			for what, hdr := range wrong {
				refused(t, what, base+path, hdr)
			}
			refused(t, "admin token", base+path, []string{"authorization", "Bearer " + token})
			status, _, b := call(t, "GET", base+path, "", "authorization", "Bearer "+internalSecret)
			require.Equal(t, 200, status, "%s", b)
			require.Contains(t, string(b), acctA)
		}
		status, _, _ := call(t, "POST", base+"/leases", `{"account_id":"`+acctA+`","edge_id":"x","want_microcredits":1000000}`,
			"content-type", "application/json")
		require.Equal(t, 401, status, "a lease without the secret")
	})

	t.Run("a key sees only its own account", func(t *testing.T) {
		for key, want := range map[string]string{keyA: acctA, keyB: acctB} {
			other := acctB
			if want == acctB {
				other = acctA
			}
			for _, path := range []string{"/v1/balance", "/v1/balance?account_id=" + other} {
				status, _, b := call(t, "GET", e.s.EdgeURL(0)+path, "", "x-api-key", key, "x-account-id", other)
				require.Equal(t, 200, status, "%s", b)
				require.Contains(t, string(b), `"account_id":"`+want+`"`, path)
				require.NotContains(t, string(b), other, path)
			}
			for _, path := range []string{"/v1/balance/" + other, "/v1/accounts/" + other, "/admin/v1/accounts/" + other,
				"/internal/v1/accounts/" + other + "/balance", "/v1/usage?account_id=" + other} {
				status, _, b := call(t, "GET", e.s.EdgeURL(0)+path, "", "x-api-key", key)
				require.Equal(t, 404, status, "%s: %s", path, b)
			}
		}
	})

	t.Run("analytics queries need the admin token", func(t *testing.T) {
		if e.s.Analytics == nil {
			t.Skip("SKIPPED: analytics is not running (make test provides ClickHouse)")
		}
		from := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
		to := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		for _, path := range []string{"/v1/usage?account_id=" + acctB + "&from=" + from + "&to=" + to,
			"/v1/finance/summary?from=" + from + "&to=" + to} {
			url := e.s.AnalyticsURL() + path
			for what, hdr := range wrong {
				refused(t, what, url, hdr)
			}
			refused(t, "customer key of that account", url, []string{"authorization", "Bearer " + keyB})
			refused(t, "internal secret", url, []string{"authorization", "Bearer " + internalSecret})
			status, _, b := call(t, "GET", url, "", "authorization", "Bearer "+token)
			require.Equal(t, 200, status, "%s", b)
		}
	})
}

// TestListenersDefaultToLoopback reads each binary's defaults in a clean environment: the
// operator listeners (ledgerd admin, edge ops, analytics) bind to loopback unless configured
// otherwise. The edge's client API and ledgerd's internal API (the edges', behind its
// secret) are meant to be reachable.
func TestListenersDefaultToLoopback(t *testing.T) {
	bin := binDir(t)
	for _, tc := range []struct {
		binary string
		args   []string
		flag   string
		want   string
	}{
		{"ledgerd", []string{"serve", "-h"}, "admin-addr", "127.0.0.1:8091"},
		{"edge", []string{"-h"}, "ops-addr", "127.0.0.1:9101"},
		{"analytics", []string{"-h"}, "addr", "127.0.0.1:8095"},
	} {
		cmd := exec.Command(filepath.Join(bin, tc.binary), tc.args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()} // no TOLLGATE_* override
		out, _ := cmd.CombinedOutput()                                  // -h exits non-zero
		re := regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(tc.flag) + `\b.*\n.*default "?([^")]+)"?\)?`)
		m := re.FindSubmatch(out)
		require.NotNil(t, m, "%s: no default for -%s in:\n%s", tc.binary, tc.flag, out)
		require.Equal(t, tc.want, strings.TrimSpace(string(m[1])), "%s -%s", tc.binary, tc.flag)
	}
}

// TestTokenComparisonsAreConstantTime reads the code that checks the admin token, the
// internal secret and webhook signatures: each uses a constant-time comparison, and none
// compares a token, secret or signature with == or != (other than against "").
func TestTokenComparisonsAreConstantTime(t *testing.T) {
	repo := repoDir(t)
	secretish := regexp.MustCompile(`(?i)token|secret|sig|mac|want|got|sum`)
	limit := regexp.MustCompile(`(Max|Min)$`) // SignaturesMax is a count, not a secret
	for file, primitive := range map[string]string{
		"ledgerd/internal/jsonapi/jsonapi.go": "subtle.ConstantTimeCompare", // admin API and internal API
		"analytics/internal/api/api.go":       "subtle.ConstantTimeCompare", // finance and usage queries
		"ledgerd/internal/webhook/webhook.go": "hmac.Equal",                 // payment webhook signatures
	} {
		src, err := os.ReadFile(filepath.Join(repo, file))
		require.NoError(t, err)
		require.Contains(t, string(src), primitive, file)
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, file, src, 0)
		require.NoError(t, err)
		ast.Inspect(f, func(n ast.Node) bool {
			be, ok := n.(*ast.BinaryExpr)
			if !ok || (be.Op != token.EQL && be.Op != token.NEQ) {
				return true
			}
			if isEmptyOrNil(be.X) || isEmptyOrNil(be.Y) {
				return true
			}
			for _, side := range []ast.Expr{be.X, be.Y} {
				name := exprName(side)
				if name != "" && secretish.MatchString(name) && !limit.MatchString(name) {
					t.Errorf("%s: %s compares %s with %s", file, fset.Position(be.Pos()), name, be.Op)
				}
			}
			return true
		})
	}
}

func isEmptyOrNil(e ast.Expr) bool {
	if bl, ok := e.(*ast.BasicLit); ok {
		return bl.Value == `""` || bl.Kind == token.INT
	}
	id, ok := e.(*ast.Ident)
	return ok && id.Name == "nil"
}

// exprName is the identifier or selector (a.b.c) of e, or "" for anything else.
func exprName(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.SelectorExpr:
		if p := exprName(x.X); p != "" {
			return p + "." + x.Sel.Name
		}
		return x.Sel.Name
	}
	return ""
}
