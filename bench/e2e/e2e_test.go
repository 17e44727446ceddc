// Package e2e_test runs Tollgate end to end as real processes — dev Kafka broker (kfake, the
// real protocol), ledgerd, analytics with a real ClickHouse, the mock upstream and the edge —
// and checks that the money adds up.
package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/pkg/bus"
	"tollgate/pkg/usage"
)

// billCase is one request shape: what the mock is told to report, and what it costs.
type billCase struct {
	name      string
	model     string
	directive string
	stream    bool
	tokens    tokens // what the mock reports (for estimated cases: what message_start reports)
	// estimated: the stream is cut off; output is billed as max(reported, ceil(text bytes/3))
	// with the text bytes counted from what the client received.
	estimated bool
	status    int // expected HTTP status; 0 means 200
}

func billCases() []billCase {
	var cs []billCase
	for _, stream := range []bool{false, true} {
		kind := map[bool]string{false: "json", true: "sse"}[stream]
		add := func(name, model, directive string, tk tokens) {
			cs = append(cs, billCase{name: kind + "/" + name, model: model, directive: directive, stream: stream, tokens: tk})
		}
		add("plain", "claude-sonnet-4-5", "input=120 output=80", tokens{input: 120, output: 80})
		add("padded", "claude-sonnet-4-5", "input=33 output=21 mode=padded", tokens{input: 33, output: 21})
		add("crlf", "claude-sonnet-4-5", "input=40 output=30 mode=crlf", tokens{input: 40, output: 30})
		add("split", "claude-sonnet-4-5", "input=41 output=31 mode=split,crlf,padded events=12",
			tokens{input: 41, output: 31})
		add("thinking", "claude-opus-4-5", "input=500 output=300 thinking=120",
			tokens{input: 500, output: 300, thinking: 120})
		add("cache-5m-1h", "claude-sonnet-4-5", "input=10 output=5 cache_write_5m=1000 cache_write_1h=2000 cache_read=5000",
			tokens{input: 10, output: 5, cw5m: 1000, cw1h: 2000, read: 5000})
		add("web-search", "claude-sonnet-4-5", "input=900 output=60 web_search=3",
			tokens{input: 900, output: 60, webSearch: 3})
		add("lean", "claude-sonnet-4-5", "input=77 output=44 mode=lean", tokens{input: 77, output: 44})
		add("rounding-haiku3", "claude-3-haiku", "input=3 output=2 cache_read=7", tokens{input: 3, output: 2, read: 7})
		add("tool-use", "claude-sonnet-4-5", "input=64 output=48 tool=get_weather", tokens{input: 64, output: 48})
		for _, st := range []int{429, 529} {
			cs = append(cs, billCase{name: fmt.Sprintf("%s/status-%d", kind, st), model: "claude-sonnet-4-5",
				directive: fmt.Sprintf("status=%d retry_after=2", st), stream: stream, status: st})
		}
	}
	// Streams the upstream cuts off: billed on message_start's usage plus an output estimate.
	cs = append(cs,
		billCase{name: "sse/error-midstream", model: "claude-sonnet-4-5", stream: true, estimated: true,
			directive: "input=200 output=90 cache_read=100 events=6 mode=error", tokens: tokens{input: 200, read: 100, output: 1}},
		billCase{name: "sse/truncated", model: "claude-sonnet-4-5", stream: true, estimated: true,
			directive: "input=150 output=80 events=6 mode=truncate,crlf", tokens: tokens{input: 150, output: 1}},
	)
	return cs
}

// sseTextBytes counts the text of content deltas a client received, the way a reader of the
// stream would: the decoded text, thinking and partial_json strings.
func sseTextBytes(t *testing.T, body []byte) int64 {
	var n int64
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		data, ok := strings.CutPrefix(line, "data:")
		if !ok {
			continue
		}
		var ev struct {
			Type  string `json:"type"`
			Delta struct {
				Text        string `json:"text"`
				Thinking    string `json:"thinking"`
				PartialJSON string `json:"partial_json"`
			} `json:"delta"`
		}
		require.NoError(t, json.Unmarshal([]byte(data), &ev), "%s", data)
		if ev.Type == "content_block_delta" {
			n += int64(len(ev.Delta.Text) + len(ev.Delta.Thinking) + len(ev.Delta.PartialJSON))
		}
	}
	return n
}

