package proxy

import (
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/apierr"
)

func TestParseMessages(t *testing.T) {
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	for _, tc := range []struct {
		name string
		body string
		want messagesRequest
		err  *apierr.Error
	}{
		{"minimal", `{"model":"m","max_tokens":5,` + msgs + `}`, messagesRequest{model: "m", maxTokens: 5}, nil},
		{"stream true", `{"model":"m","max_tokens":5,"stream":true,` + msgs + `}`, messagesRequest{model: "m", maxTokens: 5, stream: true}, nil},
		{"stream null", `{"model":"m","max_tokens":5,"stream":null,` + msgs + `}`, messagesRequest{model: "m", maxTokens: 5}, nil},
		{"escaped model", `{"model":"m\u0031","max_tokens":5,` + msgs + `}`, messagesRequest{model: "m1", maxTokens: 5}, nil},
		{"empty", ``, messagesRequest{}, errEmptyBody},
		{"malformed", `{"model":`, messagesRequest{}, errMalformedJSON},
		{"array", `[1]`, messagesRequest{}, errNotObject},
		{"no model", `{"max_tokens":5,` + msgs + `}`, messagesRequest{}, errModelMissing},
		{"model number", `{"model":5,"max_tokens":5,` + msgs + `}`, messagesRequest{}, errModelType},
		{"model empty", `{"model":"","max_tokens":5,` + msgs + `}`, messagesRequest{}, errModelType},
		{"no max_tokens", `{"model":"m",` + msgs + `}`, messagesRequest{}, errMaxTokensMissing},
		{"max_tokens zero", `{"model":"m","max_tokens":0,` + msgs + `}`, messagesRequest{}, errMaxTokensType},
		{"max_tokens negative", `{"model":"m","max_tokens":-1,` + msgs + `}`, messagesRequest{}, errMaxTokensType},
		{"max_tokens fraction", `{"model":"m","max_tokens":1.5,` + msgs + `}`, messagesRequest{}, errMaxTokensType},
		{"max_tokens exponent", `{"model":"m","max_tokens":1e3,` + msgs + `}`, messagesRequest{}, errMaxTokensType},
		{"max_tokens string", `{"model":"m","max_tokens":"5",` + msgs + `}`, messagesRequest{}, errMaxTokensType},
		{"max_tokens huge", `{"model":"m","max_tokens":99999999999999999999,` + msgs + `}`, messagesRequest{}, errMaxTokensType},
		{"no messages", `{"model":"m","max_tokens":5}`, messagesRequest{}, errMessagesMissing},
		{"messages object", `{"model":"m","max_tokens":5,"messages":{}}`, messagesRequest{}, errMessagesType},
		{"stream string", `{"model":"m","max_tokens":5,"stream":"yes",` + msgs + `}`, messagesRequest{}, errStreamType},
		{"speed standard", `{"model":"m","max_tokens":5,"speed":"standard",` + msgs + `}`, messagesRequest{model: "m", maxTokens: 5}, nil},
		{"speed fast", `{"model":"m","max_tokens":5,"speed":"fast",` + msgs + `}`, messagesRequest{}, errSpeed},
		{"speed number", `{"model":"m","max_tokens":5,"speed":1,` + msgs + `}`, messagesRequest{}, errSpeed},
		{"geo global", `{"model":"m","max_tokens":5,"inference_geo":"global",` + msgs + `}`, messagesRequest{model: "m", maxTokens: 5}, nil},
		{"geo us", `{"model":"m","max_tokens":5,"inference_geo":"us",` + msgs + `}`, messagesRequest{}, errInferenceGeo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMessages([]byte(tc.body))
			if tc.err != nil {
				require.Same(t, tc.err, err)
				return
			}
			require.Nil(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func FuzzParseMessages(f *testing.F) {
	f.Add([]byte(`{"model":"claude-haiku-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":"m","max_tokens":1e3,"messages":[]}`))
	f.Add([]byte(`{"model":"\ud800","max_tokens":1,"messages":[],"model":"x"}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := parseMessages(body)
		if err != nil {
			require.Equal(t, 400, err.Status)
			return
		}
		require.NotEmpty(t, r.model)
		require.Positive(t, r.maxTokens)
		require.LessOrEqual(t, r.maxTokens, int64(maxTokensMax))
	})
}

func TestParseMessagesAllocatesNothing(t *testing.T) {
	body := []byte(`{"model":"claude-haiku-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := parseMessages(body); err != nil {
			panic(err)
		}
	})
	require.Zero(t, allocs)
}
