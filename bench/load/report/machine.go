// Package report writes bench results: the machine they were measured on, a JSON document, a
// Markdown summary and a latency chart drawn as SVG by hand, named
// <dir>/<date>-<shortcommit>-<scenario>.{json,md,svg}.
package report

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes where a result was measured.
type Machine struct {
	CPUs        int    `json:"cpus"` // online CPUs (nproc)
	CPUModel    string `json:"cpu_model"`
	MemoryBytes int64  `json:"memory_bytes"`
	Kernel      string `json:"kernel"`
	GoVersion   string `json:"go_version"`
	GOMAXPROCS  int    `json:"gomaxprocs"`
}

// ReadMachine reads the machine's description from /proc and the Go runtime. Missing pieces
// stay empty: a result is still worth writing without them.
func ReadMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel, _ = ParseCPUInfo(b)
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemoryBytes = ParseMemTotal(b)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// ParseCPUInfo returns the first "model name" of /proc/cpuinfo and the number of processors
// listed.
func ParseCPUInfo(b []byte) (model string, processors int) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name":
			if model == "" {
				model = strings.TrimSpace(v)
			}
		case "processor":
			processors++
		}
	}
	return model, processors
}

// ParseMemTotal returns MemTotal of /proc/meminfo in bytes, or 0.
func ParseMemTotal(b []byte) int64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 2 && f[1] == "kB" {
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil && n >= 0 && n < 1<<53 {
				return n * 1024
			}
		}
		return 0
	}
	return 0
}

// ShortCommit is the repository's HEAD as a short hash, with "-dirty" when the work tree has
// changes, so a result names the code it measured. "nogit" when git cannot tell.
func ShortCommit(ctx context.Context, repoDir string) string {
	out, err := exec.CommandContext(ctx, "git", "-C", repoDir, "rev-parse", "--short=8", "HEAD").Output()
	if err != nil {
		return "nogit"
	}
	commit := strings.TrimSpace(string(out))
	// Only tracked files count: untracked work of others in a shared checkout does not make the
	// measured code different.
	st, err := exec.CommandContext(ctx, "git", "-C", repoDir, "status", "--porcelain", "--untracked-files=no").Output()
	if err == nil && len(bytes.TrimSpace(st)) > 0 {
		commit += "-dirty"
	}
	return commit
}

// Meta is what every result file starts with.
type Meta struct {
	Scenario string    `json:"scenario"`
	Date     time.Time `json:"date"`
	Commit   string    `json:"commit"`
	Command  string    `json:"command"` // the exact command line
	Machine  Machine   `json:"machine"`
}

// Base is the path of a result's files without extension:
// dir/<YYYY-MM-DD>-<commit>-<scenario>.
func (m Meta) Base(dir string) string {
	return filepath.Join(dir, fmt.Sprintf("%s-%s-%s", m.Date.UTC().Format("2006-01-02"), m.Commit, m.Scenario))
}

// MarkdownHeader is the lines every summary starts with.
func (m Meta) MarkdownHeader(title string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n", title)
	fmt.Fprintf(&b, "- scenario: `%s`\n", m.Scenario)
	fmt.Fprintf(&b, "- date: %s, commit `%s`\n", m.Date.UTC().Format(time.RFC3339), m.Commit)
	fmt.Fprintf(&b, "- machine: %d CPUs (%s), %s memory, kernel %s, %s, GOMAXPROCS %d\n",
		m.Machine.CPUs, orDash(m.Machine.CPUModel), Bytes(m.Machine.MemoryBytes), orDash(m.Machine.Kernel),
		m.Machine.GoVersion, m.Machine.GOMAXPROCS)
	fmt.Fprintf(&b, "- command: `%s`\n\n", m.Command)
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteFiles writes base.json, base.md and, when svg is not nil, base.svg, and returns the base
// it used. It never overwrites a result: when a file of that base exists (a second run at the
// same commit on the same day), it writes base-2.*, base-3.* and so on.
func WriteFiles(base string, jsonDoc, md, svg []byte) (string, error) {
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		return "", fmt.Errorf("create results dir: %w", err)
	}
	files := []struct {
		ext  string
		data []byte
	}{{".json", jsonDoc}, {".md", md}, {".svg", svg}}
	free := base
	for n := 2; taken(free); n++ {
		if n > 99 {
			return "", fmt.Errorf("write result: %s-2 … -99 are all taken", base)
		}
		free = fmt.Sprintf("%s-%d", base, n)
	}
	for _, f := range files {
		if f.data == nil {
			continue
		}
		if err := os.WriteFile(free+f.ext, f.data, 0o644); err != nil {
			return "", fmt.Errorf("write result: %w", err)
		}
	}
	return free, nil
}

// taken reports whether a result file of base exists.
func taken(base string) bool {
	for _, ext := range []string{".json", ".md", ".svg"} {
		if _, err := os.Stat(base + ext); err == nil {
			return true
		}
	}
	return false
}

// LoadAvg is the first three fields of /proc/loadavg ("1.02 0.80 0.55"), or "" when unknown.
// Results record it: on a small shared machine, other work explains noisy numbers.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
