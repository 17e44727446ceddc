package pricing_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/deploy"
	"tollgate/pkg/pricing"
	"tollgate/pkg/usage"
)

func load(t *testing.T, yaml string) *pricing.Table {
	t.Helper()
	tbl, err := pricing.Load([]byte(yaml))
	require.NoError(t, err, yaml)
	return tbl
}

const fullRates = `
      input: "3"
      output: "15"
      cache_write_5m: "3.75"
      cache_write_1h: "6"
      cache_read: "0.30"`

// tableYAML builds a one-model table ("test-model", alias "test-alias"). header goes at the
// top level, rates under usd_per_mtok (each line indented six spaces), model after the rates
// at model level (four spaces).
func tableYAML(header, rates, model string) string {
	return `version: "test-1"
` + header + `
fees:
  web_search_usd_per_1000: "10"
models:
  - id: test-model
    aliases: [test-alias]
    usd_per_mtok:` + rates + "\n" + model
}

func TestLoadValid(t *testing.T) {
	tbl := load(t, tableYAML("", fullRates, `    long_context:
      threshold_input_tokens: 1000
      usd_per_mtok:
        input: "6"
        output: "22.50"
        thinking: "30"
        cache_write_5m: "7.50"
        cache_write_1h: "12"
        cache_read: "0.60"
`))
	require.Equal(t, "test-1", tbl.Version())
	require.Equal(t, int64(3000), tbl.DiscountBps(), "discount defaults to 30%")
	m, ok := tbl.Lookup("test-alias", "")
	require.True(t, ok)
	require.Equal(t, pricing.Rates{
		Input: 420_000_000, Output: 2_100_000_000, CacheWrite5m: 525_000_000,
		CacheWrite1h: 840_000_000, CacheRead: 42_000_000, Thinking: 2_100_000_000,
	}, m.Public)
	require.Equal(t, pricing.Rates{
		Input: 3_000_000, Output: 15_000_000, CacheWrite5m: 3_750_000,
		CacheWrite1h: 6_000_000, CacheRead: 300_000, Thinking: 15_000_000,
	}, m.Upstream)
	require.Equal(t, &pricing.LongContext{
		ThresholdTokens: 1000,
		Public: pricing.Rates{
			Input: 840_000_000, Output: 3_150_000_000, CacheWrite5m: 1_050_000_000,
			CacheWrite1h: 1_680_000_000, CacheRead: 84_000_000, Thinking: 4_200_000_000,
		},
		Upstream: pricing.Rates{
			Input: 6_000_000, Output: 22_500_000, CacheWrite5m: 7_500_000,
			CacheWrite1h: 12_000_000, CacheRead: 600_000, Thinking: 30_000_000,
		},
	}, m.LongContext)

	// Unquoted YAML numbers are read from their text, never through a float.
	tbl = load(t, tableYAML("discount_bps: 0", `
      input: 0.1
      output: 0.3
      cache_write_5m: 0.7
      cache_write_1h: 1
      cache_read: 0.01`, ""))
	m, _ = tbl.Lookup("test-model", "")
	require.Equal(t, int64(20_000_000), m.Public.Input)
	require.Equal(t, int64(60_000_000), m.Public.Output)
	require.Equal(t, int64(140_000_000), m.Public.CacheWrite5m)
	require.Equal(t, int64(100_000), m.Upstream.Input)
	// The web search fee follows the table's discount: 0% off → 2 credits.
	require.Equal(t, int64(2_000_000), tbl.WebSearchFee())

	// Models() is a copy: changing it does not change the table.
	ms := tbl.Models()
	ms[0] = nil
	require.NotNil(t, tbl.Models()[0])
}

func TestLoadRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"empty", "", []string{"empty document"}},
		{"not a mapping", "- 1\n- 2\n", []string{"cannot unmarshal"}},
		{"unknown top-level field", tableYAML("discount: 3000", fullRates, ""), []string{"field discount not found"}},
		{"unknown model field", tableYAML("", fullRates, "    context_window: 200000\n"), []string{"field context_window not found"}},
		{"unknown rate field", tableYAML("", fullRates+"\n      cache_write: \"1\"", ""), []string{"field cache_write not found"}},
		{"missing rate", tableYAML("", `
      input: "3"
      output: "15"
      cache_write_5m: "3.75"
      cache_read: "0.30"`, ""), []string{"models[0] (test-model): usd_per_mtok: cache_write_1h: missing"}},
		{"bad explicit thinking", tableYAML("", fullRates+"\n      thinking: \"x\"", ""), []string{"usd_per_mtok: thinking:", "unexpected character"}},
		{"missing output", tableYAML("", `
      input: "3"
      cache_write_5m: "3.75"
      cache_write_1h: "6"
      cache_read: "0.30"`, ""), []string{"usd_per_mtok: output: missing"}},
		{"null rate", tableYAML("", strings.Replace(fullRates, `"0.30"`, "", 1), ""), []string{"test-model", "cache_read: missing"}},
		{"missing rates block", "version: v\nfees: {web_search_usd_per_1000: \"10\"}\nmodels:\n  - id: m\n", []string{"models[0] (m): usd_per_mtok: missing"}},
		{"duplicate alias", tableYAML("", fullRates, `  - id: other-model
    aliases: [other, test-alias]
    usd_per_mtok:`+fullRates+"\n"), []string{`models[1] (other-model): aliases[1]: "test-alias" already names model test-model`}},
		{"alias equals another id", tableYAML("", fullRates, `  - id: other-model
    aliases: [test-model]
    usd_per_mtok:`+fullRates+"\n"), []string{`models[1] (other-model): aliases[0]: "test-model" already names model test-model`}},
		{"duplicate id", tableYAML("", fullRates, `  - id: test-model
    usd_per_mtok:`+fullRates+"\n"), []string{`models[1] (test-model): id: "test-model" already names`}},
		{"empty id", tableYAML("", fullRates, `  - id: ""
    usd_per_mtok:`+fullRates+"\n"), []string{"models[1] (): id: empty"}},
		{"alias with space", strings.Replace(tableYAML("", fullRates, ""), "[test-alias]", `["test alias"]`, 1), []string{"aliases[0]", "not printable"}},
		{"not exact after discount", tableYAML("discount_bps: 3333", strings.Replace(fullRates, `"0.30"`, `"0.000001"`, 1), ""),
			[]string{"models[0] (test-model): usd_per_mtok: cache_read:", "not a whole number of micro-credits (133.340000 µcr)"}},
		{"more than 6 decimals", tableYAML("", strings.Replace(fullRates, `"3"`, `"3.0000001"`, 1), ""), []string{"usd_per_mtok: input:", "more than 6 decimals"}},
		{"negative price", tableYAML("", strings.Replace(fullRates, `"15"`, `"-15"`, 1), ""), []string{"usd_per_mtok: output:", "negative"}},
		{"float exponent", tableYAML("", strings.Replace(fullRates, `"15"`, `1.5e1`, 1), ""), []string{"output:", "unexpected character"}},
		{"price too large", tableYAML("", strings.Replace(fullRates, `"15"`, `"1000000.000001"`, 1), ""), []string{"output:", "sanity bound"}},
		{"overflowing price", tableYAML("", strings.Replace(fullRates, `"15"`, `"99999999999999999999"`, 1), ""), []string{"output:", "out of range"}},
		{"missing version", strings.Replace(tableYAML("", fullRates, ""), `version: "test-1"`, "", 1), []string{"version: empty"}},
		{"discount 100%", tableYAML("discount_bps: 10000", fullRates, ""), []string{"discount_bps: 10000 not in [0, 10000)"}},
		{"negative discount", tableYAML("discount_bps: -1", fullRates, ""), []string{"discount_bps: -1"}},
		{"missing fees", strings.Replace(tableYAML("", fullRates, ""), "fees:\n  web_search_usd_per_1000: \"10\"\n", "", 1), []string{"fees: missing"}},
		{"missing web search fee", strings.Replace(tableYAML("", fullRates, ""), "  web_search_usd_per_1000: \"10\"\n", "  {}\n", 1), []string{"fees.web_search_usd_per_1000: missing"}},
		{"no models", "version: v\nfees: {web_search_usd_per_1000: \"10\"}\nmodels: []\n", []string{"models: none"}},
		{"long context without threshold", tableYAML("", fullRates, "    long_context:\n      usd_per_mtok:"+strings.ReplaceAll(fullRates, "\n      ", "\n        ")+"\n"),
			[]string{"models[0] (test-model): long_context.threshold_input_tokens: missing"}},
		{"long context missing rate", tableYAML("", fullRates, "    long_context:\n      threshold_input_tokens: 200000\n      usd_per_mtok:\n        input: \"6\"\n"),
			[]string{"long_context.usd_per_mtok: output: missing", "long_context.usd_per_mtok: cache_read: missing"}},
		{"zero threshold", tableYAML("", fullRates, "    long_context:\n      threshold_input_tokens: 0\n      usd_per_mtok:"+strings.ReplaceAll(fullRates, "\n      ", "\n        ")+"\n"),
			[]string{"threshold_input_tokens: 0 not in"}},
		{"duplicate key", tableYAML("", fullRates+"\n      input: \"4\"", ""), []string{"already defined"}},
		{"two documents", tableYAML("", fullRates, "") + "---\nversion: x\n", []string{"more than one YAML document"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pricing.Load([]byte(tc.yaml))
			require.Error(t, err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

// TestLoadReportsEveryError checks that an operator sees all problems at once.
func TestLoadReportsEveryError(t *testing.T) {
	_, err := pricing.Load([]byte(`version: ""
discount_bps: 20000
fees: {}
models:
  - id: a
    usd_per_mtok: {input: "1", output: "1", cache_write_5m: "1", cache_write_1h: "1"}
  - id: b
    aliases: [a]
`))
	require.Error(t, err)
	for _, w := range []string{
		"version: empty", "discount_bps: 20000", "fees.web_search_usd_per_1000: missing",
		"models[0] (a): usd_per_mtok: cache_read: missing",
		`models[1] (b): aliases[0]: "a" already names model a`, "models[1] (b): usd_per_mtok: missing",
	} {
		require.Contains(t, err.Error(), w)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add(deploy.Prices)
	f.Add([]byte(tableYAML("", fullRates, "")))
	f.Add([]byte(tableYAML("discount_bps: 0", fullRates, "    long_context:\n      threshold_input_tokens: 1\n      usd_per_mtok:"+strings.ReplaceAll(fullRates, "\n      ", "\n        ")+"\n")))
	f.Add([]byte("version: v\nmodels: [{id: a, aliases: [b, a]}]\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tbl, err := pricing.Load(data)
		if err != nil {
			require.Nil(t, tbl)
			return
		}
		// A table that loads is usable: every model is found by every name, prices never go
		// negative, and a hold at the dearest rates covers the charge.
		require.NotEmpty(t, tbl.Version())
		require.NotEmpty(t, tbl.Models())
		require.GreaterOrEqual(t, tbl.WebSearchFee(), int64(0))
		tok := usage.Tokens{Input: 1234, Output: 567, Thinking: 89, CacheWrite5m: 10, CacheWrite1h: 11, CacheRead: 1 << 20, WebSearchRequests: 2}
		for _, m := range tbl.Models() {
			for _, name := range append([]string{m.ID}, m.Aliases...) {
				got, ok := tbl.Lookup(name, "")
				require.True(t, ok)
				require.Same(t, m, got)
			}
			for _, o := range []pricing.Options{{}, {Batch: true}, {LongContextBeta: true}} {
				c := tbl.Cost(m, tok, o)
				require.GreaterOrEqual(t, c.Microcredits, int64(0))
				require.GreaterOrEqual(t, c.UpstreamMicroUSD, int64(0))
				hold := pricing.HoldCost(m.MaxInputRate(o), tok.Input+tok.CacheWrite5m+tok.CacheWrite1h+tok.CacheRead) +
					pricing.HoldCost(m.OutputRate(o), tok.Output) +
					tok.WebSearchRequests*tbl.WebSearchFee()
				require.GreaterOrEqual(t, hold, c.Microcredits)
			}
		}
	})
}
