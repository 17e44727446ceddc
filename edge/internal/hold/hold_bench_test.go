package hold_test

import (
	"testing"

	"tollgate/edge/internal/hold"
)

// BenchmarkScanAndCompute is the hold's share of a request: reading the body once
// and the arithmetic, for each request shape of the tests (the image shapes carry 300 KiB
// and 40 KiB of base64).
func BenchmarkScanAndCompute(b *testing.B) {
	for _, s := range shapes() {
		body := []byte(s.body)
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				in := hold.Scan(body)
				in.MaxTokens = 1024
				if hold.Compute(in, sonnet) <= 0 {
					b.Fatal("no hold")
				}
			}
		})
	}
}
