package compare

import (
	"fmt"
	"strings"
	"time"

	"tollgate/bench/load"
	"tollgate/bench/load/report"
)

func us(v int64) string   { return report.Us(float64(v)) }
func f1(v float64) string { return fmt.Sprintf("%.1f", v) }
func x2(v float64) string { return fmt.Sprintf("%.2f×", v) }
func signed(v int64) string {
	if v >= 0 {
		return "+" + us(v)
	}
	return us(v)
}

// Markdown is a scenario's human summary.
func Markdown(res *ScenarioResult) string {
	var b strings.Builder
	b.WriteString(res.Meta.MarkdownHeader("bench compare: " + res.Title))
	if len(res.Shapes) > 0 {
		b.WriteString("Requests (each tells the mock upstream its exact usage):\n\n")
		for _, s := range res.Shapes {
			fmt.Fprintf(&b, "- `%s` weight %d: %s, `%s`\n", s.Name, max(s.Weight, 1), streamWord(s.Stream), s.Directive())
		}
		b.WriteString("\n")
	}
	switch {
	case res.Ratios != nil:
		throughputMarkdown(&b, res)
	case res.Slow != nil:
		slowMarkdown(&b, res)
	case res.Settle != nil:
		settleMarkdown(&b, res)
	case res.Soak != nil:
		b.WriteString("## Soak\n\n" + report.LoadMarkdown(res.Soak) + "\n")
	case res.Verify != nil:
		verifyMarkdown(&b, res)
	}
	if len(res.Notes) > 0 {
		b.WriteString("## Notes\n\n")
		for _, n := range res.Notes {
			b.WriteString("- " + n + "\n")
		}
	}
	return b.String()
}

func usList(v []int64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = us(x)
	}
	return strings.Join(parts, " / ")
}

func streamWord(stream bool) string {
	if stream {
		return "streaming"
	}
	return "non-streaming"
}

