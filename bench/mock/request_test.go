package mock

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzRequest feeds arbitrary bodies through everything a request touches before the network:
// parsing, resolving and rendering. Nothing may panic, and whatever is rendered must be valid
// JSON (the model name is echoed from the request, so escaping is under test too).
func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"x\"\u0001\\","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"mock: output=5 tool=t thinking=2 mode=padded"}]}`,
		`{"model":"m","max_tokens":3,"system":[{"type":"text","text":"s"}],"thinking":{"type":"enabled"},` +
			`"messages":[{"role":"user","content":[{"type":"tool_result","content":[{"type":"text","text":"r"}]},` +
			`{"type":"text","text":"mock: mode=crlf,split events=2 web_search=1"}]}]}`,
		`{"model":"m","max_tokens":1,"stream":true,"messages":[{"role":"user","content":"mock: mode=error"}]}`,
		`{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"mock: mode=truncate,padded"}]}`,
		`{"model":"m","max_tokens":1.5,"messages":[]}`,
		`[]`, `{`, ``,
	} {
		f.Add([]byte(seed))
	}
	cfg := Config{}.withDefaults()
	f.Fuzz(func(t *testing.T, body []byte) {
		r, aerr := parseRequest(body, true)
		if aerr != nil {
			require.Equal(t, 400, aerr.status)
			return
		}
		sp, err := resolve(&r, &cfg)
		if err != nil || sp.status != 200 || sp.textBytes > 1<<16 || sp.events > 1000 {
			return
		}
		rr := render(&sp)
		buf := bytes.Clone(rr.body)
		for _, off := range rr.slots {
			copy(buf[off:], bytes.Repeat([]byte("A"), idSuffixLen))
		}
		require.Equal(t, len(buf), rr.pieces[len(rr.pieces)-1].end)
		if !sp.stream {
			if sp.modes&modeTruncate == 0 {
				require.True(t, json.Valid(buf), "%q", buf)
			}
			return
		}
		for line := range bytes.Lines(buf) {
			if data, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
				require.True(t, json.Valid(bytes.TrimRight(data, "\r\n")), "%q", line)
			}
		}
	})
}
