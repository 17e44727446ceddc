package mock

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRenderPacing(t *testing.T) {
	// 20 output tokens over 4 text deltas at 10 tokens/s: one delta every 0.5 s after the
	// 100 ms time to first token.
	sp := spec{model: "m", stream: true, input: 1, output: 20, events: 4, textBytes: 80,
		ttft: 100 * time.Millisecond, tps: 10, stop: "end_turn"}
	r := render(&sp)

	var ats []time.Duration
	for _, p := range r.pieces {
		ats = append(ats, p.at)
	}
	ms := time.Millisecond
	// message_start + content_block_start + ping at once, then each delta; the last delta
	// carries the end of the stream with it.
	require.Equal(t, []time.Duration{0, 100 * ms, 600 * ms, 1100 * ms, 1600 * ms}, ats)
	require.Equal(t, len(r.body), r.pieces[len(r.pieces)-1].end)
	first := string(r.body[:r.pieces[0].end])
	require.Contains(t, first, "event: ping")
	require.NotContains(t, first, "content_block_delta")
}

func TestRenderUnpacedIsOneWrite(t *testing.T) {
	sp := spec{model: "m", stream: true, input: 1, output: 20, thinking: 4, events: 4, textBytes: 80,
		tool: "t", stop: "tool_use"}
	r := render(&sp)
	require.Len(t, r.pieces, 1)
	require.Len(t, r.slots, 2, "message id and tool_use id")
}

func TestRenderSplitPieces(t *testing.T) {
	for _, modes := range []mode{modeSplit, modeSplit | modeCRLF, modeSplit | modeCRLF | modePadded} {
		sp := spec{model: "m", stream: true, input: 1, output: 20, events: 4, textBytes: 80,
			modes: modes, ttft: time.Second, stop: "end_turn"}
		r := render(&sp)
		prev := 0
		for _, p := range r.pieces {
			require.Greater(t, p.end, prev)
			prev = p.end
			if p.at == 0 {
				// Nothing of a delta goes out before the time to first token.
				require.NotContains(t, string(r.body[:p.end]), "text_delta")
			}
		}
		require.Equal(t, len(r.body), prev)
		require.Greater(t, len(r.pieces), 4*9, "several pieces per event")
	}
}

func TestRenderJSONTruncateFillsPartialSlot(t *testing.T) {
	sp := spec{model: "m", input: 1, output: 2, events: 1, textBytes: 4, tool: "t",
		modes: modeTruncate, stop: "tool_use"}
	r := render(&sp)
	require.Len(t, r.slots, 2)
	s := New(Config{}, slog.New(slog.DiscardHandler))
	buf := append([]byte(nil), r.body...)
	s.fillSlots(buf, r.slots)
	require.NotContains(t, string(buf), "\x01")
	require.False(t, json.Valid(buf))
}

func TestPad(t *testing.T) {
	in := []byte(`{"a":[1,{"b":"x, {y}: \"z\""}],"c":null}`)
	one := pad(nil, in, false)
	require.Equal(t, `{  "a" : [  1 , {  "b" : "x, {y}: \"z\"" } ] , "c" : null }`, string(one))
	require.False(t, bytes.Contains(one, []byte("\n")))
	multi := pad(nil, in, true)
	require.Contains(t, string(multi), "\n")
	for _, b := range [][]byte{one, multi} {
		var got, want any
		require.NoError(t, json.Unmarshal(b, &got))
		require.NoError(t, json.Unmarshal(in, &want))
		require.Equal(t, want, got)
	}
}

func TestIDsUnique(t *testing.T) {
	g := newIDGen()
	seen := make(map[string]bool)
	var id [idSuffixLen]byte
	for range 10_000 {
		g.fill(id[:])
		require.False(t, seen[string(id[:])])
		seen[string(id[:])] = true
	}
}
