package failover_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mrlb/mrlb/services/failover"
	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/config"
	"github.com/mrlb/mrlb/shared/embeddednats"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

func request(t *testing.T, s *sys, subject string, in, out any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return bus.Request(ctx, s.nc, subject, in, out)
}

func wantError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var e *model.Error
	if !errors.As(err, &e) || e.Status != status || e.Code != code {
		t.Fatalf("error %v, want %d %s", err, status, code)
	}
}

// TestCommandsOverNATS checks the NATS contract of the two commands, which
// validate on their own (apigw is not the only possible client).
func TestCommandsOverNATS(t *testing.T) {
	s := newSys(t)
	s.startConfigMgr()
	a, b := newRegion(t, "a", 0), newRegion(t, "b", 0)
	s.addRegions(a, b)
	s.startFailover("fo-1", nil)
	poll.Until(t, 10*time.Second, "service answers", func() error {
		_, err := s.nc.Request("$SRV.PING."+bus.ServiceFailover, nil, 500*time.Millisecond)
		return err
	})
	trig := func(req any) error {
		var out model.Failover
		return request(t, s, bus.SubjectCmdFailoverTrigger, req, &out)
	}
	for _, tc := range []struct {
		req    any
		status int
		code   string
	}{
		{model.FailoverTriggerRequest{}, 400, "missing_region"},
		{model.FailoverTriggerRequest{FromRegion: "a"}, 400, "missing_region"},
		{model.FailoverTriggerRequest{ToRegion: "a"}, 400, "missing_region"},
		{model.FailoverTriggerRequest{FromRegion: "a", ToRegion: "Bad"}, 400, "invalid_region"},
		{model.FailoverTriggerRequest{FromRegion: "a", ToRegion: "a"}, 400, "same_region"},
		{model.FailoverTriggerRequest{FromRegion: "a", ToRegion: "b", TTL: "-1m"}, 400, "invalid_ttl"},
		{json.RawMessage(`{"from_region":"a","to_region":"b","bogus":1}`), 400, "invalid_json"},
		{model.FailoverTriggerRequest{FromRegion: "x", ToRegion: "b"}, 404, "region_not_found"},
		{model.FailoverTriggerRequest{FromRegion: "a", ToRegion: "x"}, 404, "region_not_found"},
	} {
		wantError(t, trig(tc.req), tc.status, tc.code)
	}
	// b was never checked (no health checker): unknown counts as healthy,
	// as for model.InRotation.
	var f model.Failover
	if err := request(t, s, bus.SubjectCmdFailoverTrigger, model.FailoverTriggerRequest{FromRegion: "a", ToRegion: "b"}, &f); err != nil {
		t.Fatal(err)
	}
	if f.FromRegion != "a" || f.ToRegion != "b" || f.Reason != model.ReasonManual || f.ExpiresAt != nil {
		t.Fatalf("failover %+v", f)
	}
	wantError(t, trig(model.FailoverTriggerRequest{FromRegion: "b", ToRegion: "a", Force: true}), 409, "target_failed_over")

	clr := func(region string) error {
		return request(t, s, bus.SubjectCmdFailoverClear, model.FailoverClearRequest{FromRegion: region}, nil)
	}
	wantError(t, clr(""), 400, "missing_region")
	wantError(t, clr("x"), 404, "region_not_found")
	wantError(t, clr("b"), 404, "failover_not_found")
	if err := clr("a"); err != nil {
		t.Fatal(err)
	}
	wantError(t, clr("a"), 404, "failover_not_found")
}

