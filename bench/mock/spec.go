package mock

import (
	"errors"
	"time"
)

// spec is everything that decides a response, resolved from the request, its directive and the
// server's defaults. It is comparable and is the key of the rendered-response cache: two
// requests with equal specs get byte-identical responses apart from their ids.
type spec struct {
	model  string // answered model id
	stream bool

	input        int64 // as message_delta and the JSON body report it
	output       int64 // includes thinking
	cacheWrite5m int64
	cacheWrite1h int64
	cacheRead    int64
	thinking     int64
	webSearch    int64

	modes      mode
	status     int // 200, or an error status answered instead of a message
	retryAfter int64
	latency    time.Duration
	ttft       time.Duration
	tps        float64 // output tokens per second; 0 means unpaced
	events     int     // text content_block_delta events
	textBytes  int
	tool       string // tool_use block name; "" for none
	stop       string
}

// Defaults of the directive keys that do not come from the request or the server config.
const (
	outputDefaultMax      = 16 // output = min(max_tokens, 16)
	thinkingDefault       = 8  // thinking tokens when the request enables thinking
	eventsDefault         = 4
	retryAfterDefault     = 1 // seconds
	bytesPerToken         = 4 // default text size per output token, and input per text byte
	thinkingTextBytesMax  = 64 << 10
	thinkingDeltasDefault = 2
)

// resolve computes the spec of a request. Its only error is a directive that contradicts
// itself, answered with 400.
func resolve(r *request, cfg *Config) (spec, error) {
	d := &r.directive
	s := spec{
		model:      r.model,
		stream:     r.stream,
		latency:    cfg.Latency,
		ttft:       cfg.TTFT,
		tps:        cfg.TPS,
		status:     200,
		retryAfter: retryAfterDefault,
		modes:      d.modes,
		tool:       d.tool,
	}
	get := func(k key, def int64) int64 {
		if d.set[k] {
			return d.n[k]
		}
		return def
	}

	s.input = get(keyInput, max(1, int64(r.textBytes/bytesPerToken)))
	s.cacheWrite5m = get(keyCacheWrite5m, 0)
	s.cacheWrite1h = get(keyCacheWrite1h, 0)
	s.cacheRead = get(keyCacheRead, 0)
	s.webSearch = get(keyWebSearch, 0)
	thinkingDef := int64(0)
	if r.thinking {
		thinkingDef = thinkingDefault
	}
	s.thinking = get(keyThinking, thinkingDef)
	s.output = get(keyOutput, s.thinking+min(r.maxTokens, outputDefaultMax))
	if s.output < s.thinking {
		return spec{}, errors.New("output must be at least thinking (thinking is part of output)")
	}

	s.status = int(get(keyStatus, 200))
	s.retryAfter = get(keyRetryAfter, retryAfterDefault)
	if d.set[keyLatencyMs] {
		s.latency = time.Duration(d.n[keyLatencyMs]) * time.Millisecond
	}
	if d.set[keyTTFTMs] {
		s.ttft = time.Duration(d.n[keyTTFTMs]) * time.Millisecond
	}
	if d.set[keyTPS] {
		s.tps = d.tps
	}

	textTokens := s.output - s.thinking
	switch {
	case d.set[keyEvents] && d.set[keyTextBytes]:
		s.events, s.textBytes = int(d.n[keyEvents]), int(d.n[keyTextBytes])
		if s.textBytes < s.events {
			return spec{}, errors.New("text_bytes must be at least events (no delta is empty)")
		}
	case d.set[keyEvents]:
		s.events = int(d.n[keyEvents])
		s.textBytes = int(max(min(textTokens*bytesPerToken, int64(intRange[keyTextBytes].max)), int64(s.events)))
	case d.set[keyTextBytes]:
		s.textBytes = int(d.n[keyTextBytes])
		s.events = min(eventsDefault, s.textBytes)
	default:
		s.events = eventsDefault
		s.textBytes = int(max(min(textTokens*bytesPerToken, int64(intRange[keyTextBytes].max)), eventsDefault))
	}

	switch {
	case d.stop != "":
		s.stop = d.stop
	case s.tool != "":
		s.stop = "tool_use"
	case r.maxTokens > 0 && s.output >= r.maxTokens:
		s.stop = "max_tokens"
	default:
		s.stop = "end_turn"
	}

	// A non-streaming response cannot fail halfway; the API answers such a failure with 529.
	if !s.stream && s.modes&modeError != 0 && s.status == 200 {
		s.status = 529
	}
	return s, nil
}
