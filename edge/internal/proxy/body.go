package proxy

import (
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"

	"tollgate/edge/internal/apierr"
)

// maxTokensMax bounds max_tokens: far above any model's limit (the upstream checks the real
// one), low enough that a hold can never overflow.
const maxTokensMax = 1 << 31

// messagesRequest is what admission needs from a Messages body. model aliases the body: it
// must not outlive the request handler.
type messagesRequest struct {
	model     string
	maxTokens int64
	stream    bool
}

// Parse errors: fixed messages so a flood of bad bodies allocates nothing.
var (
	errEmptyBody        = apierr.Invalid("request body is empty")
	errMalformedJSON    = apierr.Invalid("There was an error parsing the body of your request: malformed JSON")
	errInvalidUTF8      = apierr.Invalid("There was an error parsing the body of your request: invalid UTF-8")
	errNotObject        = apierr.Invalid("request body must be a JSON object")
	errModelMissing     = apierr.Invalid("model: Field required")
	errModelType        = apierr.Invalid("model: Input should be a non-empty string")
	errMaxTokensMissing = apierr.Invalid("max_tokens: Field required")
	errMaxTokensType    = apierr.Invalid("max_tokens: Input should be a positive integer")
	errMessagesMissing  = apierr.Invalid("messages: Field required")
	errMessagesType     = apierr.Invalid("messages: Input should be a valid list")
	errStreamType       = apierr.Invalid("stream: Input should be a valid boolean")
	// Anthropic bills fast mode and US-only inference at other rates than the price table
	// holds; nothing is served that cannot be priced, so they are refused before forwarding.
	errSpeed        = apierr.Invalid(`speed: only "standard" is available through this gateway`)
	errInferenceGeo = apierr.Invalid(`inference_geo: only "global" is available through this gateway`)
)

// parseMessages checks a POST /v1/messages body as far as the edge must: valid JSON, an
// object, a non-empty string model, a positive integer max_tokens, a messages array and, if
// present, a boolean stream. Everything else is the upstream's to judge.
func parseMessages(body []byte) (messagesRequest, *apierr.Error) {
	var r messagesRequest
	if len(body) == 0 {
		return r, errEmptyBody
	}
	// A string view of the body, not a copy: gjson only reads it, and r.model is only used
	// while the body is alive.
	s := unsafe.String(unsafe.SliceData(body), len(body))
	if !gjson.Valid(s) {
		return r, errMalformedJSON
	}
	// JSON text is UTF-8 (RFC 8259 §8.1) and gjson does not check it inside strings: without
	// this, invalid bytes would be forwarded, served and billed, or refused by the upstream
	// in its own way. About a third of gjson.Valid's cost (2.6 GB/s).
	if !utf8.Valid(body) {
		return r, errInvalidUTF8
	}
	root := gjson.Parse(s)
	if !root.IsObject() {
		return r, errNotObject
	}
	var model, maxTokens, messages, stream gjson.Result
	var unpriced *apierr.Error
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "speed":
			if v.Type != gjson.Null && v.Str != "standard" {
				unpriced = errSpeed
			}
		case "inference_geo":
			if v.Type != gjson.Null && v.Str != "global" {
				unpriced = errInferenceGeo
			}
		case "model":
			model = v
		case "max_tokens":
			maxTokens = v
		case "messages":
			messages = v
		case "stream":
			stream = v
		}
		return true
	})
	switch {
	case !model.Exists():
		return r, errModelMissing
	case model.Type != gjson.String || model.Str == "":
		return r, errModelType
	case !maxTokens.Exists():
		return r, errMaxTokensMissing
	case !messages.Exists():
		return r, errMessagesMissing
	case !messages.IsArray():
		return r, errMessagesType
	}
	if unpriced != nil {
		return r, unpriced
	}
	if maxTokens.Type != gjson.Number {
		return r, errMaxTokensType
	}
	// The raw number, not gjson's float: "1.5", "1e3" and out-of-range values are refused
	// rather than rounded.
	n, err := strconv.ParseInt(maxTokens.Raw, 10, 64)
	if err != nil || n <= 0 || n > maxTokensMax {
		return r, errMaxTokensType
	}
	switch stream.Type {
	case gjson.True:
		r.stream = true
	case gjson.False, gjson.Null:
	default:
		if stream.Exists() {
			return r, errStreamType
		}
	}
	r.model = model.Str
	r.maxTokens = n
	return r, nil
}
