package proxy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tidwall/gjson"

	"tollgate/edge/internal/apierr"
	"tollgate/edge/internal/hold"
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
		{"last duplicate wins", `{"model":"a","max_tokens":"x","model":"b","max_tokens":7,` + msgs + `}`, messagesRequest{model: "b", maxTokens: 7}, nil},
		{"escaped key", `{"m\u006fdel":"m","max_tokens":5,` + msgs + `}`, messagesRequest{model: "m", maxTokens: 5}, nil},
		{"nested members do not count", `{"metadata":{"model":"m"},"max_tokens":5,` + msgs + `}`, messagesRequest{}, errModelMissing},
		{"whitespace", " \n{ \"model\" : \"m\" ,\t\"max_tokens\" : 5 ,\r\"messages\" : [ ] }\n", messagesRequest{model: "m", maxTokens: 5}, nil},
		{"model with escaped quote", `{"model":"a\"}","max_tokens":5,` + msgs + `}`, messagesRequest{model: `a"}`, maxTokens: 5}, nil},
		{"max_tokens null", `{"model":"m","max_tokens":null,` + msgs + `}`, messagesRequest{}, errMaxTokensType},
		{"stream false", `{"model":"m","max_tokens":5,"stream":false,` + msgs + `}`, messagesRequest{model: "m", maxTokens: 5}, nil},
		{"speed fast, then standard", `{"model":"m","max_tokens":5,"speed":"fast","speed":"standard",` + msgs + `}`, messagesRequest{}, errSpeed},
		{"speed escaped", `{"model":"m","max_tokens":5,"speed":"st\u0061ndard",` + msgs + `}`, messagesRequest{model: "m", maxTokens: 5}, nil},
		{"trailing bytes", `{"model":"m","max_tokens":5,` + msgs + `} x`, messagesRequest{}, errMalformedJSON},
		{"two values", `{} {}`, messagesRequest{}, errMalformedJSON},
		{"control character", "{\"model\":\"m\x1f\",\"max_tokens\":5," + msgs + "}", messagesRequest{}, errMalformedJSON},
		{"bad escape", `{"model":"m\x","max_tokens":5,` + msgs + `}`, messagesRequest{}, errMalformedJSON},
		{"leading zero", `{"model":"m","max_tokens":05,` + msgs + `}`, messagesRequest{}, errMalformedJSON},
		{"invalid UTF-8", "{\"model\":\"m\xff\",\"max_tokens\":5," + msgs + "}", messagesRequest{}, errInvalidUTF8},
		{"invalid UTF-8, then malformed", "{\"model\":\"m\xff\",\"max_tokens\":5", messagesRequest{}, errMalformedJSON},
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

// TestBodyCheckAllocatesNothing is the allocation budget of the edge's reading of an
// ordinary body: parseMessages and hold.Scan, with an escape in the prompt (gjson's ForEach
// copied every such string, although nothing reads it).
func TestBodyCheckAllocatesNothing(t *testing.T) {
	for _, body := range [][]byte{
		[]byte(`{"model":"claude-haiku-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}`),
		ordinaryBody(),
	} {
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := parseMessages(body); err != nil {
				panic(err)
			}
			if hold.Scan(body).TextBytes <= 0 {
				panic("no text")
			}
		})
		require.Zero(t, allocs, "%s", body)
	}
}

// Nesting costs a bit per level, not a stack frame: gjson.Valid recursed once per level, and
// 32 MiB of '[' (the default body limit) overflowed the goroutine stack, which is fatal to
// the whole process.
func TestParseMessagesDeepNesting(t *testing.T) {
	_, err := parseMessages(bytes.Repeat([]byte("["), 32<<20))
	require.Same(t, errMalformedJSON, err)

	const depth = 1 << 20
	deep := strings.Repeat(`[{"a":`, depth) + "1" + strings.Repeat("}]", depth)
	_, err = parseMessages([]byte(deep))
	require.Same(t, errNotObject, err)

	body := []byte(`{"model":"m","max_tokens":5,"x":` + deep + `,"messages":[]}`)
	r, err := parseMessages(body)
	require.Nil(t, err)
	require.Equal(t, messagesRequest{model: "m", maxTokens: 5}, r)
	require.Equal(t, int64(len(body)), hold.Scan(body).TextBytes)

	// A closing bracket that does not match, past the levels kept on the stack.
	_, err = parseMessages([]byte(`{"x":` + strings.Repeat("[", 600) + strings.Repeat("]", 599) + `}}`))
	require.Same(t, errMalformedJSON, err)
}

// FuzzValidJSON holds validJSON to gjson.Valid's answers, and its top-level members to the
// ones gjson's ForEach reads.
func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"a\nb \"c\" \u00e9 \\"}]}`,
		` {"a":{"b":[1,-0.5e+3,true,false,null,{}]},"c":[],"a":"\ud83d\ude00"} `,
		`[1,2,{"a":[[]]}]`, `-0`, `01`, `1.`, `1e`, `"\x"`, `"\u12g4"`, "\"\x1f\"", `{"a":1,}`, `[1,]`,
		`{"a" 1}`, `{"a":}`, `tru`, `nul`, `{"a":1}}`, `[[]]]`, `{]`, `[}`, "\"a\xff\"",
		`"` + strings.Repeat(`x\"`, 40) + strings.Repeat("y", 70) + `\u0041` + `"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var got []string
		valid := validJSON(body, func(k, v []byte) { got = append(got, string(k), string(v)) })
		require.Equal(t, gjson.ValidBytes(body), valid, "%q", body)
		if !valid || !gjson.ParseBytes(body).IsObject() {
			return
		}
		var want []string
		gjson.ParseBytes(body).ForEach(func(k, v gjson.Result) bool {
			want = append(want, k.Raw, v.Raw)
			return true
		})
		require.Equal(t, want, got, "%q", body)
	})
}
