package failover_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

// TestChaosRegionProcessDies: three regions behind one router under a
// steady load of 50 GETs a second for 10 seconds; in the middle one
// region's server is closed outright. No client request may fail (the
// router retries connection errors on another region) and the region must
// be out of rotation (failed over) within the contract's bound.
func TestChaosRegionProcessDies(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s of load")
	}
	s := newSys(t)
	events := s.followEvents()
	s.startConfigMgr()
	a := newRegion(t, "a", 0)
	b := newRegion(t, "b", 0)
	c := newRegion(t, "c", 20*time.Millisecond)
	s.addRegions(a, b, c)
	s.startHealthChecker("hc-1")
	s.startFailover("fo-1", nil)
	rt := s.startRouter()
	s.waitHealthy(a, b, c)
	hc := client(t)
	poll.Until(t, 10*time.Second, "router sends to every region", func() error {
		counts, err := spread(t, hc, rt.Addr(), 30)
		if err != nil {
			return err
		}
		if len(counts) != 3 {
			return fmt.Errorf("spread %v", counts)
		}
		return nil
	})

	const (
		rate     = 50
		duration = 10 * time.Second
		total    = int(rate * duration / time.Second)
	)
	type result struct {
		at     time.Time
		region string
		err    error
	}
	results := make([]result, total)
	var wg sync.WaitGroup
	start := time.Now()
	tick := time.NewTicker(time.Second / rate)
	var killedAt time.Time
	for i := range total {
		<-tick.C
		if i == total/2 {
			killedAt = time.Now()
			a.srv.Close() // the region's process is gone: connections refused
		}
		wg.Go(func() {
			r := result{at: time.Now()}
			resp, err := hc.Get(fmt.Sprintf("http://%s/chaos/%d", rt.Addr(), i))
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				r.region = resp.Header.Get("X-LB-Region")
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d from %q", resp.StatusCode, r.region)
				}
			}
			r.err = err
			results[i] = r
		})
	}
	tick.Stop()
	wg.Wait()
	elapsed := time.Since(start)

	// Out of rotation within the bound: the failover record appears.
	var reroutedAt time.Time
	poll.Until(t, 5*time.Second, "a failed over", func() error {
		if s.failoverOf("a") == nil {
			return errors.New("no failover")
		}
		return nil
	})
	ev := events.waitEvent(t, 5*time.Second, model.EventFailoverStarted, "a")
	reroutedAt = ev.At
	reroute := reroutedAt.Sub(killedAt)

	failed := 0
	lastOnA := time.Time{}
	for i, r := range results {
		if r.err != nil {
			failed++
			t.Logf("request %d at +%v failed: %v", i, r.at.Sub(start), r.err)
		}
		if r.region == "a" && r.at.After(lastOnA) {
			lastOnA = r.at
		}
	}
	t.Logf("chaos: %d GETs in %v, %d failed; region a killed at +%v, failed over %v later (bound %v), last request served by a at +%v",
		total, elapsed.Round(time.Millisecond), failed, killedAt.Sub(start).Round(time.Millisecond), reroute.Round(time.Millisecond), failoverBound, lastOnA.Sub(start).Round(time.Millisecond))
	if failed != 0 {
		t.Fatalf("%d of %d GETs failed", failed, total)
	}
	if reroute > failoverBound {
		t.Fatalf("region a failed over %v after it died, bound %v", reroute, failoverBound)
	}
	if ev.ToRegion != "b" || ev.Reason != model.ReasonUnhealthy {
		t.Fatalf("event %+v", ev)
	}
}
