package pricing

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/big"

	"gopkg.in/yaml.v3"

	"tollgate/deploy"
	"tollgate/pkg/money"
)

const (
	// defaultDiscountBps applies when the file has no discount_bps (DESIGN §2: 30%).
	defaultDiscountBps = 3000
	bpsPerUnit         = 10_000
	// maxListMicroUSD bounds every list price (USD 1,000,000 per MTok or per 1,000 requests).
	// It is far above any real price and keeps every rate below 2^58, which the 128-bit
	// arithmetic in Cost relies on.
	maxListMicroUSD = 1_000_000 * money.MicroUSDPerUSD
	// maxThresholdTokens bounds long_context.threshold_input_tokens (2^40).
	maxThresholdTokens = 1 << 40
	// maxNameBytes bounds model ids, aliases and the version, which land in usage records.
	maxNameBytes = 128
)

// The file format. Pointers tell "absent" from "zero" so a missing rate is an error rather
// than a free category.
type fileTable struct {
	Version     string      `yaml:"version"`
	DiscountBps *int64      `yaml:"discount_bps"`
	Fees        *fileFees   `yaml:"fees"`
	Models      []fileModel `yaml:"models"`
}

type fileFees struct {
	WebSearchUSDPer1000 *string `yaml:"web_search_usd_per_1000"`
}

type fileModel struct {
	ID          string     `yaml:"id"`
	Aliases     []string   `yaml:"aliases"`
	USDPerMTok  *fileRates `yaml:"usd_per_mtok"`
	LongContext *fileLong  `yaml:"long_context"`
}

type fileLong struct {
	ThresholdInputTokens *int64     `yaml:"threshold_input_tokens"`
	USDPerMTok           *fileRates `yaml:"usd_per_mtok"`
}

type fileRates struct {
	Input        *string `yaml:"input"`
	Output       *string `yaml:"output"`
	CacheWrite5m *string `yaml:"cache_write_5m"`
	CacheWrite1h *string `yaml:"cache_write_1h"`
	CacheRead    *string `yaml:"cache_read"`
	Thinking     *string `yaml:"thinking"` // optional: defaults to output
}

// Default loads the table embedded in the binary (deploy/prices.yaml).
func Default() (*Table, error) {
	return Load(deploy.Prices)
}

// Load parses and validates a price table. It is strict: unknown fields, a missing rate, a
// duplicate id or alias, a price with more than 6 decimals, or a public price that is not a
// whole number of micro-credits per MTok after the discount all fail the load, with every
// problem reported and each naming its model and field.
func Load(data []byte) (*Table, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f fileTable
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("load price table: empty document")
		}
		return nil, fmt.Errorf("load price table: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("load price table: more than one YAML document")
	}
	t, err := build(&f)
	if err != nil {
		return nil, fmt.Errorf("load price table: %w", err)
	}
	return t, nil
}

