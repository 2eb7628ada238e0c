package healthchecker

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/shared/model"
)

type metrics struct {
	checks         *prometheus.CounterVec
	latency        prometheus.Histogram
	lateness       prometheus.Histogram
	assigned       *prometheus.GaugeVec
	members        prometheus.Gauge
	transitions    *prometheus.CounterVec
	conflicts      prometheus.Counter
	publishErrors  prometheus.Counter
	recordErrors   prometheus.Counter
	statusRegions  *prometheus.Desc
	statusSnapshot func() map[string]int
}

func newMetrics(reg prometheus.Registerer, statuses func() map[string]int) (*metrics, error) {
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lb_healthchecker_checks_total",
			Help: "Health checks run by this replica, by region and result (ok, bad_status, timeout, error).",
		}, []string{"region", "result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lb_healthchecker_check_latency_seconds",
			Help:    "Time to the response headers of checks that got an HTTP answer.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		lateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lb_healthchecker_schedule_lateness_seconds",
			Help:    "How late scheduled checks start against their slot.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		assigned: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lb_healthchecker_assigned_regions",
			Help: "Regions this replica is responsible for checking.",
		}, []string{"member"}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lb_healthchecker_members",
			Help: "Live health checker replicas this replica sees (itself included).",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lb_healthchecker_transitions_total",
			Help: "Health status transitions recorded by this replica, by new status.",
		}, []string{"to"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lb_healthchecker_write_conflicts_total",
			Help: "Revision conflicts on lb_health writes (another writer got there first).",
		}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lb_healthchecker_publish_errors_total",
			Help: "Check results or events that could not be published.",
		}),
		recordErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lb_healthchecker_record_errors_total",
			Help: "Check results whose state could not be written to lb_health.",
		}),
		statusRegions: prometheus.NewDesc("lb_healthchecker_regions",
			"Regions assigned to this replica by health status.", []string{"status"}, nil),
		statusSnapshot: statuses,
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.checks, m.latency, m.lateness, m.assigned, m.members,
		m.transitions, m.conflicts, m.publishErrors, m.recordErrors, statusCollector{m}} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return m, nil
}

// statusCollector counts statuses at scrape time, so checks do not pay for
// a gauge update each.
type statusCollector struct{ m *metrics }

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.statusRegions }

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.m.statusSnapshot()
	for _, s := range []string{model.StatusHealthy, model.StatusUnhealthy, model.StatusUnknown} {
		ch <- prometheus.MustNewConstMetric(c.m.statusRegions, prometheus.GaugeValue, float64(counts[s]), s)
	}
}
