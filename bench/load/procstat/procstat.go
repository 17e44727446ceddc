// Package procstat reads what a process has cost so far from Linux's /proc: CPU time
// (utime + stime from /proc/PID/stat) and memory (VmRSS and VmHWM from /proc/PID/status).
// The bench uses it on the processes under test and on the load generator itself.
package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// ticksPerSecond is USER_HZ, the unit of utime and stime. It is 100 on every Linux
// architecture Go supports (the kernel fixes it for user space; sysconf(_SC_CLK_TCK) reports
// the same), so it is a constant rather than a cgo call.
const ticksPerSecond = 100

// Snapshot is one reading of a process.
type Snapshot struct {
	CPU      time.Duration // user + system time since the process started
	RSSBytes int64         // resident set size now (VmRSS)
	HWMBytes int64         // peak resident set size (VmHWM)
}

// Read takes a snapshot of pid.
func Read(pid int) (Snapshot, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Snapshot{}, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	cpu, err := ParseStat(stat)
	if err != nil {
		return Snapshot{}, fmt.Errorf("parse stat of %d: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Snapshot{}, fmt.Errorf("read status of %d: %w", pid, err)
	}
	mem, err := ParseStatus(status)
	if err != nil {
		return Snapshot{}, fmt.Errorf("parse status of %d: %w", pid, err)
	}
	mem.CPU = cpu
	return mem, nil
}

// ParseStat returns utime + stime from the contents of /proc/PID/stat. The command name (field
// 2) is in parentheses and may itself hold spaces and parentheses, so fields are counted from
// the last ')'.
func ParseStat(b []byte) (time.Duration, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0, errors.New("no ')' after the command name")
	}
	// After ")": field 3 (state) is index 0, so utime (field 14) is index 11, stime index 12.
	fields := bytes.Fields(b[end+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(fields))
	}
	utime, err := strconv.ParseUint(string(fields[11]), 10, 63)
	if err != nil {
		return 0, fmt.Errorf("utime: %w", err)
	}
	stime, err := strconv.ParseUint(string(fields[12]), 10, 63)
	if err != nil {
		return 0, fmt.Errorf("stime: %w", err)
	}
	ticks := utime + stime
	const maxTicks = uint64(1<<63-1) / uint64(time.Second/ticksPerSecond)
	if ticks > maxTicks {
		return 0, fmt.Errorf("cpu ticks %d out of range", ticks)
	}
	return time.Duration(ticks) * (time.Second / ticksPerSecond), nil
}

// ParseStatus reads VmRSS and VmHWM ("VmRSS:\t  1234 kB") from /proc/PID/status. Both must
// be present: a kernel thread or a zombie has neither, and measuring one is a mistake.
func ParseStatus(b []byte) (Snapshot, error) {
	var s Snapshot
	var haveRSS, haveHWM bool
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		var dst *int64
		switch string(name) {
		case "VmRSS":
			dst, haveRSS = &s.RSSBytes, true
		case "VmHWM":
			dst, haveHWM = &s.HWMBytes, true
		default:
			continue
		}
		n, err := parseKB(value)
		if err != nil {
			return Snapshot{}, fmt.Errorf("%s: %w", name, err)
		}
		*dst = n
	}
	if !haveRSS || !haveHWM {
		return Snapshot{}, errors.New("no VmRSS or VmHWM line (kernel thread or zombie?)")
	}
	return s, nil
}

// parseKB parses "   1234 kB" into bytes.
func parseKB(v []byte) (int64, error) {
	f := bytes.Fields(v)
	if len(f) != 2 || string(f[1]) != "kB" {
		return 0, fmt.Errorf("want \"<n> kB\", got %q", bytes.TrimSpace(v))
	}
	n, err := strconv.ParseInt(string(f[0]), 10, 64)
	if err != nil || n < 0 || n > (1<<63-1)/1024 {
		return 0, fmt.Errorf("want a size in kB, got %q", f[0])
	}
	return n * 1024, nil
}

// ResetHWM sets pid's VmHWM back to its current RSS (writing "5" to /proc/PID/clear_refs,
// Linux ≥ 4.0), so a peak can be measured per round. It needs the right to write there (the
// process's owner or root); callers treat failure as "peak since start".
func ResetHWM(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak rss of %d: %w", pid, err)
	}
	return nil
}
