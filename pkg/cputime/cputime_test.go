package cputime

import (
	"testing"
	"time"
)

func TestSelfCountsWork(t *testing.T) {
	before, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	// Busy for 50 ms of wall time: at least part of it is on a core.
	x := 0
	for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
		x++
	}
	after, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 5*time.Millisecond {
		t.Fatalf("CPU time grew by %v over 50 ms of busy work (%d loops)", after-before, x)
	}
	// Sleeping uses (almost) no CPU.
	time.Sleep(50 * time.Millisecond)
	slept, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	if slept-after > 25*time.Millisecond {
		t.Fatalf("CPU time grew by %v over 50 ms of sleep", slept-after)
	}
}
