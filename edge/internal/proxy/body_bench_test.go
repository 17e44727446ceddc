package proxy

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"tollgate/edge/internal/hold"
)

// ordinaryBody is the body the load generator sends for a short non-streaming request: about
// 1,100 bytes of prompt ending in a mock directive after a "\n" escape, keys in
// encoding/json's order (model after messages).
func ordinaryBody() []byte {
	var text strings.Builder
	for text.Len() < 1100 {
		text.WriteString("The quick brown fox jumps over the lazy dog. ")
	}
	return []byte(`{"max_tokens":184,"messages":[{"role":"user","content":"` + text.String() +
		`\nmock: input=200 output=120 cache_read=900"}],"model":"claude-sonnet-4-5"}`)
}

// imageBody carries a 300 KiB image as base64, the shape where the checks must stay linear.
func imageBody() []byte {
	data := base64.StdEncoding.EncodeToString(make([]byte, 300<<10))
	return []byte(`{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":[` +
		`{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + data + `"}},` +
		`{"type":"text","text":"What is in this image?"}]}]}`)
}

// codeBody carries 64 KiB of source code in a tool result: an escape every few bytes.
func codeBody() []byte {
	var code strings.Builder
	for code.Len() < 64<<10 {
		code.WriteString("\tif err != nil {\n\t\treturn fmt.Errorf(\"read %q: %w\", name, err)\n\t}\n")
	}
	content, err := json.Marshal(code.String())
	if err != nil {
		panic(err)
	}
	return []byte(`{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":[` +
		`{"type":"tool_result","tool_use_id":"toolu_01","content":` + string(content) + `}]}]}`)
}

// BenchmarkBodyCheck is the edge's whole reading of a Messages body before admission:
// parseMessages and hold.Scan, as the handler calls them.
func BenchmarkBodyCheck(b *testing.B) {
	for _, bc := range []struct {
		name string
		body []byte
	}{{"ordinary", ordinaryBody()}, {"image", imageBody()}, {"code", codeBody()}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.body)))
			for b.Loop() {
				if _, e := parseMessages(bc.body); e != nil {
					b.Fatal(e)
				}
				if hold.Scan(bc.body).TextBytes <= 0 {
					b.Fatal("no text")
				}
			}
		})
	}
}
