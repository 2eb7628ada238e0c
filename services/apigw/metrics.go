package apigw

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer, lim *limiter) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lb_apigw_http_requests_total",
			Help: "API requests by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lb_apigw_http_request_duration_seconds",
			Help:    "API request latency by route pattern and method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
	}
	clients := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lb_apigw_rate_limiter_clients",
		Help: "Clients currently tracked by the per-client rate limiter.",
	}, func() float64 { return float64(lim.size()) })
	for _, c := range []prometheus.Collector{m.requests, m.duration, clients} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("apigw: register metrics: %w", err)
		}
	}
	return m, nil
}
