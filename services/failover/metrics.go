package failover

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/shared/model"
)

type metrics struct {
	active     *prometheus.GaugeVec
	started    *prometheus.CounterVec
	retargeted *prometheus.CounterVec
	ended      *prometheus.CounterVec
	leader     prometheus.Gauge
	term       prometheus.Gauge
	terms      prometheus.Counter
	commands   *prometheus.CounterVec
	eventsLost prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "lb_failover_active",
			Help: "Active failovers by reason, as this replica sees lb_failover.",
		}, []string{"reason"}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lb_failover_started_total",
			Help: "Failovers started by this replica, by reason.",
		}, []string{"reason"}),
		retargeted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lb_failover_retargeted_total",
			Help: "Failovers pointed at a new target by this replica because their target failed, by reason.",
		}, []string{"reason"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lb_failover_ended_total",
			Help: "Failovers ended by this replica, by reason of the failover and cause of the end (failback, expired, cleared, region_removed).",
		}, []string{"reason", "cause"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lb_failover_leader",
			Help: "1 while this replica holds the failover leader lease and makes automatic decisions.",
		}),
		term: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lb_failover_leader_term",
			Help: "Term (lease revision) of this replica's current or last leadership.",
		}),
		terms: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lb_failover_leader_acquired_total",
			Help: "Times this replica became leader.",
		}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lb_failover_commands_total",
			Help: "Failover commands handled, by command and result code.",
		}, []string{"command", "result"}),
		eventsLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lb_failover_event_publish_errors_total",
			Help: "Failover events that could not be published after retries (the leader republishes them).",
		}),
	}
	for _, c := range []prometheus.Collector{m.active, m.started, m.retargeted, m.ended, m.leader, m.term, m.terms, m.commands, m.eventsLost} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("failover: register metrics: %w", err)
		}
	}
	for _, r := range []string{model.ReasonManual, model.ReasonUnhealthy, model.ReasonFailureRate} {
		m.active.WithLabelValues(r)
		m.started.WithLabelValues(r)
	}
	return m, nil
}
