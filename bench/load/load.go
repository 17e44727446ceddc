// Package load is Tollgate's load generator: an open loop at a fixed rate (latency measured
// from each request's scheduled send time, so a stalled server cannot hide its stall) or a
// closed loop over N connections, sending a weighted mix of streaming and non-streaming
// Messages requests with many keys, and measuring latency and time to first token in HDR
// histograms plus the CPU and memory of the processes under test and of itself.
//
// The client is fasthttp's HostClient: the generator shares a small machine with the system
// under test, so it must cost little per request, and what it does cost is reported.
package load

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"

	"tollgate/pkg/usage"
)

// Limits that keep every run bounded, whatever the flags say.
const (
	durationMax = 2 * time.Hour
	requestsMax = 100_000_000
	connsMax    = 50_000
)

// Config of one run. Zero values take the defaults named on each field.
type Config struct {
	// URL is the target's base URL, e.g. "http://127.0.0.1:8080". Only loopback hosts are
	// accepted: load tests never leave the machine.
	URL string
	// Path is requested on the target. Default "/v1/messages".
	Path string
	// Rate > 0 runs an open loop at that many requests per second; 0 runs a closed loop.
	Rate float64
	// Conns is the number of connections. Closed loop: concurrent requests (one worker
	// each). Open loop: the most requests in flight; when all are busy, later requests wait
	// and their wait counts in their latency. Default 64 (closed), 1024 (open). Max 50,000.
	Conns int
	// Duration bounds the run: no request is sent after it. Required, at most 2 h.
	Duration time.Duration
	// Requests bounds the number of requests sent. 0: as many as Duration allows (open loop:
	// Rate × Duration).
	Requests int64
	// Ramp spreads the start of closed-loop workers evenly over this time. Default 0.
	Ramp time.Duration
	// Timeout bounds each request, reading a stream to its end included. Default 60 s.
	Timeout time.Duration
	// Shapes are the requests to send, picked by weight in a fixed cycle. Required.
	Shapes []Shape
	// Keys are used round robin, sent as x-api-key. Required (the mock, too, wants a key).
	Keys []Key
	// Watch lists the processes under test, measured for CPU and memory. The generator
	// itself is always measured.
	Watch []Proc
	// ResetPeak resets each watched process's VmHWM at the start (needs the right to write
	// /proc/PID/clear_refs), so HWMBytes is the run's own peak.
	ResetPeak bool
	// SampleEvery is the RSS sampling interval. Default 250 ms; negative: no sampling.
	SampleEvery time.Duration
	// Log receives one JSON line per request that got an answer or failed (see LogEntry),
	// for the verifier. Nil: no log. Writes are serialized and buffered.
	Log io.Writer
	// Clock is the time source. Default: wall time. Tests use a fake.
	Clock Clock
}

func (c *Config) setDefaults() {
	if c.Path == "" {
		c.Path = "/v1/messages"
	}
	if c.Conns == 0 {
		c.Conns = 64
		if c.Rate > 0 {
			c.Conns = 1024
		}
	}
	if c.Timeout == 0 {
		c.Timeout = 60 * time.Second
	}
	if c.SampleEvery == 0 {
		c.SampleEvery = 250 * time.Millisecond
	}
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
}

// Validate reports every problem with the config (after defaults).
func (c *Config) Validate() error {
	var errs []error
	if _, err := targetAddr(c.URL); err != nil {
		errs = append(errs, err)
	}
	if c.Rate < 0 || c.Rate > 1e6 {
		errs = append(errs, fmt.Errorf("rate: want 0 (closed loop) or (0, 1e6] requests/s, got %g", c.Rate))
	}
	if c.Conns < 1 || c.Conns > connsMax {
		errs = append(errs, fmt.Errorf("conns: want 1..%d, got %d", connsMax, c.Conns))
	}
	if c.Duration <= 0 || c.Duration > durationMax {
		errs = append(errs, fmt.Errorf("duration: want (0, %s], got %s", durationMax, c.Duration))
	}
	if c.Requests < 0 || c.Requests > requestsMax {
		errs = append(errs, fmt.Errorf("requests: want 0..%d, got %d", requestsMax, c.Requests))
	}
	if c.Ramp < 0 || c.Ramp > c.Duration {
		errs = append(errs, fmt.Errorf("ramp: want 0..duration, got %s", c.Ramp))
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("timeout: negative"))
	}
	if len(c.Shapes) == 0 {
		errs = append(errs, errors.New("shapes: none"))
	}
	for i, s := range c.Shapes {
		if s.Model == "" || s.Weight < 0 {
			errs = append(errs, fmt.Errorf("shapes[%d]: want a model and a weight ≥ 0", i))
		}
	}
	if len(c.Keys) == 0 {
		errs = append(errs, errors.New("keys: none"))
	}
	return errors.Join(errs...)
}

