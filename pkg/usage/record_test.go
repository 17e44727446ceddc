package usage_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/pkg/usage"
)

func sample() usage.Record {
	return usage.Record{
		V: usage.Version, RequestID: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", EdgeID: "edge0", Seq: 42,
		AccountID: "acc_1", KeyID: "key_1", LeaseID: "lease_1",
		Model: "claude-sonnet-4-5-20250929", ModelRequested: "claude-sonnet-4-5",
		TsStartMs: 1700000000000, TsEndMs: 1700000000123, TtfbMs: 45,
		Status: 200, Stream: true, StopReason: "end_turn",
		Usage: usage.Tokens{Input: 10, Output: 120, CacheWrite5m: 5, CacheWrite1h: 6,
			CacheRead: 900, Thinking: 40, WebSearchRequests: 2},
		Estimated: true, CostMicrocredits: 123456, UpstreamCostMicroUSD: 789,
		PriceVersion: "2026-11-01", UpstreamKeyID: "up0", UpstreamRequestID: "req_abc",
	}
}

func TestRoundTrip(t *testing.T) {
	r := sample()
	b := r.AppendJSON(nil)
	require.True(t, json.Valid(b), "%s", b)
	got, err := usage.Decode(b)
	require.NoError(t, err)
	require.Equal(t, r, got)

	// encoding/json agrees with the hand-written encoder field by field.
	var viaStd usage.Record
	require.NoError(t, json.Unmarshal(b, &viaStd))
	require.Equal(t, r, viaStd)
}

func TestHostileStrings(t *testing.T) {
	r := sample()
	r.Model = "a\"b\\c\n\x00\x1f\xff\xfe é 😀"
	b := r.AppendJSON(nil)
	require.True(t, json.Valid(b), "%s", b)
	got, err := usage.Decode(b)
	require.NoError(t, err)
	require.Equal(t, "a\"b\\c\n\x00\x1f\ufffd\ufffd é 😀", got.Model)
}

func TestDecodeRejects(t *testing.T) {
	cases := map[string]string{
		"not json":        `{"v":1,`,
		"array":           `[1,2]`,
		"no request id":   `{"v":1,"account_id":"a"}`,
		"no account":      `{"v":1,"request_id":"r"}`,
		"no version":      `{"request_id":"r","account_id":"a"}`,
		"negative cost":   `{"v":1,"request_id":"r","account_id":"a","cost_microcredits":-1}`,
		"negative tokens": `{"v":1,"request_id":"r","account_id":"a","usage":{"output":-5}}`,
		"string cost":     `{"v":1,"request_id":"r","account_id":"a","cost_microcredits":"5"}`,
		"fractional cost": `{"v":1,"request_id":"r","account_id":"a","cost_microcredits":1.5}`,
		"numeric id":      `{"v":1,"request_id":7,"account_id":"a"}`,
		"string bool":     `{"v":1,"request_id":"r","account_id":"a","stream":"yes"}`,
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := usage.Decode([]byte(in))
			require.ErrorIs(t, err, usage.ErrInvalid)
		})
	}
}

func TestDecodeAcceptsUnknownFields(t *testing.T) {
	got, err := usage.Decode([]byte(`{"v":2,"request_id":"r","account_id":"a","new_field":{"x":[1]},"cost_microcredits":7}`))
	require.NoError(t, err)
	require.Equal(t, int64(7), got.CostMicrocredits)
	require.Equal(t, 2, got.V)
}

func TestAppendJSONAllocs(t *testing.T) {
	r := sample()
	buf := make([]byte, 0, 2048)
	allocs := testing.AllocsPerRun(100, func() { buf = r.AppendJSON(buf[:0]) })
	require.Zero(t, allocs)
}

func FuzzDecode(f *testing.F) {
	r := sample()
	f.Add(r.AppendJSON(nil))
	f.Add([]byte(`{"v":1,"request_id":"r","account_id":"a"}`))
	f.Add([]byte(`{"usage":{"input":1e300}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := usage.Decode(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to valid JSON that decodes to the same record.
		out := rec.AppendJSON(nil)
		require.True(t, json.Valid(out), "%s", out)
		again, err := usage.Decode(out)
		require.NoError(t, err)
		require.Equal(t, rec, again)
	})
}

func BenchmarkAppendJSON(b *testing.B) {
	r := sample()
	buf := make([]byte, 0, 2048)
	b.ReportAllocs()
	for b.Loop() {
		buf = r.AppendJSON(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkDecode(b *testing.B) {
	r := sample()
	buf := r.AppendJSON(nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := usage.Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
}
