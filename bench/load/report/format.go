package report

import (
	"fmt"
	"strings"

	"tollgate/bench/load"
)

// Us formats microseconds for people: "850 µs", "12.3 ms", "4.56 s".
func Us(us float64) string {
	switch {
	case us < 0:
		return "-" + Us(-us)
	case us < 1000:
		return fmt.Sprintf("%.0f µs", us)
	case us < 10_000:
		return fmt.Sprintf("%.2f ms", us/1000)
	case us < 1_000_000:
		return fmt.Sprintf("%.1f ms", us/1000)
	default:
		return fmt.Sprintf("%.2f s", us/1e6)
	}
}

// Bytes formats a size in binary units: "512 B", "3.4 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 3 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %siB", v, "KMGT"[i:i+1])
}

// Table is a Markdown table under construction.
type Table struct {
	head []string
	rows [][]string
}

// NewTable starts a table with the given column heads.
func NewTable(head ...string) *Table { return &Table{head: head} }

// Row adds a row; missing cells are left empty, extra cells dropped.
func (t *Table) Row(cells ...string) {
	row := make([]string, len(t.head))
	copy(row, cells)
	t.rows = append(t.rows, row)
}

// String renders the table, escaping pipes inside cells.
func (t *Table) String() string {
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" " + strings.ReplaceAll(c, "|", `\|`) + " |")
		}
		b.WriteString("\n")
	}
	line(t.head)
	sep := make([]string, len(t.head))
	for i := range sep {
		sep[i] = "---"
	}
	line(sep)
	for _, r := range t.rows {
		line(r)
	}
	return b.String()
}

// LatencyRow is a Summary as table cells: p50, p90, p99, p99.9, max.
func LatencyRow(s load.Summary) []string {
	if s.Count == 0 {
		return []string{"-", "-", "-", "-", "-"}
	}
	return []string{Us(float64(s.P50Us)), Us(float64(s.P90Us)), Us(float64(s.P99Us)),
		Us(float64(s.P999Us)), Us(float64(s.MaxUs))}
}

// Errors formats an error count map: "status_402 ×3, timeout ×1", or "none".
func Errors(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range load.ErrorKinds(m) {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// LoadMarkdown summarizes one load run.
func LoadMarkdown(r *load.Result) string {
	var b strings.Builder
	mode := fmt.Sprintf("closed loop, %d connections", r.Conns)
	if r.Mode == "open" {
		mode = fmt.Sprintf("open loop at %.0f req/s (≤ %d in flight)", r.Rate, r.Conns)
	}
	fmt.Fprintf(&b, "Target %s, %s, %s.\n\n", r.URL, mode, r.Elapsed.Round(1e6))
	fmt.Fprintf(&b, "Sent %d, ok %d (%.0f req/s), %d streams, %s read, at most %d in flight. Errors: %s.\n\n",
		r.Sent, r.OK, r.Throughput, r.Streams, Bytes(r.BytesIn), r.MaxInFlight, Errors(r.Errors))
	t := NewTable("", "count", "p50", "p90", "p99", "p99.9", "max")
	t.Row(append([]string{"latency", fmt.Sprint(r.Latency.Count)}, LatencyRow(r.Latency)...)...)
	if r.TTFT.Count > 0 {
		t.Row(append([]string{"time to first token", fmt.Sprint(r.TTFT.Count)}, LatencyRow(r.TTFT)...)...)
	}
	if r.Mode == "open" {
		t.Row(append([]string{"dispatch lag", fmt.Sprint(r.Lag.Count)}, LatencyRow(r.Lag)...)...)
	}
	b.WriteString(t.String() + "\n")
	p := NewTable("process", "pid", "CPU s", "CPU µs/request", "RSS start", "RSS peak", "VmHWM")
	for _, u := range append([]load.ProcUsage{r.Generator}, r.Procs...) {
		if u.Error != "" {
			p.Row(u.Name, fmt.Sprint(u.Pid), "n/a: "+u.Error)
			continue
		}
		p.Row(u.Name, fmt.Sprint(u.Pid), fmt.Sprintf("%.2f", u.CPUSeconds), fmt.Sprintf("%.1f", u.CPUPerRequestUs),
			Bytes(u.RSSStartBytes), Bytes(u.RSSPeakBytes), Bytes(u.HWMBytes))
	}
	b.WriteString(p.String())
	return b.String()
}
