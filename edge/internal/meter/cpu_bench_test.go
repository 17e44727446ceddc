package meter_test

import (
	"testing"
	"time"

	"tollgate/pkg/cputime"
)

// cpuTime is the process's user+system CPU time (0 if it cannot be read).
func cpuTime() time.Duration {
	d, _ := cputime.Self()
	return d
}

// cpuMeter reports throughput by CPU time as well as by wall time: the development machines
// are shared, and wall time there includes waiting for a core, which CPU time does not.
type cpuMeter struct {
	b     *testing.B
	start time.Duration
	bytes int64
}

func startCPU(b *testing.B, bytesPerOp int64) *cpuMeter {
	return &cpuMeter{b: b, start: cpuTime(), bytes: bytesPerOp}
}

func (m *cpuMeter) stop() {
	used := cpuTime() - m.start
	if used <= 0 || m.b.N == 0 {
		return
	}
	m.b.ReportMetric(float64(used.Nanoseconds())/float64(m.b.N), "cpu-ns/op")
	if m.bytes > 0 {
		m.b.ReportMetric(float64(m.bytes*int64(m.b.N))/used.Seconds()/1e6, "cpu-MB/s")
	}
}