// build validates the parsed file and converts it, collecting every error.
func build(f *fileTable) (*Table, error) {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	t := &Table{version: f.Version, discountBps: defaultDiscountBps, byName: map[string]*Model{}}
	if err := checkName(f.Version); err != nil {
		fail("version: %w", err)
	}
	if f.DiscountBps != nil {
		t.discountBps = *f.DiscountBps
	}
	if t.discountBps < 0 || t.discountBps >= bpsPerUnit {
		fail("discount_bps: %d not in [0, %d)", t.discountBps, bpsPerUnit)
		t.discountBps = 0 // keep converting so every other error is reported too
	}

	switch {
	case f.Fees == nil:
		fail("fees: missing")
	case f.Fees.WebSearchUSDPer1000 == nil:
		fail("fees.web_search_usd_per_1000: missing")
	default:
		// Per 1,000 requests → per million requests, so fees join the per-million sum.
		list, err := parseList(*f.Fees.WebSearchUSDPer1000)
		if err != nil {
			fail("fees.web_search_usd_per_1000: %w", err)
			break
		}
		t.webSearchUpstream = list * 1000
		t.webSearchPublic, err = publicRate(t.webSearchUpstream, t.discountBps)
		if err != nil {
			fail("fees.web_search_usd_per_1000: %w", err)
		}
	}

	if len(f.Models) == 0 {
		fail("models: none")
	}
	owner := map[string]string{} // name → id of the model that claimed it
	for i := range f.Models {
		fm := &f.Models[i]
		where := fmt.Sprintf("models[%d] (%s)", i, fm.ID)
		m := &Model{ID: fm.ID, Aliases: append([]string(nil), fm.Aliases...)}
		for j, name := range append([]string{fm.ID}, fm.Aliases...) {
			field := "id"
			if j > 0 {
				field = fmt.Sprintf("aliases[%d]", j-1)
			}
			if err := checkName(name); err != nil {
				fail("%s: %s: %w", where, field, err)
				continue
			}
			if prev, dup := owner[name]; dup {
				fail("%s: %s: %q already names model %s", where, field, name, prev)
				continue
			}
			owner[name] = fm.ID
			t.byName[name] = m
		}
		var rateErrs []error
		m.Public, m.Upstream, rateErrs = convertRates(fm.USDPerMTok, t.discountBps)
		for _, err := range rateErrs {
			fail("%s: usd_per_mtok: %w", where, err)
		}
		if fl := fm.LongContext; fl != nil {
			lc := &LongContext{}
			if fl.ThresholdInputTokens == nil {
				fail("%s: long_context.threshold_input_tokens: missing", where)
			} else if n := *fl.ThresholdInputTokens; n <= 0 || n > maxThresholdTokens {
				fail("%s: long_context.threshold_input_tokens: %d not in [1, %d]", where, n, int64(maxThresholdTokens))
			} else {
				lc.ThresholdTokens = n
			}
			lc.Public, lc.Upstream, rateErrs = convertRates(fl.USDPerMTok, t.discountBps)
			for _, err := range rateErrs {
				fail("%s: long_context.usd_per_mtok: %w", where, err)
			}
			m.LongContext = lc
		}
		t.models = append(t.models, m)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

// convertRates turns a block of list prices into public (µcr/MTok) and upstream (µUSD/MTok)
// rates, with one error per bad field. Thinking defaults to output; every other rate is
// required.
func convertRates(fr *fileRates, discountBps int64) (public, upstream Rates, errs []error) {
	if fr == nil {
		return Rates{}, Rates{}, []error{errors.New("missing")}
	}
	thinking, thinkingDefaulted := fr.Thinking, fr.Thinking == nil
	if thinkingDefaulted {
		thinking = fr.Output
	}
	for _, c := range []struct {
		field    string
		in       *string
		pub, ups *int64
	}{
		{"input", fr.Input, &public.Input, &upstream.Input},
		{"output", fr.Output, &public.Output, &upstream.Output},
		{"cache_write_5m", fr.CacheWrite5m, &public.CacheWrite5m, &upstream.CacheWrite5m},
		{"cache_write_1h", fr.CacheWrite1h, &public.CacheWrite1h, &upstream.CacheWrite1h},
		{"cache_read", fr.CacheRead, &public.CacheRead, &upstream.CacheRead},
		{"thinking", thinking, &public.Thinking, &upstream.Thinking},
	} {
		// A defaulted thinking rate is the output rate: its problems are output's, reported once.
		report := c.field != "thinking" || !thinkingDefaulted
		if c.in == nil {
			if report {
				errs = append(errs, fmt.Errorf("%s: missing", c.field))
			}
			continue
		}
		list, err := parseList(*c.in)
		if err == nil {
			*c.ups = list
			*c.pub, err = publicRate(list, discountBps)
		}
		if err != nil && report {
			errs = append(errs, fmt.Errorf("%s: %w", c.field, err))
		}
	}
	return public, upstream, errs
}

// parseList parses a list price (USD, at most 6 decimals) into µUSD, within bounds.
func parseList(s string) (int64, error) {
	v, err := money.ParseUSD(s)
	if err != nil {
		return 0, err
	}
	if v > maxListMicroUSD {
		return 0, fmt.Errorf("price %q above the sanity bound %s", s, money.FormatUSD(maxListMicroUSD))
	}
	return v, nil
}

// publicRate converts a list rate in µUSD (per million units) to the public rate in µcr (per
// million units): list × (1 − discount) × 200 µcr/µUSD. It must be exact: a rate that is not
// a whole number of µcr would have to be rounded per category, which the single-rounding rule
// forbids. Load time only, so math/big keeps it obviously exact.
func publicRate(listMicroUSD, discountBps int64) (int64, error) {
	num := big.NewInt(listMicroUSD)
	num.Mul(num, big.NewInt(bpsPerUnit-discountBps))
	num.Mul(num, big.NewInt(money.MicrocreditsPerUSD))
	den := big.NewInt(money.MicroUSDPerUSD * bpsPerUnit)
	q, r := new(big.Int).QuoRem(num, den, new(big.Int))
	if r.Sign() != 0 {
		return 0, fmt.Errorf("list %s USD less %d bps is not a whole number of micro-credits (%s µcr)",
			money.FormatUSD(listMicroUSD), discountBps, new(big.Rat).SetFrac(num, den).FloatString(6))
	}
	return q.Int64(), nil // bounded by maxListMicroUSD*1000 × 200: fits
}

// checkName accepts the ids, aliases and versions that can travel safely in headers, records
// and ClickHouse: 1..128 printable ASCII bytes without spaces.
func checkName(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > maxNameBytes {
		return fmt.Errorf("longer than %d bytes", maxNameBytes)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return fmt.Errorf("%q: byte %d is not printable ASCII", s, i)
		}
	}
	return nil
}
