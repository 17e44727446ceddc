package load

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram ranges: values are microseconds from 1 µs to 15 minutes, 3 significant digits
// (0.1% error). About 150 KiB each, which is why the generator shards a few histograms
// among its workers instead of giving each worker its own.
const (
	histMinUs   = 1
	histMaxUs   = int64(15 * time.Minute / time.Microsecond)
	histDigits  = 3
	histShardsN = 16
)

// NewHistogram returns an empty latency histogram in microseconds.
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histMinUs, histMaxUs, histDigits)
}

// RecordDuration adds d (clamped into the histogram's range) to h.
func RecordDuration(h *hdrhistogram.Histogram, d time.Duration) {
	us := d.Microseconds()
	us = max(us, histMinUs)
	us = min(us, histMaxUs)
	_ = h.RecordValue(us) // cannot fail: us is in range
}

// shardedHist lets many goroutines record into a few histograms with little contention.
type shardedHist struct {
	shards [histShardsN]struct {
		mu sync.Mutex
		h  *hdrhistogram.Histogram
		_  [40]byte // keep shards on separate cache lines
	}
}

func newShardedHist() *shardedHist {
	s := &shardedHist{}
	for i := range s.shards {
		s.shards[i].h = NewHistogram()
	}
	return s
}

func (s *shardedHist) record(worker int, d time.Duration) {
	sh := &s.shards[worker%histShardsN]
	sh.mu.Lock()
	RecordDuration(sh.h, d)
	sh.mu.Unlock()
}

// merged returns one histogram holding every shard's values.
func (s *shardedHist) merged() *hdrhistogram.Histogram {
	out := NewHistogram()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		out.Merge(sh.h)
		sh.mu.Unlock()
	}
	return out
}

// Summary is a histogram's headline numbers, in microseconds.
type Summary struct {
	Count  int64   `json:"count"`
	MeanUs float64 `json:"mean_us"`
	P50Us  int64   `json:"p50_us"`
	P90Us  int64   `json:"p90_us"`
	P99Us  int64   `json:"p99_us"`
	P999Us int64   `json:"p999_us"`
	MaxUs  int64   `json:"max_us"`
}

// Summarize reads the headline percentiles of h. An empty histogram gives zeros.
func Summarize(h *hdrhistogram.Histogram) Summary {
	if h == nil || h.TotalCount() == 0 {
		return Summary{}
	}
	return Summary{
		Count:  h.TotalCount(),
		MeanUs: h.Mean(),
		P50Us:  h.ValueAtPercentile(50),
		P90Us:  h.ValueAtPercentile(90),
		P99Us:  h.ValueAtPercentile(99),
		P999Us: h.ValueAtPercentile(99.9),
		MaxUs:  h.Max(),
	}
}

// Point is one point of a latency-by-percentile curve.
type Point struct {
	Percentile float64 `json:"percentile"`
	Us         int64   `json:"us"`
}

// SpectrumPercentiles are the percentiles a latency chart plots: dense near the tail, where
// proxies differ.
var SpectrumPercentiles = []float64{0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100}

// Spectrum returns h's latency at each of SpectrumPercentiles, stopping at the first percentile
// whose rank is beyond the sample (99.999 of 1,000 values says nothing) except for 100, the max.
func Spectrum(h *hdrhistogram.Histogram) []Point {
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	n := float64(h.TotalCount())
	var out []Point
	for _, p := range SpectrumPercentiles {
		if p != 100 && p > 0 && (100-p)/100*n < 1 {
			continue
		}
		v := h.ValueAtPercentile(p)
		if p == 100 {
			v = h.Max()
		}
		out = append(out, Point{Percentile: p, Us: v})
	}
	return out
}
