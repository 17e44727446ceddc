// Package usage defines the usage record: the one fact the edge emits per request, carried on
// Kafka topic usage.v1 (key = account id) to ledgerd (settlement) and analytics (ClickHouse).
//
// The wire form is JSON. Encoding appends to a caller-owned buffer so the edge can reuse one;
// decoding uses gjson and accepts unknown fields, so producers may add fields before consumers
// learn them. Version is carried in the "v" field.
package usage

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// Version is the schema version written in the "v" field.
const Version = 1

// Topics.
const (
	Topic    = "usage.v1"
	TopicDLQ = "usage.dlq.v1"
	// TopicPartitions is how many partitions the edge, ledgerd, analytics and the dev
	// broker give usage.v1 and usage.dlq.v1 when they create them (whoever starts first
	// does), so the count does not depend on start order. Partitions bound how many ledgerd
	// and analytics consumers share the work.
	TopicPartitions = 8
)

// Tokens are the token counts of one request, in the five billed categories plus the fields
// that feed them. Output includes Thinking, as Anthropic reports it: the billable plain output
// is Output − Thinking.
type Tokens struct {
	Input             int64 `json:"input"`
	Output            int64 `json:"output"`
	CacheWrite5m      int64 `json:"cache_write_5m"`
	CacheWrite1h      int64 `json:"cache_write_1h"`
	CacheRead         int64 `json:"cache_read"`
	Thinking          int64 `json:"thinking"`
	WebSearchRequests int64 `json:"web_search_requests"`
}

// Record is one request's usage. Field names are the JSON names in DESIGN §4.
type Record struct {
	V                    int    `json:"v"`
	RequestID            string `json:"request_id"` // UUIDv7, also the idempotency key
	EdgeID               string `json:"edge_id"`
	Seq                  uint64 `json:"seq"`
	AccountID            string `json:"account_id"`
	KeyID                string `json:"key_id"`
	LeaseID              string `json:"lease_id"`
	Model                string `json:"model"`
	ModelRequested       string `json:"model_requested"`
	TsStartMs            int64  `json:"ts_start_ms"`
	TsEndMs              int64  `json:"ts_end_ms"`
	TtfbMs               int64  `json:"ttfb_ms"`
	Status               int    `json:"status"`
	Stream               bool   `json:"stream"`
	StopReason           string `json:"stop_reason"`
	ErrorType            string `json:"error_type"`
	Usage                Tokens `json:"usage"`
	Estimated            bool   `json:"estimated"`
	CostMicrocredits     int64  `json:"cost_microcredits"`
	UpstreamCostMicroUSD int64  `json:"upstream_cost_microusd"`
	PriceVersion         string `json:"price_version"`
	UpstreamKeyID        string `json:"upstream_key_id"`
	UpstreamRequestID    string `json:"upstream_request_id"`
}

// ErrInvalid is wrapped by every validation failure; such records go to the DLQ.
var ErrInvalid = errors.New("invalid usage record")

