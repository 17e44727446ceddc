package meter_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/meter"
	"tollgate/pkg/usage"
)

func TestFromJSON(t *testing.T) {
	message := readTestdata(t, "message.json")
	messageResult := meter.Result{
		Model: "claude-sonnet-4-5-20250929", MessageID: "msg_01XFDUDYJgAACzvnptvVoYEL", StopReason: "tool_use",
		Tokens: usage.Tokens{Input: 1450, Output: 203, CacheWrite5m: 1000, CacheWrite1h: 2000, CacheRead: 20480,
			Thinking: 57, WebSearchRequests: 2},
		Complete: true,
		// 126 bytes of thinking and text, 33 of tool input, counted with Python's json module.
		TextBytes: 159,
	}
	tests := []struct {
		name      string
		body      string
		want      meter.Result
		malformed bool
	}{
		{name: "message with usage", body: string(message), want: messageResult},
		{name: "error body", body: string(readTestdata(t, "error.json")), want: meter.Result{ErrorType: "overloaded_error"}},
		{name: "error body without a type", body: `{"type":"error","error":{"message":"?"}}`, want: meter.Result{ErrorType: "error"}},
		{name: "no cache breakdown means 5m", body: `{"id":"msg_1","model":"claude-3-haiku-20240307","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":10,"cache_creation_input_tokens":77,"output_tokens":2}}`,
			want: meter.Result{Model: "claude-3-haiku-20240307", MessageID: "msg_1", StopReason: "end_turn", Complete: true, TextBytes: 2,
				Tokens: usage.Tokens{Input: 10, Output: 2, CacheWrite5m: 77}}},
		{name: "thinking above output is capped", body: `{"usage":{"output_tokens":5,"output_tokens_details":{"thinking_tokens":9}}}`,
			want: meter.Result{Complete: true, Tokens: usage.Tokens{Output: 5, Thinking: 5}}},
		{name: "padded", body: " \n{ \"usage\" :\t{ \"input_tokens\" : 3 , \"output_tokens\" : 4 } , \"content\" : [ { \"type\" : \"text\" , \"text\" : \"a\\nb\" } ] }\r\n",
			want: meter.Result{Complete: true, TextBytes: 3, Tokens: usage.Tokens{Input: 3, Output: 4}}},
		{name: "no usage", body: `{"id":"msg_2","type":"message"}`, want: meter.Result{MessageID: "msg_2"}},
		{name: "usage not an object", body: `{"usage":[1,2]}`, want: meter.Result{}},
		{name: "truncated", body: string(message[:len(message)/2]), malformed: true,
			want: meter.Result{Model: "claude-sonnet-4-5-20250929", MessageID: "msg_01XFDUDYJgAACzvnptvVoYEL"}},
		{name: "not JSON", body: "<html>bad gateway</html>", malformed: true},
		{name: "empty", body: "", malformed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := meter.FromJSON([]byte(tt.body))
			if tt.malformed {
				require.ErrorIs(t, err, meter.ErrMalformed)
				got.TextBytes = tt.want.TextBytes // best effort on a cut body: not part of the contract
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tt.want, got)
		})
	}
}

func TestFromJSONDoesNotRetainBody(t *testing.T) {
	body := readTestdata(t, "message.json")
	r, err := meter.FromJSON(body)
	require.NoError(t, err)
	for i := range body {
		body[i] = 'X'
	}
	require.Equal(t, "claude-sonnet-4-5-20250929", r.Model)
	require.Equal(t, "msg_01XFDUDYJgAACzvnptvVoYEL", r.MessageID)
	require.Equal(t, "tool_use", r.StopReason)
}
