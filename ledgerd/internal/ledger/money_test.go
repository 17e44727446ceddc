package ledger_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/ledgerd/internal/ledger"
)

func TestParseFormatUSD(t *testing.T) {
	for _, tc := range []struct {
		in    string
		micro int64
		out   string
		bad   bool
	}{
		{in: "5.00", micro: 5_000_000, out: "5.00"},
		{in: "0.015", micro: 15_000, out: "0.015"},
		{in: "0", micro: 0, out: "0.00"},
		{in: "1250", micro: 1_250_000_000, out: "1250.00"},
		{in: "0.000001", micro: 1, out: "0.000001"},
		{in: "999999999999.999999", micro: 999_999_999_999_999_999, out: "999999999999.999999"},
		{in: "", bad: true},
		{in: ".5", bad: true},
		{in: "5.", bad: true},
		{in: "-1", bad: true},
		{in: "+1", bad: true},
		{in: "1e3", bad: true},
		{in: "1.0000001", bad: true},
		{in: "1 ", bad: true},
		{in: "1,000", bad: true},
		{in: "1000000000000", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ledger.ParseUSD(tc.in)
			if tc.bad {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.micro, got)
			require.Equal(t, tc.out, ledger.FormatUSD(got))
		})
	}
	require.Equal(t, "-1.500000", ledger.FormatCredits(-1_500_000))
	require.Equal(t, "0.000001", ledger.FormatCredits(1))
}

func FuzzParseUSD(f *testing.F) {
	for _, s := range []string{"5.00", "0", "0.015", "999999999999.999999", ".", "1e5", "-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ledger.ParseUSD(s)
		if err != nil {
			return
		}
		require.GreaterOrEqual(t, v, int64(0))
		back, err := ledger.ParseUSD(ledger.FormatUSD(v))
		require.NoError(t, err)
		require.Equal(t, v, back)
	})
}
