package meter

import (
	"bytes"
	"os"
	"testing"
)

func BenchmarkParts(b *testing.B) {
	plain, _ := os.ReadFile("testdata/plain.sse")
	lines := bytes.Split(plain, []byte("\n"))
	start := bytes.TrimPrefix(lines[1], []byte("data: "))
	var delta, text []byte
	for _, l := range lines {
		if bytes.Contains(l, []byte(`"message_delta"`)) {
			delta = bytes.TrimPrefix(l, []byte("data: "))
		}
		if bytes.Contains(l, []byte(`text_delta`)) {
			text = bytes.TrimPrefix(l, []byte("data: "))
		}
	}
	b.Run("parseStart", func(b *testing.B) {
		for b.Loop() {
			parseStart(start)
		}
	})
	b.Run("parseDelta", func(b *testing.B) {
		for b.Loop() {
			parseDelta(delta)
		}
	})
	b.Run("deltaText", func(b *testing.B) {
		for b.Loop() {
			deltaText(text)
		}
	})
	other := bytes.ReplaceAll(plain, []byte("event: content_block_delta"), []byte("event: ping"))
	other = bytes.ReplaceAll(other, []byte("event: message_"), []byte("event: xessage_"))
	b.Run("linesOnly", func(b *testing.B) {
		var s Scanner
		b.SetBytes(int64(len(other)))
		for b.Loop() {
			s.Reset()
			s.Write(other)
		}
	})
}
