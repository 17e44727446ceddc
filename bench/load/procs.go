package load

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"tollgate/bench/load/procstat"
)

// Proc names a process whose cost a run measures.
type Proc struct {
	Name string `json:"name"`
	Pid  int    `json:"pid"`
}

// ProcUsage is what a process cost during a run.
type ProcUsage struct {
	Name string `json:"name"`
	Pid  int    `json:"pid"`
	// CPUSeconds is utime + stime spent during the run (10 ms resolution).
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUPerRequestUs is CPUSeconds per completed request, in µs.
	CPUPerRequestUs float64 `json:"cpu_per_request_us"`
	// RSS before the run, and the largest RSS sampled during it (samples every
	// Config.SampleEvery, plus one at the end).
	RSSStartBytes int64 `json:"rss_start_bytes"`
	RSSPeakBytes  int64 `json:"rss_peak_bytes"`
	// HWMBytes is VmHWM at the end: the peak since the process started, or since the run began
	// when Config.ResetPeak could reset it.
	HWMBytes int64  `json:"hwm_bytes"`
	Error    string `json:"error,omitempty"` // why the numbers are missing
}

// Sample is one reading taken during a run.
type Sample struct {
	At       time.Duration `json:"at_ns"` // since the run started
	InFlight int64         `json:"in_flight"`
	RSSBytes []int64       `json:"rss_bytes"` // the generator first, then Config.Watch in order
}

// samplesMax bounds the samples kept per run; past it, every other sample is dropped and only
// every other new one kept, so a long soak keeps a bounded, evenly spaced series.
const samplesMax = 4096

// procWatch measures the watched processes over one run.
type procWatch struct {
	procs    []Proc
	start    []procstat.Snapshot
	startErr []error
	mu       sync.Mutex
	peak     []int64
	samples  []Sample
	taken    int64 // samples taken, kept or not
	stride   int64 // keep one sample in stride; doubles each time the series is thinned
	every    time.Duration
	t0       time.Time
	stop     chan struct{}
	done     chan struct{}
}

func startWatch(procs []Proc, every time.Duration, resetPeak bool, inFlight *atomic.Int64) *procWatch {
	w := &procWatch{procs: procs, start: make([]procstat.Snapshot, len(procs)),
		startErr: make([]error, len(procs)), peak: make([]int64, len(procs)), every: every,
		stride: 1, t0: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	for i, p := range procs {
		if resetPeak {
			_ = procstat.ResetHWM(p.Pid) // without the right to, HWM is the peak since start
		}
		w.start[i], w.startErr[i] = procstat.Read(p.Pid)
		w.peak[i] = w.start[i].RSSBytes
	}
	go w.loop(inFlight)
	return w
}

func (w *procWatch) loop(inFlight *atomic.Int64) {
	defer close(w.done)
	if w.every <= 0 {
		<-w.stop
		return
	}
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.sample(inFlight.Load())
		}
	}
}

func (w *procWatch) sample(inFlight int64) {
	s := Sample{At: time.Since(w.t0), InFlight: inFlight, RSSBytes: make([]int64, len(w.procs))}
	for i, p := range w.procs {
		if snap, err := procstat.Read(p.Pid); err == nil {
			s.RSSBytes[i] = snap.RSSBytes
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, rss := range s.RSSBytes {
		w.peak[i] = max(w.peak[i], rss)
	}
	w.taken++
	if (w.taken-1)%w.stride != 0 {
		return
	}
	if len(w.samples) >= samplesMax {
		kept := w.samples[:0]
		for k := 0; k < len(w.samples); k += 2 {
			kept = append(kept, w.samples[k])
		}
		w.samples = kept
		w.stride *= 2
	}
	w.samples = append(w.samples, s)
}

// finish stops sampling and returns each process's usage over the run.
func (w *procWatch) finish(completed int64) ([]ProcUsage, []Sample) {
	close(w.stop)
	<-w.done
	out := make([]ProcUsage, len(w.procs))
	for i, p := range w.procs {
		u := ProcUsage{Name: p.Name, Pid: p.Pid}
		end, err := procstat.Read(p.Pid)
		switch {
		case w.startErr[i] != nil:
			u.Error = w.startErr[i].Error()
		case err != nil:
			u.Error = err.Error()
		default:
			cpu := end.CPU - w.start[i].CPU
			u.CPUSeconds = cpu.Seconds()
			if completed > 0 {
				u.CPUPerRequestUs = float64(cpu.Microseconds()) / float64(completed)
			}
			u.RSSStartBytes = w.start[i].RSSBytes
			u.RSSPeakBytes = max(w.peak[i], end.RSSBytes)
			u.HWMBytes = end.HWMBytes
		}
		out[i] = u
	}
	return out, w.samples // the sampler has stopped: no lock needed
}

// selfProc is the generator itself, always measured: it shares the machine with the system
// under test, so its CPU is part of the picture.
func selfProc() Proc { return Proc{Name: "generator", Pid: os.Getpid()} }
