package mock

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The directive is a line "mock: key=value key=value …" in the text of the last user message.
// It is how a test, talking to the mock through any number of proxies, fixes the exact usage and
// behaviour of a response. README.md documents the keys; keep the two in step.

// key names a directive key. The order of the constants is the order String writes them in.
type key int

const (
	keyInput key = iota
	keyOutput
	keyCacheWrite5m
	keyCacheWrite1h
	keyCacheRead
	keyThinking
	keyWebSearch
	keyStatus
	keyRetryAfter
	keyLatencyMs
	keyTTFTMs
	keyEvents
	keyTextBytes
	keyTPS
	keyMode
	keyTool
	keyStop
	keyCount
)

var keyNames = [keyCount]string{
	keyInput:        "input",
	keyOutput:       "output",
	keyCacheWrite5m: "cache_write_5m",
	keyCacheWrite1h: "cache_write_1h",
	keyCacheRead:    "cache_read",
	keyThinking:     "thinking",
	keyWebSearch:    "web_search",
	keyStatus:       "status",
	keyRetryAfter:   "retry_after",
	keyLatencyMs:    "latency_ms",
	keyTTFTMs:       "ttft_ms",
	keyEvents:       "events",
	keyTextBytes:    "text_bytes",
	keyTPS:          "tps",
	keyMode:         "mode",
	keyTool:         "tool",
	keyStop:         "stop",
}

// intRange bounds each integer key. The bounds keep one directive from asking the mock for
// gigabytes or hours; a zero range (max 0) marks a key that is not an integer.
var intRange = [keyCount]struct{ min, max int64 }{
	keyInput:        {0, 1e9},
	keyOutput:       {0, 1e9},
	keyCacheWrite5m: {0, 1e9},
	keyCacheWrite1h: {0, 1e9},
	keyCacheRead:    {0, 1e9},
	keyThinking:     {0, 1e9},
	keyWebSearch:    {0, 10_000},
	keyStatus:       {200, 599},
	keyRetryAfter:   {0, 86_400},
	keyLatencyMs:    {0, 600_000},
	keyTTFTMs:       {0, 600_000},
	keyEvents:       {1, 100_000},
	keyTextBytes:    {1, 8 << 20},
}

const tpsMax = 1e7

// mode is a set of stream behaviours, named in the directive's mode= list.
type mode uint8

const (
	modePadded   mode = 1 << iota // whitespace inside JSON payloads
	modeCRLF                      // \r\n line endings in SSE
	modeSplit                     // write at awkward byte positions, one flush each
	modeError                     // mid-stream event: error, no message_delta / message_stop
	modeTruncate                  // stream ends early without message_delta / message_stop
	modeLean                      // message_delta usage carries output_tokens only (older API)
)

var modeNames = []struct {
	name string
	m    mode
}{
	{"padded", modePadded},
	{"crlf", modeCRLF},
	{"split", modeSplit},
	{"error", modeError},
	{"truncate", modeTruncate},
	{"lean", modeLean},
}

var stopReasons = []string{"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"}

// errorTypes maps the statuses the mock can answer with (directive status=…, validation) to
// Anthropic's error type for them.
var errorTypes = map[int]string{
	400: "invalid_request_error",
	401: "authentication_error",
	402: "billing_error",
	403: "permission_error",
	404: "not_found_error",
	405: "invalid_request_error",
	413: "request_too_large",
	429: "rate_limit_error",
	500: "api_error",
	504: "timeout_error",
	529: "overloaded_error",
}

const toolNameMax = 64

// directive is one parsed directive line. It is comparable so the fuzz test can check that
// formatting and parsing again gives the same value.
type directive struct {
	set   [keyCount]bool
	n     [keyCount]int64 // integer keys
	tps   float64
	modes mode
	tool  string
	stop  string
}

const directivePrefix = "mock:"

