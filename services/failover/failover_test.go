package failover_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

// keyLog records every change of one KV key with the server's timestamp.
type keyLog struct {
	mu      sync.Mutex
	entries []keyChange
}

type keyChange struct {
	deleted bool
	value   []byte
	at      time.Time
}

func (s *sys) watchKey(bucket, key string) *keyLog {
	s.t.Helper()
	l := &keyLog{}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := s.kv(bucket).Watch(ctx, key)
	if err != nil {
		cancel()
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			l.mu.Lock()
			l.entries = append(l.entries, keyChange{deleted: e.Operation() != jetstream.KeyValuePut, value: e.Value(), at: e.Created()})
			l.mu.Unlock()
		}
	}()
	s.t.Cleanup(func() { _ = w.Stop(); cancel(); <-done })
	return l
}

// first returns the time of the first change after since that satisfies fn.
func (l *keyLog) first(since time.Time, fn func(keyChange) bool) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.entries {
		if !c.at.Before(since) && fn(c) {
			return c.at, true
		}
	}
	return time.Time{}, false
}

func healthStatus(status string) func(keyChange) bool {
	return func(c keyChange) bool {
		var h model.Health
		return !c.deleted && json.Unmarshal(c.value, &h) == nil && h.Status == status
	}
}

func deleted(c keyChange) bool { return c.deleted }

// TestAutomaticFailoverAndFailback runs the real health checker, failover
// manager and router against three httptest regions: a region that fails
// its health checks is failed over to the fastest healthy region within the
// contract's bound, the event arrives once, the router sends its share to
// the target; restored, it fails back only after FAILBACK_DELAY.
func TestAutomaticFailoverAndFailback(t *testing.T) {
	s := newSys(t)
	events := s.followEvents()
	s.startConfigMgr()
	a := newRegion(t, "a", 0)
	b := newRegion(t, "b", 0)
	c := newRegion(t, "c", 40*time.Millisecond) // slower: b is the target
	s.addRegions(a, b, c)
	s.startHealthChecker("hc-1")
	fo := s.startFailover("fo-1", nil)
	rt := s.startRouter()
	s.waitHealthy(a, b, c)
	aHealth := s.watchKey(bus.BucketHealth, "a")
	aFailover := s.watchKey(bus.BucketFailover, "a")
	hc := client(t)

	// Settings are published for the API.
	poll.Until(t, 5*time.Second, "settings", func() error {
		var st model.FailoverSettings
		if !s.get(bus.BucketConfig, bus.KeyFailoverSettings, &st) || !st.Enabled || st.Threshold != 0.5 {
			return fmt.Errorf("settings %+v", st)
		}
		return nil
	})

	// Let a few checks fill the window, as in production.
	poll.Until(t, 10*time.Second, "window", func() error {
		if h := s.health("a"); h == nil || len(h.Window) < 4 {
			return errors.New("few checks yet")
		}
		return nil
	})

	failedAt := time.Now()
	a.failing.Store(true)
	poll.Until(t, failoverBound+5*time.Second, "a failed over", func() error {
		if s.failoverOf("a") == nil {
			return errors.New("no failover")
		}
		return nil
	})
	took := time.Since(failedAt)
	t.Logf("failed over %v after the region started failing (bound %v)", took, failoverBound)
	if took > failoverBound {
		t.Fatalf("failover took %v, bound is %v", took, failoverBound)
	}
	f := s.failoverOf("a")
	if f.ToRegion != "b" || f.Reason != model.ReasonUnhealthy {
		t.Fatalf("failover = %+v, want a->b unhealthy", f)
	}
	ev := events.waitEvent(t, 5*time.Second, model.EventFailoverStarted, "a")
	if ev.ToRegion != "b" || ev.Reason != model.ReasonUnhealthy {
		t.Fatalf("event = %+v", ev)
	}
	if got := labeledValue(t, fo, "lb_failover_active", "unhealthy"); got != 1 {
		t.Fatalf("lb_failover_active{reason=unhealthy} = %v", got)
	}
	if got := labeledValue(t, fo, "lb_failover_started_total", "unhealthy"); got != 1 {
		t.Fatalf("lb_failover_started_total{reason=unhealthy} = %v", got)
	}

	// The router gives a's share to b: b serves two thirds, c one third.
	poll.Until(t, 10*time.Second, "router follows the failover", func() error {
		counts, err := spread(t, hc, rt.Addr(), 60)
		if err != nil {
			return err
		}
		if counts["a"] != 0 || counts["b"] != 40 || counts["c"] != 20 {
			return fmt.Errorf("spread %v, want b:40 c:20", counts)
		}
		return nil
	})

	// Restored: healthy after two good checks, failed back FAILBACK_DELAY
	// later, not before.
	restoredAt := time.Now()
	a.failing.Store(false)
	poll.Until(t, 10*time.Second, "a healthy again", func() error {
		if _, ok := aHealth.first(restoredAt, healthStatus(model.StatusHealthy)); !ok {
			return errors.New("not yet")
		}
		return nil
	})
	healthyAt, _ := aHealth.first(restoredAt, healthStatus(model.StatusHealthy))
	poll.Until(t, failbackDelay+10*time.Second, "a failed back", func() error {
		if _, ok := aFailover.first(restoredAt, deleted); !ok {
			return errors.New("still failed over")
		}
		return nil
	})
	backAt, _ := aFailover.first(restoredAt, deleted)
	t.Logf("failed back %v after a was healthy again (FAILBACK_DELAY %v)", backAt.Sub(healthyAt), failbackDelay)
	if backAt.Sub(healthyAt) < failbackDelay {
		t.Fatalf("failed back %v after healthy, before FAILBACK_DELAY %v", backAt.Sub(healthyAt), failbackDelay)
	}
	if backAt.Sub(healthyAt) > failbackDelay+3*time.Second {
		t.Fatalf("failed back %v after healthy, far later than FAILBACK_DELAY %v", backAt.Sub(healthyAt), failbackDelay)
	}
	end := events.waitEvent(t, 5*time.Second, model.EventFailoverEnded, "a")
	if end.ToRegion != "b" || end.Reason != model.ReasonUnhealthy {
		t.Fatalf("ended event = %+v", end)
	}
	poll.Until(t, 10*time.Second, "traffic back on a", func() error {
		counts, err := spread(t, hc, rt.Addr(), 30)
		if err != nil {
			return err
		}
		if counts["a"] != 10 || counts["b"] != 10 || counts["c"] != 10 {
			return fmt.Errorf("spread %v", counts)
		}
		return nil
	})
	poll.Until(t, 5*time.Second, "active gauge back to 0", func() error {
		if got := labeledValue(t, fo, "lb_failover_active", "unhealthy"); got != 0 {
			return fmt.Errorf("active %v", got)
		}
		return nil
	})
	// Exactly once: still one started and one ended event.
	if n, m := len(events.matching(model.EventFailoverStarted, "a")), len(events.matching(model.EventFailoverEnded, "a")); n != 1 || m != 1 {
		t.Fatalf("events for a: %d started, %d ended: %+v", n, m, events.all())
	}
}