// Validate checks what consumers rely on. It does not check that the cost matches the usage:
// prices may change between the edge and the consumer, and the edge's cost is the charge.
func (r *Record) Validate() error {
	var errs []error
	if r.V < 1 {
		errs = append(errs, errors.New("v: missing or < 1"))
	}
	if r.RequestID == "" {
		errs = append(errs, errors.New("request_id: empty"))
	}
	if r.AccountID == "" {
		errs = append(errs, errors.New("account_id: empty"))
	}
	if r.CostMicrocredits < 0 {
		errs = append(errs, fmt.Errorf("cost_microcredits: negative (%d)", r.CostMicrocredits))
	}
	u := r.Usage
	for _, f := range []struct {
		name string
		v    int64
	}{{"input", u.Input}, {"output", u.Output}, {"cache_write_5m", u.CacheWrite5m},
		{"cache_write_1h", u.CacheWrite1h}, {"cache_read", u.CacheRead}, {"thinking", u.Thinking},
		{"web_search_requests", u.WebSearchRequests}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("usage.%s: negative (%d)", f.name, f.v))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// AppendJSON appends the record's JSON encoding to dst and returns the extended buffer. It
// allocates nothing when dst has room, which keeps the edge's response path allocation-free.
func (r *Record) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, int64(r.V), 10)
	dst = appendStr(dst, "request_id", r.RequestID)
	dst = appendStr(dst, "edge_id", r.EdgeID)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	dst = appendStr(dst, "account_id", r.AccountID)
	dst = appendStr(dst, "key_id", r.KeyID)
	dst = appendStr(dst, "lease_id", r.LeaseID)
	dst = appendStr(dst, "model", r.Model)
	dst = appendStr(dst, "model_requested", r.ModelRequested)
	dst = appendInt(dst, "ts_start_ms", r.TsStartMs)
	dst = appendInt(dst, "ts_end_ms", r.TsEndMs)
	dst = appendInt(dst, "ttfb_ms", r.TtfbMs)
	dst = appendInt(dst, "status", int64(r.Status))
	dst = append(dst, `,"stream":`...)
	dst = strconv.AppendBool(dst, r.Stream)
	dst = appendStr(dst, "stop_reason", r.StopReason)
	dst = appendStr(dst, "error_type", r.ErrorType)
	u := r.Usage
	dst = append(dst, `,"usage":{"input":`...)
	dst = strconv.AppendInt(dst, u.Input, 10)
	dst = appendInt(dst, "output", u.Output)
	dst = appendInt(dst, "cache_write_5m", u.CacheWrite5m)
	dst = appendInt(dst, "cache_write_1h", u.CacheWrite1h)
	dst = appendInt(dst, "cache_read", u.CacheRead)
	dst = appendInt(dst, "thinking", u.Thinking)
	dst = appendInt(dst, "web_search_requests", u.WebSearchRequests)
	dst = append(dst, '}')
	dst = append(dst, `,"estimated":`...)
	dst = strconv.AppendBool(dst, r.Estimated)
	dst = appendInt(dst, "cost_microcredits", r.CostMicrocredits)
	dst = appendInt(dst, "upstream_cost_microusd", r.UpstreamCostMicroUSD)
	dst = appendStr(dst, "price_version", r.PriceVersion)
	dst = appendStr(dst, "upstream_key_id", r.UpstreamKeyID)
	dst = appendStr(dst, "upstream_request_id", r.UpstreamRequestID)
	return append(dst, '}')
}

// Decode parses a record. Unknown fields are ignored; the result is validated.
//
// After gjson has checked the bytes are JSON, a record as the edge writes it (keys and
// strings without escapes, integers of at most 15 digits, booleans, null) is read in one
// pass over the bytes, its strings sharing one copy of them (decodeFast). Anything
// else — escapes, fractions, exponents, wrong types — is decoded by gjson's ForEach
// (decodeGJSON), so both give the same record and the same errors.
func Decode(b []byte) (Record, error) {
	if !gjson.ValidBytes(b) {
		return Record{}, fmt.Errorf("%w: not valid JSON", ErrInvalid)
	}
	if r, ok := decodeFast(b); ok {
		return r, r.Validate()
	}
	return decodeGJSON(b)
}

// decodeGJSON decodes valid JSON with gjson, walking it once (ForEach) rather than looking
// each field up from the start.
func decodeGJSON(b []byte) (Record, error) {
	res := gjson.ParseBytes(b)
	if !res.IsObject() {
		return Record{}, fmt.Errorf("%w: not a JSON object", ErrInvalid)
	}
	var d decoder
	var r Record
	g := &gjsonValue{d: &d}
	res.ForEach(func(k, v gjson.Result) bool {
		g.v = v
		r.set(k.Str, g)
		return true
	})
	if len(d.errs) > 0 {
		return r, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(d.errs...))
	}
	return r, r.Validate()
}

// value reads one field's value for Record.set and Tokens.set; ok false means the reader
// cannot (decodeFast then gives up). name is the field's path, for error messages.
type value interface {
	str(name string) (string, bool)
	num(name string) (int64, bool)
	boolean(name string) (bool, bool)
	tokens() (Tokens, bool)
	skip()
}

