package configmgr

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	commands *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lb_configmgr_commands_total",
			Help: "Config commands handled, by command and result code.",
		}, []string{"command", "result"}),
	}
	if err := reg.Register(m.commands); err != nil {
		return nil, fmt.Errorf("configmgr: register metrics: %w", err)
	}
	return m, nil
}