func throughputMarkdown(b *strings.Builder, res *ScenarioResult) {
	r := res.Ratios
	fmt.Fprintf(b, "%d rounds; in each, every target runs a closed loop (%d connections, %s), then an open loop at %.0f req/s (%s), in rotating order.\n\n",
		res.Rounds, res.Conns, res.Phase, res.Rate, res.Phase)
	b.WriteString("## Edge against the upstream direct and the bare forwarder\n\n")
	t := report.NewTable("measure", "edge", "forwarder")
	t.Row("throughput vs direct", x2(r.ThroughputEdgeVsDirect), x2(r.ThroughputForwarderVsDirect))
	t.Row("throughput edge vs forwarder", x2(r.ThroughputEdgeVsForwarder), "")
	t.Row("proxy CPU µs per request (closed loop)", f1(r.EdgeCPUPerRequestUs), f1(r.ForwarderCPUPerRequestUs))
	t.Row("proxy CPU µs per request (open loop)", f1(r.EdgeCPUPerRequestOpenUs), f1(r.ForwarderCPUPerRequestOpenUs))
	t.Row("added latency p50 vs direct", signed(r.EdgeAddedP50Us), signed(r.ForwarderAddedP50Us))
	t.Row("added latency p99 vs direct", signed(r.EdgeAddedP99Us), signed(r.ForwarderAddedP99Us))
	if res.Targets[0].Open.TTFT.Count > 0 {
		t.Row("time to first token p50 vs direct", signed(r.EdgeTTFTDeltaP50Us), signed(r.ForwarderTTFTDeltaP50Us))
		t.Row("time to first token p99 vs direct", signed(r.EdgeTTFTDeltaP99Us), signed(r.ForwarderTTFTDeltaP99Us))
	}
	if r.EdgeBackgroundProcessesCounted != "" {
		t.Row("background CPU µs per request during the closed loop ("+r.EdgeBackgroundProcessesCounted+")", f1(r.EdgeBackgroundCPUPerRequestUs), "")
		if r.EdgeBackgroundCPUPerRequestScenarioUs > 0 {
			t.Row("background CPU µs per edge request over the scenario, catch-up included", f1(r.EdgeBackgroundCPUPerRequestScenarioUs), "")
		}
	}
	b.WriteString(t.String() + "\n")
	checksMarkdown(b, res.Checks)

	b.WriteString("## Throughput (closed loop)\n\n")
	tt := report.NewTable("target", "req/s", "rounds min–max", "ok", "errors", "proxy CPU µs/req", "mock CPU µs/req", "generator CPU µs/req")
	for _, tr := range res.Targets {
		p := tr.Closed
		proxy := "-"
		if tr.Proxy != "" {
			proxy = f1(p.Proc(tr.Proxy).CPUPerRequestUs)
		}
		tt.Row(tr.Target, fmt.Sprintf("%.0f", p.Throughput), fmt.Sprintf("%.0f–%.0f", p.ThroughputMin, p.ThroughputMax),
			fmt.Sprint(p.OK), report.Errors(p.Errors), proxy, f1(p.Proc("mock").CPUPerRequestUs), f1(p.Generator.CPUPerRequestUs))
	}
	b.WriteString(tt.String() + "\n")

	fmt.Fprintf(b, "## Latency at %.0f req/s (open loop, from each request's scheduled send time)\n\n", res.Rate)
	lt := report.NewTable("target", "ok", "p50", "p90", "p99", "p99.9", "max", "errors")
	for _, tr := range res.Targets {
		p := tr.Open
		lt.Row(append(append([]string{tr.Target, fmt.Sprint(p.OK)}, report.LatencyRow(p.Latency)...),
			report.Errors(p.Errors))...)
	}
	b.WriteString(lt.String() + "\n")
	b.WriteString("Per round (a round whose dispatch lag is large was disturbed: the generator itself, or the whole machine, could not keep the schedule):\n\n")
	rt := report.NewTable("target", "p50 by round", "p99 by round", "dispatch lag p99 by round")
	for _, tr := range res.Targets {
		p := tr.Open
		rt.Row(tr.Target, usList(p.RoundP50Us), usList(p.RoundP99Us), usList(p.RoundLagP99Us))
	}
	b.WriteString(rt.String() + "\n")
	if res.Targets[0].Open.TTFT.Count > 0 {
		b.WriteString("Time to first token (first content_block_delta), same runs:\n\n")
		tf := report.NewTable("target", "streams", "p50", "p90", "p99", "p99.9", "max")
		for _, tr := range res.Targets {
			tf.Row(append([]string{tr.Target, fmt.Sprint(tr.Open.TTFT.Count)}, report.LatencyRow(tr.Open.TTFT)...)...)
		}
		b.WriteString(tf.String() + "\n")
	}

	b.WriteString("## Processes (closed loop)\n\n")
	pt := report.NewTable("target", "process", "CPU s", "CPU µs/req", "RSS peak")
	for _, tr := range res.Targets {
		for _, a := range append([]ProcAgg{tr.Closed.Generator}, tr.Closed.Procs...) {
			if a.Error != "" {
				pt.Row(tr.Target, a.Name, "n/a: "+a.Error)
				continue
			}
			pt.Row(tr.Target, a.Name, fmt.Sprintf("%.2f", a.CPUSeconds), f1(a.CPUPerRequestUs), report.Bytes(a.RSSPeakBytes))
		}
	}
	b.WriteString(pt.String() + "\n")
}

// checksMarkdown is the table of reference targets met or missed.
func checksMarkdown(b *strings.Builder, checks []Check) {
	if len(checks) == 0 {
		return
	}
	c := report.NewTable("reference target", "measured", "want", "")
	for _, ch := range checks {
		c.Row(ch.Name, fmt.Sprintf("%.2f", ch.Value), ch.Want, map[bool]string{true: "met", false: "**missed**"}[ch.OK])
	}
	b.WriteString(c.String() + "\n")
}