// targetAddr checks that u is an http URL on a loopback host and returns host:port.
func targetAddr(u string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil || pu.Scheme != "http" || pu.Host == "" {
		return "", fmt.Errorf("url: want http://127.0.0.1:PORT, got %q", u)
	}
	host, port := pu.Hostname(), pu.Port()
	if port == "" {
		port = "80"
	}
	if host != "localhost" {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return "", fmt.Errorf("url: %q is not a loopback address: load tests stay on this machine", host)
		}
	}
	return net.JoinHostPort(host, port), nil
}

// Result is what one run measured.
type Result struct {
	URL      string        `json:"url"`
	Mode     string        `json:"mode"` // "open" or "closed"
	Rate     float64       `json:"rate,omitempty"`
	Conns    int           `json:"conns"`
	Duration time.Duration `json:"duration_ns"`
	// Elapsed runs from the first send to the last answer.
	Elapsed time.Duration `json:"elapsed_ns"`
	Sent    int64         `json:"sent"`
	OK      int64         `json:"ok"`
	// Errors counts failed requests by kind: "status_402", "timeout", "stream_incomplete", …
	Errors map[string]int64 `json:"errors"`
	// Throughput is OK answers per second of Elapsed.
	Throughput  float64 `json:"throughput"`
	Streams     int64   `json:"streams"` // successful streams
	BytesIn     int64   `json:"bytes_in"`
	MaxInFlight int64   `json:"max_in_flight"`
	// Latency of successful requests: to the last byte, from the scheduled send time.
	Latency Summary `json:"latency"`
	// TTFT of successful streams: to the first content_block_delta.
	TTFT Summary `json:"ttft"`
	// Lag is how late the open-loop dispatcher handed requests to workers: large values mean
	// the generator (or the connection cap) could not keep the rate.
	Lag       Summary     `json:"dispatch_lag"`
	Generator ProcUsage   `json:"generator"`
	Procs     []ProcUsage `json:"procs"`
	Samples   []Sample    `json:"samples,omitempty"`

	// The histograms, for merging rounds and drawing charts. Not serialized.
	LatencyHist *hdrhistogram.Histogram `json:"-"`
	TTFTHist    *hdrhistogram.Histogram `json:"-"`
}

// LogEntry is one line of the request log: what was asked of whom, and what came back.
type LogEntry struct {
	RequestID string       `json:"request_id"` // the target's request-id header; "" when none
	AccountID string       `json:"account_id,omitempty"`
	Shape     string       `json:"shape"`
	Model     string       `json:"model"`
	Stream    bool         `json:"stream"`
	Status    int          `json:"status"`   // 0: no answer
	Complete  bool         `json:"complete"` // the whole body arrived (a stream saw message_stop)
	Error     string       `json:"error,omitempty"`
	Tokens    usage.Tokens `json:"tokens"` // the usage the mock was told to report
	// EndUnixUs is when the answer ended (the body read to its end, or the failure), in wall
	// clock µs since the Unix epoch: bench compare's settle scenario measures settlement lag
	// from it. 0 in logs written before the field existed.
	EndUnixUs int64 `json:"end_unix_us,omitempty"`
}

// errorKindsMax bounds the distinct error kinds counted; more go under "other".
const errorKindsMax = 32

// readBufBytes is each in-flight request's read buffer, from a pool: with 10,000 slow streams
// in flight this is the generator's main memory cost, so it is small.
const readBufBytes = 4 << 10

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufBytes); return &b }}

