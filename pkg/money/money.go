// Package money holds Tollgate's money units and the exact conversions between integer amounts
// and the decimal strings people read and type.
//
// Every amount is an int64 in a micro unit: micro-credits (µcr, 1 credit = 1,000,000 µcr) for
// what customers are charged, micro-dollars (µUSD) for what was paid and what the upstream
// costs. No floating point is used anywhere: a float cannot hold 0.1 exactly, and a ledger that
// rounds differently on two machines no longer balances.
package money

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

const (
	// MicrocreditsPerCredit is the number of micro-credits in one credit.
	MicrocreditsPerCredit = 1_000_000
	// MicroUSDPerUSD is the number of micro-dollars in one dollar.
	MicroUSDPerUSD = 1_000_000
	// MicroUSDPerCredit is the base price of one credit: $0.005 (1,000 credits = $5).
	MicroUSDPerCredit = 5_000
	// MicrocreditsPerUSD is what one dollar buys at the base price: 200 credits.
	MicrocreditsPerUSD = MicroUSDPerUSD * MicrocreditsPerCredit / MicroUSDPerCredit

	// decimals is the number of fractional digits of both micro units.
	decimals = 6
)

// ErrSyntax is wrapped by every parse failure.
var ErrSyntax = errors.New("invalid decimal amount")

// FormatCredits renders micro-credits as credits with exactly 6 decimals: 12345678 →
// "12.345678", -5 → "-0.000005".
func FormatCredits(micro int64) string {
	var buf [24]byte
	return string(appendFixed(buf[:0], micro))
}

// ParseCredits parses a decimal amount of credits ("12.345678", "-3", "0.5") into
// micro-credits. A leading '-' is allowed; at most 6 decimals; no spaces, '+', exponent or
// grouping. It is the inverse of FormatCredits.
func ParseCredits(s string) (int64, error) {
	v, err := parseDecimal(s, true)
	if err != nil {
		return 0, fmt.Errorf("parse credits %q: %w", s, err)
	}
	return v, nil
}

// ParseUSD parses a non-negative decimal dollar amount ("5.00", "0.015", "0") into
// micro-dollars. At most 6 decimals; no sign, spaces, '$', exponent or grouping.
func ParseUSD(s string) (int64, error) {
	v, err := parseDecimal(s, false)
	if err != nil {
		return 0, fmt.Errorf("parse usd %q: %w", s, err)
	}
	return v, nil
}

// FormatUSD renders micro-dollars as dollars with at least 2 decimals and as many more as the
// amount needs to be exact: 5000000 → "5.00", 15000 → "0.015", 1 → "0.000001".
func FormatUSD(microUSD int64) string {
	var buf [24]byte
	b := appendFixed(buf[:0], microUSD)
	// Trim trailing zeros but keep at least two decimals; the fixed form always has a '.'
	// followed by 6 digits, so len(b)-4 is the last position we may cut back to.
	for n := 0; n < decimals-2 && b[len(b)-1] == '0'; n++ {
		b = b[:len(b)-1]
	}
	return string(b)
}

// appendFixed appends v / 10^6 with exactly 6 decimals. It works on the magnitude as uint64 so
// that math.MinInt64 renders correctly.
func appendFixed(b []byte, v int64) []byte {
	mag := uint64(v)
	if v < 0 {
		b = append(b, '-')
		mag = -mag
	}
	const pow = 1_000_000 // 10^decimals
	b = strconv.AppendUint(b, mag/pow, 10)
	b = append(b, '.')
	frac := mag % pow
	var digits [decimals]byte
	for i := decimals - 1; i >= 0; i-- {
		digits[i] = byte('0' + frac%10)
		frac /= 10
	}
	return append(b, digits[:]...)
}

// parseDecimal parses [-]digits[.digits] into an integer scaled by 10^6, exactly, rejecting
// anything it cannot represent exactly.
func parseDecimal(s string, allowNeg bool) (int64, error) {
	neg := false
	if len(s) > 0 && s[0] == '-' {
		if !allowNeg {
			return 0, fmt.Errorf("%w: negative", ErrSyntax)
		}
		neg = true
		s = s[1:]
	}
	intPart, fracPart, hasDot := s, "", false
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			intPart, fracPart, hasDot = s[:i], s[i+1:], true
			break
		}
	}
	if intPart == "" {
		return 0, fmt.Errorf("%w: no digits before the point", ErrSyntax)
	}
	if hasDot && fracPart == "" {
		return 0, fmt.Errorf("%w: no digits after the point", ErrSyntax)
	}
	if len(fracPart) > decimals {
		return 0, fmt.Errorf("%w: more than %d decimals", ErrSyntax, decimals)
	}
	// Accumulate as a uint64 magnitude; the limit is MaxInt64 for positives and
	// MaxInt64+1 for negatives, so "-9223372036854.775808" parses to MinInt64.
	limit := uint64(math.MaxInt64)
	if neg {
		limit++
	}
	var mag uint64
	for i := 0; i < len(intPart)+decimals; i++ {
		var c byte = '0'
		switch {
		case i < len(intPart):
			c = intPart[i]
		case i-len(intPart) < len(fracPart):
			c = fracPart[i-len(intPart)]
		}
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: unexpected character %q", ErrSyntax, c)
		}
		d := uint64(c - '0')
		if mag > (limit-d)/10 {
			return 0, fmt.Errorf("%w: out of range", ErrSyntax)
		}
		mag = mag*10 + d
	}
	if neg {
		return int64(-mag), nil
	}
	return int64(mag), nil
}