func settleMarkdown(b *strings.Builder, res *ScenarioResult) {
	s := res.Settle
	fmt.Fprintf(b, "The edge alone in an open loop at %.0f req/s for %s (≤ %d in flight), with Kafka, ledgerd, analytics and ClickHouse "+
		"at normal priority for the scenario. Settlement lag is, per billed request, ledgerd's `settled_requests.settled_ms` "+
		"minus the moment the load generator had read the response to its end.\n\n", s.Rate, s.Duration, res.Conns)
	checksMarkdown(b, res.Checks)

	b.WriteString("## Settlement lag\n\n")
	l := s.Lag
	t := report.NewTable("", "count", "p50", "p90", "p99", "p99.9", "max")
	t.Row(append([]string{"settlement lag", fmt.Sprint(l.Lag.Count)}, report.LatencyRow(l.Lag)...)...)
	if r := s.Load; r != nil {
		t.Row(append([]string{"response latency (from scheduled send)", fmt.Sprint(r.Latency.Count)}, report.LatencyRow(r.Latency)...)...)
		t.Row(append([]string{"dispatch lag", fmt.Sprint(r.Lag.Count)}, report.LatencyRow(r.Lag)...)...)
	}
	b.WriteString(t.String() + "\n")
	if len(l.Intervals) > 0 {
		b.WriteString("By when the responses ended (a stall shows as the seconds it hit):\n\n")
		it := report.NewTable("ended (s)", "count", "p50", "p99", "max")
		for _, iv := range l.Intervals {
			if iv.Count == 0 {
				it.Row(fmt.Sprintf("%g–%g", iv.From, iv.To), "0", "-", "-", "-")
				continue
			}
			it.Row(fmt.Sprintf("%g–%g", iv.From, iv.To), fmt.Sprint(iv.Count), us(iv.P50Us), us(iv.P99Us), us(iv.MaxUs))
		}
		b.WriteString(it.String() + "\n")
	}
	f := report.NewTable("", "value")
	if r := s.Load; r != nil {
		f.Row("sent / ok", fmt.Sprintf("%d / %d", r.Sent, r.OK))
		f.Row("achieved rate (ok over first send to last answer)", fmt.Sprintf("%.0f req/s", r.Throughput))
		f.Row("errors", report.Errors(r.Errors))
	}
	f.Row("billed requests (200 with a request id)", fmt.Sprint(l.Billed))
	f.Row("settled / not settled", fmt.Sprintf("%d / %d", l.Settled, l.Missing))
	f.Row("from the load's end until the last settled", s.Wait.Round(time.Millisecond).String())
	if l.NoEndTime > 0 {
		f.Row("settled, no end time in the log (not in the lag)", fmt.Sprint(l.NoEndTime))
	}
	if l.Early > 0 {
		f.Row("settled_ms before the end time (ms truncation; counted as 0)", fmt.Sprint(l.Early))
	}
	f.Row("earlier scenarios' records: waited before the load / still unsettled",
		fmt.Sprintf("%s / %d", s.Drain.Round(time.Millisecond), s.DrainLeft))
	if bs := s.Batches; bs.Error != "" {
		f.Row("ledgerd batches", "n/a: "+bs.Error)
	} else {
		f.Row("ledgerd batches / records settled / records per batch", fmt.Sprintf("%d / %d / %.0f", bs.Batches, bs.Records, bs.RecordsPerBatch))
		f.Row("ledgerd batch time, fetch to commit (mean)", report.Us(bs.MeanSeconds*1e6))
	}
	b.WriteString(f.String() + "\n")

	b.WriteString("## Processes\n\n")
	b.WriteString("CPU during the load, and after it until the last record had settled (the background catching up). " +
		"CPU µs per request is both over the billed requests.\n\n")
	p := report.NewTable("process", "CPU s (load)", "cores (load)", "CPU s (after)", "CPU µs/req", "RSS peak")
	for _, u := range s.Procs {
		if u.Error != "" {
			p.Row(u.Name, "n/a: "+u.Error)
			continue
		}
		p.Row(u.Name, fmt.Sprintf("%.2f", u.LoadCPUSec), fmt.Sprintf("%.2f", u.LoadCores), fmt.Sprintf("%.2f", u.WaitCPUSec),
			f1(u.CPUPerRequest), report.Bytes(u.RSSPeakBytes))
	}
	b.WriteString(p.String() + "\n")
	b.WriteString("How to read it:\n\n" +
		"- ledgerd runs on SQLite here (a file under the data dir, WAL, `synchronous=FULL`); in production it would use " +
		"PostgreSQL on another machine, and Kafka, analytics and ClickHouse would not share the edge's two cores either.\n" +
		"- `settled_ms` and the end time are the same machine's wall clock, so no clock skew enters; `settled_ms` has " +
		"millisecond resolution (truncated), so each lag reads up to 1 ms short.\n" +
		"- `settled_ms` is taken when ledgerd's settle transaction starts; the balance is visible at its commit, later by " +
		"at most that batch's database time (the mean fetch-to-commit above bounds it).\n\n")
}

