// Package cputime reads the CPU time this process has used, for benchmarks that report CPU per
// operation: the development machines are shared, and wall time there includes waiting for a
// core, which CPU time does not.
package cputime

import (
	"fmt"
	"syscall"
	"time"
)

// Self is the user plus system CPU time the process has used so far.
func Self() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
