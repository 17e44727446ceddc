package stack

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// threadSched reads the policy (sched(7): 0 SCHED_OTHER, 5 SCHED_IDLE) and nice value of
// every thread of pid from /proc.
func threadSched(t *testing.T, pid int) (policies, nices []string) {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			t.Fatal(err)
		}
		// Fields after the command, which is in parentheses: nice is field 19, policy 41.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		nices = append(nices, f[19-3])
		policies = append(policies, f[41-3])
	}
	return policies, nices
}

func TestSetPriority(t *testing.T) {
	// A Go test binary's threads stand in for a background process with several threads.
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSleep$")
	cmd.Env = append(os.Environ(), "TOLLGATE_STACK_HELPER_SLEEP=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() }) //nolint:errcheck
	buf := make([]byte, 5)
	if _, err := stdout.Read(buf); err != nil { // "ready": its threads exist
		t.Fatal(err)
	}
	pid := cmd.Process.Pid

	check := func(wantPolicy, wantNice string) {
		t.Helper()
		policies, nices := threadSched(t, pid)
		if len(policies) < 2 {
			t.Fatalf("want a process with several threads, have %d", len(policies))
		}
		for i := range policies {
			if policies[i] != wantPolicy || (wantNice != "" && nices[i] != wantNice) {
				t.Fatalf("thread %d: policy %s nice %s, want policy %s nice %s", i, policies[i], nices[i], wantPolicy, wantNice)
			}
		}
	}
	if err := SetPriority(pid, Priority{Nice: 19}); err != nil {
		t.Fatal(err)
	}
	check("0", "19")
	if err := SetPriority(pid, Priority{Idle: true}); err != nil {
		t.Fatal(err)
	}
	check("5", "")
	if err := SetPriority(pid, Priority{}); err != nil {
		t.Fatal(err)
	}
	check("0", "0")
	if err := SetPriority(1<<30, Priority{Idle: true}); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}

// TestHelperSleep is the child process of TestSetPriority, not a test.
func TestHelperSleep(t *testing.T) {
	if os.Getenv("TOLLGATE_STACK_HELPER_SLEEP") == "" {
		t.Skip("child process of TestSetPriority")
	}
	fmt.Print("ready")
	syscall.Pause()
}

func TestFreePortsDistinct(t *testing.T) {
	// 500 ports picked one listener at a time repeat one almost surely (birthday bound over
	// the ephemeral range); FreePorts must never.
	ps, err := FreePorts(500)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ps {
		if p <= 0 || seen[p] {
			t.Fatalf("port %d twice or invalid in %v", p, ps)
		}
		seen[p] = true
	}
}