func slowMarkdown(b *strings.Builder, res *ScenarioResult) {
	fmt.Fprintf(b, "Each target in turn gets %d streams at once (one per connection, opened over a ramp of 2,000 a second), each about 10 s long.\n\n", res.Conns)
	t := report.NewTable("target", "ok", "errors", "most in flight", "TTFT p50", "TTFT p99", "duration p50", "duration max")
	for _, s := range res.Slow {
		r := s.Result
		t.Row(s.Target, fmt.Sprint(r.OK), report.Errors(r.Errors), fmt.Sprint(r.MaxInFlight),
			us(r.TTFT.P50Us), us(r.TTFT.P99Us), us(r.Latency.P50Us), us(r.Latency.MaxUs))
	}
	b.WriteString(t.String() + "\n")
	b.WriteString("Memory: RSS sampled every 250 ms; per stream = (peak − start) / most in flight.\n\n")
	m := report.NewTable("target", "process", "RSS start", "RSS peak", "bytes per in-flight stream", "CPU s")
	for _, s := range res.Slow {
		for _, p := range s.Memory {
			if p.Error != "" {
				m.Row(s.Target, p.Name, "n/a: "+p.Error)
				continue
			}
			m.Row(s.Target, p.Name, report.Bytes(p.RSSStartBytes), report.Bytes(p.RSSPeakBytes),
				report.Bytes(int64(p.BytesPerStream)), fmt.Sprintf("%.2f", p.CPUSeconds))
		}
	}
	b.WriteString(m.String() + "\n")
}

func verifyMarkdown(b *strings.Builder, res *ScenarioResult) {
	v := res.Verify
	fmt.Fprintf(b, "## Verdict: %s\n\n", map[bool]string{true: "the money adds up", false: "**the money does not add up**"}[v.OK])
	t := report.NewTable("", "value")
	t.Row("request log lines", fmt.Sprint(v.Entries))
	t.Row("billed (200 with a request id)", fmt.Sprint(v.Billed))
	t.Row("of which cut short on the client", fmt.Sprint(v.Incomplete))
	t.Row("refused (error status, not billed)", fmt.Sprint(v.NotBilled))
	t.Row("no answer (outcome unknown)", fmt.Sprint(v.Unknown))
	t.Row("expected Σ cost", fmt.Sprintf("%d µcr", v.Expected))
	if v.Ledger != nil {
		t.Row("ledger debits (top-ups − balances)", fmt.Sprintf("%d µcr over %d accounts, %d accounts off", v.Ledger.Debited,
			v.Ledger.Accounts, len(v.Ledger.Diffs)))
	}
	if c := v.ClickHouse; c != nil {
		t.Row("ClickHouse Σ cost (FINAL)", fmt.Sprintf("%d µcr", c.FinalSum))
		t.Row("ClickHouse request ids", fmt.Sprintf("%d distinct in %d rows", c.Distinct, c.Rows))
		t.Row("missing / extra / cost mismatch / duplicated ids", fmt.Sprintf("%d / %d / %d / %d", c.Missing, c.Extra, c.CostMismatch, c.Duplicated))
		t.Row("refused requests recorded at cost 0", fmt.Sprint(c.Refused))
	} else {
		t.Row("ClickHouse", "not checked: "+v.ClickHouseSkipped)
	}
	b.WriteString(t.String() + "\n")
	if v.Ledger != nil && len(v.Ledger.Diffs) > 0 {
		d := report.NewTable("account", "expected µcr", "debited µcr")
		for i, a := range v.Ledger.Diffs {
			if i == 20 {
				break
			}
			d.Row(a.ID, fmt.Sprint(a.Expected), fmt.Sprint(a.Debited))
		}
		b.WriteString(d.String() + "\n")
	}
	for _, n := range v.Notes {
		b.WriteString("- " + n + "\n")
	}
	b.WriteString("\n")
}

