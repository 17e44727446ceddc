package mock_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The helpers here deliberately share nothing with the package: net/http and encoding/json
// on the client side, and a line-based SSE parser written from the SSE spec.

type sseEvent struct {
	name string
	data string
}

// parseSSE splits a stream into events: lines end in \n or \r\n, "event:" and "data:" fields
// (one optional space after the colon), a blank line ends an event.
func parseSSE(t *testing.T, body []byte) []sseEvent {
	t.Helper()
	var evs []sseEvent
	var cur sseEvent
	var data []string
	lines := strings.Split(string(body), "\n")
	require.Equal(t, "", lines[len(lines)-1], "stream ends with a line ending")
	for _, line := range lines[:len(lines)-1] {
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			if cur.name != "" || len(data) > 0 {
				cur.data = strings.Join(data, "\n")
				evs = append(evs, cur)
			}
			cur, data = sseEvent{}, nil
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			cur.name = value
		case "data":
			data = append(data, value)
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
	require.True(t, cur.name == "" && len(data) == 0, "stream ends with a blank line")
	return evs
}

func names(evs []sseEvent) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.name
	}
	return out
}

// obj decodes a JSON object; numbers stay json.Number so counts compare exactly.
func obj(t *testing.T, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	require.NoError(t, dec.Decode(&m), "payload %q", s)
	return m
}

// dig follows a path of object keys and array indexes.
func dig(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch p := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			require.True(t, ok, "at %q: not an object: %v", p, v)
			v, ok = m[p]
			if !ok {
				return nil
			}
		case int:
			a, ok := v.([]any)
			require.True(t, ok, "at %d: not an array: %v", p, v)
			require.Less(t, p, len(a))
			v = a[p]
		}
	}
	return v
}

// num returns the integer at path, or -1 when absent.
func num(t *testing.T, v any, path ...any) int64 {
	t.Helper()
	x := dig(t, v, path...)
	if x == nil {
		return -1
	}
	n, ok := x.(json.Number)
	require.True(t, ok, "%v at %v is not a number", x, path)
	i, err := n.Int64()
	require.NoError(t, err)
	return i
}

type response struct {
	status int
	header http.Header
	body   []byte
}

var client = &http.Client{Transport: &http.Transport{DisableCompression: true}}

func do(t *testing.T, method, url, body string, header map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

var apiHeaders = map[string]string{
	"x-api-key":         "sk-test",
	"anthropic-version": "2023-06-01",
	"content-type":      "application/json",
}

func postMessages(t *testing.T, base, body string) response {
	t.Helper()
	return do(t, "POST", base+"/v1/messages", body, apiHeaders)
}

// messagesBody builds a request body whose only user message is text.
func messagesBody(model string, maxTokens int, stream bool, text string) string {
	b, _ := json.Marshal(map[string]any{
		"model":      model,
		"max_tokens": maxTokens,
		"stream":     stream,
		"messages":   []any{map[string]any{"role": "user", "content": text}},
	})
	return string(b)
}

// rawChunks sends a request over a plain TCP connection and returns the response head and
// the body's chunks exactly as framed by chunked transfer encoding: each chunk is one flush
// of the server, whatever TCP did with them.
func rawChunks(t *testing.T, base, body string) (head string, chunks [][]byte) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: mock\r\nx-api-key: k\r\n"+
		"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s", len(body), body)
	require.NoError(t, err)
	r := bufio.NewReader(conn)
	var h strings.Builder
	for {
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		h.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	head = h.String()
	require.Contains(t, strings.ToLower(head), "transfer-encoding: chunked")
	for {
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		n, err := strconv.ParseInt(strings.TrimSpace(line), 16, 64)
		require.NoError(t, err)
		if n == 0 {
			break
		}
		chunk := make([]byte, n+2)
		_, err = io.ReadFull(r, chunk)
		require.NoError(t, err)
		require.True(t, bytes.HasSuffix(chunk, []byte("\r\n")))
		chunks = append(chunks, chunk[:n])
	}
	return head, chunks
}
