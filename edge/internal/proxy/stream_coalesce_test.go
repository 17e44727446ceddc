package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
)

// chunkedUpstream answers one GET with a chunked text/event-stream whose body is written in
// the given pieces, one socket write each; before each piece after the first it waits for a
// value on next, so a test controls what the client has received when it reads.
func chunkedUpstream(t *testing.T, next <-chan struct{}, pieces ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for { // the request head; a GET has no body
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		head := "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
		for i, p := range pieces {
			if i > 0 {
				if _, ok := <-next; !ok {
					return
				}
			}
			if _, err := io.WriteString(c, head+p); err != nil {
				return
			}
			head = ""
		}
		_, _ = io.Copy(io.Discard, c) // until the client closes
	}()
	return ln.Addr().String()
}

// upstreamStream opens the chunked upstream at addr through fasthttp's client, as forward
// does, and returns an exchange reading it.
func upstreamStream(t *testing.T, addr string) *exchange {
	t.Helper()
	hc := &fasthttp.HostClient{Addr: addr, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://" + addr + "/v1/messages")
	resp := fasthttp.AcquireResponse()
	resp.StreamBody = true
	require.NoError(t, hc.Do(req, resp))
	t.Cleanup(func() {
		resp.CloseBodyStream() //nolint:errcheck // the test is over
		fasthttp.ReleaseResponse(resp)
		hc.CloseIdleConnections()
	})
	return &exchange{start: time.Now(), body: resp.BodyStream()}
}

// requireReads reads x with room bytes per Read: each Read must return the next of wants, and
// then the stream must end.
func requireReads(t *testing.T, x *exchange, room int, wants ...string) {
	t.Helper()
	for _, want := range wants {
		got, err := readOnce(t, x, room)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := readOnce(t, x, room)
	require.ErrorIs(t, err, io.EOF)
}

// readOnce is one Read of x into a buffer of size bytes.
func readOnce(t *testing.T, x *exchange, size int) (string, error) {
	t.Helper()
	b := make([]byte, size)
	n, err := x.Read(b)
	return string(b[:n]), err
}

// TestStreamReadCoalescesBufferedChunks: chunks that arrived together leave in one Read, up to
// the room the caller gives; a chunk not complete yet is not waited for. It also fails when a
// fasthttp upgrade hides the client's buffer from bufferedChunk.
func TestStreamReadCoalescesBufferedChunks(t *testing.T) {
	t.Run("arrived together", func(t *testing.T) {
		x := upstreamStream(t, chunkedUpstream(t, nil, "5\r\nhello\r\n6\r\n world\r\n1\r\n!\r\n0\r\n\r\n"))
		require.NotNil(t, streamLayoutOf(x.body), "fasthttp's client stream is no longer readable by bufferedChunk")
		got, err := readOnce(t, x, 4096)
		require.NoError(t, err)
		require.Equal(t, "hello world!", got)
		got, err = readOnce(t, x, 4096)
		require.ErrorIs(t, err, io.EOF)
		require.Empty(t, got)
		require.True(t, x.eof)
	})
	t.Run("up to the room given", func(t *testing.T) {
		x := upstreamStream(t, chunkedUpstream(t, nil, "5\r\nhello\r\n6\r\n world\r\n1\r\n!\r\n0\r\n\r\n"))
		requireReads(t, x, 8, "hello", " world!")
	})
	t.Run("incomplete chunk not waited for", func(t *testing.T) {
		next := make(chan struct{})
		defer close(next)
		x := upstreamStream(t, chunkedUpstream(t, next, "5\r\nhello\r\n6\r\n wo", "rld\r\n0\r\n\r\n"))
		got, err := readOnce(t, x, 4096)
		require.NoError(t, err, "Read waited for the rest of a chunk")
		require.Equal(t, "hello", got)
		require.Zero(t, testing.AllocsPerRun(100, func() { bufferedChunk(x.body, 4096) }))
		next <- struct{}{}
		rest, err := io.ReadAll(x) // " wo" is buffered and may come first, as before
		require.NoError(t, err)
		require.Equal(t, " world", string(rest))
	})
	t.Run("chunk extensions read one by one", func(t *testing.T) {
		x := upstreamStream(t, chunkedUpstream(t, nil, "5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"))
		requireReads(t, x, 4096, "hello", " world")
	})
	t.Run("every event metered", func(t *testing.T) {
		ev := "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"abc\"}}\n\n"
		chunk := strconv.FormatInt(int64(len(ev)), 16) + "\r\n" + ev + "\r\n"
		x := upstreamStream(t, chunkedUpstream(t, nil, strings.Repeat(chunk, 3)+"0\r\n\r\n"))
		got, err := readOnce(t, x, 4096)
		require.NoError(t, err)
		require.Equal(t, strings.Repeat(ev, 3), got)
		require.Equal(t, int64(9), x.scan.Result().TextBytes)
	})
}

func TestBufferedChunkOtherBodies(t *testing.T) {
	for _, body := range []io.Reader{strings.NewReader("5\r\nhello\r\n"), &eventReader{events: [][]byte{[]byte("x")}}, nil} {
		require.Zero(t, bufferedChunk(body, 4096))
	}
}

func TestCompleteChunk(t *testing.T) {
	for _, tc := range []struct {
		p    string
		room int
		want int
	}{
		{"5\r\nhello\r\n", 5, 5},
		{"5\r\nhello\r\n6\r\n", 100, 5},
		{"A\r\n0123456789\r\n", 10, 10},
		{"a\r\n0123456789\r\n", 10, 10},
		{"5\r\nhello\r\n", 4, 0},      // no room
		{"5\r\nhello\r", 5, 0},        // CRLF not all here
		{"5\r\nhell", 5, 0},           // data not all here
		{"5\r", 5, 0},                 // size line not all here
		{"", 5, 0},                    // nothing
		{"0\r\n\r\n", 5, 0},           // the last chunk is left to fasthttp
		{"5;x\r\nhello\r\n", 5, 0},    // an extension
		{"5 \r\nhello\r\n", 5, 0},     // padding
		{"\r\nhello\r\n", 5, 0},       // no size
		{"5\r\nhelloXX", 5, 0},        // not CRLF after the data
		{"5\nhello\r\n", 5, 0},        // a bare LF
		{"1000000\r\n", 1 << 30, 0},   // more digits than any room needs
		{"fffff\r\n", 1 << 20, 0},     // big and not all here
		{"g\r\nhello\r\n", 5, 0},      // not hex
		{"05\r\nhello\r\n", 5, 5},     // leading zero
		{"3\r\nabc\r\n4\r\nde", 3, 3}, // only the first chunk counts
	} {
		require.Equal(t, tc.want, completeChunk([]byte(tc.p), tc.room), "%q room %d", tc.p, tc.room)
	}
}

// FuzzCompleteChunk checks completeChunk against fasthttp's own reading of chunks: whenever it
// claims a complete chunk, fasthttp reads the same chunk from those bytes, so the Read that
// follows returns exactly it, at once.
func FuzzCompleteChunk(f *testing.F) {
	for _, seed := range []string{"5\r\nhello\r\n", "A\r\n0123456789\r\n6\r\n", "05\r\nhello\r\n", "5;x\r\nhello\r\n",
		"5 \r\nhello\r\n", "0\r\n\r\n", "5\r\nhelloXX", "5\nhello\r\n"} {
		f.Add([]byte(seed), 4096)
	}
	f.Fuzz(func(t *testing.T, p []byte, room int) {
		size := completeChunk(p, room)
		if size == 0 {
			return
		}
		require.Positive(t, room)
		require.LessOrEqual(t, size, room)
		head := bytes.Index(p, []byte("\r\n")) + 2
		chunk := p[:head+size+2]
		var resp fasthttp.Response
		err := resp.Read(bufio.NewReader(io.MultiReader(
			strings.NewReader("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
			bytes.NewReader(chunk), strings.NewReader("0\r\n\r\n"))))
		require.NoError(t, err, "%q", chunk)
		require.Equal(t, p[head:head+size], resp.Body())
	})
}
