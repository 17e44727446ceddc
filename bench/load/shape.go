package load

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"tollgate/pkg/usage"
)

// Shape is one kind of request the generator sends: a model, streaming or not, and the usage
// the mock upstream is told to report (its "mock:" directive), so the cost of every request is
// known in advance.
type Shape struct {
	Name   string       `json:"name"`
	Model  string       `json:"model"` // as requested, e.g. "claude-sonnet-4-5"
	Stream bool         `json:"stream"`
	Tokens usage.Tokens `json:"tokens"` // what the mock reports; the expected bill
	// Extra holds directive keys that shape the response but not its usage, e.g.
	// "events=20 tps=2000 ttft_ms=5".
	Extra string `json:"extra,omitempty"`
	// Weight is the shape's share of requests relative to the other shapes. Default 1.
	Weight int `json:"weight"`
}

// usageKeys are the directive keys that set usage, in the order Directive writes them.
var usageKeys = []string{"input", "output", "cache_write_5m", "cache_write_1h", "cache_read", "thinking", "web_search"}

func tokenField(t *usage.Tokens, key string) *int64 {
	switch key {
	case "input":
		return &t.Input
	case "output":
		return &t.Output
	case "cache_write_5m":
		return &t.CacheWrite5m
	case "cache_write_1h":
		return &t.CacheWrite1h
	case "cache_read":
		return &t.CacheRead
	case "thinking":
		return &t.Thinking
	case "web_search":
		return &t.WebSearchRequests
	}
	return nil
}

// ParseDirective splits the arguments of a mock directive ("input=200 output=120 events=20")
// into its usage, and the other keys, kept verbatim for the mock to check.
func ParseDirective(s string) (usage.Tokens, string, error) {
	var t usage.Tokens
	var extra []string
	seen := map[string]bool{}
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return usage.Tokens{}, "", fmt.Errorf("directive %q: want key=value", f)
		}
		if seen[k] {
			return usage.Tokens{}, "", fmt.Errorf("directive: key %q given twice", k)
		}
		seen[k] = true
		dst := tokenField(&t, k)
		if dst == nil {
			extra = append(extra, f)
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > 1e9 {
			return usage.Tokens{}, "", fmt.Errorf("directive %s: want an integer in [0, 1e9], got %q", k, v)
		}
		*dst = n
	}
	if t.Thinking > t.Output {
		return usage.Tokens{}, "", errors.New("directive: thinking is part of output and cannot exceed it")
	}
	return t, strings.Join(extra, " "), nil
}

// Directive is the directive line of s: every usage key spelled out, so the mock reports
// exactly s.Tokens whatever its defaults are, then s.Extra.
func (s Shape) Directive() string {
	var b strings.Builder
	b.WriteString("mock:")
	t := s.Tokens
	for _, k := range usageKeys {
		b.WriteString(" " + k + "=")
		b.WriteString(strconv.FormatInt(*tokenField(&t, k), 10))
	}
	if s.Extra != "" {
		b.WriteString(" " + s.Extra)
	}
	return b.String()
}

// fillerText pads prompts; see Body.
const fillerText = "The quick brown fox jumps over the lazy dog. "

// Body is the request body of s. The prompt is padded to at least as many bytes as the input
// side has tokens (input + cache writes + cache reads), as a real prompt would be: a proxy's
// admission estimate bounds input tokens by body bytes, and a body far smaller than its billed
// input would make every request an estimate error.
func (s Shape) Body() []byte {
	t := s.Tokens
	inputSide := t.Input + t.CacheWrite5m + t.CacheWrite1h + t.CacheRead
	var text strings.Builder
	for int64(text.Len()) < inputSide {
		text.WriteString(fillerText)
	}
	text.WriteString("\n" + s.Directive())
	body := map[string]any{
		"model":      s.Model,
		"max_tokens": max(t.Output, 1) + 64,
		"messages":   []map[string]any{{"role": "user", "content": text.String()}},
	}
	if s.Stream {
		body["stream"] = true
	}
	b, err := json.Marshal(body)
	if err != nil {
		panic(err) // maps of strings and numbers always marshal
	}
	return b
}

// shapeTable expands weights into a cycle of shape indexes: request i has shape
// table[i%len(table)]. Weights are reduced by their common divisor so the cycle is short.
func shapeTable(shapes []Shape) []int {
	g := 0
	for _, s := range shapes {
		g = gcd(g, max(s.Weight, 1))
	}
	var t []int
	for i, s := range shapes {
		for range max(s.Weight, 1) / g {
			t = append(t, i)
		}
	}
	// Interleave so a short run still sees every shape: sort by position within each shape's
	// own share (a stable "largest remainder" spread).
	out := make([]int, 0, len(t))
	count := make([]int, len(shapes))
	for _, idx := range t {
		count[idx]++
	}
	used := make([]int, len(shapes))
	for range t {
		best, bestScore := -1, 2.0
		for i := range shapes {
			if used[i] == count[i] {
				continue
			}
			score := float64(used[i]+1) / float64(count[i]+1)
			if score < bestScore {
				best, bestScore = i, score
			}
		}
		out = append(out, best)
		used[best]++
	}
	return out
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
