// Package metrics holds the edge's Prometheus metrics. Request facts go here and into usage
// records, never into per-request logs. Every method used on the request path is
// allocation-free after a label combination's first use.
package metrics

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Route is a label value for the client API's routes.
type Route uint8

// Routes.
const (
	RouteMessages Route = iota
	RouteCountTokens
	RouteModels
	RouteBalance
	RouteOther
	routeCount
)

var routeNames = [routeCount]string{"messages", "count_tokens", "models", "balance", "other"}

// Drain outcomes.
const (
	DrainCompleted = "completed" // read to the end, billed on reported usage
	DrainCut       = "cut"       // timed out or failed: billed on an estimate
	DrainRefused   = "refused"   // too many drains already: cut at once, billed on an estimate
)

const statusMax = 600

// Edge is the set of edge metrics, registered in their own registry.
type Edge struct {
	Registry *prometheus.Registry

	requests *prometheus.CounterVec
	byStatus [routeCount][statusMax]atomic.Pointer[prometheus.Counter]

	// UpstreamSeconds is the time from forwarding a request to the upstream's response
	// headers.
	UpstreamSeconds prometheus.Histogram
	// Estimated counts records whose usage was partly estimated.
	Estimated prometheus.Counter
	// DrainsActive is the number of abandoned streams being read to their end.
	DrainsActive prometheus.Gauge

	drainsCompleted, drainsCut, drainsRefused prometheus.Counter
}

// New builds and registers the metrics, with Go runtime and process collectors.
func New() *Edge {
	reg := prometheus.NewRegistry()
	m := &Edge{
		Registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_edge_requests_total", Help: "Client API requests by route and HTTP status sent.",
		}, []string{"route", "status"}),
		UpstreamSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tollgate_edge_upstream_seconds",
			Help:    "Time from forwarding a request to the upstream's response headers.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14),
		}),
		Estimated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_edge_records_estimated_total", Help: "Usage records with estimated usage (stream cut off).",
		}),
		DrainsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_edge_drains_active", Help: "Abandoned streams being read to their end.",
		}),
	}
	drains := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_edge_drains_total", Help: "Streams whose client went away, by outcome.",
	}, []string{"outcome"})
	m.drainsCompleted = drains.WithLabelValues(DrainCompleted)
	m.drainsCut = drains.WithLabelValues(DrainCut)
	m.drainsRefused = drains.WithLabelValues(DrainRefused)
	reg.MustRegister(m.requests, m.UpstreamSeconds, m.Estimated, m.DrainsActive, drains,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Request counts one answered request.
func (m *Edge) Request(r Route, status int) {
	if r >= routeCount {
		r = RouteOther
	}
	if status < 0 || status >= statusMax {
		status = 0
	}
	slot := &m.byStatus[r][status]
	c := slot.Load()
	if c == nil {
		cnt := m.requests.WithLabelValues(routeNames[r], strconv.Itoa(status))
		slot.CompareAndSwap(nil, &cnt)
		c = slot.Load()
	}
	(*c).Inc()
}

// Drain counts one drain outcome.
func (m *Edge) Drain(outcome string) {
	switch outcome {
	case DrainCompleted:
		m.drainsCompleted.Inc()
	case DrainCut:
		m.drainsCut.Inc()
	default:
		m.drainsRefused.Inc()
	}
}

// RecordQueue is what the metrics read from the usage record queue.
type RecordQueue interface {
	Len() int64
	Shipped() uint64
	ShipErrors() uint64
	Unshipped() uint64
}

// WatchQueue exports the record queue's state.
func (m *Edge) WatchQueue(q RecordQueue) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_edge_records_queued", Help: "Usage records reserved, queued or in flight to Kafka.",
		}, func() float64 { return float64(q.Len()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tollgate_edge_records_shipped_total", Help: "Usage records acknowledged by Kafka.",
		}, func() float64 { return float64(q.Shipped()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tollgate_edge_records_ship_errors_total", Help: "Failed attempts to send a batch of records to Kafka.",
		}, func() float64 { return float64(q.ShipErrors()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tollgate_edge_records_unshipped_total", Help: "Usage records written to the log because Kafka could not take them.",
		}, func() float64 { return float64(q.Unshipped()) }),
	)
}
