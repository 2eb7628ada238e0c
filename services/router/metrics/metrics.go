// Package metrics holds the router's Prometheus collectors and hands out
// per-region handles once, so the request path only does atomic adds.
package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Router is every collector of one router.
type Router struct {
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	retries   *prometheus.CounterVec
	ejections *prometheus.CounterVec
	Exhausted prometheus.Counter
	InFlight  *InFlight
	Panic     prometheus.Counter
	NoRegion  prometheus.Counter
	Snapshots prometheus.Counter
	// Handoffs counts client connections the event loop gave to the
	// fasthttp path: how much traffic takes the general path.
	Handoffs prometheus.Counter
	// Refused counts client requests the router answered itself and closed:
	// invalid heads, bodies that ended early, clients too slow.
	Refused prometheus.Counter
	// TLSHandshakes counts the HTTPS listener's handshakes by result (ok,
	// error, timeout); CertExpiry is each served certificate's not-after.
	TLSHandshakes *prometheus.CounterVec
	CertExpiry    *prometheus.GaugeVec
	mu            sync.Mutex
	perRegion     map[string]*Region
}

// New registers the collectors on reg.
func New(reg prometheus.Registerer) (*Router, error) {
	m := &Router{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lb_router_requests_total",
			Help: "Proxied requests by the region that answered and status class (1xx..5xx, or error when no response).",
		}, []string{"region", "class"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lb_router_upstream_latency_seconds",
			Help:    "Time from sending a request to a region to its response headers.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"region"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lb_router_retries_total",
			Help: "Requests retried on another region, by the region that failed and the reason.",
		}, []string{"region", "reason"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lb_router_outlier_ejections_total",
			Help: "Times this router ejected a region by passive outlier detection.",
		}, []string{"region"}),
		Exhausted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lb_router_retry_budget_exhausted_total",
			Help: "Retries not made because the retry budget was spent.",
		}),
		InFlight: new(InFlight),
		Panic: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lb_router_panic_routing_total",
			Help: "Requests routed while no region was in rotation (panic routing).",
		}),
		NoRegion: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lb_router_no_region_total",
			Help: "Requests answered 503 because no region exists or none answered.",
		}),
		Snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lb_router_snapshots_total",
			Help: "Routing snapshots built.",
		}),
		Handoffs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lb_router_handoffs_total",
			Help: "Client connections the event loop handed to the general (fasthttp) path: upgrades, large or chunked uploads, regions named by DNS not yet resolved, unusual requests.",
		}),
		Refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lb_router_refused_requests_total",
			Help: "Client requests refused and their connection closed: invalid HTTP/1.1 framing (400, 414, 431), a request body that ended early or was malformed, a head not received in time (408).",
		}),
		TLSHandshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lb_router_tls_handshakes_total",
			Help: "TLS handshakes on the HTTPS listener by result: ok, error (a bad or foreign client hello, no certificate), timeout (not done within ROUTER_CLIENT_HEADER_TIMEOUT).",
		}, []string{"result"}),
		CertExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lb_router_certificate_expiry_timestamp_seconds",
			Help: "When each certificate the HTTPS listener serves expires (Unix seconds), by its first name.",
		}, []string{"name"}),
		perRegion: map[string]*Region{},
	}
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lb_router_in_flight_requests",
		Help: "Requests being proxied now.",
	}, func() float64 { return float64(m.InFlight.n.Load()) })
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.retries, m.ejections, m.Exhausted, inFlight, m.Panic, m.NoRegion, m.Snapshots, m.Handoffs, m.Refused, m.TLSHandshakes, m.CertExpiry} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// InFlight counts the requests being proxied with one atomic add each way
// (a prometheus.Gauge does a compare-and-swap loop on float bits); the
// lb_router_in_flight_requests gauge reads it at scrape time.
type InFlight struct{ n atomic.Int64 }

// Inc counts a request in.
func (g *InFlight) Inc() { g.n.Add(1) }

// Dec counts a request out.
func (g *InFlight) Dec() { g.n.Add(-1) }

// Value is the current count.
func (g *InFlight) Value() int64 { return g.n.Load() }

// Region holds one region's handles.
type Region struct {
	byClass   [6]prometheus.Counter // 0 = error, 1..5 = status class
	Latency   prometheus.Observer
	Ejections prometheus.Counter
	retries   *prometheus.CounterVec
	name      string
}

// ForRegion returns the (cached) handles of region.
func (m *Router) ForRegion(region string) *Region {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.perRegion[region]; ok {
		return r
	}
	r := &Region{
		Latency:   m.latency.WithLabelValues(region),
		Ejections: m.ejections.WithLabelValues(region),
		retries:   m.retries,
		name:      region,
	}
	r.byClass[0] = m.requests.WithLabelValues(region, "error")
	for c := 1; c <= 5; c++ {
		r.byClass[c] = m.requests.WithLabelValues(region, strconv.Itoa(c)+"xx")
	}
	m.perRegion[region] = r
	return r
}

// Request counts one answer with HTTP status (0: no response).
func (r *Region) Request(status int) {
	c := status / 100
	if c < 1 || c > 5 {
		c = 0
	}
	r.byClass[c].Inc()
}

// Retry counts a retry away from this region.
func (r *Region) Retry(reason string) { r.retries.WithLabelValues(r.name, reason).Inc() }
