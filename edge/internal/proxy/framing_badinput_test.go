package proxy

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// sdkHeaders is what an official SDK sends, as fasthttp keeps it in RawHeaders.
const sdkHeaders = "Host: api.example.com\r\nAccept: application/json\r\nAnthropic-Version: 2023-06-01\r\n" +
	"Authorization: Bearer sk-tg-0123456789abcdef0123456789abcdef0123456789a\r\nContent-Type: application/json\r\n" +
	"User-Agent: Anthropic/JS 0.68.0\r\nX-Stainless-Lang: js\r\nX-Stainless-Package-Version: 0.68.0\r\n" +
	"X-Stainless-Os: Linux\r\nX-Stainless-Arch: x64\r\nX-Stainless-Runtime: node\r\nX-Stainless-Retry-Count: 0\r\n" +
	"X-Stainless-Timeout: 600\r\nContent-Length: 1234\r\n\r\n"

func TestFramingConflict(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string
		want bool
	}{
		{"sdk request", sdkHeaders, false},
		{"chunked only", "Host: x\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"both", "Host: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"both, other order, lower case", "transfer-encoding: chunked\r\nhost: x\r\ncontent-length: 5\r\n\r\n", true},
		{"both, mixed case, no CR", "TRANSFER-ENCODING: identity\nContent-LENGTH: 0\n", true},
		{"no trailing newline", "Content-Length: 5\r\nTransfer-Encoding: chunked", true},
		{"look-alike names", "Content-Length-X: 5\r\nX-Transfer-Encoding: chunked\r\nTransfer-Encodings: x\r\n\r\n", false},
		{"value mentions the other", "Content-Length: 5\r\nX-Note: Transfer-Encoding: chunked\r\n\r\n", false},
		{"empty", "", false},
		{"control byte in the name folds to a dash under |0x20", "Transfer-Encoding: chunked\nContent\rLength: 5\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, framingConflict([]byte(tc.raw)))
		})
	}
}

// FuzzFramingConflict compares the scanner with a plain reading of the header lines.
func FuzzFramingConflict(f *testing.F) {
	f.Add([]byte(sdkHeaders))
	f.Add([]byte("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"))
	f.Add([]byte("transfer-encoding:\ncontent-length:"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var cl, te bool
		for _, line := range strings.Split(string(raw), "\n") {
			name, _, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch strings.ToLower(name) {
			case "content-length":
				cl = true
			case "transfer-encoding":
				te = true
			}
		}
		require.Equal(t, cl && te, framingConflict(raw), "%q", raw)
	})
}

func TestFramingConflictAllocatesNothing(t *testing.T) {
	raw := []byte(sdkHeaders)
	require.Zero(t, testing.AllocsPerRun(100, func() { framingConflict(raw) }))
}

func BenchmarkFramingConflict(b *testing.B) {
	raw := []byte(sdkHeaders)
	b.ReportAllocs()
	for b.Loop() {
		if framingConflict(raw) {
			b.Fatal("conflict")
		}
	}
}