// run holds one run's state.
type run struct {
	cfg     Config
	uri     string
	client  *fasthttp.HostClient
	bodies  [][]byte
	table   []int
	lat     *shardedHist
	ttft    *shardedHist
	lag     *shardedHist
	sent    atomic.Int64
	ok      atomic.Int64
	streams atomic.Int64
	bytesIn atomic.Int64
	flight  atomic.Int64
	flightM atomic.Int64
	errMu   sync.Mutex
	errs    map[string]int64
	logMu   sync.Mutex
	log     *bufio.Writer
}

// Run sends the configured load and measures it. It stops early, with what it measured so
// far, when ctx is done.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	addr, _ := targetAddr(cfg.URL)
	r := &run{cfg: cfg, uri: cfg.URL + cfg.Path, lat: newShardedHist(), ttft: newShardedHist(),
		lag: newShardedHist(), errs: map[string]int64{}, table: shapeTable(cfg.Shapes)}
	for _, s := range cfg.Shapes {
		r.bodies = append(r.bodies, s.Body())
	}
	if cfg.Log != nil {
		r.log = bufio.NewWriterSize(cfg.Log, 64<<10)
	}
	// Every option set explicitly: fasthttp's zero values mean "unlimited" or "512".
	r.client = &fasthttp.HostClient{
		Addr:                      addr,
		Name:                      "tollgate-bench",
		MaxConns:                  cfg.Conns,
		MaxConnWaitTimeout:        cfg.Timeout, // wait for a connection rather than fail
		MaxIdleConnDuration:       time.Minute,
		MaxIdemponentCallAttempts: 1, // a retried POST would be billed twice
		ReadBufferSize:            8 << 10,
		WriteBufferSize:           8 << 10,
		ReadTimeout:               cfg.Timeout,
		WriteTimeout:              cfg.Timeout,
		MaxResponseBodySize:       64 << 20,
		StreamResponseBody:        true,
		DisablePathNormalizing:    true,
	}
	defer r.client.CloseIdleConnections()

	procs := append([]Proc{selfProc()}, cfg.Watch...)
	watch := startWatch(procs, cfg.SampleEvery, cfg.ResetPeak, &r.flight)
	clk := cfg.Clock
	start := clk.Now()
	res := &Result{URL: cfg.URL, Conns: cfg.Conns, Duration: cfg.Duration, Rate: cfg.Rate}
	if cfg.Rate > 0 {
		res.Mode = "open"
		n := int64(cfg.Rate * cfg.Duration.Seconds())
		if cfg.Requests > 0 {
			n = min(n, cfg.Requests)
		}
		openLoop(ctx, clk, cfg.Rate, n, cfg.Conns, r.do)
	} else {
		res.Mode = "closed"
		n := cfg.Requests
		if n == 0 {
			n = requestsMax
		}
		closedLoop(ctx, clk, n, cfg.Conns, cfg.Ramp, start.Add(cfg.Duration), r.do)
	}
	res.Elapsed = clk.Now().Sub(start)

	var logErr error
	if r.log != nil {
		logErr = r.log.Flush()
	}
	usages, samples := watch.finish(r.ok.Load())
	res.Generator, res.Procs, res.Samples = usages[0], usages[1:], samples
	res.Sent, res.OK, res.Streams = r.sent.Load(), r.ok.Load(), r.streams.Load()
	res.BytesIn, res.MaxInFlight = r.bytesIn.Load(), r.flightM.Load()
	res.Errors = r.errs
	if res.Elapsed > 0 {
		res.Throughput = float64(res.OK) / res.Elapsed.Seconds()
	}
	res.LatencyHist, res.TTFTHist = r.lat.merged(), r.ttft.merged()
	res.Latency, res.TTFT = Summarize(res.LatencyHist), Summarize(res.TTFTHist)
	if res.Mode == "open" {
		res.Lag = Summarize(r.lag.merged())
	}
	if logErr != nil {
		return res, fmt.Errorf("write request log: %w", logErr)
	}
	return res, nil
}

