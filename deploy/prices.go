package deploy

import _ "embed"

// Prices is the default price table (prices.yaml), parsed and validated by pkg/pricing.Load.
// Binaries use it when no price file is configured.
//
//go:embed prices.yaml
var Prices []byte
