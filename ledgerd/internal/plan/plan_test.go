package plan_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/deploy"
	"tollgate/ledgerd/internal/plan"
)

func TestEmbeddedPlans(t *testing.T) {
	c, err := plan.Parse(deploy.Plans)
	require.NoError(t, err)
	for _, want := range []plan.Plan{
		{"credits_1k", 1000, 5_000_000},
		{"credits_10k", 10_000, 50_000_000},
		{"credits_105k", 105_000, 500_000_000},
		{"credits_275k", 275_000, 1_250_000_000},
	} {
		got, ok := c.Lookup(want.ID)
		require.True(t, ok, want.ID)
		require.Equal(t, want, got)
	}
	_, ok := c.Lookup("credits_2k")
	require.False(t, ok)
}

func TestParseRejects(t *testing.T) {
	for name, src := range map[string]string{
		"unknown key": "plans:\n  - id: a\n    credits: 1\n    price_usd: \"1\"\n    color: red\n",
		"duplicate":   "plans:\n  - {id: a, credits: 1, price_usd: \"1\"}\n  - {id: a, credits: 2, price_usd: \"2\"}\n",
		"bad price":   "plans:\n  - {id: a, credits: 1, price_usd: \"1.2.3\"}\n",
		"no credits":  "plans:\n  - {id: a, credits: 0, price_usd: \"1\"}\n",
		"empty":       "plans: []\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := plan.Parse([]byte(src))
			require.Error(t, err)
		})
	}
}
