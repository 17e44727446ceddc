package load_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/bench/load"
	"tollgate/bench/mock"
	"tollgate/pkg/usage"
)

var testShapes = []load.Shape{
	{Name: "json", Model: "claude-sonnet-4-5", Weight: 1,
		Tokens: usage.Tokens{Input: 200, Output: 120, CacheRead: 900}},
	{Name: "sse", Model: "claude-haiku-4-5", Stream: true, Weight: 1,
		Tokens: usage.Tokens{Input: 50, Output: 40, CacheWrite5m: 10}, Extra: "events=20"},
}

func readLog(t *testing.T, b []byte) []load.LogEntry {
	var out []load.LogEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var e load.LogEntry
		require.NoError(t, json.Unmarshal(sc.Bytes(), &e))
		out = append(out, e)
	}
	require.NoError(t, sc.Err())
	return out
}

// A bounded closed-loop run against the real mock upstream: every request answered, streams
// seen to their end, and one log line per request with the mock's request id.
func TestRunClosedLoopAgainstMock(t *testing.T) {
	base, srv := mock.Start(t, mock.Config{RecordMax: -1})
	var logBuf bytes.Buffer
	before := time.Now()
	res, err := load.Run(context.Background(), load.Config{
		URL: base, Conns: 8, Requests: 300, Duration: 30 * time.Second,
		Shapes: testShapes, Keys: []load.Key{{Secret: "k1", AccountID: "a1"}, {Secret: "k2", AccountID: "a2"}},
		Log: &logBuf,
	})
	require.NoError(t, err)
	after := time.Now()
	require.Equal(t, "closed", res.Mode)
	require.Equal(t, int64(300), res.Sent)
	require.Equal(t, int64(300), res.OK, "errors: %v", res.Errors)
	require.Empty(t, res.Errors)
	require.Equal(t, int64(150), res.Streams)
	require.Equal(t, int64(300), res.Latency.Count)
	require.Equal(t, int64(150), res.TTFT.Count)
	require.Equal(t, int64(300), srv.RequestCount())
	require.Positive(t, res.Throughput)
	require.Positive(t, res.BytesIn)
	require.Equal(t, "generator", res.Generator.Name)
	require.Empty(t, res.Generator.Error)

	entries := readLog(t, logBuf.Bytes())
	require.Len(t, entries, 300)
	ids := map[string]bool{}
	perShape := map[string]int{}
	for _, e := range entries {
		require.Equal(t, 200, e.Status)
		require.True(t, e.Complete)
		require.True(t, strings.HasPrefix(e.RequestID, "req_01"), e.RequestID)
		require.False(t, ids[e.RequestID], "duplicate id %s", e.RequestID)
		ids[e.RequestID] = true
		perShape[e.Shape]++
		require.Contains(t, []string{"a1", "a2"}, e.AccountID)
		require.GreaterOrEqual(t, e.EndUnixUs, before.UnixMicro())
		require.LessOrEqual(t, e.EndUnixUs, after.UnixMicro())
	}
	require.Equal(t, map[string]int{"json": 150, "sse": 150}, perShape)
}

// An open-loop run is bounded by rate × duration and by the request cap; errors from the
// upstream are counted by status.
func TestRunOpenLoopCountsErrors(t *testing.T) {
	base, _ := mock.Start(t, mock.Config{RecordMax: -1})
	shapes := []load.Shape{
		{Name: "ok", Model: "claude-sonnet-4-5", Weight: 3, Tokens: usage.Tokens{Output: 5}},
		{Name: "overloaded", Model: "claude-sonnet-4-5", Weight: 1, Tokens: usage.Tokens{Output: 5}, Extra: "status=529"},
	}
	res, err := load.Run(context.Background(), load.Config{
		URL: base, Rate: 2000, Duration: 200 * time.Millisecond, Requests: 100,
		Shapes: shapes, Keys: []load.Key{{Secret: "k"}},
		Watch: []load.Proc{{Name: "self-again", Pid: 1 << 30}}, // no such process: reported, not fatal
	})
	require.NoError(t, err)
	require.Equal(t, "open", res.Mode)
	require.Equal(t, int64(100), res.Sent)
	require.Equal(t, int64(75), res.OK)
	require.Equal(t, map[string]int64{"status_529": 25}, res.Errors)
	require.Equal(t, int64(100), res.Lag.Count)
	require.Len(t, res.Procs, 1)
	require.NotEmpty(t, res.Procs[0].Error)
}

func TestRunRefusesNonLoopback(t *testing.T) {
	_, err := load.Run(context.Background(), load.Config{
		URL: "http://192.0.2.1:8080", Duration: time.Second, Shapes: testShapes, Keys: []load.Key{{Secret: "k"}},
	})
	require.ErrorContains(t, err, "loopback")
}