func TestEndToEndBilling(t *testing.T) {
	e := startStack(t, nil)
	accountID, key, start := e.settledAccount(1000)

	var want int64
	requests := 0
	for _, c := range billCases() {
		t.Run(c.name, func(t *testing.T) {
			r := e.post(0, key, messageBody(c.model, c.stream, c.directive))
			requests++
			wantStatus := c.status
			if wantStatus == 0 {
				wantStatus = 200
			}
			require.Equal(t, wantStatus, r.Status, "%s", r.Body)
			require.NotEmpty(t, r.RequestID, "every response carries request-id")
			if c.status != 0 {
				require.NotEmpty(t, r.Header.Get("retry-after"), "upstream errors pass through with retry-after")
				return // refused by the upstream before any usage: costs nothing
			}
			require.NotEmpty(t, r.Header.Get("upstream-request-id"))
			tk := c.tokens
			if c.estimated {
				est := (sseTextBytes(t, r.Body) + 2) / 3
				tk.output = max(tk.output, est)
			}
			want += expectedCost(t, c.model, tk)
		})
	}
	e.waitBalance(accountID, start-want)
	t.Logf("%d requests charged %d µcr in all", requests, want)

	if e.chAddr != "" {
		rows, distinct, total := e.waitClickHouse(accountID, requests)
		require.Equal(t, int64(requests), rows, "one ClickHouse row per request")
		require.Equal(t, rows, distinct)
		require.Equal(t, want, total, "ClickHouse total equals the ledger's charge")
	}

	// Redelivery: every record already on usage.v1 is produced again. Nothing may change.
	// A marker request afterwards shares the account's partition (key = account id), so once
	// it has settled every duplicate before it has been seen.
	replayed := replayTopic(t, e.s.KafkaAddr(), accountID)
	require.Equal(t, requests, replayed)
	marker := e.post(0, key, messageBody("claude-sonnet-4-5", false, "input=5 output=5"))
	require.Equal(t, 200, marker.Status, "%s", marker.Body)
	want += expectedCost(t, "claude-sonnet-4-5", tokens{input: 5, output: 5})
	e.waitBalance(accountID, start-want)
	if e.chAddr != "" {
		rows, distinct, total := e.waitClickHouse(accountID, requests+1)
		require.Equal(t, int64(requests+1), rows, "re-delivered records add no rows")
		require.Equal(t, rows, distinct)
		require.Equal(t, want, total)
	}
	// Let any late duplicate land, then check again: still exact.
	time.Sleep(2 * time.Second)
	e.waitBalance(accountID, start-want)
}

// replayTopic reads every record of the account from usage.v1 with a fresh consumer group and
// produces them again, as a producer retry or WAL replay would. It returns how many it replayed.
func replayTopic(t *testing.T, broker, accountID string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := bus.NewConsumer(bus.ConsumerConfig{Brokers: []string{broker}, Topic: usage.Topic,
		Group: fmt.Sprintf("e2e-replay-%d", time.Now().UnixNano())})
	defer c.Close()
	var again []bus.Message
	quiet := 0
	for quiet < 3 {
		fctx, fcancel := context.WithTimeout(ctx, time.Second)
		batch, err := c.FetchBatch(fctx, 1000, 100*time.Millisecond)
		fcancel()
		if err != nil {
			require.NoError(t, ctx.Err(), "reading usage.v1")
			quiet++
			continue
		}
		quiet = 0
		for _, m := range batch {
			if string(m.Key) == accountID {
				again = append(again, bus.Message{Key: m.Key, Value: m.Value})
			}
		}
	}
	p := bus.NewProducer(bus.ProducerConfig{Brokers: []string{broker}, Topic: usage.Topic})
	defer p.Close()
	require.NoError(t, p.Send(ctx, again...))
	return len(again)
}