// findDirective returns the arguments of the first line of text that begins (after spaces or
// tabs) with "mock:".
func findDirective(text string) (args string, found bool) {
	if !strings.Contains(text, directivePrefix) {
		return "", false
	}
	for line := range strings.Lines(text) {
		line = strings.TrimLeft(line, " \t")
		if rest, ok := strings.CutPrefix(line, directivePrefix); ok {
			return strings.TrimRight(rest, "\r\n"), true
		}
	}
	return "", false
}

// parseDirective parses the arguments after "mock:". Unknown keys, repeated keys and bad
// values are errors, so a typo in a test fails loudly instead of silently using defaults.
// Strings in the result never alias args.
func parseDirective(args string) (directive, error) {
	var d directive
	for field := range strings.FieldsSeq(args) {
		name, value, ok := strings.Cut(field, "=")
		if !ok {
			return directive{}, fmt.Errorf("%q: want key=value", field)
		}
		k := lookupKey(name)
		if k < 0 {
			return directive{}, fmt.Errorf("unknown key %q", name)
		}
		if d.set[k] {
			return directive{}, fmt.Errorf("key %q given twice", name)
		}
		d.set[k] = true
		if err := d.setValue(k, value); err != nil {
			return directive{}, fmt.Errorf("%s: %w", name, err)
		}
	}
	if d.modes&modeError != 0 && d.modes&modeTruncate != 0 {
		return directive{}, errors.New("mode: error and truncate exclude each other")
	}
	return d, nil
}

func lookupKey(name string) key {
	for k, n := range keyNames {
		if n == name {
			return key(k)
		}
	}
	return -1
}

func (d *directive) setValue(k key, value string) error {
	switch k {
	case keyTPS:
		v, err := strconv.ParseFloat(value, 64)
		if err != nil || math.IsNaN(v) || v <= 0 || v > tpsMax {
			return fmt.Errorf("want a number in (0, %g], got %q", tpsMax, value)
		}
		d.tps = v
	case keyMode:
		for name := range strings.SplitSeq(value, ",") {
			m, ok := lookupMode(name)
			if !ok {
				return fmt.Errorf("unknown mode %q", name)
			}
			d.modes |= m
		}
	case keyTool:
		if !validToolName(value) {
			return fmt.Errorf("want 1 to %d of [A-Za-z0-9_-], got %q", toolNameMax, value)
		}
		d.tool = strings.Clone(value)
	case keyStop:
		for _, r := range stopReasons {
			if r == value {
				d.stop = r
				return nil
			}
		}
		return fmt.Errorf("want one of %s, got %q", strings.Join(stopReasons, "|"), value)
	default:
		r := intRange[k]
		v, err := strconv.ParseInt(value, 10, 64)
		if err != nil || v < r.min || v > r.max {
			return fmt.Errorf("want an integer in [%d, %d], got %q", r.min, r.max, value)
		}
		if k == keyStatus {
			if _, ok := errorTypes[int(v)]; !ok && v != 200 {
				return fmt.Errorf("unsupported status %d", v)
			}
		}
		d.n[k] = v
	}
	return nil
}

func lookupMode(name string) (mode, bool) {
	for _, mn := range modeNames {
		if mn.name == name {
			return mn.m, true
		}
	}
	return 0, false
}

func validToolName(s string) bool {
	if s == "" || len(s) > toolNameMax {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// String formats d as a directive line, keys in a fixed order; parsing its arguments gives d.
func (d directive) String() string {
	var b strings.Builder
	b.WriteString(directivePrefix)
	for k := range keyCount {
		if !d.set[k] {
			continue
		}
		b.WriteByte(' ')
		b.WriteString(keyNames[k])
		b.WriteByte('=')
		switch k {
		case keyTPS:
			b.WriteString(strconv.FormatFloat(d.tps, 'g', -1, 64))
		case keyMode:
			first := true
			for _, mn := range modeNames {
				if d.modes&mn.m != 0 {
					if !first {
						b.WriteByte(',')
					}
					b.WriteString(mn.name)
					first = false
				}
			}
		case keyTool:
			b.WriteString(d.tool)
		case keyStop:
			b.WriteString(d.stop)
		default:
			b.WriteString(strconv.FormatInt(d.n[k], 10))
		}
	}
	return b.String()
}