// TestManualCommandsOnStandby: a standby replica serves commands with the
// same revision-checked writes, and the leader re-targets what a manual
// failover breaks (a->b, then b->c: a moves to the best target).
func TestManualCommandsOnStandby(t *testing.T) {
	s := newSys(t)
	events := s.followEvents()
	s.startConfigMgr()
	a, b, c, d := newRegion(t, "a", 0), newRegion(t, "b", 0), newRegion(t, "c", 0), newRegion(t, "d", 50*time.Millisecond)
	s.addRegions(a, b, c, d)
	s.startHealthChecker("hc-1")
	tl := &leaderTimeline{}
	reps := s.startPair(tl)
	s.waitHealthy(a, b, c, d)
	standby := reps["fo-1"]
	if tl.leader() == "fo-1" {
		standby = reps["fo-2"]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := standby.svc.Trigger(ctx, model.FailoverTriggerRequest{FromRegion: "a", ToRegion: "b"}); err != nil {
		t.Fatal(err)
	}
	events.waitEvent(t, 5*time.Second, model.EventFailoverStarted, "a")
	if _, err := standby.svc.Trigger(ctx, model.FailoverTriggerRequest{FromRegion: "b", ToRegion: "d"}); err != nil {
		t.Fatal(err)
	}
	// b is failed over now, so a is re-targeted by the leader: to c, the
	// fastest Good region that is not failed over (not to d's chain).
	poll.Until(t, 5*time.Second, "a re-targeted", func() error {
		if f := s.failoverOf("a"); f == nil || f.ToRegion != "c" || f.Reason != model.ReasonManual {
			return fmt.Errorf("failover %+v", f)
		}
		return nil
	})
	poll.Until(t, 5*time.Second, "re-target announced", func() error {
		evs := events.matching(model.EventFailoverStarted, "a")
		if len(evs) != 2 || evs[1].ToRegion != "c" || evs[1].Reason != model.ReasonManual {
			return fmt.Errorf("events %+v", evs)
		}
		return nil
	})
	if _, err := standby.svc.Clear(ctx, model.FailoverClearRequest{FromRegion: "b"}); err != nil {
		t.Fatal(err)
	}
	events.waitEvent(t, 5*time.Second, model.EventFailoverEnded, "b")
	tl.check(t)
}

// TestConcurrentTriggersAnnounceOnce: many replicas' worth of concurrent
// identical triggers all succeed, and the change is announced once.
func TestConcurrentTriggersAnnounceOnce(t *testing.T) {
	s := newSys(t)
	events := s.followEvents()
	s.startConfigMgr()
	s.addRegions(newRegion(t, "a", 0), newRegion(t, "b", 0))
	r1 := s.startFailover("fo-1", nil)
	r2 := s.startFailover("fo-2", nil)
	for _, r := range []*replica{r1, r2} {
		poll.Until(t, 10*time.Second, "started", func() error {
			_, err := r.svc.Clear(context.Background(), model.FailoverClearRequest{FromRegion: "zz"})
			if errors.Is(err, model.ErrUnavailable) {
				return err
			}
			return nil
		})
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		svc := r1.svc
		if i%2 == 1 {
			svc = r2.svc
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, err := svc.Trigger(ctx, model.FailoverTriggerRequest{FromRegion: "a", ToRegion: "b", TTL: fmt.Sprintf("%dm", i+1)}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("trigger: %v", err)
	}
	events.waitEvent(t, 5*time.Second, model.EventFailoverStarted, "a")
	// Give stragglers a moment to show up if there were any.
	time.Sleep(500 * time.Millisecond) // proving that nothing else arrives takes time
	if n := len(events.matching(model.EventFailoverStarted, "a")); n != 1 {
		t.Fatalf("%d started events", n)
	}
}

// TestSurvivesNATSRestart: after the NATS server restarts the replicas
// re-open their watches and re-elect a leader, and a failure is handled.
func TestSurvivesNATSRestart(t *testing.T) {
	s := newSys(t)
	s.startConfigMgr()
	a, b := newRegion(t, "a", 0), newRegion(t, "b", 0)
	s.addRegions(a, b)
	s.startHealthChecker("hc-1")
	rep := s.startFailover("fo-1", nil)
	s.waitHealthy(a, b)
	poll.Until(t, 5*time.Second, "leader", func() error {
		if !rep.svc.Leading() {
			return errors.New("not leading")
		}
		return nil
	})
	s.ns = embeddednats.RestartForTest(t, s.ns)
	poll.Until(t, 20*time.Second, "reconnected", func() error {
		if !rep.nc.IsConnected() || !s.nc.IsConnected() {
			return errors.New("not connected")
		}
		return nil
	})
	a.failing.Store(true)
	poll.Until(t, 30*time.Second, "a failed over after the restart", func() error {
		if f := s.failoverOf("a"); f == nil || f.ToRegion != "b" {
			return fmt.Errorf("failover %+v", f)
		}
		return nil
	})
}

func TestConfig(t *testing.T) {
	c := failover.DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.MetricsAddr != ":9093" || c.URL != config.DefaultNATSURL || !c.Enabled || c.Threshold != 0.5 ||
		c.FailbackDelay.D() != time.Minute || c.LeaseTTL.D() != 5*time.Second {
		t.Fatalf("defaults %+v", c)
	}
	if c.OpsConfig() != c.Ops {
		t.Fatal("OpsConfig")
	}
	for _, mutate := range []func(*failover.Config){
		func(c *failover.Config) { c.ID = "Not Valid" },
		func(c *failover.Config) { c.Threshold = 0 },
		func(c *failover.Config) { c.LeaseTTL = 0 },
		func(c *failover.Config) { c.FailbackDelay = -1 },
	} {
		c := failover.DefaultConfig()
		mutate(&c)
		var ve *config.VarError
		if err := c.Validate(); !errors.As(err, &ve) {
			t.Fatalf("%+v: %v", c, err)
		}
	}
}
