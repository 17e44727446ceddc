package apierr_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"

	"tollgate/edge/internal/apierr"
)

type body struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
	RequestID string `json:"request_id"`
}

func TestWrite(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        *apierr.Error
		status     int
		typ        string
		message    string
		retryAfter string
	}{
		{"missing key", apierr.MissingKey, 401, "authentication_error", apierr.MissingKey.Message, ""},
		{"invalid key", apierr.InvalidKey, 401, "authentication_error", "invalid x-api-key", ""},
		{"revoked", apierr.RevokedKey, 401, "authentication_error", apierr.RevokedKey.Message, ""},
		{"suspended", apierr.Suspended, 403, "permission_error", apierr.Suspended.Message, ""},
		{"insufficient", apierr.Insufficient(1_234_567, -500), 402, "billing_error",
			"insufficient credit: this request may cost 1.234567 credits, available -0.000500 credits; top up or lower max_tokens", ""},
		{"too large", apierr.TooLarge(32 << 20), 413, "request_too_large", "request body exceeds the limit of 33554432 bytes", ""},
		{"invalid", apierr.Invalid("model: \"x\"y\n\" is unknown"), 400, "invalid_request_error", "model: \"x\"y\n\" is unknown", ""},
		{"rate limited", apierr.RateLimited(7), 429, "rate_limit_error", "rate limit for this API key exceeded", "7"},
		{"ledger down", apierr.LedgerDown, 503, "api_error", apierr.LedgerDown.Message, "2"},
		{"queue full", apierr.QueueFull, 503, "api_error", apierr.QueueFull.Message, "5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ctx fasthttp.RequestCtx
			apierr.Write(&ctx, tc.err, "0195f3a0-0000-7000-8000-000000000000")
			require.Equal(t, tc.status, ctx.Response.StatusCode())
			require.Equal(t, "application/json", string(ctx.Response.Header.ContentType()))
			require.Equal(t, tc.retryAfter, string(ctx.Response.Header.Peek("retry-after")))
			var b body
			require.NoError(t, json.Unmarshal(ctx.Response.Body(), &b), string(ctx.Response.Body()))
			require.Equal(t, "error", b.Type)
			require.Equal(t, tc.typ, b.Error.Type)
			require.Equal(t, tc.message, b.Error.Message)
			require.Equal(t, "0195f3a0-0000-7000-8000-000000000000", b.RequestID)
		})
	}
}

func TestAppendStringIsValidJSON(t *testing.T) {
	for _, s := range []string{"plain", "quote\" back\\ slash", "ctl\x00\x1f\x7f", "bad utf8 \xff\xfe", "ünïcødé ✓"} {
		var got string
		require.NoError(t, json.Unmarshal(apierr.AppendString(nil, s), &got), "%q", s)
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("x\"\\\n\xff")
	f.Fuzz(func(t *testing.T, s string) {
		var got string
		require.NoError(t, json.Unmarshal(apierr.AppendString(nil, s), &got))
	})
}