// set reads key's value into r; unknown keys are skipped.
func (r *Record) set(key string, v value) bool {
	var ok bool
	var n int64
	switch key {
	case "request_id":
		r.RequestID, ok = v.str(key)
	case "edge_id":
		r.EdgeID, ok = v.str(key)
	case "account_id":
		r.AccountID, ok = v.str(key)
	case "key_id":
		r.KeyID, ok = v.str(key)
	case "lease_id":
		r.LeaseID, ok = v.str(key)
	case "model":
		r.Model, ok = v.str(key)
	case "model_requested":
		r.ModelRequested, ok = v.str(key)
	case "stop_reason":
		r.StopReason, ok = v.str(key)
	case "error_type":
		r.ErrorType, ok = v.str(key)
	case "price_version":
		r.PriceVersion, ok = v.str(key)
	case "upstream_key_id":
		r.UpstreamKeyID, ok = v.str(key)
	case "upstream_request_id":
		r.UpstreamRequestID, ok = v.str(key)
	case "ts_start_ms":
		r.TsStartMs, ok = v.num(key)
	case "ts_end_ms":
		r.TsEndMs, ok = v.num(key)
	case "ttfb_ms":
		r.TtfbMs, ok = v.num(key)
	case "cost_microcredits":
		r.CostMicrocredits, ok = v.num(key)
	case "upstream_cost_microusd":
		r.UpstreamCostMicroUSD, ok = v.num(key)
	case "v":
		n, ok = v.num(key)
		r.V = int(n)
	case "seq":
		n, ok = v.num(key)
		r.Seq = uint64(n)
	case "status":
		n, ok = v.num(key)
		r.Status = int(n)
	case "stream":
		r.Stream, ok = v.boolean(key)
	case "estimated":
		r.Estimated, ok = v.boolean(key)
	case "usage":
		r.Usage, ok = v.tokens()
	default:
		v.skip()
		ok = true
	}
	return ok
}

// tokenKeys are the JSON names of the fields of Tokens, in the order of Tokens.counts.
var tokenKeys = [...]string{"input", "output", "cache_write_5m", "cache_write_1h", "cache_read", "thinking", "web_search_requests"}

func (t *Tokens) counts() [len(tokenKeys)]*int64 {
	return [...]*int64{&t.Input, &t.Output, &t.CacheWrite5m, &t.CacheWrite1h, &t.CacheRead, &t.Thinking, &t.WebSearchRequests}
}

// set reads key's value into t; unknown keys are skipped.
func (t *Tokens) set(key string, v value) bool {
	for i, k := range tokenKeys {
		if k == key {
			var ok bool
			*t.counts()[i], ok = v.num(key)
			return ok
		}
	}
	v.skip()
	return true
}

// gjsonValue reads a gjson value, noting type errors in d under prefix+name; it never
// gives up.
type gjsonValue struct {
	v      gjson.Result
	d      *decoder
	prefix string
}

func (g *gjsonValue) str(name string) (string, bool)   { return g.d.str(g.v, g.prefix+name), true }
func (g *gjsonValue) num(name string) (int64, bool)    { return g.d.num(g.v, g.prefix+name), true }
func (g *gjsonValue) boolean(name string) (bool, bool) { return g.d.boolean(g.v, g.prefix+name), true }
func (g *gjsonValue) tokens() (Tokens, bool)           { return g.d.tokens(g.v), true }
func (g *gjsonValue) skip()                            {}

// decoder collects type errors while a record is decoded. As in encoding/json, the last of
// duplicate keys wins.
type decoder struct{ errs []error }

func (d *decoder) str(v gjson.Result, name string) string {
	if v.Type != gjson.String && v.Type != gjson.Null {
		d.errs = append(d.errs, fmt.Errorf("%s: not a string", name))
	}
	if !utf8.ValidString(v.Str) {
		// A producer bug: ids must be text, and ClickHouse and the ledger would disagree on
		// what invalid bytes mean.
		d.errs = append(d.errs, fmt.Errorf("%s: not valid UTF-8", name))
	}
	return v.String()
}

func (d *decoder) num(v gjson.Result, name string) int64 {
	if v.Type != gjson.Number && v.Type != gjson.Null {
		d.errs = append(d.errs, fmt.Errorf("%s: not a number", name))
		return 0
	}
	if v.Type == gjson.Number && v.Num != float64(v.Int()) {
		// Integer fields only: a fraction or an out-of-range value is a broken producer.
		d.errs = append(d.errs, fmt.Errorf("%s: not an integer", name))
	}
	return v.Int()
}

func (d *decoder) boolean(v gjson.Result, name string) bool {
	if v.Type != gjson.True && v.Type != gjson.False && v.Type != gjson.Null {
		d.errs = append(d.errs, fmt.Errorf("%s: not a bool", name))
	}
	return v.Bool()
}

func (d *decoder) tokens(u gjson.Result) Tokens {
	var t Tokens
	if u.Type == gjson.Null {
		return t
	}
	if !u.IsObject() {
		d.errs = append(d.errs, errors.New("usage: not an object"))
		return t
	}
	g := &gjsonValue{d: d, prefix: "usage."}
	u.ForEach(func(k, v gjson.Result) bool {
		g.v = v
		t.set(k.Str, g)
		return true
	})
	return t
}

