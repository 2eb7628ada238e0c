package failover_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mrlb/mrlb/services/failover"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

// TestLeaderElection runs two replicas. The leader handles a failure; then
// it is killed mid-run (its NATS connection closed, no graceful release).
// The standby takes over within two lease periods, keeps the failover it
// inherited (no duplicate, nothing lost), handles a new failure and the
// failback of the inherited one. Two replicas never lead at once and every
// change is announced exactly once.
func TestLeaderElection(t *testing.T) {
	s := newSys(t)
	events := s.followEvents()
	s.startConfigMgr()
	a := newRegion(t, "a", 0)
	b := newRegion(t, "b", 0)
	c := newRegion(t, "c", 30*time.Millisecond)
	d := newRegion(t, "d", 60*time.Millisecond)
	s.addRegions(a, b, c, d)
	s.startHealthChecker("hc-1")
	tl := &leaderTimeline{}
	reps := s.startPair(tl)
	s.waitHealthy(a, b, c, d)
	first := tl.leader()
	second := "fo-1"
	if first == "fo-1" {
		second = "fo-2"
	}
	if got := metricValue(t, reps[first], "lb_failover_leader"); got != 1 {
		t.Fatalf("leader gauge of %s = %v", first, got)
	}

	// The leader handles a failure.
	a.failing.Store(true)
	poll.Until(t, failoverBound+5*time.Second, "a failed over", func() error {
		if f := s.failoverOf("a"); f == nil || f.ToRegion != "b" {
			return fmt.Errorf("failover %+v", f)
		}
		return nil
	})
	events.waitEvent(t, 5*time.Second, model.EventFailoverStarted, "a")

	// Kill the leader: its connection goes away without releasing the lease.
	killedAt := time.Now()
	reps[first].nc.Close()
	poll.Until(t, 2*leaseTTL+2*time.Second, "standby takes over", func() error {
		if !reps[second].svc.Leading() {
			return errors.New("not leading")
		}
		return nil
	})
	took := time.Since(killedAt)
	t.Logf("standby %s took over %v after the leader was killed (lease TTL %v)", second, took, leaseTTL)
	if took > 2*leaseTTL+500*time.Millisecond {
		t.Fatalf("take-over took %v, more than two lease periods", took)
	}
	if reps[first].svc.Leading() {
		t.Fatal("the killed leader still thinks it leads")
	}

	// A failure after the take-over is handled by the new leader; b is the
	// fastest healthy region still, and a's failover is untouched.
	b.failing.Store(true)
	poll.Until(t, failoverBound+5*time.Second, "b failed over", func() error {
		if f := s.failoverOf("b"); f == nil || f.ToRegion != "c" {
			return fmt.Errorf("failover %+v", f)
		}
		return nil
	})
	// a pointed at b, which failed: a is re-targeted to c, reason kept.
	poll.Until(t, 5*time.Second, "a re-targeted", func() error {
		if f := s.failoverOf("a"); f == nil || f.ToRegion != "c" || f.Reason != model.ReasonUnhealthy {
			return fmt.Errorf("failover %+v", f)
		}
		return nil
	})
	poll.Until(t, 5*time.Second, "events", func() error {
		if n := len(events.matching(model.EventFailoverStarted, "a")); n != 2 {
			return fmt.Errorf("%d started events for a", n)
		}
		return nil
	})
	events.waitEvent(t, 5*time.Second, model.EventFailoverStarted, "b")

	// The inherited failover fails back under the new leader.
	a.failing.Store(false)
	poll.Until(t, failbackDelay+15*time.Second, "a failed back", func() error {
		if f := s.failoverOf("a"); f != nil {
			return fmt.Errorf("still %+v", f)
		}
		return nil
	})
	events.waitEvent(t, 5*time.Second, model.EventFailoverEnded, "a")

	// Exactly once per change, across the hand-over.
	started := events.matching(model.EventFailoverStarted, "a")
	if len(started) != 2 || started[0].ToRegion != "b" || started[1].ToRegion != "c" {
		t.Fatalf("started events of a: %+v", started)
	}
	if n := len(events.matching(model.EventFailoverStarted, "b")); n != 1 {
		t.Fatalf("%d started events of b", n)
	}
	tl.check(t)
	if got := metricValue(t, reps[second], "lb_failover_leader"); got != 1 {
		t.Fatalf("leader gauge of %s = %v", second, got)
	}
}

// TestGracefulShutdownHandsOverAtOnce: a leader that stops releases its
// lease, so the standby leads well within one lease period.
func TestGracefulShutdownHandsOverAtOnce(t *testing.T) {
	s := newSys(t)
	tl := &leaderTimeline{}
	reps := map[string]*replica{
		"fo-1": s.startFailover("fo-1", func(c *failover.Config) { c.LeaseTTL = config.Duration(5 * time.Second) }, failover.WithLeaderObserver(tl.observe)),
		"fo-2": s.startFailover("fo-2", func(c *failover.Config) { c.LeaseTTL = config.Duration(5 * time.Second) }, failover.WithLeaderObserver(tl.observe)),
	}
	poll.Until(t, 10*time.Second, "a leader", func() error {
		if tl.leader() == "" {
			return errors.New("no leader")
		}
		return nil
	})
	first := tl.leader()
	stoppedAt := time.Now()
	if err := reps[first].run.stop(); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 2*time.Second, "hand-over", func() error {
		if l := tl.leader(); l == "" || l == first {
			return fmt.Errorf("leader %q", l)
		}
		return nil
	})
	t.Logf("hand-over after a graceful stop: %v (lease TTL 5s)", time.Since(stoppedAt))
	tl.check(t)
	var lease struct{ Holder string }
	if !s.get(bus.BucketLeases, failover.LeaseKey, &lease) || lease.Holder == first {
		t.Fatalf("lease %+v", lease)
	}
}

// metricValue reads a metric without labels from a replica's registry.
func metricValue(t *testing.T, r *replica, name string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// labeledValue reads the series of a metric whose first label has value.
func labeledValue(t *testing.T, r *replica, name, value string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == value {
				if m.GetGauge() != nil {
					return m.GetGauge().GetValue()
				}
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("metric %s{%s} not found", name, value)
	return 0
}
