package forwarder_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/bench/forwarder"
	"tollgate/bench/load"
	"tollgate/bench/mock"
	"tollgate/pkg/usage"
)

func start(t *testing.T, cfg forwarder.Config) string {
	t.Helper()
	f, err := forwarder.New(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return "http://" + ln.Addr().String()
}

func post(t *testing.T, url, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/v1/messages?beta=true", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("x-api-key", "client-key")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("anthropic-beta", "b1")
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

func TestForwardsJSONAndStreams(t *testing.T) {
	up, srv := mock.Start(t, mock.Config{})
	fwd := start(t, forwarder.Config{Upstream: up, UpstreamKey: "operator-key"})

	shape := load.Shape{Model: "claude-sonnet-4-5", Tokens: usage.Tokens{Input: 3, Output: 7}}
	resp, body := post(t, fwd, string(shape.Body()))
	require.Equal(t, 200, resp.StatusCode, body)
	require.Contains(t, body, `"output_tokens":7`)
	require.True(t, strings.HasPrefix(resp.Header.Get("request-id"), "req_01"))
	got, ok := srv.LastRequest()
	require.True(t, ok)
	require.Equal(t, "operator-key", got.Get("x-api-key"))
	require.Equal(t, "identity", got.Get("accept-encoding"))
	require.Equal(t, "b1", got.Get("anthropic-beta"))
	require.Equal(t, "beta=true", got.Query)

	shape.Stream, shape.Extra = true, "events=20 tps=2000"
	resp, body = post(t, fwd, string(shape.Body()))
	require.Equal(t, 200, resp.StatusCode, body)
	require.Equal(t, "text/event-stream", resp.Header.Get("content-type"))
	require.Equal(t, 20, strings.Count(body, "event: content_block_delta"))
	require.True(t, strings.HasSuffix(body, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"))

	shape.Stream, shape.Extra = false, "status=529"
	resp, body = post(t, fwd, string(shape.Body()))
	require.Equal(t, 529, resp.StatusCode)
	require.Contains(t, body, "overloaded_error")
}

func TestUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	fwd := start(t, forwarder.Config{Upstream: "http://" + addr, Timeout: 2 * time.Second})
	resp, body := post(t, fwd, `{}`)
	require.Equal(t, 502, resp.StatusCode)
	require.Contains(t, body, "api_error")
}

func TestConfigRejected(t *testing.T) {
	_, err := forwarder.New(forwarder.Config{Upstream: "127.0.0.1:80"}, slog.New(slog.DiscardHandler))
	require.Error(t, err)
	_, err = forwarder.New(forwarder.Config{Upstream: "http://127.0.0.1:1", Timeout: -1}, slog.New(slog.DiscardHandler))
	require.Error(t, err)
}