// scanner reads JSON that gjson.ValidBytes accepted, so it checks only what decodeFast
// handles itself; whatever it does not handle makes decodeFast give up.
type scanner struct {
	b   []byte
	src string // copy of b, which the record's strings share
	i   int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// plainString reads a string without escapes at s.i (its opening quote) and returns where
// its contents start and end.
func (s *scanner) plainString() (start, end int, ok bool) {
	start = s.i + 1
	for j := start; j < len(s.b); j++ {
		switch s.b[j] {
		case '"':
			s.i = j + 1
			return start, j, true
		case '\\':
			return 0, 0, false
		}
	}
	return 0, 0, false
}

// skip passes the value at s.i, whatever it is.
func (s *scanner) skip() {
	depth := 0
	for s.i < len(s.b) {
		switch c := s.b[s.i]; c {
		case '"':
			s.i++
			for s.i < len(s.b) && s.b[s.i] != '"' {
				if s.b[s.i] == '\\' {
					s.i++
				}
				s.i++
			}
			s.i++
		case '{', '[':
			depth++
			s.i++
			continue
		case '}', ']':
			if depth == 0 {
				return
			}
			depth--
			s.i++
		case ',':
			if depth == 0 {
				return
			}
			s.i++
			continue
		default:
			s.i++
			continue
		}
		if depth == 0 {
			return
		}
	}
}

// str reads a string field: a string without escapes that is valid UTF-8, or null.
func (s *scanner) str(string) (string, bool) {
	if s.i < len(s.b) && s.b[s.i] == 'n' {
		s.i += len("null")
		return "", true
	}
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return "", false
	}
	start, end, ok := s.plainString()
	if !ok || !utf8.Valid(s.b[start:end]) {
		return "", false
	}
	return s.src[start:end], true
}

// num reads an integer field: at most 15 digits (exact as a float64, so gjson would accept
// it as it is) with an optional minus, or null.
func (s *scanner) num(string) (int64, bool) {
	if s.i < len(s.b) && s.b[s.i] == 'n' {
		s.i += len("null")
		return 0, true
	}
	neg := s.i < len(s.b) && s.b[s.i] == '-'
	if neg {
		s.i++
	}
	start := s.i
	var n int64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		n = n*10 + int64(s.b[s.i]-'0')
		s.i++
	}
	digits := s.i - start
	if digits == 0 || digits > 15 {
		return 0, false
	}
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	if neg {
		n = -n
	}
	return n, true
}

// boolean reads a bool field: true, false or null.
func (s *scanner) boolean(string) (bool, bool) {
	if s.i >= len(s.b) {
		return false, false
	}
	switch s.b[s.i] {
	case 't':
		s.i += len("true")
		return true, true
	case 'f':
		s.i += len("false")
		return false, true
	case 'n':
		s.i += len("null")
		return false, true
	}
	return false, false
}

// object calls field for each key of the object at s.i, which must read the key's value.
func (s *scanner) object(field func(key string) bool) bool {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false
	}
	s.i++
	for {
		s.ws()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case '}':
			s.i++
			return true
		case ',':
			s.i++
			continue
		}
		if s.b[s.i] != '"' {
			return false
		}
		start, end, ok := s.plainString()
		if !ok {
			return false
		}
		key := s.src[start:end]
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		s.ws()
		if !field(key) {
			return false
		}
	}
}

// decodeFast decodes a record without escapes, fractions or wrong types (see Decode); ok is
// false for anything else. b must be valid JSON.
func decodeFast(b []byte) (r Record, ok bool) {
	s := &scanner{b: b, src: string(b)}
	ok = s.object(func(key string) bool { return r.set(key, s) })
	return r, ok
}

// tokens reads the usage object, or null.
func (s *scanner) tokens() (t Tokens, ok bool) {
	if s.i < len(s.b) && s.b[s.i] == 'n' {
		s.i += len("null")
		return t, true
	}
	ok = s.object(func(key string) bool { return t.set(key, s) })
	return t, ok
}

func appendStr(dst []byte, name, v string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendJSONString(dst, v)
}

// appendJSONString quotes s as a JSON string. Control characters are escaped and invalid UTF-8
// becomes U+FFFD, so a hostile model name from the upstream cannot break the record.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, "\\ufffd"...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

func appendInt(dst []byte, name string, v int64) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return strconv.AppendInt(dst, v, 10)
}
