package money_test

import (
	"errors"
	"math"
	"math/big"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/pkg/money"
)

func TestUnits(t *testing.T) {
	// 1,000 credits = $5.
	require.Equal(t, int64(5_000_000), int64(1000*money.MicroUSDPerCredit))
	require.Equal(t, int64(200_000_000), int64(money.MicrocreditsPerUSD))
}

func TestFormatCredits(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   int64
		want string
	}{
		{"zero", 0, "0.000000"},
		{"one micro", 1, "0.000001"},
		{"fraction", 12_345_678, "12.345678"},
		{"whole", 1000 * money.MicrocreditsPerCredit, "1000.000000"},
		{"negative", -5, "-0.000005"},
		{"negative whole", -2_500_000, "-2.500000"},
		{"max", math.MaxInt64, "9223372036854.775807"},
		{"min", math.MinInt64, "-9223372036854.775808"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, money.FormatCredits(tc.in))
		})
	}
}

func TestFormatUSD(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   int64
		want string
	}{
		{"zero", 0, "0.00"},
		{"five dollars", 5_000_000, "5.00"},
		{"cents", 1_250_000_000, "1250.00"},
		{"one decimal", 1_500_000, "1.50"},
		{"three decimals", 15_000, "0.015"},
		{"one micro", 1, "0.000001"},
		{"odd", 4_761_905, "4.761905"},
		{"negative", -15_000, "-0.015"},
		{"max", math.MaxInt64, "9223372036854.775807"},
		{"min", math.MinInt64, "-9223372036854.775808"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, money.FormatUSD(tc.in))
		})
	}
}

func TestParseUSD(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"0.0", 0},
		{"5", 5_000_000},
		{"5.00", 5_000_000},
		{"0.015", 15_000},
		{"0.000001", 1},
		{"1250.00", 1_250_000_000},
		{"007.5", 7_500_000},
		{"9223372036854.775807", math.MaxInt64},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := money.ParseUSD(tc.in)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	for _, bad := range []string{
		"", "-", "-1", "-0", "+1", ".5", "5.", ".", "1.0000001", "0.0000000",
		" 1", "1 ", "1,000", "1e3", "$5", "0x10", "1.2.3", "abc", "5.0a", "١",
		"9223372036854.775808", "99999999999999999999", "NaN", "Inf",
	} {
		t.Run("bad "+bad, func(t *testing.T) {
			_, err := money.ParseUSD(bad)
			require.Error(t, err)
			require.True(t, errors.Is(err, money.ErrSyntax))
		})
	}
}

func TestParseCredits(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"-0", 0},
		{"12.345678", 12_345_678},
		{"-0.000005", -5},
		{"1000", 1_000_000_000},
		{"-9223372036854.775808", math.MinInt64},
		{"9223372036854.775807", math.MaxInt64},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := money.ParseCredits(tc.in)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	for _, bad := range []string{
		"", "-", "--1", "+1", "1.", "-.5", "0.0000001", "9223372036854.775808",
		"-9223372036854.775809", "1_000", " 1",
	} {
		t.Run("bad "+bad, func(t *testing.T) {
			_, err := money.ParseCredits(bad)
			require.ErrorIs(t, err, money.ErrSyntax)
		})
	}
}

// refParse is an independent reference: math/big's exact rational parser, restricted to the
// grammar the package documents.
func refParse(s string, allowNeg bool) (int64, bool) {
	body := strings.TrimPrefix(s, "-")
	if body != s && !allowNeg {
		return 0, false
	}
	intPart, frac, hasDot := strings.Cut(body, ".")
	if intPart == "" || (hasDot && frac == "") || len(frac) > 6 {
		return 0, false
	}
	for _, c := range intPart + frac {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return 0, false
	}
	r.Mul(r, big.NewRat(1_000_000, 1))
	if !r.IsInt() || !r.Num().IsInt64() {
		return 0, false
	}
	return r.Num().Int64(), true
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0", "5.00", "0.015", "-12.345678", "9223372036854.775807",
		"-9223372036854.775808", "1.0000001", "1e3", ".5", "5.", "007"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Credits: agree with the reference, and round-trip through FormatCredits.
		v, err := money.ParseCredits(s)
		want, ok := refParse(s, true)
		require.Equal(t, ok, err == nil, "ParseCredits(%q) err=%v", s, err)
		if err == nil {
			require.Equal(t, want, v)
			back, err := money.ParseCredits(money.FormatCredits(v))
			require.NoError(t, err)
			require.Equal(t, v, back)
		}

		// USD: non-negative only; round-trips through FormatUSD.
		u, err := money.ParseUSD(s)
		want, ok = refParse(s, false)
		require.Equal(t, ok, err == nil, "ParseUSD(%q) err=%v", s, err)
		if err == nil {
			require.Equal(t, want, u)
			back, err := money.ParseUSD(money.FormatUSD(u))
			require.NoError(t, err)
			require.Equal(t, u, back)
		}
	})
}

func FuzzFormat(f *testing.F) {
	for _, v := range []int64{0, 1, -1, 15_000, math.MaxInt64, math.MinInt64} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v int64) {
		back, err := money.ParseCredits(money.FormatCredits(v))
		require.NoError(t, err)
		require.Equal(t, v, back)
		if v >= 0 {
			u, err := money.ParseUSD(money.FormatUSD(v))
			require.NoError(t, err)
			require.Equal(t, v, u)
		}
	})
}
