package configmgr

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
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

// observe counts each call of fn by its outcome.
func observe[Req, Resp any](m *metrics, command string, fn bus.HandlerFunc[Req, Resp]) bus.HandlerFunc[Req, Resp] {
	return func(ctx context.Context, req Req) (Resp, error) {
		resp, err := fn(ctx, req)
		result := "ok"
		if err != nil {
			result = model.AsError(err).Code
		}
		m.commands.WithLabelValues(command, result).Inc()
		return resp, err
	}
}
