package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Proc is one child process of the stack. Its output goes to a log file under the stack's
// log directory. Methods are safe for concurrent use.
type Proc struct {
	Name string
	Path string
	Args []string
	Env  []string // added to the parent's environment
	// Ready is polled after start until it returns nil (or the start timeout passes).
	Ready func(ctx context.Context) error

	logPath string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// LogPath is where the process writes its stdout and stderr.
func (p *Proc) LogPath() string { return p.logPath }

func (p *Proc) start(ctx context.Context, logDir string, timeout time.Duration) error {
	done, err := p.spawn(logDir)
	if err != nil {
		return err
	}
	return waitReady(ctx, p, done, timeout)
}

func (p *Proc) spawn(logDir string) (chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return nil, fmt.Errorf("start %s: already running", p.Name)
	}
	p.logPath = filepath.Join(logDir, p.Name+".log")
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", p.Name, err)
	}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so Ctrl-C in the terminal reaches only the launcher, which then
	// stops the children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.waitErr = cmd, done, nil
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
	return done, nil
}

func waitReady(ctx context.Context, p *Proc, done chan struct{}, timeout time.Duration) error {
	if p.Ready == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		select {
		case <-done:
			return fmt.Errorf("%s exited during start (log: %s)", p.Name, p.logPath)
		default:
		}
		if last = p.Ready(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %w (log: %s)", p.Name, timeout, last, p.logPath)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM and waits up to grace, then SIGKILL. Idempotent.
func (p *Proc) Stop(grace time.Duration) error {
	return p.signal(syscall.SIGTERM, grace)
}

// Kill sends SIGKILL (a crash, for fault tests) and waits for the process to go.
func (p *Proc) Kill() error { return p.signal(syscall.SIGKILL, 0) }

func (p *Proc) signal(sig syscall.Signal, grace time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	if grace > 0 {
		select {
		case <-done:
		case <-time.After(grace):
			_ = cmd.Process.Kill()
		}
	}
	<-done
	p.mu.Lock()
	p.cmd = nil
	err := p.waitErr
	p.mu.Unlock()
	var ee *exec.ExitError
	if errors.As(err, &ee) && sig == syscall.SIGKILL {
		return nil
	}
	return err
}

// Running reports whether the process has been started and has not exited.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// HTTPReady returns a readiness probe that wants 200 from url.
func HTTPReady(url string) func(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// TCPReady returns a readiness probe that wants a TCP connection to addr.
func TCPReady(addr string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// FreePorts returns n distinct TCP ports on 127.0.0.1 that were free a moment ago. It holds
// every listener until it has all n: picked one at a time, the kernel can hand out the same
// port twice (a test once gave the mock upstream ledgerd's port).
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find free port: %w", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Pid is the process id, or 0 when not running.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Priority is how the kernel schedules a background process on the cores it shares with the
// processes under test.
type Priority struct {
	// Idle puts it under SCHED_IDLE: it runs only when no other task wants the core, and any
	// task that wakes takes the core from it at once. Nice is then ignored.
	Idle bool
	// Nice is its nice value under the normal policy (SCHED_OTHER), -20..19. Even at 19 such
	// a task keeps the core for the rest of its slice (about a millisecond) when a normal task
	// wakes; that is what Idle avoids.
	Nice int
}

func (p Priority) String() string {
	if p.Idle {
		return "SCHED_IDLE"
	}
	return fmt.Sprintf("nice %d", p.Nice)
}

// Linux scheduling policies (sched.h).
const (
	schedOther = 0
	schedIdle  = 5
)

// SetPriority gives every thread of process pid the priority p. Linux schedules each thread
// on its own, and a thread inherits its creator's policy and nice value, so threads started
// later follow.
func SetPriority(pid int, p Priority) error {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list threads of %d: %w", pid, err)
	}
	policy := schedOther
	if p.Idle {
		policy = schedIdle
	}
	for _, t := range tasks {
		var tid int
		if _, err := fmt.Sscan(t.Name(), &tid); err != nil {
			continue
		}
		param := struct{ priority int32 }{0}
		if _, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, uintptr(tid), uintptr(policy),
			uintptr(unsafe.Pointer(&param))); errno != 0 && errno != syscall.ESRCH {
			return fmt.Errorf("set %s on thread %d of %d: %w", p, tid, pid, errno)
		}
		if p.Idle {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, p.Nice); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("set nice %d on thread %d of %d: %w", p.Nice, tid, pid, err)
		}
	}
	return nil
}