// do sends one request and records what happened.
func (r *run) do(worker int, j job) {
	clk := r.cfg.Clock
	f := r.flight.Add(1)
	defer r.flight.Add(-1)
	for m := r.flightM.Load(); f > m && !r.flightM.CompareAndSwap(m, f); m = r.flightM.Load() {
	}
	r.sent.Add(1)
	if r.cfg.Rate > 0 {
		r.lag.record(worker, clk.Now().Sub(j.scheduled))
	}
	si := r.table[j.i%int64(len(r.table))]
	shape := &r.cfg.Shapes[si]
	key := r.cfg.Keys[j.i%int64(len(r.cfg.Keys))]

	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(r.uri)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("x-api-key", key.Secret)
	req.SetBodyRaw(r.bodies[si]) // shared and never modified
	req.SetTimeout(r.cfg.Timeout)

	var (
		kind      string
		complete  bool
		firstByte time.Duration
		gotDelta  bool
	)
	err := r.client.Do(req, resp)
	status := 0
	if err != nil {
		kind = errorKind(err)
	} else {
		status = resp.StatusCode()
		var w streamWatch
		complete, firstByte, gotDelta, err = r.readBody(resp, shape.Stream && status == 200, &w, j.scheduled)
		switch {
		case err != nil:
			kind = errorKind(err)
		case status != 200:
			kind = "status_" + strconv.Itoa(status)
		case shape.Stream && w.errored:
			kind, complete = "stream_error_event", false
		case !complete:
			kind = "stream_incomplete"
		}
	}
	done := clk.Now()

	if kind == "" {
		r.ok.Add(1)
		r.lat.record(worker, done.Sub(j.scheduled))
		if shape.Stream {
			r.streams.Add(1)
			if gotDelta {
				r.ttft.record(worker, firstByte)
			}
		}
	} else {
		r.countError(kind)
	}
	if r.log != nil {
		e := LogEntry{RequestID: string(resp.Header.Peek("request-id")), AccountID: key.AccountID,
			Shape: shape.Name, Model: shape.Model, Stream: shape.Stream, Status: status,
			Complete: complete, Error: kind, Tokens: shape.Tokens, EndUnixUs: done.UnixMicro()}
		r.writeLog(&e)
	}
}

// readBody reads the body to its end. For a stream it watches for the markers and returns the
// time from scheduled to the first content delta.
func (r *run) readBody(resp *fasthttp.Response, stream bool, w *streamWatch, scheduled time.Time) (
	complete bool, ttft time.Duration, gotDelta bool, err error) {
	bs := resp.BodyStream()
	if bs == nil {
		body := resp.Body()
		r.bytesIn.Add(int64(len(body)))
		if stream && w.feed(body) {
			ttft, gotDelta = r.cfg.Clock.Now().Sub(scheduled), true
		}
		return !stream || w.stop, ttft, gotDelta, nil
	}
	defer resp.CloseBodyStream()
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		k, rerr := bs.Read(buf)
		if k > 0 {
			n += int64(k)
			if stream && w.feed(buf[:k]) {
				ttft, gotDelta = r.cfg.Clock.Now().Sub(scheduled), true
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			r.bytesIn.Add(n)
			return false, ttft, gotDelta, rerr
		}
	}
	r.bytesIn.Add(n)
	return !stream || w.stop, ttft, gotDelta, nil
}

func (r *run) countError(kind string) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if _, ok := r.errs[kind]; !ok && len(r.errs) >= errorKindsMax {
		kind = "other"
	}
	r.errs[kind]++
}

func (r *run) writeLog(e *LogEntry) {
	b, err := json.Marshal(e)
	if err != nil {
		return // strings and integers always marshal
	}
	r.logMu.Lock()
	_, _ = r.log.Write(b) // a write error sticks in the bufio.Writer; Run reports it at Flush
	_ = r.log.WriteByte('\n')
	r.logMu.Unlock()
}

// errorKind names a transport error for the error table.
func errorKind(err error) string {
	var te interface{ Timeout() bool }
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.As(err, &te) && te.Timeout():
		return "timeout"
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return "no_free_conns"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "conn_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "conn_reset"
	case errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF):
		return "conn_closed"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too_many_open_files"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no_local_ports"
	}
	return "other"
}

// ErrorKinds lists the error kinds of m, most frequent first (ties by name).
func ErrorKinds(m map[string]int64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if m[out[i]] != m[out[j]] {
			return m[out[i]] > m[out[j]]
		}
		return out[i] < out[j]
	})
	return out
}
