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

// Decode parses a record. Unknown fields are ignored; the result is validated. It walks the
// JSON once (gjson's ForEach) rather than looking each field up from the start, which made
// decoding the consumers' biggest CPU cost.
func Decode(b []byte) (Record, error) {
	if !gjson.ValidBytes(b) {
		return Record{}, fmt.Errorf("%w: not valid JSON", ErrInvalid)
	}
	res := gjson.ParseBytes(b)
	if !res.IsObject() {
		return Record{}, fmt.Errorf("%w: not a JSON object", ErrInvalid)
	}
	var d decoder
	var r Record
	res.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "v":
			r.V = int(d.num(v, "v"))
		case "request_id":
			r.RequestID = d.str(v, "request_id")
		case "edge_id":
			r.EdgeID = d.str(v, "edge_id")
		case "seq":
			r.Seq = uint64(d.num(v, "seq"))
		case "account_id":
			r.AccountID = d.str(v, "account_id")
		case "key_id":
			r.KeyID = d.str(v, "key_id")
		case "lease_id":
			r.LeaseID = d.str(v, "lease_id")
		case "model":
			r.Model = d.str(v, "model")
		case "model_requested":
			r.ModelRequested = d.str(v, "model_requested")
		case "ts_start_ms":
			r.TsStartMs = d.num(v, "ts_start_ms")
		case "ts_end_ms":
			r.TsEndMs = d.num(v, "ts_end_ms")
		case "ttfb_ms":
			r.TtfbMs = d.num(v, "ttfb_ms")
		case "status":
			r.Status = int(d.num(v, "status"))
		case "stream":
			r.Stream = d.boolean(v, "stream")
		case "stop_reason":
			r.StopReason = d.str(v, "stop_reason")
		case "error_type":
			r.ErrorType = d.str(v, "error_type")
		case "usage":
			r.Usage = d.tokens(v)
		case "estimated":
			r.Estimated = d.boolean(v, "estimated")
		case "cost_microcredits":
			r.CostMicrocredits = d.num(v, "cost_microcredits")
		case "upstream_cost_microusd":
			r.UpstreamCostMicroUSD = d.num(v, "upstream_cost_microusd")
		case "price_version":
			r.PriceVersion = d.str(v, "price_version")
		case "upstream_key_id":
			r.UpstreamKeyID = d.str(v, "upstream_key_id")
		case "upstream_request_id":
			r.UpstreamRequestID = d.str(v, "upstream_request_id")
		}
		return true
	})
	if len(d.errs) > 0 {
		return r, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(d.errs...))
	}
	return r, r.Validate()
}

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
	u.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "input":
			t.Input = d.num(v, "usage.input")
		case "output":
			t.Output = d.num(v, "usage.output")
		case "cache_write_5m":
			t.CacheWrite5m = d.num(v, "usage.cache_write_5m")
		case "cache_write_1h":
			t.CacheWrite1h = d.num(v, "usage.cache_write_1h")
		case "cache_read":
			t.CacheRead = d.num(v, "usage.cache_read")
		case "thinking":
			t.Thinking = d.num(v, "usage.thinking")
		case "web_search_requests":
			t.WebSearchRequests = d.num(v, "usage.web_search_requests")
		}
		return true
	})
	return t
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
