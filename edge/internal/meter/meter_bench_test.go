package meter_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"tollgate/edge/internal/meter"
)

// chunk splits p into pieces of n bytes (n <= 0: one per SSE event, as an upstream flushes).
func chunk(p []byte, n int) [][]byte {
	if n <= 0 {
		return bytes.SplitAfter(p, []byte("\n\n"))
	}
	var out [][]byte
	for len(p) > n {
		out = append(out, p[:n])
		p = p[n:]
	}
	return append(out, p)
}

// bigDeltaStream is a stream whose content deltas carry deltaBytes of text each (with the
// escapes real text has), totalling about 1 MiB.
func bigDeltaStream(b testing.TB, deltaBytes int) []byte {
	plain := readTestdata(b, "plain.sse")
	head := plain[:bytes.Index(plain, []byte("event: content_block_delta"))]
	tail := plain[bytes.Index(plain, []byte("event: content_block_stop")):]
	line := `The quick brown fox \"jumps\" over the lazy dog.\n`
	text := strings.Repeat(line, deltaBytes/len(line)+1)[:deltaBytes]
	text = strings.TrimRight(text, `\`)
	var buf bytes.Buffer
	buf.Write(head)
	for buf.Len() < 1<<20 {
		buf.WriteString(textDelta(text))
	}
	buf.Write(tail)
	return buf.Bytes()
}

func BenchmarkScanner(b *testing.B) {
	streams := []struct {
		name   string
		stream []byte
	}{
		{"realistic20events", readTestdata(b, "plain.sse")},
		{"realistic20events_crlf", crlf(readTestdata(b, "plain.sse"))},
		{"delta8KiB", bigDeltaStream(b, 8<<10)},
		{"delta256KiB", bigDeltaStream(b, 256<<10)},
	}
	for _, st := range streams {
		for _, size := range []int{0, 64, 512, 16 << 10} {
			name := fmt.Sprintf("%s/chunk=%d", st.name, size)
			if size == 0 {
				name = st.name + "/chunk=event"
			}
			chunks := chunk(st.stream, size)
			b.Run(name, func(b *testing.B) {
				var s meter.Scanner
				b.SetBytes(int64(len(st.stream)))
				b.ReportAllocs()
				cpu := startCPU(b, int64(len(st.stream)))
				for b.Loop() {
					s.Reset()
					for _, c := range chunks {
						_, _ = s.Write(c)
					}
				}
				cpu.stop()
				if !s.Result().Complete {
					b.Fatal("stream did not meter as complete")
				}
			})
		}
	}
}

func BenchmarkFromJSON(b *testing.B) {
	message := readTestdata(b, "message.json")
	long := bytes.Replace(message, []byte(`"text": "Tokens`),
		[]byte(`"text": "`+strings.Repeat(`Lorem ipsum \"dolor\" sit amet.\n`, 2000)+`Tokens`), 1)
	for _, body := range []struct {
		name string
		body []byte
	}{{"message", message}, {"message64KiB", long}} {
		b.Run(body.name, func(b *testing.B) {
			b.SetBytes(int64(len(body.body)))
			b.ReportAllocs()
			cpu := startCPU(b, int64(len(body.body)))
			defer cpu.stop()
			for b.Loop() {
				if r, err := meter.FromJSON(body.body); err != nil || !r.Complete {
					b.Fatal("not complete", err)
				}
			}
		})
	}
}
