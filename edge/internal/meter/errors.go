package meter

import "errors"

// ErrMalformed is wrapped when an upstream JSON body is not valid JSON. The Result returned
// with it holds whatever could be read and is never Complete.
var ErrMalformed = errors.New("malformed upstream JSON")
