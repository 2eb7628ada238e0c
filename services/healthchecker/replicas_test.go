package healthchecker

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

// assignment returns the union of the instances' assigned regions and an
// error when they overlap or miss some of want.
func assignment(ins []*instance, want int) error {
	seen := map[string]string{}
	for _, in := range ins {
		for _, r := range in.svc.Assigned() {
			if other, dup := seen[r]; dup {
				return fmt.Errorf("%s assigned to %s and %s", r, other, in.svc.MemberID())
			}
			seen[r] = in.svc.MemberID()
		}
	}
	if len(seen) != want {
		return fmt.Errorf("%d of %d regions assigned", len(seen), want)
	}
	return nil
}

func TestReplicasShareTheWork(t *testing.T) {
	interval := 500 * time.Millisecond
	e := newEnv(t, testConfig(interval))
	rs := newRegionServer(t, false)
	var names []string
	for i := range 10 {
		n := fmt.Sprintf("region-%02d", i)
		names = append(names, n)
		e.putRegion(model.Region{Region: n, Endpoint: rs.URL + "/" + n})
	}
	ins := []*instance{e.start("hc-a", nil), e.start("hc-b", nil), e.start("hc-c", nil)}

	// Converged: each replica has a share, together exactly the 10 regions,
	// and every region was checked after that.
	poll.Until(t, 15*time.Second, "assignment converged", func() error {
		for _, in := range ins {
			if len(in.svc.Assigned()) == 0 {
				return fmt.Errorf("%s has no region", in.svc.MemberID())
			}
		}
		return assignment(ins, 10)
	})
	converged := time.Now()
	poll.Until(t, 15*time.Second, "every region checked after convergence", func() error {
		for _, n := range names {
			if _, ok := rs.firstAfter(n, converged); !ok {
				return fmt.Errorf("%s not checked", n)
			}
		}
		return nil
	})

	// Five intervals: each region probed 5 +/- 1 times (not 10 or 15).
	from := time.Now()
	window := 5 * interval
	poll.Until(t, window+5*time.Second, "measurement window", func() error {
		if time.Since(from) < window {
			return errors.New("window open")
		}
		return nil
	})
	to := from.Add(window)
	for _, n := range names {
		if c := rs.countBetween(n, from, to); c < 4 || c > 6 {
			t.Errorf("%s probed %d times in 5 intervals", n, c)
		}
	}
	if err := assignment(ins, 10); err != nil {
		t.Fatal(err)
	}

	// Graceful stop: the stopped replica's regions are checked again by the
	// others within two intervals.
	victim := ins[0]
	for _, in := range ins {
		if len(in.svc.Assigned()) > len(victim.svc.Assigned()) {
			victim = in
		}
	}
	lost := victim.svc.Assigned()
	stopped := time.Now()
	victim.stop(t)
	rest := slices.DeleteFunc(slices.Clone(ins), func(in *instance) bool { return in == victim })
	poll.Until(t, 10*time.Second, "take-over after stop", func() error {
		for _, n := range lost {
			if _, ok := rs.firstAfter(n, stopped); !ok {
				return fmt.Errorf("%s not checked yet", n)
			}
		}
		return nil
	})
	for _, n := range lost {
		at, _ := rs.firstAfter(n, stopped)
		t.Logf("%s re-checked %v after a graceful stop", n, at.Sub(stopped).Round(time.Millisecond))
		if d := at.Sub(stopped); d > 2*interval {
			t.Errorf("%s checked again %v after its replica stopped (interval %v)", n, d, interval)
		}
	}
	poll.Until(t, 10*time.Second, "two replicas hold all regions", func() error { return assignment(rest, 10) })

	// Crash: the replica vanishes without leaving lb_members (its connection
	// drops first, so its goodbye cannot be sent); the last one takes over
	// once its heartbeats stop.
	crashed := rest[0]
	if len(rest[1].svc.Assigned()) > len(crashed.svc.Assigned()) {
		crashed = rest[1]
	}
	survivor := rest[0]
	if survivor == crashed {
		survivor = rest[1]
	}
	lost = crashed.svc.Assigned()
	gone := time.Now()
	crashed.nc.Close()
	crashed.stop(t)
	poll.Until(t, 10*time.Second, "take-over after crash", func() error {
		for _, n := range lost {
			if _, ok := rs.firstAfter(n, gone); !ok {
				return fmt.Errorf("%s not checked yet", n)
			}
		}
		return nil
	})
	for _, n := range lost {
		at, _ := rs.firstAfter(n, gone)
		// deadAfter (one interval) + sweep (a quarter) + spread (a quarter):
		// 1.5 intervals by design; the bound is two.
		t.Logf("%s re-checked %v after a crash", n, at.Sub(gone).Round(time.Millisecond))
		if d := at.Sub(gone); d > 2*interval {
			t.Errorf("%s checked again %v after its replica crashed (interval %v)", n, d, interval)
		}
	}
	poll.Until(t, 10*time.Second, "survivor holds all regions", func() error { return assignment([]*instance{survivor}, 10) })
}
