package mock

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseDirective(t *testing.T) {
	tests := []struct {
		name    string
		args    string
		wantErr string
		check   func(t *testing.T, d directive)
	}{
		{name: "empty", args: "", check: func(t *testing.T, d directive) {
			require.Equal(t, directive{}, d)
		}},
		{name: "usage", args: " input=100 output=120  cache_read=900\tthinking=40 cache_write_5m=7 cache_write_1h=8 web_search=2",
			check: func(t *testing.T, d directive) {
				require.Equal(t, int64(100), d.n[keyInput])
				require.Equal(t, int64(120), d.n[keyOutput])
				require.Equal(t, int64(900), d.n[keyCacheRead])
				require.Equal(t, int64(40), d.n[keyThinking])
				require.Equal(t, int64(7), d.n[keyCacheWrite5m])
				require.Equal(t, int64(8), d.n[keyCacheWrite1h])
				require.Equal(t, int64(2), d.n[keyWebSearch])
				require.True(t, d.set[keyInput])
				require.False(t, d.set[keyStatus])
			}},
		{name: "zero is set", args: "input=0", check: func(t *testing.T, d directive) {
			require.True(t, d.set[keyInput])
			require.Zero(t, d.n[keyInput])
		}},
		{name: "modes", args: "mode=padded,crlf,split,lean", check: func(t *testing.T, d directive) {
			require.Equal(t, modePadded|modeCRLF|modeSplit|modeLean, d.modes)
		}},
		{name: "behaviour", args: "status=429 retry_after=7 latency_ms=5 ttft_ms=6 tps=12.5 events=9 text_bytes=100 tool=get_weather stop=refusal",
			check: func(t *testing.T, d directive) {
				require.Equal(t, int64(429), d.n[keyStatus])
				require.Equal(t, int64(7), d.n[keyRetryAfter])
				require.Equal(t, 12.5, d.tps)
				require.Equal(t, "get_weather", d.tool)
				require.Equal(t, "refusal", d.stop)
			}},
		{name: "unknown key", args: "inptu=5", wantErr: `unknown key "inptu"`},
		{name: "no equals", args: "input", wantErr: "want key=value"},
		{name: "twice", args: "input=1 input=2", wantErr: "given twice"},
		{name: "negative", args: "output=-1", wantErr: "output: want an integer"},
		{name: "not a number", args: "output=12k", wantErr: "output: want an integer"},
		{name: "too large", args: "text_bytes=999999999", wantErr: "text_bytes"},
		{name: "events zero", args: "events=0", wantErr: "events"},
		{name: "status unsupported", args: "status=418", wantErr: "unsupported status"},
		{name: "tps zero", args: "tps=0", wantErr: "tps"},
		{name: "tps nan", args: "tps=NaN", wantErr: "tps"},
		{name: "tps inf", args: "tps=Inf", wantErr: "tps"},
		{name: "unknown mode", args: "mode=padded,slow", wantErr: `unknown mode "slow"`},
		{name: "empty mode", args: "mode=", wantErr: "unknown mode"},
		{name: "error and truncate", args: "mode=error,truncate", wantErr: "exclude"},
		{name: "bad tool", args: `tool=a"b`, wantErr: "tool"},
		{name: "bad stop", args: "stop=done", wantErr: "stop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := parseDirective(tt.args)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			tt.check(t, d)
		})
	}
}

func TestFindDirective(t *testing.T) {
	tests := []struct {
		name  string
		text  string
		args  string
		found bool
	}{
		{"none", "hello", "", false},
		{"only line", "mock: output=5", " output=5", true},
		{"after text", "Say hi.\nmock: output=5\nthanks", " output=5", true},
		{"indented crlf", "Say hi.\r\n  \tmock: input=3\r\n", " input=3", true},
		{"first wins", "mock: output=1\nmock: output=2", " output=1", true},
		{"not at line start", "please mock: output=5", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args, found := findDirective(tt.text)
			require.Equal(t, tt.found, found)
			require.Equal(t, tt.args, args)
		})
	}
}

// FuzzDirective checks that no text makes the parser panic, and that whatever it accepts
// formats back to a line that parses to the same directive.
func FuzzDirective(f *testing.F) {
	for _, seed := range []string{
		"mock: output=120 cache_read=900 thinking=40",
		"hello\nmock: input=1 mode=padded,crlf,split tps=0.5 tool=x stop=end_turn",
		"mock: mode=error status=529 retry_after=3 events=2 text_bytes=9",
		"mock: tps=1e3 latency_ms=+5",
		"mock:",
		"mock: =",
		"\r\nmock: input=1\r\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		args, found := findDirective(text)
		if !found {
			return
		}
		d, err := parseDirective(args)
		if err != nil {
			return
		}
		line := d.String()
		require.True(t, strings.HasPrefix(line, directivePrefix))
		again, err := parseDirective(strings.TrimPrefix(line, directivePrefix))
		require.NoError(t, err, "reparse %q", line)
		require.Equal(t, d, again, "reparse %q", line)
	})
}
