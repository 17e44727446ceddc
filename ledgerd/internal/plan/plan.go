// Package plan reads the credit plan catalog (deploy/plans.yaml).
package plan

import (
	"bytes"
	"errors"
	"fmt"

	"gopkg.in/yaml.v3"

	"tollgate/ledgerd/internal/ledger"
)

// Plan is one credit plan.
type Plan struct {
	ID       string
	Credits  int64 // whole credits
	MicroUSD int64 // price
}

// Catalog is an immutable set of plans, safe for concurrent use.
type Catalog struct {
	byID map[string]Plan
}

// MaxCredits bounds a plan's credits so its micro-credits fit comfortably in int64.
const MaxCredits = 1_000_000_000

type file struct {
	Plans []struct {
		ID       string `yaml:"id"`
		Credits  int64  `yaml:"credits"`
		PriceUSD string `yaml:"price_usd"`
	} `yaml:"plans"`
}

// Parse reads a plans file strictly: unknown keys, duplicate ids and bad amounts are errors.
func Parse(b []byte) (*Catalog, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decode plans: %w", err)
	}
	c := &Catalog{byID: make(map[string]Plan, len(f.Plans))}
	var errs []error
	for i, p := range f.Plans {
		at := fmt.Sprintf("plans[%d]", i)
		if p.ID == "" {
			errs = append(errs, fmt.Errorf("%s.id: empty", at))
		} else if _, dup := c.byID[p.ID]; dup {
			errs = append(errs, fmt.Errorf("%s.id: duplicate %q", at, p.ID))
		}
		if p.Credits <= 0 || p.Credits > MaxCredits {
			errs = append(errs, fmt.Errorf("%s.credits: %d not in 1..%d", at, p.Credits, MaxCredits))
		}
		usd, err := ledger.ParseUSD(p.PriceUSD)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.price_usd: %q: %w", at, p.PriceUSD, err))
		}
		c.byID[p.ID] = Plan{ID: p.ID, Credits: p.Credits, MicroUSD: usd}
	}
	if len(f.Plans) == 0 {
		errs = append(errs, errors.New("plans: none defined"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// Lookup returns the plan with that id.
func (c *Catalog) Lookup(id string) (Plan, bool) {
	p, ok := c.byID[id]
	return p, ok
}