// Chart draws a scenario's SVG, or nil when it has nothing to draw.
func Chart(res *ScenarioResult) []byte {
	switch {
	case res.Ratios != nil:
		lat := report.Panel{Title: fmt.Sprintf("latency at %.0f req/s", res.Rate)}
		ttft := report.Panel{Title: "time to first token"}
		for _, tr := range res.Targets {
			lat.Series = append(lat.Series, report.Series{Name: tr.Target, Points: tr.Open.Spectrum})
			if tr.Open.TTFT.Count > 0 {
				ttft.Series = append(ttft.Series, report.Series{Name: tr.Target, Points: tr.Open.TTFTSpectrum})
			}
		}
		panels := []report.Panel{lat}
		if len(ttft.Series) > 0 {
			panels = append(panels, ttft)
		}
		return report.LatencyChart(res.Title+" — "+res.Meta.Commit, panels)
	case res.Slow != nil:
		lat := report.Panel{Title: "stream duration"}
		ttft := report.Panel{Title: "time to first token"}
		for _, s := range res.Slow {
			lat.Series = append(lat.Series, report.Series{Name: s.Target, Points: load.Spectrum(s.Result.LatencyHist)})
			ttft.Series = append(ttft.Series, report.Series{Name: s.Target, Points: load.Spectrum(s.Result.TTFTHist)})
		}
		return report.LatencyChart(res.Title+" — "+res.Meta.Commit, []report.Panel{ttft, lat})
	case res.Settle != nil:
		// Over time rather than by percentile: the tail of a settlement lag is usually one
		// stall, and when it happened is what explains it.
		series := []report.TimeSeries{{Name: "p50"}, {Name: "p99"}, {Name: "max"}}
		for _, iv := range res.Settle.Lag.Intervals {
			if iv.Count == 0 {
				continue
			}
			at := (iv.From + iv.To) / 2
			for i, v := range []int64{iv.P50Us, iv.P99Us, iv.MaxUs} {
				series[i].Points = append(series[i].Points, report.TimePoint{Seconds: at, Value: float64(v)})
			}
		}
		return report.TimeChart(fmt.Sprintf("%s at %.0f req/s — %s", res.Title, res.Settle.Rate, res.Meta.Commit),
			"settlement lag, by when the response ended", series, func(v float64) string { return report.Us(v) })
	case res.Soak != nil:
		var series []report.TimeSeries
		names := []string{res.Soak.Generator.Name}
		for _, p := range res.Soak.Procs {
			names = append(names, p.Name)
		}
		for i, name := range names {
			s := report.TimeSeries{Name: name}
			for _, sm := range res.Soak.Samples {
				if i < len(sm.RSSBytes) {
					s.Points = append(s.Points, report.TimePoint{Seconds: sm.At.Seconds(), Value: float64(sm.RSSBytes[i])})
				}
			}
			series = append(series, s)
		}
		return report.TimeChart(res.Title+" — "+res.Meta.Commit, "RSS", series, func(v float64) string { return report.Bytes(int64(v)) })
	}
	return nil
}
