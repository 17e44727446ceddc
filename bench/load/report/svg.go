package report

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"

	"tollgate/bench/load"
)

// Series is one line of a chart: a target's latency by percentile.
type Series struct {
	Name   string
	Points []load.Point
}

// Panel is one plot of a chart.
type Panel struct {
	Title  string
	Series []Series
}

// Chart geometry, in SVG user units (pixels).
const (
	panelW  = 520
	panelH  = 360
	marginL = 70
	marginR = 20
	marginT = 50
	marginB = 50
	titleH  = 30
)

// palette colours series in order; it is meant to read in print and for colour-blind readers.
var palette = []string{"#1b9e77", "#7570b3", "#d95f02", "#e7298a", "#66a61e", "#a6761d"}

// nines maps a percentile to the chart's x axis: 0 → 0, 90 → 1, 99 → 2, 99.9 → 3, …, the
// usual way latency spectra are drawn so the tail gets room.
func nines(p float64) float64 {
	if p <= 0 {
		return 0
	}
	return -math.Log10(1 - p/100)
}

// LatencyChart draws panels side by side: latency (log scale) by percentile, one line per
// series, the max drawn half a step right of the highest finite percentile.
func LatencyChart(title string, panels []Panel) []byte {
	w := panelW * max(len(panels), 1)
	h := panelH + titleH
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	text(&b, float64(w)/2, 20, "middle", 15, title)
	for i, p := range panels {
		drawPanel(&b, float64(i*panelW), titleH, p)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

func drawPanel(b *bytes.Buffer, x0, y0 float64, p Panel) {
	// Axis ranges from the data.
	maxN := 2.0
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range p.Series {
		for _, pt := range s.Points {
			if pt.Percentile < 100 {
				maxN = max(maxN, math.Ceil(nines(pt.Percentile)))
			}
			v := float64(max(pt.Us, 1))
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 10
	}
	decLo, decHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if decHi <= decLo {
		decHi = decLo + 1
	}
	xMax := maxN + 0.5 // room for "max"
	plotW := float64(panelW - marginL - marginR)
	plotH := float64(panelH - marginT - marginB)
	px := func(n float64) float64 { return x0 + marginL + n/xMax*plotW }
	py := func(us float64) float64 {
		return y0 + marginT + plotH - (math.Log10(max(us, 1))-decLo)/(decHi-decLo)*plotH
	}

	text(b, x0+float64(panelW)/2, y0+25, "middle", 13, p.Title)
	// Grid and y labels: decades, with faint 2× and 5× lines.
	for d := decLo; d <= decHi; d++ {
		v := math.Pow(10, d)
		line(b, px(0), py(v), px(xMax), py(v), "#bbb", 1)
		text(b, px(0)-6, py(v)+4, "end", 11, decade(d))
		if d < decHi {
			for _, m := range []float64{2, 5} {
				line(b, px(0), py(v*m), px(xMax), py(v*m), "#eee", 1)
			}
		}
	}
	// X ticks.
	labels := []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"}
	for n := 0.0; n <= maxN; n++ {
		line(b, px(n), py(math.Pow(10, decLo)), px(n), py(math.Pow(10, decHi)), "#eee", 1)
		if int(n) < len(labels) {
			text(b, px(n), y0+marginT+plotH+18, "middle", 11, labels[int(n)])
		}
	}
	text(b, px(xMax), y0+marginT+plotH+18, "middle", 11, "max")
	text(b, x0+marginL+plotW/2, y0+marginT+plotH+38, "middle", 11, "percentile")
	// Frame.
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#444"/>`+"\n",
		px(0), py(math.Pow(10, decHi)), plotW, plotH)

	for i, s := range p.Series {
		color := palette[i%len(palette)]
		var pts bytes.Buffer
		for _, pt := range s.Points {
			n := nines(pt.Percentile)
			if pt.Percentile >= 100 {
				n = xMax
			}
			fmt.Fprintf(&pts, "%.1f,%.1f ", px(n), py(float64(pt.Us)))
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n",
			color, bytes.TrimSpace(pts.Bytes()))
		for _, pt := range s.Points {
			n := nines(pt.Percentile)
			if pt.Percentile >= 100 {
				n = xMax
			}
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>`+"\n", px(n), py(float64(pt.Us)), color)
		}
		// Legend, top left inside the plot.
		ly := y0 + marginT + 16 + float64(i)*16
		line(b, px(0)+10, ly-4, px(0)+30, ly-4, color, 3)
		text(b, px(0)+36, ly, "start", 11, s.Name)
	}
}

// decade labels 10^d µs: "1 µs", "10 ms", "100 s".
func decade(d float64) string {
	n := int(d)
	units := []string{"µs", "ms", "s"}
	u := min(max(n, 0)/3, len(units)-1)
	v := math.Pow(10, float64(n-3*u))
	return fmt.Sprintf("%g %s", v, units[u])
}

func line(b *bytes.Buffer, x1, y1, x2, y2 float64, color string, width float64) {
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%g"/>`+"\n",
		x1, y1, x2, y2, color, width)
}

func text(b *bytes.Buffer, x, y float64, anchor string, size int, s string) {
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d">`, x, y, anchor, size)
	_ = xml.EscapeText(b, []byte(s)) // writes to a bytes.Buffer, which cannot fail
	b.WriteString("</text>\n")
}

// TimeSeries is one line of a time chart.
type TimeSeries struct {
	Name   string
	Points []TimePoint
}

// TimePoint is a value at a time since the start of a run.
type TimePoint struct {
	Seconds float64
	Value   float64
}

// TimeChart draws values over time on linear axes from zero, e.g. RSS during a soak.
// format labels the y axis ticks.
func TimeChart(title, yLabel string, series []TimeSeries, format func(float64) string) []byte {
	w, h := panelW+200, panelH+titleH
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	text(&b, float64(w)/2, 20, "middle", 15, title)
	tMax, vMax := 1.0, 1.0
	for _, s := range series {
		for _, p := range s.Points {
			tMax, vMax = max(tMax, p.Seconds), max(vMax, p.Value)
		}
	}
	vMax *= 1.1
	// legendW is the room right of the plot for the series names; without it they run off
	// the SVG's edge.
	const legendW = 120
	x0, y0 := float64(marginL+40), float64(titleH+marginT)
	plotW := float64(w) - x0 - marginR - legendW
	plotH := float64(panelH - marginT - marginB)
	px := func(t float64) float64 { return x0 + t/tMax*plotW }
	py := func(v float64) float64 { return y0 + plotH - v/vMax*plotH }
	for i := 0; i <= 5; i++ {
		v := vMax * float64(i) / 5
		line(&b, px(0), py(v), px(tMax), py(v), "#ddd", 1)
		text(&b, px(0)-6, py(v)+4, "end", 11, format(v))
		t := tMax * float64(i) / 5
		text(&b, px(t), y0+plotH+18, "middle", 11, fmt.Sprintf("%.0f s", t))
	}
	text(&b, x0+plotW/2, y0+plotH+38, "middle", 11, "time since start")
	text(&b, x0, y0-10, "start", 11, yLabel)
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#444"/>`+"\n", x0, y0, plotW, plotH)
	for i, s := range series {
		color := palette[i%len(palette)]
		var pts bytes.Buffer
		for _, p := range s.Points {
			fmt.Fprintf(&pts, "%.1f,%.1f ", px(p.Seconds), py(p.Value))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, bytes.TrimSpace(pts.Bytes()))
		ly := y0 + 16 + float64(i)*16
		line(&b, x0+plotW+8, ly-4, x0+plotW+24, ly-4, color, 3)
		text(&b, x0+plotW+28, ly, "start", 11, s.Name)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}
