package deploy

import _ "embed"

// Plans is plans.yaml: the credit plans ledgerd sells by default.
//
//go:embed plans.yaml
var Plans []byte
