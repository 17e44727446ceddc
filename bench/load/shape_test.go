package load

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/pkg/usage"
)

func TestParseDirective(t *testing.T) {
	tok, extra, err := ParseDirective("input=200 output=120 cache_read=900 thinking=40 events=20 tps=100")
	require.NoError(t, err)
	require.Equal(t, usage.Tokens{Input: 200, Output: 120, CacheRead: 900, Thinking: 40}, tok)
	require.Equal(t, "events=20 tps=100", extra)

	for _, bad := range []string{"input", "input=x", "input=-1", "output=1 output=2", "output=1 thinking=2", "input=2000000000"} {
		_, _, err := ParseDirective(bad)
		require.Error(t, err, bad)
	}
}

func TestShapeDirectiveAndBody(t *testing.T) {
	s := Shape{Name: "s", Model: "claude-sonnet-4-5", Stream: true,
		Tokens: usage.Tokens{Input: 200, Output: 120, CacheRead: 900, CacheWrite1h: 3, WebSearchRequests: 1},
		Extra:  "events=20"}
	d := s.Directive()
	require.Equal(t, "mock: input=200 output=120 cache_write_5m=0 cache_write_1h=3 cache_read=900 thinking=0 web_search=1 events=20", d)
	tok, extra, err := ParseDirective(strings.TrimPrefix(d, "mock:"))
	require.NoError(t, err)
	require.Equal(t, s.Tokens, tok)
	require.Equal(t, s.Extra, extra)

	var body struct {
		Model     string `json:"model"`
		MaxTokens int64  `json:"max_tokens"`
		Stream    bool   `json:"stream"`
		Messages  []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
	}
	require.NoError(t, json.Unmarshal(s.Body(), &body))
	require.Equal(t, "claude-sonnet-4-5", body.Model)
	require.True(t, body.Stream)
	require.GreaterOrEqual(t, body.MaxTokens, s.Tokens.Output)
	require.Len(t, body.Messages, 1)
	require.Equal(t, "user", body.Messages[0].Role)
	// Padded to the input side (200 + 3 + 900 tokens) and ending with the directive line.
	require.GreaterOrEqual(t, len(body.Messages[0].Content), 1103)
	require.True(t, strings.HasSuffix(body.Messages[0].Content, "\n"+d))
}

func TestShapeTable(t *testing.T) {
	shapes := []Shape{{Weight: 3}, {Weight: 1}}
	require.Equal(t, []int{0, 0, 1, 0}, shapeTable(shapes))
	require.Equal(t, []int{0, 1}, shapeTable([]Shape{{Weight: 50}, {Weight: 50}}))
	require.Equal(t, []int{0}, shapeTable([]Shape{{}}))
	tab := shapeTable([]Shape{{Weight: 70}, {Weight: 30}})
	require.Len(t, tab, 10)
	count := [2]int{}
	for _, i := range tab {
		count[i]++
	}
	require.Equal(t, [2]int{7, 3}, count)
}

func TestCreditsUSD(t *testing.T) {
	require.Equal(t, "5.000", CreditsUSD(1000))
	require.Equal(t, "0.005", CreditsUSD(1))
	require.Equal(t, "500.000", CreditsUSD(100_000))
	require.Equal(t, "0.045", CreditsUSD(9))
}

func TestKeyringInterleavesAccounts(t *testing.T) {
	k := Keyring{Accounts: []Account{{ID: "a", Keys: []string{"a1", "a2"}}, {ID: "b", Keys: []string{"b1"}}}}
	require.Equal(t, []Key{{"a1", "a"}, {"b1", "b"}, {"a2", "a"}}, k.Keys())
}

func TestTargetAddrLoopbackOnly(t *testing.T) {
	for u, want := range map[string]string{
		"http://127.0.0.1:8080": "127.0.0.1:8080",
		"http://localhost:80":   "localhost:80",
		"http://[::1]:9":        "[::1]:9",
		"http://127.0.0.2":      "127.0.0.2:80",
	} {
		got, err := targetAddr(u)
		require.NoError(t, err, u)
		require.Equal(t, want, got)
	}
	for _, u := range []string{"http://10.0.0.1:80", "http://example.com", "https://127.0.0.1", "127.0.0.1:80", ""} {
		_, err := targetAddr(u)
		require.Error(t, err, u)
	}
}

func TestSummaryAndSpectrum(t *testing.T) {
	h := NewHistogram()
	for v := int64(1); v <= 1000; v++ {
		require.NoError(t, h.RecordValue(v))
	}
	s := Summarize(h)
	require.Equal(t, int64(1000), s.Count)
	require.Equal(t, int64(500), s.P50Us)
	require.Equal(t, int64(900), s.P90Us)
	require.Equal(t, int64(990), s.P99Us)
	require.Equal(t, int64(999), s.P999Us)
	require.Equal(t, int64(1000), s.MaxUs)
	require.Equal(t, Summary{}, Summarize(NewHistogram()))

	sp := Spectrum(h)
	require.Equal(t, Point{0, 1}, sp[0])
	require.Equal(t, Point{100, 1000}, sp[len(sp)-1])
	for _, p := range sp {
		require.NotEqual(t, 99.99, p.Percentile, "1,000 values cannot resolve p99.99")
	}
	require.Nil(t, Spectrum(NewHistogram()))
}
