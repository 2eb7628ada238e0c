package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mrlb/mrlb/services/router/metrics"
)

func TestInFlightGauge(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.InFlight.Inc()
	m.InFlight.Inc()
	m.InFlight.Dec()
	got, err := testutil.GatherAndCount(reg, "lb_router_in_flight_requests")
	if err != nil || got != 1 {
		t.Fatalf("in-flight series: %d, %v", got, err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "lb_router_in_flight_requests" {
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v != 1 {
				t.Fatalf("in flight = %v, want 1", v)
			}
		}
	}
}