// TestFlappingRegionFailsOverOnFailureRate: a region that alternates good
// and bad checks never turns unhealthy but is failed over with reason
// failure_rate.
func TestFlappingRegionFailsOverOnFailureRate(t *testing.T) {
	s := newSys(t)
	events := s.followEvents()
	s.startConfigMgr()
	a := newRegion(t, "a", 0)
	b := newRegion(t, "b", 0)
	s.addRegions(a, b)
	s.startHealthChecker("hc-1")
	s.startFailover("fo-1", nil)
	s.waitHealthy(a, b)

	// Every other check fails.
	a.flapping.Store(true)
	poll.Until(t, 30*time.Second, "a failed over for its failure rate", func() error {
		f := s.failoverOf("a")
		if f == nil {
			return errors.New("no failover")
		}
		if f.Reason != model.ReasonFailureRate {
			return fmt.Errorf("reason %s (health %+v)", f.Reason, s.health("a"))
		}
		return nil
	})
	if h := s.health("a"); h.Status == model.StatusUnhealthy {
		t.Fatalf("a turned unhealthy: %+v", h)
	}
	ev := events.waitEvent(t, 5*time.Second, model.EventFailoverStarted, "a")
	if ev.Reason != model.ReasonFailureRate || ev.ToRegion != "b" {
		t.Fatalf("event %+v", ev)
	}
}
