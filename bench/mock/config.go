package mock

import (
	"errors"
	"math"
	"time"
)

// Config configures a Server. The zero value is valid: every zero field means its default.
// Directive keys in a request override Latency, TTFT and TPS for that request.
type Config struct {
	// Latency is the delay before response headers (directive latency_ms). Default 0.
	Latency time.Duration
	// TTFT is the delay before the first content delta of a stream (directive ttft_ms).
	// Default 0. Non-streaming responses wait latency + ttft + output/tps before their headers,
	// as the API answers them only when generation is done.
	TTFT time.Duration
	// TPS paces output deltas in output tokens per second (directive tps). Default 0: unpaced.
	TPS float64
	// Keys are the accepted x-api-key values. Default empty: any non-empty key is accepted.
	Keys []string
	// RequireVersion answers 400 when the anthropic-version header is missing, as the API does.
	// Default false, so that a bare curl works.
	RequireVersion bool
	// RecordMax is how many recent requests LastRequest and Requests keep. Default 0 means 16;
	// negative keeps none (for load runs, where copying headers is wasted work).
	RecordMax int
	// BodyBytesMax bounds request bodies; larger ones get 413 request_too_large.
	// Default 32 MiB, the API's limit.
	BodyBytesMax int
	// CacheBytesMax bounds the memory held by cached rendered responses. Default 64 MiB.
	CacheBytesMax int64
	// ConnsMax bounds concurrent connections; fasthttp refuses more with 503. Default 65536.
	ConnsMax int
}

// Defaults for zero Config fields.
const (
	recordMaxDefault     = 16
	bodyBytesMaxDefault  = 32 << 20
	cacheBytesMaxDefault = 64 << 20
	connsMaxDefault      = 1 << 16
)

func (c Config) withDefaults() Config {
	if c.RecordMax == 0 {
		c.RecordMax = recordMaxDefault
	}
	if c.BodyBytesMax == 0 {
		c.BodyBytesMax = bodyBytesMaxDefault
	}
	if c.CacheBytesMax == 0 {
		c.CacheBytesMax = cacheBytesMaxDefault
	}
	if c.ConnsMax == 0 {
		c.ConnsMax = connsMaxDefault
	}
	return c
}

// Validate reports every invalid field.
func (c Config) Validate() error {
	var errs []error
	if c.Latency < 0 {
		errs = append(errs, errors.New("latency: negative"))
	}
	if c.TTFT < 0 {
		errs = append(errs, errors.New("ttft: negative"))
	}
	if math.IsNaN(c.TPS) || c.TPS < 0 || c.TPS > tpsMax {
		errs = append(errs, errors.New("tps: want 0 (unpaced) or a number in (0, 1e7]"))
	}
	for _, k := range c.Keys {
		if k == "" {
			errs = append(errs, errors.New("keys: empty key"))
			break
		}
	}
	if c.BodyBytesMax < 0 {
		errs = append(errs, errors.New("body_bytes_max: negative"))
	}
	if c.CacheBytesMax < 0 {
		errs = append(errs, errors.New("cache_bytes_max: negative"))
	}
	if c.ConnsMax < 0 {
		errs = append(errs, errors.New("conns_max: negative"))
	}
	return errors.Join(errs...)
}
