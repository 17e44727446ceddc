package ledger

import (
	"errors"
	"strconv"
	"strings"
)

// MaxUSDIntegerDigits bounds a parsed USD amount below $10^12, so its micro-dollars fit int64
// with room to add many of them.
const MaxUSDIntegerDigits = 12

// ParseUSD parses a non-negative decimal USD string ("5.00", "0.015", "0") into micro-dollars.
// It accepts digits with at most one point and at most 6 fraction digits; no sign, exponent,
// spaces or thousands separators, since a money field is no place for guessing.
func ParseUSD(s string) (int64, error) {
	intPart, frac, hasPoint := strings.Cut(s, ".")
	if intPart == "" || (hasPoint && frac == "") {
		return 0, errors.New("want a decimal like \"5.00\"")
	}
	if len(intPart) > MaxUSDIntegerDigits {
		return 0, errors.New("amount too large")
	}
	if len(frac) > 6 {
		return 0, errors.New("more than 6 decimal places")
	}
	for _, part := range []string{intPart, frac} {
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return 0, errors.New("want a decimal like \"5.00\"")
			}
		}
	}
	whole, err := strconv.ParseInt(intPart, 10, 64)
	if err != nil {
		return 0, errors.New("want a decimal like \"5.00\"")
	}
	micro := int64(0)
	if frac != "" {
		micro, _ = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
	}
	return whole*MicroUSDPerUSD + micro, nil
}

// FormatUSD renders micro-dollars with at least 2 and at most 6 decimals: "5.00", "0.015".
func FormatUSD(micro int64) string {
	s := formatMicro(micro)
	// Trim trailing zeros of the 6 decimals down to 2.
	for strings.HasSuffix(s, "0") && len(s)-strings.IndexByte(s, '.') > 3 {
		s = s[:len(s)-1]
	}
	return s
}

// FormatCredits renders micro-credits as credits with 6 decimals: "1000.000000".
func FormatCredits(micro int64) string { return formatMicro(micro) }

func formatMicro(micro int64) string {
	neg := micro < 0
	u := uint64(micro)
	if neg {
		u = -u
	}
	frac := strconv.FormatUint(u%1_000_000, 10)
	s := strconv.FormatUint(u/1_000_000, 10) + "." + strings.Repeat("0", 6-len(frac)) + frac
	if neg {
		s = "-" + s
	}
	return s
}
