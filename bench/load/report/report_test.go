package report_test

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"tollgate/bench/load"
	"tollgate/bench/load/report"
)

// checkXML parses the whole document and returns its root element's name and how many
// elements of each name it holds.
func checkXML(t *testing.T, doc []byte) (string, map[string]int) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(doc))
	d.Strict = true
	root := ""
	count := map[string]int{}
	depth := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		switch e := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				require.Empty(t, root, "more than one root element")
				root = e.Name.Local
				require.Equal(t, "http://www.w3.org/2000/svg", e.Name.Space)
			}
			count[e.Name.Local]++
			depth++
		case xml.EndElement:
			depth--
		}
	}
	require.Zero(t, depth)
	return root, count
}

func pt(p float64, us int64) load.Point { return load.Point{Percentile: p, Us: us} }

func TestLatencyChartIsValidSVG(t *testing.T) {
	pts := func(scale int64) []load.Point {
		return []load.Point{pt(0, 100*scale), pt(50, 200*scale), pt(90, 300*scale), pt(99, 900*scale),
			pt(99.9, 5000*scale), pt(100, 20000*scale)}
	}
	svg := report.LatencyChart(`latency <non-streaming> & "friends"`, []report.Panel{
		{Title: "latency", Series: []report.Series{{"direct", pts(1)}, {"forwarder", pts(2)}, {"edge <3>", pts(3)}}},
		{Title: "TTFT", Series: []report.Series{{"direct", pts(1)}}},
		{Title: "empty"},
	})
	root, count := checkXML(t, svg)
	require.Equal(t, "svg", root)
	require.Equal(t, 4, count["polyline"])
	require.Equal(t, 24, count["circle"])
	require.Contains(t, string(svg), "edge &lt;3&gt;")
	require.Contains(t, string(svg), "&amp; &#34;friends&#34;")
	require.NotContains(t, string(svg), "NaN")
	require.NotContains(t, string(svg), "Inf")

	// No panels at all, and a single point, still make a valid document.
	checkXML(t, report.LatencyChart("none", nil))
	checkXML(t, report.LatencyChart("one", []report.Panel{{Series: []report.Series{{"x", []load.Point{pt(100, 0)}}}}}))
}

func TestFormat(t *testing.T) {
	require.Equal(t, "850 µs", report.Us(850))
	require.Equal(t, "1.50 ms", report.Us(1500))
	require.Equal(t, "12.3 ms", report.Us(12_300))
	require.Equal(t, "4.56 s", report.Us(4_560_000))
	require.Equal(t, "-20 µs", report.Us(-20))
	require.Equal(t, "512 B", report.Bytes(512))
	require.Equal(t, "1.5 KiB", report.Bytes(1536))
	require.Equal(t, "24.0 GiB", report.Bytes(24<<30))
	require.Equal(t, "none", report.Errors(nil))
	require.Equal(t, "timeout ×3, status_402 ×1, status_529 ×1",
		report.Errors(map[string]int64{"status_529": 1, "timeout": 3, "status_402": 1}))

	tab := report.NewTable("a", "b")
	tab.Row("1", "x|y")
	tab.Row("2")
	require.Equal(t, "| a | b |\n| --- | --- |\n| 1 | x\\|y |\n| 2 |  |\n", tab.String())
}

func TestLoadMarkdown(t *testing.T) {
	r := &load.Result{URL: "http://127.0.0.1:1", Mode: "open", Rate: 1000, Conns: 64, Elapsed: 2 * time.Second,
		Sent: 2000, OK: 1999, Throughput: 999.5, Errors: map[string]int64{"status_402": 1},
		Latency:   load.Summary{Count: 1999, P50Us: 150, P90Us: 200, P99Us: 400, P999Us: 900, MaxUs: 1500},
		Lag:       load.Summary{Count: 2000, P50Us: 5, MaxUs: 80},
		Generator: load.ProcUsage{Name: "generator", Pid: 7, CPUSeconds: 0.5, CPUPerRequestUs: 250},
		Procs:     []load.ProcUsage{{Name: "edge", Pid: 9, Error: "gone"}}}
	md := report.LoadMarkdown(r)
	require.Contains(t, md, "open loop at 1000 req/s")
	require.Contains(t, md, "| latency | 1999 | 150 µs | 200 µs | 400 µs | 900 µs | 1.50 ms |")
	require.Contains(t, md, "| generator | 7 | 0.50 | 250.0 |")
	require.Contains(t, md, "| edge | 9 | n/a: gone |")
	require.Contains(t, md, "status_402 ×1")
	require.NotContains(t, md, "time to first token")
}

func TestMachineParsing(t *testing.T) {
	model, n := report.ParseCPUInfo([]byte("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n"))
	require.Equal(t, "AMD EPYC 7B13", model)
	require.Equal(t, 2, n)
	require.Equal(t, int64(24*1024*1024*1024), report.ParseMemTotal([]byte("MemTotal:       25165824 kB\nMemFree: 1 kB\n")))
	require.Zero(t, report.ParseMemTotal([]byte("MemFree: 1 kB\n")))
	require.Zero(t, report.ParseMemTotal([]byte("MemTotal: lots\n")))

	m := report.ReadMachine()
	require.Positive(t, m.CPUs)
	require.True(t, strings.HasPrefix(m.GoVersion, "go"))
}

func TestMetaFiles(t *testing.T) {
	dir := t.TempDir()
	m := report.Meta{Scenario: "nonstream", Date: time.Date(2026, 11, 22, 23, 0, 0, 0, time.UTC), Commit: "abc12345",
		Command: "bench compare -scenarios nonstream", Machine: report.Machine{CPUs: 2, GoVersion: "go1.26"}}
	base := m.Base(dir)
	require.Equal(t, filepath.Join(dir, "2026-11-22-abc12345-nonstream"), base)
	got, err := report.WriteFiles(base, []byte("{}"), []byte("# x\n"), nil)
	require.NoError(t, err)
	require.Equal(t, base, got)
	_, err = os.Stat(base + ".json")
	require.NoError(t, err)
	_, err = os.Stat(base + ".svg")
	require.True(t, os.IsNotExist(err))

	// A second run at the same commit and day keeps the first one's files.
	got, err = report.WriteFiles(base, []byte(`{"run":2}`), []byte("# y\n"), nil)
	require.NoError(t, err)
	require.Equal(t, base+"-2", got)
	first, err := os.ReadFile(base + ".json")
	require.NoError(t, err)
	require.Equal(t, "{}", string(first))
	second, err := os.ReadFile(base + "-2.json")
	require.NoError(t, err)
	require.Equal(t, `{"run":2}`, string(second))
	require.Contains(t, m.MarkdownHeader("T"), "- command: `bench compare -scenarios nonstream`")
}

func TestTimeChartIsValidSVG(t *testing.T) {
	svg := report.TimeChart("rss <soak>", "RSS", []report.TimeSeries{
		{Name: "edge", Points: []report.TimePoint{{Seconds: 0, Value: 1 << 20}, {Seconds: 5, Value: 3 << 20}}},
		{Name: "mock & co", Points: []report.TimePoint{{Seconds: 0, Value: 2 << 20}}},
		{Name: "empty"},
	}, func(v float64) string { return report.Bytes(int64(v)) })
	root, count := checkXML(t, svg)
	require.Equal(t, "svg", root)
	require.Equal(t, 3, count["polyline"])
	require.NotContains(t, string(svg), "NaN")
	checkXML(t, report.TimeChart("none", "", nil, func(float64) string { return "" }))
}
