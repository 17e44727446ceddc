// Package apierr is the edge's one API error type and the one place it becomes a response:
// Anthropic's shape, {"type":"error","error":{"type":…,"message":…},"request_id":…}, with
// retry-after where the client should come back. Upstream errors never pass through here:
// they are forwarded byte for byte.
package apierr

import (
	"strconv"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"tollgate/pkg/money"
)

// Error is an error the edge itself answers with. Values are immutable once built: the
// package-level ones are shared by every request.
type Error struct {
	Status  int    // HTTP status
	Type    string // Anthropic error type, e.g. "authentication_error"
	Message string // for people; never contains a secret
	// RetryAfter is the retry-after header in seconds; 0 sends none.
	RetryAfter int
}

func (e *Error) Error() string { return e.Type + ": " + e.Message }

// Anthropic error types the edge produces.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeAuthentication = "authentication_error"
	TypePermission     = "permission_error"
	TypeBilling        = "billing_error"
	TypeNotFound       = "not_found_error"
	TypeTooLarge       = "request_too_large"
	TypeRateLimit      = "rate_limit_error"
	TypeAPI            = "api_error"
	TypeTimeout        = "timeout_error"
)

// Shared errors for the frequent cases, so answering a flood of them allocates nothing.
var (
	MissingKey = &Error{Status: 401, Type: TypeAuthentication,
		Message: "missing API key: send it as x-api-key or Authorization: Bearer"}
	InvalidKey      = &Error{Status: 401, Type: TypeAuthentication, Message: "invalid x-api-key"}
	RevokedKey      = &Error{Status: 401, Type: TypeAuthentication, Message: "this API key has been revoked"}
	Suspended       = &Error{Status: 403, Type: TypePermission, Message: "this account is suspended"}
	NotFound        = &Error{Status: 404, Type: TypeNotFound, Message: "not found"}
	BadMethod       = &Error{Status: 405, Type: TypeInvalidRequest, Message: "method not allowed"}
	QueueFull       = &Error{Status: 503, Type: TypeAPI, Message: "usage recording is backlogged; retry shortly", RetryAfter: 5}
	LedgerDown      = &Error{Status: 503, Type: TypeAPI, Message: "the account service is unreachable; retry shortly", RetryAfter: 2}
	UpstreamBusy    = &Error{Status: 503, Type: TypeAPI, Message: "all upstream connections are busy; retry shortly", RetryAfter: 1}
	UpstreamDown    = &Error{Status: 502, Type: TypeAPI, Message: "the upstream could not be reached"}
	UpstreamTimeout = &Error{Status: 504, Type: TypeTimeout, Message: "the upstream did not answer in time"}
	ShuttingDown    = &Error{Status: 503, Type: TypeAPI, Message: "this node is shutting down; retry", RetryAfter: 1}
)

// Invalid is a 400 invalid_request_error.
func Invalid(msg string) *Error {
	return &Error{Status: 400, Type: TypeInvalidRequest, Message: msg}
}

// TooLarge is the 413 for a body over limitBytes.
func TooLarge(limitBytes int) *Error {
	return &Error{Status: 413, Type: TypeTooLarge,
		Message: "request body exceeds the limit of " + strconv.Itoa(limitBytes) + " bytes"}
}

// Insufficient is the 402 for a request whose hold the account cannot cover. Amounts are in
// micro-credits and shown in credits with 6 decimals.
func Insufficient(holdMicro, availableMicro int64) *Error {
	return &Error{Status: 402, Type: TypeBilling,
		Message: "insufficient credit: this request may cost " + money.FormatCredits(holdMicro) +
			" credits, available " + money.FormatCredits(availableMicro) + " credits; top up or lower max_tokens"}
}

// RateLimited is the 429 for a per-key rate limit, retry after retryAfterSec.
func RateLimited(retryAfterSec int) *Error {
	return &Error{Status: 429, Type: TypeRateLimit,
		Message: "rate limit for this API key exceeded", RetryAfter: max(retryAfterSec, 1)}
}

// Write answers ctx with e. It replaces any body and content type already set but keeps
// other headers (request-id in particular).
func Write(ctx *fasthttp.RequestCtx, e *Error, requestID string) {
	ctx.Response.SetStatusCode(e.Status)
	ctx.Response.Header.SetContentType("application/json")
	if e.RetryAfter > 0 {
		var b [20]byte
		ctx.Response.Header.SetBytesV("retry-after", strconv.AppendInt(b[:0], int64(e.RetryAfter), 10))
	}
	var buf [512]byte
	ctx.Response.SetBody(AppendJSON(buf[:0], e, requestID))
}

// AppendJSON appends e's body in Anthropic's error shape to dst.
func AppendJSON(dst []byte, e *Error, requestID string) []byte {
	dst = append(dst, `{"type":"error","error":{"type":`...)
	dst = AppendString(dst, e.Type)
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, e.Message)
	dst = append(dst, `},"request_id":`...)
	dst = AppendString(dst, requestID)
	return append(dst, '}')
}

// AppendString appends s as a JSON string: quotes, backslashes and control characters are
// escaped and invalid UTF-8 becomes U+FFFD, since messages may quote client input. The
// edge's other small JSON answers use it too.
func AppendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20 || c == 0x7f:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
